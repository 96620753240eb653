//! One controller node: the dedicated thread, its tokio runtime, and the handle the rest of
//! the process uses.
//!
//! [`Controller::start`] spawns a thread named `sluice-controller` that owns a current-thread
//! tokio runtime; openraft, the storage, the TCP server ([`super::network::serve`]) and the
//! broker-liveness driver all run on it, so tokio never touches the shards. The returned
//! [`ControllerHandle`] is `Send`: it talks to the thread through a bounded request queue and
//! reads the metadata and Raft metrics from `watch` channels.
//!
//! - Proposals: `propose` writes the command on this node if it leads, otherwise forwards it
//!   over TCP to the leader, retrying while there is no leader until `request_timeout_ms`. A
//!   command whose answer is lost may be retried and applied twice; every command is safe to
//!   repeat (idempotent, or rejected as stale by its epochs or as "exists").
//! - Liveness: heartbeats go to the leader (forwarded the same way); the leader's
//!   [`Liveness`] machine turns silence into `FenceBroker` and a returning broker into
//!   `UnfenceBroker`. Fencing re-elects, from the ISR and in the same log entry, the leaders
//!   of the partitions the broker led (so no committed state ever has a fenced leader).
//! - Bootstrap: a node whose directory holds nothing (no vote, no log, no snapshot)
//!   initialises Raft with the configured voters; afterwards the voters come from the log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::log_store::LogStore;
use super::network::{self, LocalHandler, NetworkFactory, Request, Response};
use super::state_machine::StateMachineStore;
use super::{BasicNode, CommandResult, Raft};
use crate::codec::SNAPSHOT_CHUNK_BYTES;
use crate::config::ControllerConfig;
use crate::error::ControllerError;
use crate::liveness::{Liveness, LivenessAction};
use crate::metadata::{BrokerId, Command, MetadataImage};

/// Requests queued from handles to the controller thread. Each caller waits for its answer, so
/// the queue holds at most one request per calling thread or task; 1024 is far above the
/// shards and admin tasks of one process.
pub const REQUEST_QUEUE_MAX: usize = 1024;

/// Heartbeats queued for the liveness driver. A heartbeat is a timestamp, so dropping one when
/// full only delays a broker's "last heard" by one interval; 4096 covers a heartbeat from every
/// broker of a large cluster within one liveness tick.
pub const HEARTBEAT_QUEUE_MAX: usize = 4096;

/// Pause between two attempts of a proposal or heartbeat while no leader is known; an election
/// takes a few election timeouts (500–1000 ms each), so 50 ms costs little and spins little.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Starts controller nodes.
#[derive(Debug)]
pub struct Controller;

enum NodeRequest {
    Propose {
        command: Command,
        reply: oneshot::Sender<CommandResult>,
    },
    Heartbeat {
        id: BrokerId,
        incarnation: u64,
        reply: oneshot::Sender<Result<(), ControllerError>>,
    },
}

struct Started {
    listen_addr: SocketAddr,
    metadata: watch::Receiver<Arc<MetadataImage>>,
    metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
}

impl Controller {
    /// Open the data directory, start Raft on a new thread and serve the controller protocol.
    /// Returns once the node is listening (not once it has a leader).
    pub fn start(mut config: ControllerConfig) -> Result<ControllerHandle, ControllerError> {
        config.validate()?;
        let node_id = config.node_id;
        let listener = match config.listener.take() {
            Some(listener) => listener,
            None => {
                let addr = config.own_voter().map(|voter| voter.addr).ok_or_else(|| {
                    ControllerError::InvalidConfig {
                        reason: "node is not a voter".into(),
                    }
                })?;
                std::net::TcpListener::bind(addr).map_err(|error| ControllerError::Network {
                    peer: addr.to_string(),
                    message: format!("bind: {error}"),
                })?
            }
        };
        let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE_MAX);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sluice-controller".into())
            .spawn(move || run_thread(config, listener, requests_rx, shutdown_rx, started_tx))
            .map_err(|error| ControllerError::Raft {
                message: format!("cannot spawn the controller thread: {error}"),
            })?;
        let started = started_rx
            .recv()
            .map_err(|_| ControllerError::ShutDown)
            .and_then(|started| started);
        let started = match started {
            Ok(started) => started,
            Err(error) => {
                let _ = thread.join();
                return Err(error);
            }
        };
        Ok(ControllerHandle {
            node_id,
            listen_addr: started.listen_addr,
            requests,
            metadata: started.metadata,
            metrics: started.metrics,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

/// The process's way to the controller: propose, read and watch metadata, heartbeat.
///
/// `Send`; the blocking methods must not be called from inside a tokio runtime (use the
/// `_async` ones there; they work on any executor, glommio included). Dropping the handle
/// shuts the node down, as [`ControllerHandle::shutdown`] does.
#[derive(Debug)]
pub struct ControllerHandle {
    node_id: u64,
    listen_addr: SocketAddr,
    requests: mpsc::Sender<NodeRequest>,
    metadata: watch::Receiver<Arc<MetadataImage>>,
    metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for NodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRequest::Propose { command, .. } => write!(f, "Propose({command:?})"),
            NodeRequest::Heartbeat { id, .. } => write!(f, "Heartbeat({id})"),
        }
    }
}

impl ControllerHandle {
    /// This node's Raft id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Where this node's controller protocol listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The latest metadata this node has applied. Reading takes the `watch`'s short read
    /// lock: a shard keeps the `Arc` it got and refreshes it when `subscribe()` signals a
    /// change, rather than calling this per request.
    pub fn metadata(&self) -> Arc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    /// A receiver that sees every newly applied image (the latest one; intermediate ones may
    /// be skipped, as with any `watch`).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.metadata.clone()
    }

