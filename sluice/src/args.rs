//! Command-line arguments of `sluice serve` (clap), their environment variables and the optional
//! config file. [`ServeArgs::into_config`] turns them into a validated [`broker::Config`]; the
//! broker library never sees clap.
//!
//! Precedence, highest first: command-line flag, environment variable, config file, default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use broker::{Config, GroupLimits, TopicDefaults};
use wire::Durability;

/// `sluice serve`: run a broker node.
#[derive(Debug, Clone, Args)]
#[command(args_override_self = true)]
pub struct ServeArgs {
    /// Where partition logs and metadata live. Must be on a real disk (O_DIRECT), not tmpfs.
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Main listener (bound once by this process, every shard accepts on it). Port 0 picks a
    /// free port; the chosen address is printed on stdout as `sluice listening on HOST:PORT`.
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:9092")]
    pub listen: SocketAddr,
    /// Number of shards (one glommio executor pinned per core). 0 = one per available core.
    #[arg(long, env = "SLUICE_CORES", default_value_t = 0)]
    pub cores: usize,
    /// First port of the per-shard listeners (shard i listens on BASE + i); 0 = free ports.
    /// Clients that know a partition's shard connect there and skip the cross-core hop.
    #[arg(long, env = "SLUICE_SHARD_PORT_BASE", default_value_t = 0)]
    pub shard_port_base: u16,
    /// Ports advertised for the shard listeners, BASE + i (default: the ports they are bound
    /// to). For clients that reach the shards through a proxy or NAT, like Kafka's advertised
    /// listeners.
    #[arg(long, env = "SLUICE_ADVERTISED_SHARD_PORT_BASE")]
    pub advertised_shard_port_base: Option<u16>,
    /// Host advertised in metadata (default: the listen host).
    #[arg(long, env = "SLUICE_ADVERTISED_HOST")]
    pub advertised_host: Option<String>,
    /// This broker's id.
    #[arg(long, env = "SLUICE_BROKER_ID", default_value_t = 0)]
    pub broker_id: u32,
    /// Largest request frame accepted, in bytes; a larger one is answered with an error and
    /// the connection closed. At most --max-request-bytes-in-flight and
    /// --receive-buffer-budget-bytes.
    #[arg(long, env = "SLUICE_MAX_FRAME_BYTES", default_value_t = 64 << 20)]
    pub max_frame_bytes: usize,
    /// Close connections that send nothing for this long (ms).
    #[arg(long, env = "SLUICE_IDLE_TIMEOUT_MS", default_value_t = 600_000)]
    pub idle_timeout_ms: u64,
    /// Connections the node serves at once; further ones are closed at once (and counted).
    /// Each holds a 16 KiB receive buffer: 10 000 x 16 KiB = 160 MiB.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = broker::net::limits::MAX_CONNECTIONS_DEFAULT)]
    pub max_connections: usize,
    /// Bytes one connection may have in flight: its grown receive buffer plus, per request
    /// read and not yet answered, its frame and the most its response can hold (a fetch's
    /// max_bytes). Beyond it the connection stops reading. Default: a 64 MiB frame + 16 MiB.
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES_IN_FLIGHT", default_value_t = broker::net::limits::MAX_REQUEST_BYTES_IN_FLIGHT_DEFAULT)]
    pub max_request_bytes_in_flight: usize,
    /// Receive-buffer bytes (beyond every connection's first 16 KiB) the connections of one
    /// shard may hold; a connection whose frame needs more stops reading until some is free.
    #[arg(long, env = "SLUICE_RECEIVE_BUFFER_BUDGET_BYTES", default_value_t = broker::net::limits::RECEIVE_BUFFER_BUDGET_BYTES_DEFAULT)]
    pub receive_buffer_budget_bytes: usize,
    /// Request bytes in flight (as --max-request-bytes-in-flight counts them) the connections
    /// of one shard may hold together.
    #[arg(long, env = "SLUICE_REQUEST_BUDGET_BYTES", default_value_t = broker::net::limits::REQUEST_BUDGET_BYTES_DEFAULT)]
    pub request_budget_bytes: usize,
    /// A request frame must arrive whole, and a response be read by its client, within this
    /// (ms); otherwise the connection is closed and its memory given back.
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT_MS", default_value_t = broker::net::limits::REQUEST_TIMEOUT_MS_DEFAULT)]
    pub request_timeout_ms: u64,
    /// How long (µs) an idle shard spins, polling for work, before it sleeps in the kernel; 0
    /// sleeps at once. Spinning saves a sleep and a wake-up per request when requests come
    /// one at a time (batch 1, one in flight), and costs up to this much CPU each time a
    /// shard runs out of work.
    #[arg(long, env = "SLUICE_SPIN_BEFORE_PARK_US", default_value_t = broker::net::limits::SPIN_BEFORE_PARK_US_DEFAULT)]
    pub spin_before_park_us: u64,
    /// Default partitions of new topics.
    #[arg(long, env = "SLUICE_DEFAULT_PARTITIONS", default_value_t = 1)]
    pub default_partitions: u32,
    /// Default retention of new topics in ms (-1: forever). Default 14 days.
    #[arg(long, env = "SLUICE_DEFAULT_RETENTION_MS", default_value_t = 14 * 24 * 3600 * 1000)]
    pub default_retention_ms: i64,
    /// Default durability of new topics: always, interval or never.
    #[arg(long, env = "SLUICE_DEFAULT_DURABILITY", default_value = "interval")]
    pub default_durability: Durability,
    /// Sync interval (ms) of `interval` durability.
    #[arg(long, env = "SLUICE_DURABILITY_INTERVAL_MS", default_value_t = 10)]
    pub durability_interval_ms: u32,
    /// Default segment size of new topics.
    #[arg(long, env = "SLUICE_SEGMENT_BYTES", default_value_t = 1 << 30)]
    pub segment_bytes: u64,
    /// Default largest batch of new topics.
    #[arg(long, env = "SLUICE_MAX_BATCH_BYTES", default_value_t = 8 << 20)]
    pub max_batch_bytes: u32,
    /// How often retention runs (ms).
    #[arg(long, env = "SLUICE_RETENTION_CHECK_MS", default_value_t = 300_000)]
    pub retention_check_ms: u64,
    /// Partitions of the internal `__consumer_offsets` topic, fixed when it is first created:
    /// the coordinators of consumer groups are spread over the shards owning them.
    #[arg(long, env = "SLUICE_OFFSETS_PARTITIONS", default_value_t = 8)]
    pub offsets_partitions: u32,
    /// Segment size of `__consumer_offsets` partitions, fixed when the topic is first created.
    /// Sealed segments are deleted once an offsets snapshot covers them (its compaction).
    #[arg(long, env = "SLUICE_OFFSETS_SEGMENT_BYTES", default_value_t = 16 << 20)]
    pub offsets_segment_bytes: u64,
    /// Committed offsets applied between two snapshots of a `__consumer_offsets` partition's
    /// table; a restart replays at most about this many records per partition.
    #[arg(
        long,
        env = "SLUICE_OFFSETS_SNAPSHOT_RECORDS",
        default_value_t = 20_000
    )]
    pub offsets_snapshot_records: u64,
    /// Most members in one consumer group (bounds a group's memory and its rebalances).
    #[arg(long, env = "SLUICE_GROUP_MAX_SIZE", default_value_t = 1000)]
    pub group_max_size: usize,
    /// Shortest session timeout a consumer-group member may ask for (ms).
    #[arg(
        long,
        env = "SLUICE_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 500
    )]
    pub group_min_session_timeout_ms: u64,
    /// Longest session timeout a consumer-group member may ask for (ms).
    #[arg(
        long,
        env = "SLUICE_GROUP_MAX_SESSION_TIMEOUT_MS",
        default_value_t = 1_800_000
    )]
    pub group_max_session_timeout_ms: u64,
    /// How long the first rebalance of an empty group waits for more members (ms), so that
    /// consumers starting together share one rebalance.
    #[arg(
        long,
        env = "SLUICE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 300
    )]
    pub group_initial_rebalance_delay_ms: u64,
    /// Payload bytes one shard's inbox holds at once; senders wait beyond it (back-pressure).
    /// Default 64 MiB: one maximum-size frame forwarded whole.
    #[arg(long, env = "SLUICE_SHARD_INBOX_BYTES", default_value_t = broker::shard::bus::SHARD_INBOX_BYTES_DEFAULT)]
    pub shard_inbox_bytes: u32,
    /// How long to retry binding a listen address that is still in use (ms): a broker
    /// restarted right after kill -9 waits out the dead process's listeners, then gives up
    /// with "address in use".
    #[arg(long, env = "SLUICE_BIND_RETRY_MS", default_value_t = 5_000)]
    pub bind_retry_ms: u64,
    /// Bytes of recently appended data the partitions of one core keep in memory for readers,
    /// in total (least recently appended partitions give theirs up first). The node's tail
    /// caches hold at most cores x this: 2 x 256 MiB = 512 MiB, 24 x 256 MiB = 6 GiB.
    #[arg(long, env = "SLUICE_TAIL_CACHE_BYTES_PER_CORE", default_value_t = broker::config::TAIL_CACHE_BYTES_PER_CORE_DEFAULT)]
    pub tail_cache_bytes_per_core: usize,
    /// Address of the metrics and health endpoint: Prometheus text at `/metrics`, `/ready`
    /// (200 once serving, 503 while starting or stopping) and `/live` (200 while every shard
    /// runs). Off unless given (e.g. `127.0.0.1:9644`); port 0 picks a free port, printed on
    /// stdout after the readiness line as `sluice metrics on HOST:PORT`.
    #[arg(long, env = "SLUICE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The controller quorum's voters, `ID@HOST:PORT,...` (1, 3 or 5; the same list on every
    /// broker of the cluster). A broker whose --broker-id is listed runs that voter on its
    /// address; any other broker joins the quorum as a non-voting learner (on
    /// --controller-listen). Unset: a cluster of one, this broker its only voter (on
    /// --controller-listen).
    #[arg(long, env = "SLUICE_CONTROLLER_VOTERS")]
    pub controller_voters: Option<String>,
    /// Where the controller of a single node, or of a broker outside --controller-voters,
    /// listens (port 0: a free port). The voters must reach a learner there: give a routable
    /// address when the brokers run on several hosts. Ignored for voters.
    #[arg(long, env = "SLUICE_CONTROLLER_LISTEN", default_value = "127.0.0.1:0")]
    pub controller_listen: SocketAddr,
    /// This broker's rack: replicas of a partition are spread over racks first.
    #[arg(long, env = "SLUICE_RACK")]
    pub rack: Option<String>,
    /// Replicas per partition for topics created without a replication factor.
    #[arg(long, env = "SLUICE_DEFAULT_REPLICATION_FACTOR", default_value_t = 1)]
    pub default_replication_factor: u16,
    /// `min.insync.replicas` for topics created without one: acks=all writes are refused while
    /// fewer replicas are in sync.
    #[arg(long, env = "SLUICE_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    pub min_insync_replicas: u16,
    /// A follower not caught up with its leader for this long leaves the ISR (ms).
    #[arg(long, env = "SLUICE_REPLICA_LAG_TIME_MAX_MS", default_value_t = 10_000)]
    pub replica_lag_time_max_ms: u64,
    /// A broker that does not heartbeat to the controller for this long is fenced: it leads
    /// nothing, and its partitions get new leaders from their ISR (ms).
    #[arg(
        long,
        env = "SLUICE_BROKER_SESSION_TIMEOUT_MS",
        default_value_t = 3_000
    )]
    pub broker_session_timeout_ms: u64,
    /// Replicas of `__consumer_offsets` (at most the number of voters).
    #[arg(long, env = "SLUICE_OFFSETS_REPLICATION_FACTOR", default_value_t = 3)]
    pub offsets_replication_factor: u16,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG is used when unset.
    #[arg(long, env = "SLUICE_LOG")]
    pub log: Option<String>,
    /// A TOML config file whose keys are the long flag names with underscores (e.g. `listen =
    /// "127.0.0.1:9092"`, `cores = 2`); flags and environment variables override it.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Smallest `--tail-cache-bytes-per-core`: 1 MiB, one append chunk of the largest size; below
