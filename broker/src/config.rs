//! The broker's validated configuration (what [`crate::Node::start`] takes; the `sluice` binary
//! builds it from its command line), and the mapping of topic settings onto the storage
//! engine's [`storage::LogConfig`]. The bottom of the broker's layers: it imports no other
//! module of the crate, so every layer may read it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use wire::protocol::TopicConfig;
use wire::Durability;

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
    /// Largest request frame.
    pub max_frame_bytes: usize,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
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
    /// Address of the metrics and health endpoint (`/metrics`, `/ready`, `/live`); `None`:
    /// no endpoint.
    pub metrics_listen: Option<SocketAddr>,
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

/// The storage settings of one partition of a topic.
pub fn log_config(topic: &TopicConfig) -> storage::LogConfig {
    storage::LogConfig {
        segment_bytes_max: topic.segment_bytes,
        durability: topic.durability,
        retention_time: (topic.retention_ms >= 0)
            .then(|| Duration::from_millis(topic.retention_ms as u64)),
        retention_bytes: (topic.retention_bytes >= 0).then_some(topic.retention_bytes as u64),
        batch_bytes_max: topic.max_batch_bytes as usize,
        ..storage::LogConfig::default()
    }
}
