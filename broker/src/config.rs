//! The broker's validated configuration (what [`crate::Node::start`] takes; the `sluice` binary
//! builds it from its command line), and the mapping of topic settings onto the storage
//! engine's [`storage::LogConfig`]. The bottom of the broker's layers: it imports no other
//! module of the crate, so every layer may read it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wire::protocol::TopicConfig;
use wire::Durability;

/// Default of [`Config::tail_cache_bytes_per_core`] (256 MiB; its arithmetic is on the storage
/// constant), re-exported so the command line needs no storage dependency.
pub use storage::TAIL_CACHE_BYTES_PER_CORE_DEFAULT;

/// Everything a broker node runs with; logged at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of the data directory.
    pub data_dir: PathBuf,
    /// Main listener address.
    pub listen: SocketAddr,
    /// Number of shards.
    pub shards: usize,
    /// First per-shard port, 0 for free ports.
    pub shard_port_base: u16,
    /// Ports advertised for the shard listeners (BASE + shard), when they differ from the bound ones.
    pub advertised_shard_port_base: Option<u16>,
    /// Host advertised in metadata.
    pub advertised_host: String,
    /// This broker's id.
    pub broker_id: u32,
    /// Largest request frame; a larger one is answered with an error and its connection
    /// closed. At most `max_request_bytes_in_flight` and `receive_buffer_budget_bytes`.
    pub max_frame_bytes: usize,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once by the node; more are closed at once (see
    /// [`crate::net::limits`] for the memory arithmetic of every network bound).
    pub max_connections: usize,
    /// Bytes one connection may have in flight: its grown receive buffer plus, for every
    /// request read and not yet answered, its frame and the most its response can hold.
    pub max_request_bytes_in_flight: usize,
    /// Receive-buffer bytes (beyond each connection's first buffer) all connections of one
    /// shard may hold.
    pub receive_buffer_budget_bytes: usize,
    /// Request bytes in flight (as charged per connection) all connections of one shard may
    /// hold.
    pub request_budget_bytes: usize,
    /// A frame must arrive whole, and a response be taken by its client, within this.
    pub request_timeout: Duration,
    /// How long an idle shard's reactor spins, polling for completions, before it parks in
    /// the kernel (glommio's `spin_before_park`); zero parks at once. Spinning saves the
    /// sleep and wake-up of a single request's round trip, at the price of that much CPU per
    /// idle moment (see `--spin-before-park-us`).
    pub spin_before_park: Duration,
    /// Period of retention passes.
    pub retention_check: Duration,
    /// Partitions of `__consumer_offsets` (the registry's value once the topic exists).
    pub offsets_partitions: u32,
    /// Segment size of `__consumer_offsets` (when it is created).
    pub offsets_segment_bytes: u64,
    /// Applied commit records between two offsets snapshots.
    pub offsets_snapshot_records: u64,
    /// Session timeout bounds and delays of consumer groups.
    pub group_limits: GroupLimits,
    /// Payload bytes one shard's inbox admits at once (see [`crate::shard::bus`]).
    pub shard_inbox_bytes: u32,
    /// How long binding a listen address that is still in use is retried (a broker restarted
    /// right after kill -9 waits out the dead process's listeners) before giving up.
    pub bind_retry: Duration,
    /// Settings new topics get unless the request says otherwise.
    pub topic_defaults: TopicDefaults,
    /// Bytes of recently appended data the logs of one shard keep in memory for readers, in
    /// total (storage's [`storage::ShardBudget`]; default
    /// [`storage::TAIL_CACHE_BYTES_PER_CORE_DEFAULT`], 256 MiB). The node's tail caches hold at
    /// most `shards x tail_cache_bytes_per_core` plus the chunks being written (see
    /// [`storage::CoreResources`]): 2 cores x 256 MiB = 512 MiB, 24 x 256 MiB = 6 GiB.
    pub tail_cache_bytes_per_core: usize,
    /// Test machinery, never set by the command line (`None`): faults injected into every file
    /// operation of every partition log of this node (the broker's failure-path tests arm it
    /// while the node runs). See [`storage::FaultPlan`].
    pub storage_faults: Option<Arc<storage::FaultPlan>>,
    /// Address of the metrics and health endpoint (`/metrics`, `/ready`, `/live`); `None`:
    /// no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// The cluster this node belongs to (one voter of its own when alone).
    pub cluster: ClusterSettings,
}

