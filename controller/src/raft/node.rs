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
//! - Learners: a node that is not a voter never initialises; it asks the voters
//!   ([`join_as_learner`]) until the leader adds it as a Raft learner at its listening address
//!   (again at every start, so a new address replaces the old one). It then receives the log
//!   like a voter, serves the same image and forwards proposals and heartbeats to the leader,
//!   but never votes: brokers join and leave without touching the quorum.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

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
/// Longest wait for one heartbeat forwarded to the leader before asking again who leads: a
/// former leader cut off from the network swallows the request, and a heartbeat stuck on it
/// for the whole `request_timeout_ms` (10 s) outlives the broker session (3 s), so the new
/// leader fences this live broker. 500 ms is the shortest election timeout: by then a new
/// leader may be known.
const HEARTBEAT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Pause between two rounds of a learner's join requests to the voters.
const JOIN_RETRY: Duration = Duration::from_millis(200);
/// Longest wait for one voter's answer to a join request.
const JOIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long [`Controller::start`] waits for the thread to open its directory, start Raft and
/// listen: reading a small log and snapshot takes milliseconds, so 30 s means it is stuck.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the thread waits for openraft's `shutdown()` (its core task and tick loop end
/// at their next poll; a core stuck in a storage call would otherwise hold the thread).
pub const RAFT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long dropping the runtime waits for its blocking tasks (address lookups of
/// [`network::call_once`]), which finish in milliseconds.
pub const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long stopping a handle waits for the thread to end: [`RAFT_SHUTDOWN_TIMEOUT`] plus
/// [`RUNTIME_SHUTDOWN_TIMEOUT`] plus 4 s of slack for a loaded machine. A thread that is
/// still running then is detached (and reported), never waited for without end.
pub const THREAD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a blocking caller waits beyond `request_timeout_ms` for an answer: the thread bounds
/// every proposal and heartbeat by `request_timeout_ms` (plus one 50 ms retry pause), so an
/// answer later than 5 s beyond means the thread is stuck and the call fails with `Timeout`.
pub const ANSWER_SLACK: Duration = Duration::from_secs(5);

/// Starts controller nodes.
#[derive(Debug)]
pub struct Controller;

enum NodeRequest {
    Propose {
        command: Command,
        reply: Reply<CommandResult>,
    },
    Heartbeat {
        id: BrokerId,
        incarnation: u64,
        reply: Reply<Result<(), ControllerError>>,
    },
}

/// Where the thread sends an answer: a `std` channel a blocking caller waits on with a
/// deadline, or a `oneshot` an async caller awaits (on any executor).
enum Reply<T> {
    Blocking(std::sync::mpsc::SyncSender<T>),
    Async(oneshot::Sender<T>),
}

impl<T> Reply<T> {
    /// Hand the answer over without blocking the thread (the blocking channel holds one); a
    /// caller that gave up has dropped its end, and the answer is dropped.
    fn send(self, answer: T) {
        match self {
            Reply::Blocking(sender) => {
                let _ = sender.try_send(answer);
            }
            Reply::Async(sender) => {
                let _ = sender.send(answer);
            }
        }
    }
}

/// The controller thread, joined with a deadline: `done` disconnects when the thread's
/// closure ends (returning or unwinding), so the join after it never waits.
#[derive(Debug)]
struct NodeThread {
    handle: std::thread::JoinHandle<()>,
    /// In a `Mutex` only so the handle is `Sync` (a `Receiver` is not); never contended.
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl NodeThread {
    /// Join the thread if it ends within `timeout`; otherwise detach it and say so.
    fn join_within(self, timeout: Duration) -> Result<(), ControllerError> {
        let done = self
            .done
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match done.recv_timeout(timeout) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                error!(
                    timeout_ms = timeout.as_millis() as u64,
                    "the controller thread did not stop in time; detaching it"
                );
                Err(ControllerError::Timeout {
                    elapsed_ms: timeout.as_millis() as u64,
                })
            }
            // Nothing is ever sent: the thread has ended.
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.handle.join().map_err(|_| ControllerError::Raft {
                    message: "the controller thread panicked".into(),
                })
            }
        }
    }
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
        let request_timeout = Duration::from_millis(config.request_timeout_ms);
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
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("sluice-controller".into())
            .spawn(move || {
                let _done = done_tx;
                run_thread(config, listener, requests_rx, shutdown_rx, started_tx)
            })
            .map_err(|error| ControllerError::Raft {
                message: format!("cannot spawn the controller thread: {error}"),
            })?;
        let thread = NodeThread {
            handle,
            done: std::sync::Mutex::new(done),
        };
        let started = match started_rx.recv_timeout(START_TIMEOUT) {
            Ok(started) => started,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ControllerError::ShutDown),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Dropping `shutdown` (and `started_rx`) makes the thread stop as soon as
                // it is up; it is detached, not waited for.
                error!(
                    node = node_id,
                    timeout_ms = START_TIMEOUT.as_millis() as u64,
                    "the controller did not start in time"
                );
                return Err(ControllerError::Timeout {
                    elapsed_ms: START_TIMEOUT.as_millis() as u64,
                });
            }
        };
        let started = match started {
            Ok(started) => started,
            Err(error) => {
                // The thread has sent its error and is returning.
                if let Err(join_error) = thread.join_within(THREAD_STOP_TIMEOUT) {
                    warn!(%join_error, "controller thread after a failed start");
                }
                return Err(error);
            }
        };
        Ok(ControllerHandle {
            node_id,
            listen_addr: started.listen_addr,
            requests,
            metadata: started.metadata,
            metrics: started.metrics,
            answer_timeout: request_timeout + ANSWER_SLACK,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

/// The process's way to the controller: propose, read and watch metadata, heartbeat.
///
/// `Send`; the blocking methods must not be called from inside a tokio runtime (use the
/// `_async` ones there; they work on any executor, glommio included). Every wait is bounded:
/// the thread answers a proposal or heartbeat within `request_timeout_ms`, a blocking caller
/// gives up with `Timeout` [`ANSWER_SLACK`] after that, and stopping waits at most
/// [`THREAD_STOP_TIMEOUT`]. Dropping the handle shuts the node down, as
/// [`ControllerHandle::shutdown`] does.
#[derive(Debug)]
pub struct ControllerHandle {
    node_id: u64,
    listen_addr: SocketAddr,
    requests: mpsc::Sender<NodeRequest>,
    metadata: watch::Receiver<Arc<MetadataImage>>,
    metrics: watch::Receiver<RaftMetrics<u64, BasicNode>>,
    /// How long a blocking call waits for the thread's answer.
    answer_timeout: Duration,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<NodeThread>,
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
    /// Blocking, at most `request_timeout_ms` plus [`ANSWER_SLACK`]; not from inside a tokio
    /// runtime.
    pub fn propose(&self, command: Command) -> CommandResult {
        self.call_blocking(|reply| NodeRequest::Propose {
            command,
            reply: Reply::Blocking(reply),
        })?
    }

    /// [`ControllerHandle::propose`] for async callers; the thread answers within
    /// `request_timeout_ms` (plus one retry pause).
    pub async fn propose_async(&self, command: Command) -> CommandResult {
        let (reply, answer) = oneshot::channel();
        let reply = Reply::Async(reply);
        self.requests
            .send(NodeRequest::Propose { command, reply })
            .await
            .map_err(|_| ControllerError::ShutDown)?;
        answer.await.map_err(|_| ControllerError::ShutDown)?
    }

    /// A broker's heartbeat, delivered to the controller leader. Blocking, at most
    /// `request_timeout_ms` plus [`ANSWER_SLACK`].
    pub fn broker_heartbeat(&self, id: BrokerId, incarnation: u64) -> Result<(), ControllerError> {
        self.call_blocking(|reply| NodeRequest::Heartbeat {
            id,
            incarnation,
            reply: Reply::Blocking(reply),
        })?
    }

    /// [`ControllerHandle::broker_heartbeat`] for async callers; the thread answers within
    /// `request_timeout_ms` (plus one retry pause).
    pub async fn broker_heartbeat_async(
        &self,
        id: BrokerId,
        incarnation: u64,
    ) -> Result<(), ControllerError> {
        let (reply, answer) = oneshot::channel();
        let reply = Reply::Async(reply);
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

    /// Queue a request and wait for its answer, both within `answer_timeout`. The queue is
    /// only full when the thread is stuck, so a full queue is retried until the deadline.
    fn call_blocking<T>(
        &self,
        request: impl FnOnce(std::sync::mpsc::SyncSender<T>) -> NodeRequest,
    ) -> Result<T, ControllerError> {
        let deadline = std::time::Instant::now() + self.answer_timeout;
        let timeout = || ControllerError::Timeout {
            elapsed_ms: self.answer_timeout.as_millis() as u64,
        };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let mut request = request(reply);
        loop {
            match self.requests.try_send(request) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(ControllerError::ShutDown),
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if std::time::Instant::now() + RETRY_BACKOFF >= deadline {
                        return Err(timeout());
                    }
                    request = back;
                    std::thread::sleep(RETRY_BACKOFF);
                }
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        answer.recv_timeout(left).map_err(|error| match error {
            std::sync::mpsc::RecvTimeoutError::Timeout => {
                error!(
                    node = self.node_id,
                    timeout_ms = self.answer_timeout.as_millis() as u64,
                    "no answer from the controller thread in time"
                );
                timeout()
            }
            std::sync::mpsc::RecvTimeoutError::Disconnected => ControllerError::ShutDown,
        })
    }

    /// Stop Raft, close the listener and join the thread, within [`THREAD_STOP_TIMEOUT`]
    /// (`Timeout` if the thread is still running then; it is detached).
    pub fn shutdown(mut self) -> Result<(), ControllerError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ControllerError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join_within(THREAD_STOP_TIMEOUT),
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
        let joiner = config.is_learner().then(|| {
            tokio::spawn(join_as_learner(
                node.clone(),
                config.voters.clone(),
                listen_addr,
            ))
        });
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
        if let Some(joiner) = joiner {
            joiner.abort();
        }
        match tokio::time::timeout(RAFT_SHUTDOWN_TIMEOUT, node.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "raft shutdown"),
            Err(_) => error!(
                node = node.id,
                timeout_ms = RAFT_SHUTDOWN_TIMEOUT.as_millis() as u64,
                "raft did not shut down in time; dropping its tasks"
            ),
        }
        info!(node = node.id, "controller stopped");
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
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
    if pristine && !config.is_learner() {
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

    /// Write a command on this node, waiting at most `timeout` for it to be applied;
    /// `Err` with the known leader's address when this node does not lead.
    ///
    /// openraft's `client_write` has no deadline of its own: a leader that lost its quorum,
    /// or whose entry is superseded without a truncation it reports (a snapshot installed
    /// over it), never answers. A write that times out may still commit later, which is
    /// safe: every command may be applied twice (see the module doc).
    async fn write_here(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandResult, Option<BasicNode>> {
        match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
            Err(_) => Ok(Err(ControllerError::Timeout {
                elapsed_ms: timeout.as_millis() as u64,
            })),
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(forward
                    .leader_node
                    .filter(|_| forward.leader_id != Some(self.id)))
            }
            Ok(Err(error)) => Ok(Err(ControllerError::Raft {
                message: error.to_string(),
            })),
        }
    }

    /// Propose here or at the leader, retrying while no leader answers, until the deadline.
    async fn propose_anywhere(&self, command: Command) -> CommandResult {
        let deadline = Instant::now() + self.request_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match self.write_here(command.clone(), left).await {
                Ok(result) => return result,
                Err(Some(leader)) => {
                    let request = Request::Propose(command.clone());
                    match network::call_once(&leader.addr, &request, left).await {
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
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match self.take_heartbeat(id, incarnation) {
                Err(ControllerError::NotLeader {
                    leader: Some(leader),
                }) if leader != self.id => match self.leader_addr(leader) {
                    Some(addr) => {
                        let request = Request::BrokerHeartbeat { id, incarnation };
                        let attempt = left.min(HEARTBEAT_ATTEMPT_TIMEOUT);
                        match network::call_once(&addr, &request, attempt).await {
                            Ok(Response::BrokerHeartbeat(result)) => result,
                            Ok(_) => Err(ControllerError::Network {
                                peer: addr,
                                message: "answer of the wrong kind".into(),
                            }),
                            // Retried below, with whoever leads by then.
                            Err(ControllerError::Timeout { elapsed_ms }) => {
                                Err(ControllerError::Network {
                                    peer: addr,
                                    message: format!("no answer within {elapsed_ms} ms"),
                                })
                            }
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
        match self.write_here(command, self.request_timeout).await {
            Ok(result) => result,
            Err(_) => Err(ControllerError::NotLeader {
                leader: self.leader().1,
            }),
        }
    }

    async fn heartbeat(&self, id: BrokerId, incarnation: u64) -> Result<(), ControllerError> {
        self.take_heartbeat(id, incarnation)
    }

    async fn add_learner(&self, id: u64, addr: String) -> Result<(), ControllerError> {
        let (leading, leader) = self.leader();
        if !leading {
            return Err(ControllerError::NotLeader { leader });
        }
        let known = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            let membership = metrics.membership_config.membership();
            if membership.voter_ids().any(|voter| voter == id) {
                return Err(ControllerError::InvalidConfig {
                    reason: format!("node {id} is a voter, not a learner"),
                });
            }
            membership.get_node(&id).map(|node| node.addr.clone())
        };
        let node = BasicNode { addr: addr.clone() };
        let change = async {
            match known {
                Some(known) if known == addr => Ok(()),
                Some(_) => self
                    .raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                    .await
                    .map(|_| ()),
                None => self.raft.add_learner(id, node, false).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(self.request_timeout, change).await {
            Ok(Ok(())) => {
                info!(learner = id, %addr, "controller learner added");
                Ok(())
            }
            Ok(Err(error)) => Err(ControllerError::Raft {
                message: error.to_string(),
            }),
            Err(_) => Err(ControllerError::Timeout {
                elapsed_ms: self.request_timeout.as_millis() as u64,
            }),
        }
    }
}

/// A learner's way in: ask every voter in turn to add this node at `addr` until the leader
/// does (or this node already is a member there, from an earlier start).
async fn join_as_learner(node: Node, voters: Vec<crate::config::Voter>, addr: SocketAddr) {
    let addr = addr.to_string();
    loop {
        let member = {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .get_node(&node.id)
                .is_some_and(|known| known.addr == addr)
        };
        if member {
            info!(node = node.id, %addr, "joined the controller quorum as a learner");
            return;
        }
        for voter in &voters {
            let request = Request::AddLearner {
                id: node.id,
                addr: addr.clone(),
            };
            match network::call_once(&voter.addr.to_string(), &request, JOIN_ATTEMPT_TIMEOUT).await
            {
                Ok(Response::AddLearner(Ok(()))) => break,
                Ok(Response::AddLearner(Err(error))) => {
                    debug!(voter = voter.id, %error, "join request refused")
                }
                Ok(_) => debug!(
                    voter = voter.id,
                    "join request answered with the wrong kind"
                ),
                Err(error) => debug!(voter = voter.id, %error, "join request failed"),
            }
        }
        // Wait for the membership entry to reach this node (or retry the round).
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

async fn handle_request(node: Node, request: NodeRequest) {
    match request {
        NodeRequest::Propose { command, reply } => {
            reply.send(node.propose_anywhere(command).await);
        }
        NodeRequest::Heartbeat {
            id,
            incarnation,
            reply,
        } => {
            reply.send(node.heartbeat_anywhere(id, incarnation).await);
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
                // Borrowed, not cloned: a tick runs several times a second.
                let actions = {
                    let image = node.metadata.borrow();
                    if leading_term != term {
                        liveness.reset(now_ms(), &image);
                        leading_term = term;
                        continue;
                    }
                    liveness.tick(now_ms(), &image)
                };
                for action in actions {
                    let command = match action {
                        LivenessAction::Fence(id) => Command::FenceBroker { id },
                        LivenessAction::Unfence(id) => Command::UnfenceBroker { id },
                    };
                    match node.write_here(command, node.request_timeout).await {
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