/// it every append would evict the core's other logs' chunks.
const TAIL_CACHE_BYTES_PER_CORE_MIN: usize = 1 << 20;

impl ServeArgs {
    /// Validates the arguments into the broker's configuration.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let cores = if self.cores == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.cores
        };
        if cores > 256 {
            bail!("--cores {cores} is more than 256 shards");
        }
        if self.max_frame_bytes < 64 * 1024 || self.max_frame_bytes > wire::protocol::FRAME_SIZE_MAX
        {
            bail!(
                "--max-frame-bytes {} must be within [64 KiB, {}]",
                self.max_frame_bytes,
                wire::protocol::FRAME_SIZE_MAX
            );
        }
        if self.max_connections == 0 {
            bail!("--max-connections must be at least 1");
        }
        // A maximal frame must always be receivable: its buffer is charged to both budgets.
        for (flag, bytes) in [
            (
                "--max-request-bytes-in-flight",
                self.max_request_bytes_in_flight,
            ),
            (
                "--receive-buffer-budget-bytes",
                self.receive_buffer_budget_bytes,
            ),
            ("--request-budget-bytes", self.request_budget_bytes),
        ] {
            if bytes < self.max_frame_bytes {
                bail!(
                    "{flag} {bytes} must be at least --max-frame-bytes ({})",
                    self.max_frame_bytes
                );
            }
        }
        if self.request_timeout_ms == 0 {
            bail!("--request-timeout-ms must be positive");
        }
        let durability = match self.default_durability {
            Durability::Interval { .. } => Durability::interval(self.durability_interval_ms),
            other => other,
        };
        if self.default_partitions == 0 {
            bail!("--default-partitions must be at least 1");
        }
        if self.offsets_partitions == 0 || self.offsets_partitions > 1024 {
            bail!("--offsets-partitions must be within [1, 1024]");
        }
        if self.group_min_session_timeout_ms == 0
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            bail!("--group-min-session-timeout-ms must be positive and at most --group-max-session-timeout-ms");
        }
        if self.tail_cache_bytes_per_core < TAIL_CACHE_BYTES_PER_CORE_MIN {
            bail!("--tail-cache-bytes-per-core must be at least {TAIL_CACHE_BYTES_PER_CORE_MIN} (1 MiB: one full-size append chunk)");
        }
        // Absolute from here on: shards and glommio's file operations must not depend on the
        // working directory.
        std::fs::create_dir_all(&self.data_dir)
            .with_context(|| format!("creating the data directory {}", self.data_dir.display()))?;
        let data_dir = self
            .data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", self.data_dir.display()))?;
        let advertised_host = self
            .advertised_host
            .unwrap_or_else(|| self.listen.ip().to_string());
        let controller_voters = match &self.controller_voters {
            Some(text) => controller::parse_voters(text).context("--controller-voters")?,
            None => Vec::new(),
        };
        if self.default_replication_factor == 0 || self.min_insync_replicas == 0 {
            bail!("--default-replication-factor and --min-insync-replicas must be at least 1");
        }
        if self.broker_session_timeout_ms < 500 || self.replica_lag_time_max_ms < 100 {
            bail!("--broker-session-timeout-ms must be at least 500 and --replica-lag-time-max-ms at least 100");
        }
        let cluster = broker::ClusterSettings {
            controller_voters,
            controller_listen: self.controller_listen,
            rack: self.rack.clone(),
            default_replication_factor: self.default_replication_factor,
            min_insync_replicas: self.min_insync_replicas,
            replica_lag_time_max: Duration::from_millis(self.replica_lag_time_max_ms),
            broker_session_timeout: Duration::from_millis(self.broker_session_timeout_ms),
            offsets_replication_factor: self.offsets_replication_factor.max(1),
        };
        Ok(Config {
            data_dir,
            listen: self.listen,
            shards: cores,
            shard_port_base: self.shard_port_base,
            advertised_shard_port_base: self.advertised_shard_port_base,
            advertised_host,
            broker_id: self.broker_id,
            max_frame_bytes: self.max_frame_bytes,
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms.max(1)),
            max_connections: self.max_connections,
            max_request_bytes_in_flight: self.max_request_bytes_in_flight,
            receive_buffer_budget_bytes: self.receive_buffer_budget_bytes,
            request_budget_bytes: self.request_budget_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            spin_before_park: Duration::from_micros(self.spin_before_park_us),
            retention_check: std::time::Duration::from_millis(self.retention_check_ms.max(1000)),
            offsets_partitions: self.offsets_partitions,
            offsets_segment_bytes: self.offsets_segment_bytes.max(64 * 1024),
            offsets_snapshot_records: self.offsets_snapshot_records.max(1),
            group_limits: GroupLimits {
                min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
                max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
                initial_rebalance_delay: Duration::from_millis(
                    self.group_initial_rebalance_delay_ms,
                ),
                max_members: self.group_max_size.max(1),
            },
            shard_inbox_bytes: self.shard_inbox_bytes.max(1),
            bind_retry: Duration::from_millis(self.bind_retry_ms),
            tail_cache_bytes_per_core: self.tail_cache_bytes_per_core,
            storage_faults: None,
            metrics_listen: self.metrics_listen,
            cluster,
            topic_defaults: TopicDefaults {
                partitions: self.default_partitions,
                retention_ms: self.default_retention_ms,
                durability,
                segment_bytes: self.segment_bytes,
                max_batch_bytes: self.max_batch_bytes,
            },
        })
    }
}