/// How a node takes part in its cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The controller quorum's voters (`--controller-voters`), fixed at bootstrap: 1, 3 or 5.
    /// Empty: this node alone, one voter listening on `controller_listen`.
    pub controller_voters: Vec<controller::Voter>,
    /// Where a lone node's controller listens (port 0: any free port).
    pub controller_listen: SocketAddr,
    /// This broker's rack, for rack-aware replica placement.
    pub rack: Option<String>,
    /// Replicas per partition of a topic created without a replication factor.
    pub default_replication_factor: u16,
    /// `min.insync.replicas` of a topic created without one.
    pub min_insync_replicas: u16,
    /// `replica.lag.time.max.ms`: a follower not caught up for longer leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// A broker that does not heartbeat for this long is fenced: it leads nothing and leaves
    /// the ISRs; new leaders come from the ISR. Heartbeats go every quarter of it.
    pub broker_session_timeout: Duration,
    /// Replicas of `__consumer_offsets` (at most the number of brokers).
    pub offsets_replication_factor: u16,
}

impl ClusterSettings {
    /// A lone node: one voter on a free loopback port, replication factor 1.
    pub fn single_node() -> ClusterSettings {
        ClusterSettings {
            controller_voters: Vec::new(),
            controller_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rack: None,
            default_replication_factor: 1,
            min_insync_replicas: 1,
            replica_lag_time_max: Duration::from_secs(10),
            broker_session_timeout: Duration::from_secs(3),
            offsets_replication_factor: 3,
        }
    }

    /// True when this node is one of several.
    pub fn is_multi_node(&self) -> bool {
        self.controller_voters.len() > 1
    }
}

impl Config {
    /// The per-shard resource budgets each shard installs before opening its logs.
    pub fn shard_budget(&self) -> storage::ShardBudget {
        storage::ShardBudget {
            tail_cache_bytes: self.tail_cache_bytes_per_core,
        }
    }
}

/// Limits and delays the group coordinator applies to every group.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    /// Shortest session timeout a member may ask for.
    pub min_session_timeout: Duration,
    /// Longest session timeout a member may ask for.
    pub max_session_timeout: Duration,
    /// How long a rebalance of an empty group waits for more members to arrive.
    pub initial_rebalance_delay: Duration,
    /// Most members in one group: bounds a group's memory and the leader's JoinGroup answer.
    pub max_members: usize,
}

/// Defaults of topic settings.
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    /// Partitions.
    pub partitions: u32,
    /// Retention in ms, -1 forever.
    pub retention_ms: i64,
    /// fsync policy.
    pub durability: Durability,
    /// Segment size.
    pub segment_bytes: u64,
    /// Largest batch.
    pub max_batch_bytes: u32,
}

/// The storage settings of one partition of a topic on a node whose test fault plan (if any)
/// is `faults` ([`Config::storage_faults`]).
pub fn log_config(
    topic: &TopicConfig,
    faults: Option<&Arc<storage::FaultPlan>>,
) -> storage::LogConfig {
    storage::LogConfig {
        segment_bytes_max: topic.segment_bytes,
        durability: topic.durability,
        retention_time: (topic.retention_ms >= 0)
            .then(|| Duration::from_millis(topic.retention_ms as u64)),
        retention_bytes: (topic.retention_bytes >= 0).then_some(topic.retention_bytes as u64),
        batch_bytes_max: topic.max_batch_bytes as usize,
        faults: faults.cloned(),
        ..storage::LogConfig::default()
    }
}
