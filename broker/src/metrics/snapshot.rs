//! What a scrape gathers: every shard's [`ShardSnapshot`], taken on the shard itself by a work
//! item sent over the bus (the shards' state is `!Send` and never read from another thread),
//! plus what the bus itself can tell from any thread (inbox depth). Called by the metrics
//! thread ([`super::server`]) once per scrape; nothing here runs on the data path.

use std::time::Duration;

use crate::probe::ProbeSnapshot;
use crate::services::ServiceBus;
use crate::shard::bus::{reply_channel, InboxDepth};

/// Longest wait for one shard's snapshot. A shard that cannot answer within 5 s is stuck (a
/// snapshot is a few microseconds of work per partition); the scrape reports it as down
/// (`sluice_shard_up 0`) instead of hanging, and 5 s stays under Prometheus' default 10 s
/// scrape timeout even when one shard times out.
pub const SHARD_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition as its owner shard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSnapshot {
    /// Topic.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// First offset still in the log.
    pub log_start_offset: u64,
    /// Offset the next appended record gets.
    pub log_end_offset: u64,
    /// Offsets below it are visible to consumers.
    pub high_watermark: u64,
}

/// One committed offset of a group coordinated on the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedSnapshot {
    /// Group id.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The next offset the group will consume.
    pub offset: u64,
}

/// One shard's state at scrape time.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// Counters and histograms of the shard's probe.
    pub probe: ProbeSnapshot,
    /// Requests being handled now.
    pub requests_in_flight: u64,
    /// Bytes of the shard's tail-cache budget its logs hold now.
    pub tail_cache_bytes: u64,
    /// The shard's tail-cache budget.
    pub tail_cache_budget_bytes: u64,
    /// Bytes read ahead for sequential disk readers now.
    pub read_ahead_bytes: u64,
    /// Disk reads served from bytes read ahead, since the shard started.
    pub read_ahead_hits: u64,
    /// Partitions the shard owns.
    pub partitions: Vec<PartitionSnapshot>,
    /// Offsets committed to the groups the shard coordinates.
    pub committed: Vec<CommittedSnapshot>,
}

/// One shard's part of a scrape.
#[derive(Debug, Clone)]
pub struct ShardReport {
    /// Shard number.
    pub shard: usize,
    /// Its snapshot; `None` when it did not answer in time (stopped or stuck).
    pub snapshot: Option<ShardSnapshot>,
    /// Its inbox as the bus sees it.
    pub inbox: Option<InboxDepth>,
}

/// A whole node at scrape time.
#[derive(Debug, Clone, Default)]
pub struct NodeSnapshot {
    /// Every shard, in order.
    pub shards: Vec<ShardReport>,
    /// The network path's node-wide counters (read from any thread: atomics).
    pub net: NetSnapshot,
}

/// The network bounds in use, node-wide (see [`crate::net::limits`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetSnapshot {
    /// Connections refused by `--max-connections` since start.
    pub connections_refused: u64,
    /// Receive-buffer bytes grown beyond the connections' first buffers.
    pub receive_buffer_bytes: u64,
    /// Request bytes charged to requests not yet answered.
    pub request_bytes_in_flight: u64,
}

impl NetSnapshot {
    /// Reads the node's network counters.
    pub fn read(stats: &crate::net::limits::NetStats) -> NetSnapshot {
        NetSnapshot {
            connections_refused: stats.connections_refused(),
            receive_buffer_bytes: stats.receive_buffer_bytes() as u64,
            request_bytes_in_flight: stats.request_bytes_in_flight() as u64,
        }
    }
}

/// Asks every shard for its snapshot (all at once, then waits for each answer at most until
/// [`SHARD_SNAPSHOT_TIMEOUT`] after the asking).
pub fn gather(bus: &ServiceBus, net: NetSnapshot) -> NodeSnapshot {
    let mut answers = Vec::with_capacity(bus.shards());
    for shard in 0..bus.shards() {
        let (reply, answer) = reply_channel();
        let sent = bus.run_on_blocking(shard, 0, move |services| async move {
            let _ = reply.send(take_snapshot(&services));
        });
        answers.push(sent.ok().map(|()| answer));
    }
    let deadline = std::time::Instant::now() + SHARD_SNAPSHOT_TIMEOUT;
    let shards = answers
        .into_iter()
        .enumerate()
        .map(|(shard, answer)| ShardReport {
            shard,
            snapshot: answer.and_then(|answer| answer.recv_deadline(deadline).ok()),
            inbox: bus.inbox_depth(shard),
        })
        .collect();
    NodeSnapshot { shards, net }
}

/// The snapshot of the calling shard (runs on it, through the bus).
fn take_snapshot(services: &crate::services::ShardServices) -> ShardSnapshot {
    let partitions = services
        .partitions
        .borrow()
        .values()
        .into_iter()
        .map(|partition| PartitionSnapshot {
            topic: partition.topic.clone(),
            partition: partition.partition,
            log_start_offset: partition.log.log_start_offset(),
            log_end_offset: partition.log.log_end_offset(),
            high_watermark: partition.high_watermark(),
        })
        .collect();
    let committed = services
        .coordinator
        .committed_offsets()
        .into_iter()
        .map(|(group, topic, partition, offset)| CommittedSnapshot {
            group,
            topic,
            partition,
            offset,
        })
        .collect();
    let resources = storage::CoreResources::current();
    ShardSnapshot {
        probe: services.probe.snapshot(),
        requests_in_flight: services.requests_in_flight() as u64,
        tail_cache_bytes: resources.cached_bytes() as u64,
        tail_cache_budget_bytes: resources.budget().tail_cache_bytes as u64,
        read_ahead_bytes: resources.read_ahead_bytes() as u64,
        read_ahead_hits: resources.read_ahead_hits(),
        partitions,
        committed,
    }
}

/// Checks that every shard runs: each must run a no-op work item within `timeout`.
pub fn all_shards_answer(bus: &ServiceBus, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    let mut answers = Vec::with_capacity(bus.shards());
    for shard in 0..bus.shards() {
        let (reply, answer) = reply_channel::<()>();
        if bus
            .run_on_blocking(shard, 0, move |_| async move {
                let _ = reply.send(());
            })
            .is_err()
        {
            return false;
        }
        answers.push(answer);
    }
    answers
        .into_iter()
        .all(|answer| answer.recv_deadline(deadline).is_ok())
}