    /// The controller leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.metrics.borrow().current_leader
    }

    /// True while this node leads the controller quorum.
    pub fn is_leader(&self) -> bool {
        let metrics = self.metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.node_id)
    }

    /// The Raft term this node is in.
    pub fn current_term(&self) -> u64 {
        self.metrics.borrow().current_term
    }

    /// Propose a command and wait until it is committed and applied (on whichever node leads).
    /// Blocking: not from inside a tokio runtime.
    pub fn propose(&self, command: Command) -> CommandResult {
        let (reply, answer) = oneshot::channel();
        self.requests
            .blocking_send(NodeRequest::Propose { command, reply })
            .map_err(|_| ControllerError::ShutDown)?;
        answer
            .blocking_recv()
            .map_err(|_| ControllerError::ShutDown)?
    }

    /// [`ControllerHandle::propose`] for async callers.
    pub async fn propose_async(&self, command: Command) -> CommandResult {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(NodeRequest::Propose { command, reply })
            .await
            .map_err(|_| ControllerError::ShutDown)?;
        answer.await.map_err(|_| ControllerError::ShutDown)?
    }

    /// A broker's heartbeat, delivered to the controller leader. Blocking.
    pub fn broker_heartbeat(&self, id: BrokerId, incarnation: u64) -> Result<(), ControllerError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .blocking_send(NodeRequest::Heartbeat {
                id,
                incarnation,
                reply,
            })
            .map_err(|_| ControllerError::ShutDown)?;
        answer
            .blocking_recv()
            .map_err(|_| ControllerError::ShutDown)?
    }

    /// [`ControllerHandle::broker_heartbeat`] for async callers.
    pub async fn broker_heartbeat_async(
        &self,
        id: BrokerId,
        incarnation: u64,
    ) -> Result<(), ControllerError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(NodeRequest::Heartbeat {
                id,
                incarnation,
                reply,
            })
            .await
            .map_err(|_| ControllerError::ShutDown)?;
        answer.await.map_err(|_| ControllerError::ShutDown)?
    }

    /// Stop Raft, close the listener and join the thread.
    pub fn shutdown(mut self) -> Result<(), ControllerError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ControllerError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| ControllerError::Raft {
                message: "the controller thread panicked".into(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            warn!(%error, "controller shutdown");
        }
    }
}

fn run_thread(
    config: ControllerConfig,
    listener: std::net::TcpListener,
    mut requests: mpsc::Receiver<NodeRequest>,
    mut shutdown: oneshot::Receiver<()>,
    started: std::sync::mpsc::Sender<Result<Started, ControllerError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = started.send(Err(ControllerError::Raft {
                message: format!("cannot build the controller runtime: {error}"),
            }));
            return;
        }
    };
    runtime.block_on(async move {
        let (node, listener, heartbeats) = match set_up(&config, listener).await {
            Ok(parts) => parts,
            Err(error) => {
                let _ = started.send(Err(error));
                return;
            }
        };
        let listen_addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(error) => {
                let _ = started.send(Err(ControllerError::Network {
                    peer: "listener".into(),
                    message: error.to_string(),
                }));
                return;
            }
        };
        info!(node = node.id, %listen_addr, "controller started");
        let server = tokio::spawn(network::serve(listener, node.raft.clone(), node.clone()));
        let liveness = tokio::spawn(drive_liveness(
            node.clone(),
            heartbeats,
            config.broker_session_timeout_ms,
            config.liveness_tick_ms,
        ));
        let _ = started.send(Ok(Started {
            listen_addr,
            metadata: node.metadata.clone(),
            metrics: node.raft.metrics(),
        }));
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => {
                        tokio::spawn(handle_request(node.clone(), request));
                    }
                    None => break,
                },
                _ = &mut shutdown => break,
            }
        }
        server.abort();
        liveness.abort();
        if let Err(error) = node.raft.shutdown().await {
            warn!(%error, "raft shutdown");
        }
        info!(node = node.id, "controller stopped");
    });
}

