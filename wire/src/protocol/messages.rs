//! Requests and responses of every API. Each is declared once with `message!`, which derives
//! its codec field by field, in the order written here; that order is the wire layout.

use super::codec::{message, Records};
use super::error_code::WireError;
pub use crate::policy::{Acks, Durability};

message! {
    /// First request on a connection: who the client is. The answer lists what the broker
    /// supports, so either side can refuse early.
    pub struct HandshakeRequest {
        /// Free-form client name, for the broker's logs.
        pub client_name: String,
        /// Client software version.
        pub client_version: String,
    }
}

message! {
    /// The versions of one API a broker supports.
    pub struct ApiVersionRange {
        /// The API.
        pub api_key: u16,
        /// Oldest supported version.
        pub min_version: u16,
        /// Newest supported version.
        pub max_version: u16,
    }
}

message! {
    /// Answer to a handshake.
    pub struct HandshakeResponse {
        /// The broker's id in the cluster.
        pub broker_id: u32,
        /// Identifies the cluster (its data directory's id on a single node).
        pub cluster_id: String,
        /// Supported version range of each API.
        pub api_versions: Vec<ApiVersionRange>,
    }
}

message! {
    /// Asks for brokers, topics and partition placement.
    pub struct MetadataRequest {
        /// Topics to describe; `None` for all.
        pub topics: Option<Vec<String>>,
    }
}

message! {
    /// A listener dedicated to one shard (core) of a broker: a client that sends a partition's
    /// requests here reaches the partition's owner with no cross-core hop.
    pub struct ShardEndpoint {
        /// Shard number on that broker.
        pub shard: u16,
        /// Host to connect to.
        pub host: String,
        /// Port to connect to.
        pub port: u16,
    }
}

message! {
    /// One broker of the cluster.
    pub struct BrokerMetadata {
        /// Broker id.
        pub broker_id: u32,
        /// Host of its main listener (any shard answers there).
        pub host: String,
        /// Port of its main listener.
        pub port: u16,
        /// One endpoint per shard.
        pub shards: Vec<ShardEndpoint>,
    }
}

message! {
    /// The settings of a topic.
    pub struct TopicConfig {
        /// Number of partitions.
        pub partitions: u32,
        /// Copies of each partition (1 until replication lands).
        pub replication_factor: u16,
        /// Delete sealed segments older than this; -1 keeps data forever.
        pub retention_ms: i64,
        /// Delete oldest sealed segments beyond this size per partition; -1 for no limit.
        pub retention_bytes: i64,
        /// Segment size before a roll.
        pub segment_bytes: u64,
        /// Largest batch accepted.
        pub max_batch_bytes: u32,
        /// fsync policy.
        pub durability: Durability,
    }
}

message! {
    /// One partition in metadata.
    pub struct PartitionMetadata {
        /// Partition number.
        pub partition: u32,
        /// Per-partition error (e.g. no leader).
        pub error: WireError,
        /// Leader broker id, -1 if none.
        pub leader: i32,
        /// Shard of the leader broker that owns the partition.
        pub leader_shard: u16,
        /// Bumped at every leader change.
        pub leader_epoch: u32,
        /// Brokers holding a replica.
        pub replicas: Vec<u32>,
        /// Replicas in sync with the leader.
        pub isr: Vec<u32>,
    }
}

message! {
    /// One topic in metadata.
    pub struct TopicMetadata {
        /// Topic name.
        pub name: String,
        /// Per-topic error (e.g. unknown topic).
        pub error: WireError,
        /// The topic's settings.
        pub config: TopicConfig,
        /// Its partitions, by number.
        pub partitions: Vec<PartitionMetadata>,
    }
}

message! {
    /// Brokers, topics, partition leaders and the shard endpoints that own them.
    pub struct MetadataResponse {
        /// Cluster id.
        pub cluster_id: String,
        /// Controller broker id, -1 if unknown.
        pub controller_id: i32,
        /// Every live broker.
        pub brokers: Vec<BrokerMetadata>,
        /// The topics asked for (all when none were named).
        pub topics: Vec<TopicMetadata>,
    }
}

