//! The metadata state machine replicated by openraft 0.9, on the controller's own thread.
//!
//! - [`TypeConfig`]: log entries carry a [`Command`]; applying one
//!   answers a [`CommandResult`]; nodes are `u64` ids with a `host:port` ([`BasicNode`]).
//! - [`log_store`]: the Raft vote and log on disk; [`state_machine`]: the
//!   [`MetadataImage`](crate::metadata::MetadataImage) and its snapshots on disk; both write
//!   through [`files`] (temp file, fsync, rename, fsync dir).
//! - [`network`]: Raft RPCs, forwarded proposals and broker heartbeats over TCP (tokio).
//! - [`node`]: [`Controller::start`](node::Controller::start) spawns the thread with its
//!   current-thread tokio runtime and returns the [`ControllerHandle`](node::ControllerHandle).

pub mod files;
pub mod log_store;
pub mod network;
pub mod node;
pub mod state_machine;

pub use openraft::BasicNode;

use crate::error::ControllerError;
use crate::metadata::{Command, Outcome};

/// What applying one committed command answered: the state machine's outcome or its
/// rejection (a rejected command is still a log entry; every replica rejects it alike).
pub type CommandResult = Result<Outcome, ControllerError>;

openraft::declare_raft_types!(
    /// The controller's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// A Raft log entry of the controller.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft log id (term, leader, index).
pub type LogId = openraft::LogId<u64>;
/// The controller's Raft.
pub type Raft = openraft::Raft<TypeConfig>;
/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<u64>;

/// An openraft storage error from a controller error (the message is kept).
pub(crate) fn storage_error(error: ControllerError) -> StorageError {
    openraft::StorageIOError::write(&error).into()
}

/// An openraft storage read error from a controller error.
pub(crate) fn storage_read_error(error: ControllerError) -> StorageError {
    openraft::StorageIOError::read(&error).into()
}
