//! The controller's TCP protocol: Raft RPCs between voters, proposals forwarded to the leader
//! and broker heartbeats, as length-prefixed postcard frames ([`crate::codec`]) over tokio
//! sockets on the controller thread.
//!
//! One request, one response, in order, on a connection. A voter keeps one connection per
//! peer for Raft RPCs ([`PeerClient`], reconnected after any error); forwarded proposals and
//! heartbeats use a connection per call ([`call_once`]: a few per second per broker).
//! The server ([`serve`]) reads a request, hands it to openraft or to the node's
//! [`LocalHandler`], writes the answer.
//!
//! Errors: a peer that cannot be connected to is `Unreachable` for openraft (it backs off);
//! any other failure drops the connection and is a `NetworkError`; an answer that is an
//! openraft error is a `RemoteError`. Nothing from the socket can panic the node: frames are
//! bounded and decoding is checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{BasicNode, CommandResult, Raft, TypeConfig};
use crate::codec::{self, FRAME_HEADER_BYTES};
use crate::error::ControllerError;
use crate::metadata::{BrokerId, Command};

/// A request on the controller protocol.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft: replicate entries / heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: ask for a vote.
    Vote(VoteRequest<u64>),
    /// Raft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command forwarded to the node believed to lead.
    Propose(Command),
    /// A broker's heartbeat, for the leader's liveness tracking.
    BrokerHeartbeat {
        /// The broker.
        id: BrokerId,
        /// Its registration's incarnation.
        incarnation: u64,
    },
    /// A node outside the voters asks the leader to make it a learner at `addr` (or to move
    /// it there).
    AddLearner {
        /// The node's id.
        id: u64,
        /// Where its controller listens.
        addr: String,
    },
}

/// The answer to a [`Request`], same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    /// Answer to `Vote`.
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    /// Answer to `InstallSnapshot`.
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// Answer to `Propose`: the command's result, or `NotLeader`.
    Propose(CommandResult),
    /// Answer to `BrokerHeartbeat`.
    BrokerHeartbeat(Result<(), ControllerError>),
    /// Answer to `AddLearner`: done, or `NotLeader`.
    AddLearner(Result<(), ControllerError>),
}

/// What the server cannot answer through openraft alone: proposals and heartbeats, handled by
/// the node ([`super::node`]) without forwarding them again.
pub trait LocalHandler: Clone + Send + Sync + 'static {
    /// Propose on this node if it leads; otherwise `NotLeader`.
    fn propose(&self, command: Command) -> impl std::future::Future<Output = CommandResult> + Send;
    /// Take a heartbeat if this node leads; otherwise `NotLeader`.
    fn heartbeat(
        &self,
        id: BrokerId,
        incarnation: u64,
    ) -> impl std::future::Future<Output = Result<(), ControllerError>> + Send;
    /// Add (or move) learner `id` at `addr` if this node leads; otherwise `NotLeader`.
    fn add_learner(
        &self,
        id: u64,
        addr: String,
    ) -> impl std::future::Future<Output = Result<(), ControllerError>> + Send;
}

/// Write one frame.
pub async fn write_frame<T: Serialize>(
    stream: &mut TcpStream,
    value: &T,
    what: &'static str,
) -> Result<(), ControllerError> {
    let frame = codec::encode_frame(value, what)?;
    stream
        .write_all(&frame)
        .await
        .map_err(|error| network_error(stream, &error))
}

/// Read one frame; `Ok(None)` on a clean end of stream before a header.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    stream: &mut TcpStream,
    what: &'static str,
) -> Result<Option<T>, ControllerError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(network_error(stream, &error)),
    }
    let len = codec::frame_payload_len(header)?;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|error| network_error(stream, &error))?;
    codec::decode(&payload, what).map(Some)
}

fn network_error(stream: &TcpStream, error: &std::io::Error) -> ControllerError {
    ControllerError::Network {
        peer: stream
            .peer_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|_| "?".into()),
        message: error.to_string(),
    }
}

