//! placeholder
pub mod codec;
pub mod config;
pub mod error;
pub mod liveness;
pub mod metadata;
pub mod placement;
pub mod raft;

pub use config::{parse_voters, ControllerConfig, Voter};
pub use error::ControllerError;
pub use metadata::{BrokerId, Command, ElectionKind, MetadataImage, Outcome, TopicPartition};
pub use raft::node::{Controller, ControllerHandle};