async fn set_up(
    config: &ControllerConfig,
    listener: std::net::TcpListener,
) -> Result<(Node, tokio::net::TcpListener, mpsc::Receiver<BrokerId>), ControllerError> {
    let raft_error = |error: &dyn std::fmt::Display| ControllerError::Raft {
        message: error.to_string(),
    };
    info!(
        node = config.node_id,
        voters = ?config.voters,
        data_dir = %config.data_dir.display(),
        heartbeat_interval_ms = config.heartbeat_interval_ms,
        election_timeout_ms = ?(config.election_timeout_min_ms, config.election_timeout_max_ms),
        broker_session_timeout_ms = config.broker_session_timeout_ms,
        snapshot_every_entries = config.snapshot_every_entries,
        "controller starting"
    );
    super::files::create_dir_durably(&config.data_dir)?;
    let log_store = LogStore::open(&config.data_dir)?;
    let (publisher, metadata) = watch::channel(Arc::new(MetadataImage::new()));
    let state_machine = StateMachineStore::open(&config.data_dir, publisher)?;
    let pristine = log_store.is_pristine()? && !state_machine.has_snapshot();
    let raft_config = openraft::Config {
        cluster_name: "sluice-controller".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        max_in_snapshot_log_to_keep: config.snapshot_log_keep_entries,
        snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
        ..Default::default()
    }
    .validate()
    .map_err(|error| raft_error(&error))?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        NetworkFactory,
        log_store,
        state_machine,
    )
    .await
    .map_err(|error| raft_error(&error))?;
    if pristine {
        let members: BTreeMap<u64, BasicNode> = config
            .voters
            .iter()
            .map(|voter| (voter.id, BasicNode::new(voter.addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) => info!(
                node = config.node_id,
                voters = config.voters.len(),
                "controller bootstrapped"
            ),
            Err(RaftError::APIError(InitializeError::NotAllowed(reason))) => {
                debug!(%reason, "another voter bootstrapped first")
            }
            Err(error) => return Err(raft_error(&error)),
        }
    }
    listener
        .set_nonblocking(true)
        .map_err(|error| ControllerError::Network {
            peer: "listener".into(),
            message: error.to_string(),
        })?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|error| ControllerError::Network {
            peer: "listener".into(),
            message: error.to_string(),
        })?;
    let (heartbeats, heartbeats_rx) = mpsc::channel(HEARTBEAT_QUEUE_MAX);
    let node = Node {
        id: config.node_id,
        raft,
        metadata,
        heartbeats,
        request_timeout: Duration::from_millis(config.request_timeout_ms),
    };
    Ok((node, listener, heartbeats_rx))
}

/// The controller thread's view of its node, shared by its tasks.
#[derive(Clone)]
struct Node {
    id: u64,
    raft: Raft,
    metadata: watch::Receiver<Arc<MetadataImage>>,
    heartbeats: mpsc::Sender<BrokerId>,
    request_timeout: Duration,
}

impl Node {
    fn leader(&self) -> (bool, Option<u64>) {
        let (leading_term, leader) = self.leadership();
        (leading_term.is_some(), leader)
    }