/// One request on a fresh connection, with a deadline.
pub async fn call_once(
    addr: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Response, ControllerError> {
    let exchange = async {
        let mut stream =
            TcpStream::connect(addr)
                .await
                .map_err(|error| ControllerError::Network {
                    peer: addr.to_string(),
                    message: error.to_string(),
                })?;
        stream.set_nodelay(true).ok();
        write_frame(&mut stream, request, "controller request").await?;
        read_frame(&mut stream, "controller response")
            .await?
            .ok_or_else(|| ControllerError::Network {
                peer: addr.to_string(),
                message: "connection closed before the answer".into(),
            })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ControllerError::Timeout {
            elapsed_ms: timeout.as_millis() as u64,
        })?
}

/// Connections served at once. A voter holds one to each peer (4 at most with 5 voters) and
/// every forwarded proposal or heartbeat holds one for a round trip; 256 leaves room for the
/// brokers of a large cluster heartbeating at once. Beyond it new connections are closed (the
/// caller retries) rather than queued without bound.
pub const CONNECTIONS_MAX: usize = 256;

/// Serve the controller protocol on `listener` until the task is dropped.
pub async fn serve<H: LocalHandler>(listener: TcpListener, raft: Raft, local: H) {
    let connections = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: wait a little rather than spin.
                warn!(%error, "controller accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            warn!(%peer, "controller connection limit reached; closing the new connection");
            continue;
        };
        stream.set_nodelay(true).ok();
        let (raft, local) = (raft.clone(), local.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, raft, local).await;
            drop(permit);
        });
    }
}

async fn serve_connection<H: LocalHandler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    raft: Raft,
    local: H,
) {
    loop {
        let request: Request = match read_frame(&mut stream, "controller request").await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(error) => {
                debug!(%peer, %error, "dropping controller connection");
                return;
            }
        };
        let response = match request {
            Request::AppendEntries(rpc) => Response::AppendEntries(raft.append_entries(rpc).await),
            Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                Response::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            Request::Propose(command) => Response::Propose(local.propose(command).await),
            Request::BrokerHeartbeat { id, incarnation } => {
                Response::BrokerHeartbeat(local.heartbeat(id, incarnation).await)
            }
            Request::AddLearner { id, addr } => {
                Response::AddLearner(local.add_learner(id, addr).await)
            }
        };
        if let Err(error) = write_frame(&mut stream, &response, "controller response").await {
            debug!(%peer, %error, "dropping controller connection");
            return;
        }
    }
}

/// Makes a [`PeerClient`] per Raft peer.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            stream: None,
        }
    }
}

/// The Raft RPC client of one peer: one connection, reopened after an error.
#[derive(Debug)]
pub struct PeerClient {
    target: u64,
    addr: String,
    stream: Option<TcpStream>,
}

/// Why an exchange failed: before or after the connection existed.
enum ExchangeError {
    Connect(std::io::Error),
    Other(ControllerError),
}

impl PeerClient {
    async fn exchange(
        &mut self,
        request: &Request,
        ttl: Duration,
    ) -> Result<Response, ExchangeError> {
        let result = tokio::time::timeout(ttl, self.exchange_inner(request)).await;
        let result = match result {
            Ok(result) => result,
            Err(_) => Err(ExchangeError::Other(ControllerError::Timeout {
                elapsed_ms: ttl.as_millis() as u64,
            })),
        };
        if result.is_err() {
            // The stream may hold half a frame or a late answer: never reuse it.
            self.stream = None;
        }
        result
    }

    async fn exchange_inner(&mut self, request: &Request) -> Result<Response, ExchangeError> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .await
                .map_err(ExchangeError::Connect)?;
            stream.set_nodelay(true).ok();
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(ExchangeError::Other(ControllerError::ShutDown));
        };
        write_frame(stream, request, "raft request")
            .await
            .map_err(ExchangeError::Other)?;
        read_frame(stream, "raft response")
            .await
            .map_err(ExchangeError::Other)?
            .ok_or_else(|| {
                ExchangeError::Other(ControllerError::Network {
                    peer: self.addr.clone(),
                    message: "connection closed before the answer".into(),
                })
            })
    }

    fn rpc_error<E: std::error::Error>(&self, error: ExchangeError) -> RPCError<u64, BasicNode, E> {
        match error {
            ExchangeError::Connect(error) => RPCError::Unreachable(Unreachable::new(&error)),
            ExchangeError::Other(error) => RPCError::Network(NetworkError::new(&error)),
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, E> {
        RPCError::Network(NetworkError::new(&ControllerError::Network {
            peer: self.addr.clone(),
            message: "answer of the wrong kind".into(),
        }))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self
            .exchange(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(Ok(answer))) => Ok(answer),
            Ok(Response::AppendEntries(Err(error))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(error) => Err(self.rpc_error(error)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self
            .exchange(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(Ok(answer))) => Ok(answer),
            Ok(Response::InstallSnapshot(Err(error))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(error) => Err(self.rpc_error(error)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.exchange(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(Ok(answer))) => Ok(answer),
            Ok(Response::Vote(Err(error))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Ok(_) => Err(self.unexpected()),
            Err(error) => Err(self.rpc_error(error)),
        }
    }
}
