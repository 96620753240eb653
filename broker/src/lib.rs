//! The Sluice broker as a library: [`Node::start`] runs a thread-per-core node (one glommio
//! executor pinned per core) serving partition logs over TCP, and returns a [`NodeHandle`] with
//! the bound addresses, [`NodeHandle::shutdown`] and [`NodeHandle::wait`]. The `sluice` binary
//! (crate `sluice/`) is a thin command line over it; tests and tools embed it directly. It
//! depends on `wire` (protocol, policies) and `storage` (the partition log), never on the
//! client or the bench.
//!
//! Layers inside the crate, each importing only the ones below it (`tests/layering.rs` checks):
//!
//! ```text
//!  node                         start-up, listeners' life, shutdown           (top)
//!   └─ net, metrics             listeners, connections: the only broker sockets; the
//!       │                       metrics/health HTTP endpoint (its own thread, reads the
//!       │                       shards through the bus)
//!       └─ handler              one file per API; builds the bus's work items
//!           └─ services         per-shard services: group coordinator (group), topic admin
//!              group, admin,    (admin), producer ids (producer_ids)
//!              producer_ids
//!               └─ shard        owned partitions, bus (inbox), pump, router, per-core state
//!                   └─ partition   one partition: log, role, high watermark, the point where
//!                       │          an append becomes acknowledgeable (the replication seam)
//!                       └─ config, topics, producer_state, error_code,     (bottom)
//!                          probe (per-shard counters and latency histograms),
//!                          session (this broker's view of its controller session)
//! ```
//! `storage` and `wire` sit below all of them.

pub mod admin;
pub mod cluster_metadata;
pub mod config;
pub mod error_code;
pub mod group;
pub mod handler;
pub mod membership;
pub mod metrics;
pub mod net;
pub mod node;
pub mod partition;
pub mod probe;
pub mod producer_ids;
pub mod producer_state;
pub mod replica;
pub mod services;
pub mod session;
pub mod shard;
pub mod topics;

pub use config::{ClusterSettings, Config, GroupLimits, TopicDefaults};
pub use node::{Node, NodeError, NodeHandle, ShutdownTrigger};
