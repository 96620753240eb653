//! Sluice's cluster controller: the cluster metadata (brokers and their endpoints, topics,
//! partition placement, leaders, ISR, leader and partition epochs) as a replicated state
//! machine on openraft 0.9, as Kafka's KRaft does it.
//!
//! # What runs where
//!
//! ```text
//!   broker process (later: `sluice serve`)
//!   ┌───────────────────────────────────────────────────────────────────────────────┐
//!   │ shards (glommio, one per core)           thread "sluice-controller"           │
//!   │ ┌──────────┐  propose / heartbeat        ┌──────────────────────────────────┐ │
//!   │ │ shard 0  │── ControllerHandle ────────▶│ current-thread tokio runtime     │ │
//!   │ │ shard 1  │   (bounded queue)           │  openraft Raft<TypeConfig>       │ │
//!   │ │   ...    │◀─ metadata() / subscribe() ─│  LogStore ─┐ StateMachineStore ─┐│ │
//!   │ └──────────┘   (watch of Arc<Image>)     │  liveness driver (leader only)  ││ │
//!   │                                          │  TCP server ◀─▶ other voters    ││ │
//!   │                                          └────────────┼───────────────────┼┘ │
//!   └───────────────────────────────────────────────────────┼───────────────────┼──┘
//!                                              <data_dir>/vote, log/, purged   snapshot
//! ```
//!
//! - Tokio is confined to the controller's own thread ([`Controller::start`] spawns it with a
//!   current-thread runtime); the shards never run tokio and never block on the controller:
//!   they call the `_async` methods of the `Send` [`ControllerHandle`] or read the latest
//!   [`MetadataImage`] from a `watch`.
//! - 1, 3 or 5 voters are fixed at bootstrap (`--controller-voters id@host:port,...`, see
//!   [`parse_voters`]); a node bootstraps only when its directory is empty. One node is one
//!   voter ([`ControllerConfig::single_node`]): the same code, no cluster flags.
//! - Vote, log and snapshots go to disk through one atomic-write helper
//!   ([`raft::files::atomic_write_blocking`]): an acknowledged entry survives a crash.
//!
//! # The parts
//!
//! - [`metadata`]: the image and its pure state machine, [`MetadataImage::apply`] of a
//!   [`Command`] (register, fence/unfence, create/delete/grow topics, AlterIsr with KIP-497
//!   epoch checks, leader elections from the ISR with unclean election only on request,
//!   reassignment that adds before it drops).
//! - [`placement`]: pure, deterministic, even and rack-aware replica placement.
//! - [`liveness`]: the leader's pure broker-session machine (heartbeats and time in, fence and
//!   unfence proposals out).
//! - [`raft`]: openraft's type config, storage, TCP network, and the node thread.
//! - [`codec`]: postcard encoding and the length-prefixed frames of the controller protocol.
//!
//! # What the broker will do with it (not wired yet)
//!
//! Each broker node starts a controller (a voter, or later an observer) and registers itself
//! (`RegisterBroker` with one endpoint per shard and a new incarnation per process start),
//! then heartbeats every fraction of `broker_session_timeout_ms`. Partition leaders send
//! `AlterIsr` for the replication core's ISR shrink/expand proposals; every shard follows
//! `subscribe()` to learn leaders and epochs and drives its replicas accordingly; topic admin
//! requests become `CreateTopic`/`DeleteTopic`/`AddPartitions` proposals.
//!
//! # Example: a single node
//!
//! ```no_run
//! use controller::{BrokerId, Command, Controller, ControllerConfig};
//!
//! let config = ControllerConfig::single_node("target/test-data/doc-controller", "127.0.0.1:9093".parse()?);
//! let controller = Controller::start(config)?;
//! controller.propose(Command::RegisterBroker {
//!     id: BrokerId(1),
//!     endpoints: vec!["127.0.0.1:9092".into()],
//!     rack: None,
//!     incarnation: 1,
//! })?;
//! controller.propose(Command::CreateTopic {
//!     name: "orders".into(),
//!     partitions: 6,
//!     replication_factor: 1,
//!     min_insync: 1,
//!     config: Default::default(),
//! })?;
//! assert_eq!(controller.metadata().topics["orders"].partitions.len(), 6);
//! controller.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
