//! The broker's validated configuration, built from [`crate::args::ServeArgs`], and the mapping
//! of topic settings onto the storage engine's [`storage::LogConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use wire::protocol::{DurabilitySetting, TopicConfig};

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
    pub group_limits: crate::group::state::GroupLimits,
    /// Settings new topics get unless the request says otherwise.
    pub topic_defaults: TopicDefaults,
}

/// Defaults of topic settings.
#[derive(Debug, Clone)]
pub struct TopicDefaults {
    /// Partitions.
    pub partitions: u32,
    /// Retention in ms, -1 forever.
    pub retention_ms: i64,
    /// fsync policy.
    pub durability: DurabilitySetting,
    /// Segment size.
    pub segment_bytes: u64,
    /// Largest batch.
    pub max_batch_bytes: u32,
}

/// Parses `always`, `never` or `interval` (with the interval in ms).
pub fn parse_durability(text: &str, interval_ms: u32) -> anyhow::Result<DurabilitySetting> {
    Ok(match text {
        "always" => DurabilitySetting::always(),
        "never" => DurabilitySetting::never(),
        "interval" => DurabilitySetting::interval(interval_ms.max(1), 4 << 20),
        other => bail!("unknown durability {other:?}: expected always, interval or never"),
    })
}

/// The storage settings of one partition of a topic.
pub fn log_config(topic: &TopicConfig) -> storage::LogConfig {
    let durability = match topic.durability.kind {
        DurabilitySetting::ALWAYS => storage::Durability::Always,
        DurabilitySetting::NEVER => storage::Durability::Never,
        _ => storage::Durability::Interval {
            interval: Duration::from_millis(u64::from(topic.durability.interval_ms.max(1))),
            bytes: topic.durability.interval_bytes.max(1),
        },
    };
    storage::LogConfig {
        segment_bytes_max: topic.segment_bytes,
        durability,
        retention_time: (topic.retention_ms >= 0)
            .then(|| Duration::from_millis(topic.retention_ms as u64)),
        retention_bytes: (topic.retention_bytes >= 0).then_some(topic.retention_bytes as u64),
        batch_bytes_max: topic.max_batch_bytes as usize,
        ..storage::LogConfig::default()
    }
}
