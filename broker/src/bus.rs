//! The cross-shard bus: one bounded inbox per shard (flume), the only way shards talk. Every
//! message carries owned, `Send` data; replies come back on a one-slot channel. A full inbox
//! makes the sender wait: back-pressure, not unbounded memory.

use std::sync::Arc;
use std::time::Duration;

use wire::protocol::{
    CreateTopicsRequest, DeleteTopicsRequest, ListOffsetsPartitionResponse,
    ProducePartitionResponse, ShardEndpoint, TopicResult, WireError,
};
use wire::AlignedVec;

use crate::topics::TopicRegistry;

/// Messages a shard's inbox holds at most. 1024 messages of at most one max-size frame each
/// bounds what a slow shard can make others buffer.
pub const SHARD_INBOX_MAX: usize = 1024;

/// A one-shot reply channel.
pub type Reply<T> = flume::Sender<T>;

/// Creates a reply channel and its receiving end.
pub fn reply_channel<T>() -> (Reply<T>, flume::Receiver<T>) {
    flume::bounded(1)
}

/// A partition to read, inside a forwarded fetch.
#[derive(Debug, Clone)]
pub struct FetchTarget {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Most bytes for this partition.
    pub max_bytes: u32,
}

/// One partition's fetch result with owned bytes (what crosses shards).
#[derive(Debug)]
pub struct FetchedOwned {
    /// Partition.
    pub partition: u32,
    /// Outcome.
    pub error: WireError,
    /// High watermark.
    pub high_watermark: u64,
    /// Log start offset.
    pub log_start_offset: u64,
    /// Whole batches, concatenated.
    pub records: Vec<u8>,
}

/// What shards send each other.
pub enum ShardMessage {
    /// Produce to a partition the receiving shard owns.
    Produce {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The batches, 16-aligned.
        records: AlignedVec<16>,
        /// The request's acks.
        acks: i8,
        /// Outcome, once acks and durability are met.
        reply: Reply<ProducePartitionResponse>,
    },
    /// Read partitions the receiving shard owns (long poll included).
    Fetch {
        /// What to read.
        targets: Vec<FetchTarget>,
        /// Longest wait for `min_bytes`.
        max_wait: Duration,
        /// Bytes that end the wait.
        min_bytes: u32,
        /// Most bytes overall.
        max_bytes: u32,
        /// Results, in target order.
        reply: Reply<Vec<FetchedOwned>>,
    },
    /// Offset lookup on a partition the receiving shard owns.
    ListOffsets {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Earliest, latest or a time.
        timestamp: i64,
        /// Result.
        reply: Reply<ListOffsetsPartitionResponse>,
    },
    /// Topic creation, for shard 0 (the controller of this node).
    CreateTopics {
        /// The request.
        request: CreateTopicsRequest,
        /// Per-topic results.
        reply: Reply<Vec<TopicResult>>,
    },
    /// Topic deletion, for shard 0.
    DeleteTopics {
        /// The request.
        request: DeleteTopicsRequest,
        /// Per-topic results.
        reply: Reply<Vec<TopicResult>>,
    },
    /// A producer id, from shard 0.
    InitProducerId {
        /// The id, or why not.
        reply: Reply<Result<i64, WireError>>,
    },
    /// A group request for a group the receiving shard coordinates.
    Group {
        /// The request.
        request: crate::group::GroupRequest,
        /// The coordinator's answer.
        reply: Reply<Result<crate::group::GroupResponse, WireError>>,
    },
    /// The topic registry changed: open and close partitions to match, then acknowledge.
    TopicsChanged {
        /// The new registry.
        registry: Arc<TopicRegistry>,
        /// Sent once the shard's partitions match it.
        reply: Reply<()>,
    },
    /// Every shard's endpoint, sent once all listeners are bound.
    Endpoints {
        /// The main listener's port.
        main_port: u16,
        /// One endpoint per shard.
        endpoints: Arc<Vec<ShardEndpoint>>,
    },
    /// Stop accepting, drain, close the logs.
    Shutdown,
}

/// Senders to every shard's inbox. Cheap to clone; `Send`.
#[derive(Clone)]
pub struct Bus {
    senders: Arc<Vec<flume::Sender<ShardMessage>>>,
}

impl Bus {
    /// Creates the inboxes of `shards` shards; returns the bus and each shard's receiver.
    pub fn new(shards: usize) -> (Bus, Vec<flume::Receiver<ShardMessage>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..shards).map(|_| flume::bounded(SHARD_INBOX_MAX)).unzip();
        (
            Bus {
                senders: Arc::new(senders),
            },
            receivers,
        )
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// Sends to `shard`, waiting while its inbox is full. Fails only when that shard is gone.
    pub async fn send(&self, shard: usize, message: ShardMessage) -> Result<(), BusClosed> {
        let sender = self.senders.get(shard).ok_or(BusClosed)?;
        sender.send_async(message).await.map_err(|_| BusClosed)
    }

    /// Sends from a thread outside the shards (the signal handler), blocking while full.
    pub fn send_blocking(&self, shard: usize, message: ShardMessage) -> Result<(), BusClosed> {
        let sender = self.senders.get(shard).ok_or(BusClosed)?;
        sender.send(message).map_err(|_| BusClosed)
    }
}

/// The receiving shard has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the target shard has stopped")]
pub struct BusClosed;
