//! The controller's one error type, [`ControllerError`].
//!
//! It travels: a rejected command is answered to the proposer, possibly over the controller's
//! TCP protocol when the proposal was forwarded to the leader, so the enum is `serde` and its
//! payloads are plain data (I/O and Raft failures are carried as their rendered message).
//! Produced by the pure metadata state machine ([`crate::metadata`]), placement, the codec and
//! the Raft runtime ([`crate::raft`]).

use serde::{Deserialize, Serialize};

use crate::metadata::BrokerId;

/// Everything that can go wrong in the controller, from a rejected command to a failed fsync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControllerError {
    /// The command names a broker that never registered.
    #[error("broker {id} is not registered")]
    UnknownBroker {
        /// The broker named by the command.
        id: BrokerId,
    },
    /// The heartbeat's incarnation is not the broker's current registration (an old process).
    #[error("broker {id}: incarnation {got} is stale (registered incarnation {registered})")]
    StaleIncarnation {
        /// The broker.
        id: BrokerId,
        /// The incarnation the request carried.
        got: u64,
        /// The incarnation of the current registration.
        registered: u64,
    },
    /// A registration needs at least one endpoint.
    #[error("broker {id}: a registration needs at least one endpoint")]
    NoEndpoints {
        /// The broker.
        id: BrokerId,
    },
    /// `CreateTopic` for a name that exists.
    #[error("topic {name} already exists")]
    TopicExists {
        /// The topic.
        name: String,
    },
    /// The command names a topic that does not exist.
    #[error("topic {name} does not exist")]
    UnknownTopic {
        /// The topic.
        name: String,
    },
    /// The command names a partition the topic does not have.
    #[error("topic {topic} has no partition {partition}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition index.
        partition: u32,
    },
    /// A topic argument is out of range (empty name, zero partitions, min_insync > RF, ...).
    #[error("invalid topic request for {name}: {reason}")]
    InvalidTopic {
        /// The topic.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Not enough live (registered, unfenced) brokers for the replication factor.
    #[error(
        "replication factor {replication_factor} needs that many live brokers; {live} are live"
    )]
    NotEnoughBrokers {
        /// The requested replication factor.
        replication_factor: u16,
        /// Live brokers now.
        live: usize,
    },
    /// AlterIsr with a leader epoch that is not the partition's current one (KIP-497
    /// `FENCED_LEADER_EPOCH`).
    #[error("{topic}-{partition}: leader epoch {got} is stale (current {current})")]
    FencedLeaderEpoch {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The epoch in the request.
        got: u32,
        /// The partition's current leader epoch.
        current: u32,
    },
    /// AlterIsr with a partition epoch that is not the current one (KIP-497
    /// `INVALID_UPDATE_VERSION`).
    #[error("{topic}-{partition}: partition epoch {got} is stale (current {current})")]
    InvalidUpdateVersion {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The epoch in the request.
        got: u32,
        /// The partition's current partition epoch.
        current: u32,
    },
    /// An ISR or replica set that breaks a rule (not a subset of the replicas, without the
    /// leader, with a fenced or unknown broker, duplicates, empty).
    #[error("{topic}-{partition}: invalid replica set: {reason}")]
    InvalidReplicas {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What is wrong.
        reason: String,
    },
    /// Bytes that do not decode as the expected message.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// A frame longer than the protocol allows.
    #[error("frame of {len_bytes} bytes exceeds the limit of {max_bytes}")]
    FrameTooLarge {
        /// Announced length.
        len_bytes: u64,
        /// The limit ([`crate::codec::FRAME_MAX_BYTES`]).
        max_bytes: u64,
    },
    /// A file operation of the controller's storage failed.
    #[error("controller storage: {path}: {message}")]
    Storage {
        /// The file or directory.
        path: String,
        /// The OS error.
        message: String,
    },
    /// A network operation failed.
    #[error("controller network: {peer}: {message}")]
    Network {
        /// The peer address.
        peer: String,
        /// What failed.
        message: String,
    },
    /// The voter list is not usable.
    #[error("invalid controller configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// No leader is known, or the node asked is not the leader (retry elsewhere or later).
    #[error("no controller leader (known leader: {leader:?})")]
    NotLeader {
        /// The leader this node believes in, if any.
        leader: Option<u64>,
    },
    /// The operation did not finish within its deadline.
    #[error("controller operation timed out after {elapsed_ms} ms")]
    Timeout {
        /// How long it waited.
        elapsed_ms: u64,
    },
    /// openraft reported an error.
    #[error("raft: {message}")]
    Raft {
        /// openraft's message.
        message: String,
    },
    /// The controller thread has stopped.
    #[error("the controller has shut down")]
    ShutDown,
}

impl ControllerError {
    /// A storage error for `path` from an I/O error.
    pub fn storage(path: &std::path::Path, error: &std::io::Error) -> Self {
        ControllerError::Storage {
            path: path.display().to_string(),
            message: error.to_string(),
        }
    }
}