    /// The term this node leads in (`None` when it does not lead), and the known leader.
    fn leadership(&self) -> (Option<u64>, Option<u64>) {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leading =
            metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id);
        (
            leading.then_some(metrics.current_term),
            metrics.current_leader,
        )
    }

    /// Write a command on this node; `NotLeader` with the known leader's address otherwise.
    async fn write_here(&self, command: Command) -> Result<CommandResult, Option<BasicNode>> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(forward
                .leader_node
                .filter(|_| forward.leader_id != Some(self.id))),
            Err(error) => Ok(Err(ControllerError::Raft {
                message: error.to_string(),
            })),
        }
    }

    /// Propose here or at the leader, retrying while no leader answers, until the deadline.
    async fn propose_anywhere(&self, command: Command) -> CommandResult {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let result = match self.write_here(command.clone()).await {
                Ok(result) => return result,
                Err(Some(leader)) => {
                    let request = Request::Propose(command.clone());
                    match network::call_once(&leader.addr, &request, self.request_timeout).await {
                        Ok(Response::Propose(result)) => result,
                        Ok(_) => Err(ControllerError::Network {
                            peer: leader.addr.clone(),
                            message: "answer of the wrong kind".into(),
                        }),
                        Err(error) => Err(error),
                    }
                }
                Err(None) => Err(ControllerError::NotLeader { leader: None }),
            };
            match result {
                Err(ControllerError::NotLeader { .. } | ControllerError::Network { .. })
                    if Instant::now() + RETRY_BACKOFF < deadline =>
                {
                    tokio::time::sleep(RETRY_BACKOFF).await
                }
                Err(ControllerError::NotLeader { .. }) => {
                    return Err(ControllerError::Timeout {
                        elapsed_ms: self.request_timeout.as_millis() as u64,
                    })
                }
                other => return other,
            }
        }
    }

    /// Deliver a heartbeat here if leading, else to the leader, retrying until the deadline.
    async fn heartbeat_anywhere(
        &self,
        id: BrokerId,
        incarnation: u64,
    ) -> Result<(), ControllerError> {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let result = match self.take_heartbeat(id, incarnation) {
                Err(ControllerError::NotLeader {
                    leader: Some(leader),
                }) if leader != self.id => match self.leader_addr(leader) {
                    Some(addr) => {
                        let request = Request::BrokerHeartbeat { id, incarnation };
                        match network::call_once(&addr, &request, self.request_timeout).await {
                            Ok(Response::BrokerHeartbeat(result)) => result,
                            Ok(_) => Err(ControllerError::Network {
                                peer: addr,
                                message: "answer of the wrong kind".into(),
                            }),
                            Err(error) => Err(error),
                        }
                    }
                    None => Err(ControllerError::NotLeader { leader: None }),
                },
                other => other,
            };
            match result {
                Err(ControllerError::NotLeader { .. } | ControllerError::Network { .. })
                    if Instant::now() + RETRY_BACKOFF < deadline =>
                {
                    tokio::time::sleep(RETRY_BACKOFF).await
                }
                other => return other,
            }
        }
    }

    fn leader_addr(&self, leader: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())
    }

    /// Record a heartbeat if this node leads.
    fn take_heartbeat(&self, id: BrokerId, incarnation: u64) -> Result<(), ControllerError> {
        let (leading, leader) = self.leader();
        if !leading {
            return Err(ControllerError::NotLeader { leader });
        }
        let image = self.metadata.borrow().clone();
        match image.brokers.get(&id) {
            None => return Err(ControllerError::UnknownBroker { id }),
            Some(broker) if broker.incarnation != incarnation => {
                return Err(ControllerError::StaleIncarnation {
                    id,
                    got: incarnation,
                    registered: broker.incarnation,
                })
            }
            Some(_) => {}
        }
        // A full queue drops this heartbeat: see HEARTBEAT_QUEUE_MAX.
        let _ = self.heartbeats.try_send(id);
        Ok(())
    }
}

impl LocalHandler for Node {
    async fn propose(&self, command: Command) -> CommandResult {
        match self.write_here(command).await {
            Ok(result) => result,
            Err(_) => Err(ControllerError::NotLeader {
                leader: self.leader().1,
            }),
        }
    }

    async fn heartbeat(&self, id: BrokerId, incarnation: u64) -> Result<(), ControllerError> {
        self.take_heartbeat(id, incarnation)
    }
}

async fn handle_request(node: Node, request: NodeRequest) {
    match request {
        NodeRequest::Propose { command, reply } => {
            let _ = reply.send(node.propose_anywhere(command).await);
        }
        NodeRequest::Heartbeat {
            id,
            incarnation,
            reply,
        } => {
            let _ = reply.send(node.heartbeat_anywhere(id, incarnation).await);
        }
    }
}

/// The leader's broker-liveness loop: heartbeats in, `FenceBroker`/`UnfenceBroker` out.
async fn drive_liveness(
    node: Node,
    mut heartbeats: mpsc::Receiver<BrokerId>,
    session_timeout_ms: u64,
    tick_ms: u64,
) {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut liveness = Liveness::new(session_timeout_ms);
    // The term of the leadership the heartbeats were collected in: a new term (even one won
    // between two ticks) starts every session afresh, since heartbeats went elsewhere meanwhile.
    let mut leading_term = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            heartbeat = heartbeats.recv() => match heartbeat {
                Some(id) => liveness.heartbeat(id, now_ms()),
                None => return,
            },
            _ = ticker.tick() => {
                let term = node.leadership().0;
                if term.is_none() {
                    leading_term = None;
                    continue;
                }
                let image = node.metadata.borrow().clone();
                if leading_term != term {
                    liveness.reset(now_ms(), &image);
                    leading_term = term;
                    continue;
                }
                for action in liveness.tick(now_ms(), &image) {
                    let command = match action {
                        LivenessAction::Fence(id) => Command::FenceBroker { id },
                        LivenessAction::Unfence(id) => Command::UnfenceBroker { id },
                    };
                    match node.write_here(command).await {
                        Ok(Ok(outcome)) => info!(?action, ?outcome, "broker liveness change"),
                        Ok(Err(error)) => warn!(?action, %error, "broker liveness change failed"),
                        Err(_) => debug!(?action, "no longer leader; liveness change dropped"),
                    }
                    if let LivenessAction::Fence(id) = action {
                        liveness.forget(id);
                    }
                }
            }
        }
    }
}