message! {
    /// A topic to create; unset settings take the broker's defaults.
    pub struct CreateTopic {
        /// Name: 1 to 200 of `[A-Za-z0-9._-]`, not starting with `__` (internal topics).
        pub name: String,
        /// Number of partitions (>= 1).
        pub partitions: u32,
        /// Copies of each partition.
        pub replication_factor: u16,
        /// Retention time in ms; -1 forever.
        pub retention_ms: Option<i64>,
        /// Retention size in bytes per partition; -1 none.
        pub retention_bytes: Option<i64>,
        /// Segment size.
        pub segment_bytes: Option<u64>,
        /// Largest batch.
        pub max_batch_bytes: Option<u32>,
        /// fsync policy.
        pub durability: Option<Durability>,
        /// `min.insync.replicas`: acks=all writes are refused while fewer replicas are in
        /// sync. `None` takes the broker's default (`--min-insync-replicas`).
        pub min_insync_replicas: Option<u16>,
    }
}

message! {
    /// Creates topics.
    pub struct CreateTopicsRequest {
        /// Topics to create.
        pub topics: Vec<CreateTopic>,
        /// How long to wait for the creation to complete.
        pub timeout_ms: u32,
    }
}

message! {
    /// Outcome for one topic of a create or delete.
    pub struct TopicResult {
        /// Topic name.
        pub name: String,
        /// Success or why not.
        pub error: WireError,
    }
}

message! {
    /// Answer to CreateTopics.
    pub struct CreateTopicsResponse {
        /// One result per topic asked for.
        pub topics: Vec<TopicResult>,
    }
}

message! {
    /// Deletes topics and their data.
    pub struct DeleteTopicsRequest {
        /// Topics to delete.
        pub names: Vec<String>,
        /// How long to wait.
        pub timeout_ms: u32,
    }
}

message! {
    /// Answer to DeleteTopics.
    pub struct DeleteTopicsResponse {
        /// One result per topic asked for.
        pub topics: Vec<TopicResult>,
    }
}

message! {
    /// Record batches for one partition.
    pub struct ProducePartition<'a> {
        /// Partition number.
        pub partition: u32,
        /// One or more batches, 16-aligned in the frame.
        pub records: Records<'a>,
    }
}

message! {
    /// Produce data for one topic.
    pub struct ProduceTopic<'a> {
        /// Topic name.
        pub topic: String,
        /// Per-partition data.
        pub partitions: Vec<ProducePartition<'a>>,
    }
}

message! {
    /// Appends batches. With `acks == 0` the broker sends no response at all.
    pub struct ProduceRequest<'a> {
        /// 0: no answer; 1: answer once appended by the leader (and synced if the topic's
        /// durability is `always`); -1 (all): once every in-sync replica has it.
        pub acks: Acks,
        /// How long the broker may take before answering `RequestTimedOut`.
        pub timeout_ms: u32,
        /// Per-topic data.
        pub topics: Vec<ProduceTopic<'a>>,
    }
}

impl<'a> ProduceRequest<'a> {
    /// A produce of `records` (whole batches) to one partition: the shape most callers need.
    pub fn to_partition(
        topic: &str,
        partition: u32,
        acks: Acks,
        timeout_ms: u32,
        records: &'a [u8],
    ) -> ProduceRequest<'a> {
        ProduceRequest {
            acks,
            timeout_ms,
            topics: vec![ProduceTopic {
                topic: topic.into(),
                partitions: vec![ProducePartition {
                    partition,
                    records: Records::from_slice(records),
                }],
            }],
        }
    }
}

message! {
    /// Outcome for one partition of a produce.
    pub struct ProducePartitionResponse {
        /// Partition number.
        pub partition: u32,
        /// Success or why not.
        pub error: WireError,
        /// Offset given to the first record of the first batch; -1 on error.
        pub base_offset: i64,
        /// The partition's log start offset.
        pub log_start_offset: i64,
    }
}

message! {
    /// Produce outcome for one topic.
    pub struct ProduceTopicResponse {
        /// Topic name.
        pub topic: String,
        /// Per-partition outcome.
        pub partitions: Vec<ProducePartitionResponse>,
    }
}

message! {
    /// Answer to Produce.
    pub struct ProduceResponse {
        /// Per-topic outcome.
        pub topics: Vec<ProduceTopicResponse>,
    }
}

