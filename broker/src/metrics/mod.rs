//! The node's metrics and health endpoint (`--metrics-listen`): Prometheus text at `/metrics`,
//! `/ready` and `/live`, served by [`server::MetricsServer`] on a thread of its own. The
//! shards count their own work in their [`crate::probe`] (no lock, no shared cache line on the
//! data path); a scrape asks every shard for a [`snapshot`] over the bus and [`encode`]s it
//! with the `prometheus-client` crate. Started and stopped by [`crate::node`]; sits beside the
//! network layer, above the services it reads (shards, group coordinators).

pub mod encode;
pub mod server;
pub mod snapshot;

use std::sync::atomic::AtomicBool;

/// Whether the node serves: set by the node once its listeners accept, cleared when a
/// shutdown begins. `/ready` and `sluice_node_ready` read it.
#[derive(Debug, Default)]
pub struct Readiness {
    /// True between "the node serves" and "a shutdown began".
    pub ready: AtomicBool,
}
