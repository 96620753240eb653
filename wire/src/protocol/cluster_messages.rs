//! Requests and responses of the cluster APIs: replication between brokers (`ReplicaFetch`)
//! and the operations on the cluster's metadata (`DescribeCluster`, `CreatePartitions`,
//! `ReassignPartitions`, `ElectLeaders`). Declared with `message!` like every other message:
//! field order is the wire layout.
//!
//! ```text
//!  follower shard ── ReplicaFetch (its fetch offsets, last fetched epochs) ──▶ leader shard
//!                 ◀── per partition: records as stored, HW, the leader's epoch starts,
//!                     or "diverging" (where the follower's last epoch ends on the leader)
//!  admin ── CreatePartitions / ReassignPartitions / ElectLeaders ──▶ any broker ──▶ controller
//! ```

use super::codec::{message, Records};
use super::error_code::WireError;

message! {
    /// One partition a follower replicates from this leader.
    pub struct ReplicaFetchPartition {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// The leader epoch the follower believes current (a stale one is refused).
        pub current_leader_epoch: u32,
        /// Where the follower's log ends: the first offset it wants.
        pub fetch_offset: u64,
        /// The epoch of the follower's last record; `None` for an empty log.
        pub last_fetched_epoch: Option<u32>,
        /// Most bytes of records for this partition.
        pub max_bytes: u32,
    }
}

message! {
    /// A follower shard's fetch from one leader shard: every partition that pair replicates,
    /// multiplexed on the one connection the pair keeps. A long poll, as a consumer fetch.
    pub struct ReplicaFetchRequest {
        /// The follower's broker id.
        pub replica_id: u32,
        /// Longest wait when no partition has anything new.
        pub max_wait_ms: u32,
        /// Most bytes in the whole response.
        pub max_bytes: u32,
        /// The partitions.
        pub partitions: Vec<ReplicaFetchPartition>,
    }
}

message! {
    /// One entry of a leader epoch cache: `epoch` started writing at `start_offset`.
    pub struct EpochStart {
        /// The leader epoch.
        pub epoch: u32,
        /// Its first offset.
        pub start_offset: u64,
    }
}

message! {
    /// Where an epoch ends on the leader: the follower's log diverges after this.
    pub struct DivergingEpoch {
        /// The largest leader epoch not above the follower's last fetched epoch.
        pub epoch: u32,
        /// The leader's end offset of that epoch.
        pub end_offset: u64,
    }
}

message! {
    /// The leader's answer for one partition of a replica fetch.
    pub struct ReplicaFetchPartitionResponse<'a> {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// Success or why not (not leader, fenced epoch, ...).
        pub error: WireError,
        /// The leader's high watermark.
        pub high_watermark: u64,
        /// The leader's log start offset.
        pub log_start_offset: u64,
        /// Set when the follower must truncate before fetching again (no records then).
        pub diverging: Option<DivergingEpoch>,
        /// The leader's epoch cache entries that cover the records sent (the first one starts
        /// at or before the first batch), so the follower learns which epoch wrote each batch.
        pub epochs: Vec<EpochStart>,
        /// Whole batches as the leader stored them, starting at the fetch offset.
        pub records: Records<'a>,
    }
}

message! {
    /// Answer to ReplicaFetch.
    pub struct ReplicaFetchResponse<'a> {
        /// Per-partition results, in request order.
        pub partitions: Vec<ReplicaFetchPartitionResponse<'a>>,
    }
}

message! {
    /// Asks for the cluster's brokers (fenced ones too) and its controller quorum.
    pub struct DescribeClusterRequest {
        /// Unused; reserved for filters.
        pub include_fenced: bool,
    }
}

message! {
    /// One registered broker.
    pub struct ClusterBroker {
        /// Broker id.
        pub broker_id: u32,
        /// Its client endpoints, one per shard (`host:port`).
        pub endpoints: Vec<String>,
        /// Its rack, if it has one.
        pub rack: Option<String>,
        /// Fenced: it stopped heartbeating, leads nothing.
        pub fenced: bool,
        /// Which start of its process registered.
        pub incarnation: u64,
    }
}

message! {
    /// One voter of the controller quorum.
    pub struct ControllerVoter {
        /// Its id (the broker id of the node that runs it).
        pub id: u32,
        /// Its controller address.
        pub address: String,
    }
}

message! {
    /// Answer to DescribeCluster.
    pub struct DescribeClusterResponse {
        /// The cluster id.
        pub cluster_id: String,
        /// The controller quorum's leader, -1 if none is known.
        pub controller_id: i32,
        /// The quorum's current Raft term.
        pub controller_term: u64,
        /// The voters.
        pub voters: Vec<ControllerVoter>,
        /// Every registered broker.
        pub brokers: Vec<ClusterBroker>,
        /// Partitions whose ISR is smaller than their replica set.
        pub under_replicated_partitions: u32,
        /// Partitions without a leader.
        pub offline_partitions: u32,
    }
}

message! {
    /// Grow a topic to `total_partitions` (never shrinks; no data moves, so key routing
    /// changes for new messages).
    pub struct CreatePartitionsTopic {
        /// The topic.
        pub name: String,
        /// Partition count after the change.
        pub total_partitions: u32,
    }
}

message! {
    /// Adds partitions to topics.
    pub struct CreatePartitionsRequest {
        /// The topics.
        pub topics: Vec<CreatePartitionsTopic>,
        /// How long to wait for the change to apply.
        pub timeout_ms: u32,
    }
}

message! {
    /// Answer to CreatePartitions, one result per topic (see `TopicResult`).
    pub struct CreatePartitionsResponse {
        /// One result per topic asked for.
        pub topics: Vec<super::TopicResult>,
    }
}

message! {
    /// Names one partition.
    pub struct PartitionRef {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
    }
}

message! {
    /// Move one partition to a new replica set: the new replicas are added first and the old
    /// ones dropped only once every new one is in sync.
    pub struct PartitionReassignment {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// The replica set it should end with, preferred leader first.
        pub replicas: Vec<u32>,
    }
}

message! {
    /// Starts reassignments.
    pub struct ReassignPartitionsRequest {
        /// The reassignments.
        pub partitions: Vec<PartitionReassignment>,
        /// How long to wait for the controller to accept them.
        pub timeout_ms: u32,
    }
}

message! {
    /// Outcome for one partition.
    pub struct PartitionResult {
        /// Topic name.
        pub topic: String,
        /// Partition number.
        pub partition: u32,
        /// Success or why not.
        pub error: WireError,
    }
}

message! {
    /// Answer to ReassignPartitions.
    pub struct ReassignPartitionsResponse {
        /// One result per partition asked for.
        pub partitions: Vec<PartitionResult>,
    }
}

message! {
    /// Elects leaders: `preferred` moves leadership back to each partition's first replica
    /// where it is in sync (rebalancing); otherwise only leaderless partitions get one, from
    /// their ISR.
    pub struct ElectLeadersRequest {
        /// Preferred-leader election (else clean election of leaderless partitions).
        pub preferred: bool,
        /// The partitions; `None` for every partition of the cluster.
        pub partitions: Option<Vec<PartitionRef>>,
        /// How long to wait for the controller.
        pub timeout_ms: u32,
    }
}

message! {
    /// Answer to ElectLeaders.
    pub struct ElectLeadersResponse {
        /// Partitions whose leader changed.
        pub changed: Vec<PartitionRef>,
    }
}