message! {
    /// Where to read one partition from.
    pub struct FetchPartition {
        /// Partition number.
        pub partition: u32,
        /// First offset wanted.
        pub fetch_offset: u64,
        /// Most bytes for this partition (at least one batch is returned if there is one).
        pub max_bytes: u32,
        /// The leader epoch the consumer's metadata names, if it knows one: a leader with a
        /// newer epoch answers `FencedLeaderEpoch` (KIP-320), so the consumer refreshes its
        /// metadata instead of reading from a replica that stopped leading.
        pub current_leader_epoch: Option<u32>,
    }
}

message! {
    /// Partitions of one topic to read.
    pub struct FetchTopic {
        /// Topic name.
        pub topic: String,
        /// Partitions to read.
        pub partitions: Vec<FetchPartition>,
    }
}

message! {
    /// Reads batches; a long poll when `max_wait_ms > 0`: the broker answers as soon as
    /// `min_bytes` are available, or when the wait is over.
    pub struct FetchRequest {
        /// Longest wait for `min_bytes`.
        pub max_wait_ms: u32,
        /// Bytes that end the wait.
        pub min_bytes: u32,
        /// Most bytes in the whole response.
        pub max_bytes: u32,
        /// What to read.
        pub topics: Vec<FetchTopic>,
    }
}

message! {
    /// Batches of one partition.
    pub struct FetchPartitionResponse<'a> {
        /// Partition number.
        pub partition: u32,
        /// Success or why not.
        pub error: WireError,
        /// Offsets below this are committed (the log end offset until replication lands).
        pub high_watermark: u64,
        /// First offset still in the log.
        pub log_start_offset: u64,
        /// Whole batches; the first may start before the offset asked for.
        pub records: Records<'a>,
    }
}

message! {
    /// Fetch result for one topic.
    pub struct FetchTopicResponse<'a> {
        /// Topic name.
        pub topic: String,
        /// Per-partition results.
        pub partitions: Vec<FetchPartitionResponse<'a>>,
    }
}

message! {
    /// Answer to Fetch.
    pub struct FetchResponse<'a> {
        /// Per-topic results.
        pub topics: Vec<FetchTopicResponse<'a>>,
    }
}

message! {
    /// One partition's offset query.
    pub struct ListOffsetsPartition {
        /// Partition number.
        pub partition: u32,
        /// [`EARLIEST_TIMESTAMP`], [`LATEST_TIMESTAMP`], or ms since the epoch: the first
        /// offset whose record timestamp is at or after it.
        pub timestamp: i64,
    }
}

/// `ListOffsets` timestamp asking for the log start offset.
pub const EARLIEST_TIMESTAMP: i64 = -2;
/// `ListOffsets` timestamp asking for the log end offset.
pub const LATEST_TIMESTAMP: i64 = -1;

message! {
    /// Offset queries for one topic.
    pub struct ListOffsetsTopic {
        /// Topic name.
        pub topic: String,
        /// Partitions to query.
        pub partitions: Vec<ListOffsetsPartition>,
    }
}

message! {
    /// Finds offsets by position (earliest, latest) or by time.
    pub struct ListOffsetsRequest {
        /// What to look up.
        pub topics: Vec<ListOffsetsTopic>,
    }
}

message! {
    /// One partition's answer.
    pub struct ListOffsetsPartitionResponse {
        /// Partition number.
        pub partition: u32,
        /// Success or why not.
        pub error: WireError,
        /// The offset found; for a time after every record, the log end offset.
        pub offset: i64,
        /// The timestamp asked for.
        pub timestamp: i64,
    }
}

message! {
    /// Answers for one topic.
    pub struct ListOffsetsTopicResponse {
        /// Topic name.
        pub topic: String,
        /// Per-partition answers.
        pub partitions: Vec<ListOffsetsPartitionResponse>,
    }
}

message! {
    /// Answer to ListOffsets.
    pub struct ListOffsetsResponse {
        /// Per-topic answers.
        pub topics: Vec<ListOffsetsTopicResponse>,
    }
}

message! {
    /// Asks for a producer id (and epoch) so the broker can drop retried duplicates: the
    /// producer numbers its batches per partition, the broker remembers the last few.
    pub struct InitProducerIdRequest {
        /// Transactional id; transactions are not supported yet, so `None`.
        pub transactional_id: Option<String>,
    }
}

message! {
    /// A fresh producer id, unique in the cluster for as long as its data is kept.
    pub struct InitProducerIdResponse {
        /// The producer id.
        pub producer_id: i64,
        /// Its epoch.
        pub producer_epoch: i16,
    }
}
