//! Requests and responses of the consumer-group APIs, and the consumer protocol's payloads
//! (what members put in `JoinGroup` metadata and what the leader hands out in `SyncGroup`).
//!
//! ```text
//!  FindCoordinator ─▶ shard endpoint owning __consumer_offsets partition hash(group) % N
//!  JoinGroup ──▶ (held until every member rejoined) ──▶ generation, leader, members (leader only)
//!  SyncGroup ──▶ leader sends every member's assignment ──▶ each member gets its own
//!  Heartbeat ──▶ RebalanceInProgress means: rejoin    LeaveGroup ──▶ rebalance at once
//!  OffsetCommit / OffsetFetch ──▶ records in __consumer_offsets, fenced by generation
//! ```
//!
//! Group errors travel as the response's top-level error, except per-partition commit and fetch
//! results. Declared with `message!` like every other message: field order is the wire layout.

use super::codec::message;
use super::error_code::WireError;

message! {
    /// Which shard coordinates a group.
    pub struct FindCoordinatorRequest {
        /// The group id.
        pub group_id: String,
    }
}

message! {
    /// The coordinator of a group: send its group requests to this shard endpoint.
    pub struct FindCoordinatorResponse {
        /// Broker id of the coordinator.
        pub broker_id: u32,
        /// Host of the coordinating shard's endpoint.
        pub host: String,
        /// Port of the coordinating shard's endpoint.
        pub port: u16,
        /// The coordinating shard.
        pub shard: u16,
        /// The `__consumer_offsets` partition holding the group's offsets.
        pub offsets_partition: u32,
    }
}

message! {
    /// One assignment protocol a member supports, with its subscription.
    pub struct JoinGroupProtocol {
        /// Assignor name (`range`, `roundrobin`, `cooperative-sticky`).
        pub name: String,
        /// The member's subscription for this protocol (a [`ConsumerSubscription`] for
        /// consumers).
        pub metadata: Vec<u8>,
    }
}

message! {
    /// Joins a group, or rejoins it for a rebalance. The coordinator holds the answer until
    /// every known member has rejoined (or the rebalance timeout removed the laggards).
    pub struct JoinGroupRequest {
        /// The group id.
        pub group_id: String,
        /// The member id from the last join; empty for a new member.
        pub member_id: String,
        /// Static membership: a stable id per consumer instance; a member that comes back with
        /// it within the session timeout keeps its partitions without a rebalance.
        pub group_instance_id: Option<String>,
        /// Free-form client name, shown by describe.
        pub client_id: String,
        /// Removed when no heartbeat arrives for this long.
        pub session_timeout_ms: u32,
        /// How long the coordinator waits for members to rejoin a rebalance; the consumer's
        /// max poll interval.
        pub rebalance_timeout_ms: u32,
        /// `consumer` for consumer groups.
        pub protocol_type: String,
        /// Supported protocols, most preferred first.
        pub protocols: Vec<JoinGroupProtocol>,
    }
}

message! {
    /// A member as the leader sees it when computing the assignment.
    pub struct JoinGroupMember {
        /// Member id.
        pub member_id: String,
        /// Static instance id, if any.
        pub group_instance_id: Option<String>,
        /// Its metadata for the chosen protocol.
        pub metadata: Vec<u8>,
    }
}

message! {
    /// The outcome of a join: the new generation and, for the leader, every member.
    pub struct JoinGroupResponse {
        /// The group's generation.
        pub generation: i32,
        /// The protocol every member supports, chosen by vote.
        pub protocol_name: String,
        /// Member id of the leader, who computes the assignment.
        pub leader: String,
        /// This member's id (assigned by the coordinator on the first join).
        pub member_id: String,
        /// True when the leader must not compute a new assignment (a static leader came back:
        /// the group keeps its current one).
        pub skip_assignment: bool,
        /// Every member with its metadata (leader only; empty for followers).
        pub members: Vec<JoinGroupMember>,
    }
}

message! {
    /// One member's assignment, sent by the leader.
    pub struct SyncGroupAssignment {
        /// Member id.
        pub member_id: String,
        /// Its assignment (a [`ConsumerAssignment`] for consumers).
        pub assignment: Vec<u8>,
    }
}

message! {
    /// Ends a rebalance: the leader sends every assignment, each member receives its own.
    pub struct SyncGroupRequest {
        /// The group id.
        pub group_id: String,
        /// Generation from the join.
        pub generation: i32,
        /// Member id.
        pub member_id: String,
        /// Static instance id, if any.
        pub group_instance_id: Option<String>,
        /// Every member's assignment (leader only).
        pub assignments: Vec<SyncGroupAssignment>,
    }
}

message! {
    /// This member's assignment.
    pub struct SyncGroupResponse {
        /// The assignment bytes the leader sent for this member.
        pub assignment: Vec<u8>,
    }
}

message! {
    /// Keeps a member alive; `RebalanceInProgress` in answer means: rejoin.
    pub struct HeartbeatRequest {
        /// The group id.
        pub group_id: String,
        /// Current generation.
        pub generation: i32,
        /// Member id.
        pub member_id: String,
        /// Static instance id, if any.
        pub group_instance_id: Option<String>,
    }
}

message! {
    /// Answer to a heartbeat (the top-level error says everything).
    pub struct HeartbeatResponse {}
}

message! {
    /// Leaves a group at once (a rebalance follows without waiting for the session timeout).
    pub struct LeaveGroupRequest {
        /// The group id.
        pub group_id: String,
        /// Member id.
        pub member_id: String,
        /// Static instance id: a static member leaving explicitly gives up its slot.
        pub group_instance_id: Option<String>,
    }
}

message! {
    /// Answer to a leave.
    pub struct LeaveGroupResponse {}
}

message! {
    /// An offset to commit for one partition.
    pub struct OffsetCommitPartition {
        /// Partition number.
        pub partition: u32,
        /// The next offset to consume (one past the last processed record).
        pub offset: u64,
        /// Free-form note stored with the offset.
        pub metadata: String,
    }
}

message! {
    /// Offsets to commit for one topic.
    pub struct OffsetCommitTopic {
        /// Topic name.
        pub topic: String,
        /// Per-partition offsets.
        pub partitions: Vec<OffsetCommitPartition>,
    }
}

message! {
    /// Commits offsets for a group, durably (answered once in `__consumer_offsets` on disk).
    /// A member commits with its generation and id, which fences members that missed a
    /// rebalance; `generation == -1` with an empty member id commits for a group that has no
    /// members (manual assignment, offset resets). Transactions will commit offsets through
    /// their own API, writing the same records inside the transaction.
    pub struct OffsetCommitRequest {
        /// The group id.
        pub group_id: String,
        /// The member's generation, or -1.
        pub generation: i32,
        /// Member id, or empty.
        pub member_id: String,
        /// Static instance id, if any.
        pub group_instance_id: Option<String>,
        /// What to commit.
        pub topics: Vec<OffsetCommitTopic>,
    }
}

message! {
    /// Outcome of one partition's commit.
    pub struct OffsetCommitPartitionResponse {
        /// Partition number.
        pub partition: u32,
        /// Success or why not.
        pub error: WireError,
    }
}

message! {
    /// Commit outcome for one topic.
    pub struct OffsetCommitTopicResponse {
        /// Topic name.
        pub topic: String,
        /// Per-partition outcome.
        pub partitions: Vec<OffsetCommitPartitionResponse>,
    }
}

message! {
    /// Answer to OffsetCommit.
    pub struct OffsetCommitResponse {
        /// Per-topic outcome.
        pub topics: Vec<OffsetCommitTopicResponse>,
    }
}

message! {
    /// Partitions of one topic whose committed offsets are wanted.
    pub struct OffsetFetchTopic {
        /// Topic name.
        pub topic: String,
        /// Partition numbers.
        pub partitions: Vec<u32>,
    }
}

message! {
    /// Reads a group's committed offsets.
    pub struct OffsetFetchRequest {
        /// The group id.
        pub group_id: String,
        /// What to read; `None` for every committed partition of the group.
        pub topics: Option<Vec<OffsetFetchTopic>>,
    }
}

message! {
    /// One partition's committed offset.
    pub struct OffsetFetchPartitionResponse {
        /// Partition number.
        pub partition: u32,
        /// Success or why not.
        pub error: WireError,
        /// The committed offset; -1 when the group committed none.
        pub offset: i64,
        /// The note stored with it.
        pub metadata: String,
        /// When it was committed (ms since the epoch); -1 when none.
        pub commit_timestamp: i64,
    }
}

message! {
    /// Committed offsets of one topic.
    pub struct OffsetFetchTopicResponse {
        /// Topic name.
        pub topic: String,
        /// Per-partition offsets.
        pub partitions: Vec<OffsetFetchPartitionResponse>,
    }
}

message! {
    /// Answer to OffsetFetch.
    pub struct OffsetFetchResponse {
        /// Per-topic offsets.
        pub topics: Vec<OffsetFetchTopicResponse>,
    }
}

message! {
    /// Lists the groups this broker coordinates.
    pub struct ListGroupsRequest {}
}

message! {
    /// One group in a listing.
    pub struct ListedGroup {
        /// The group id.
        pub group_id: String,
        /// `Empty`, `PreparingRebalance`, `CompletingRebalance` or `Stable`.
        pub state: String,
        /// `consumer` for consumer groups; empty for a group that only has offsets.
        pub protocol_type: String,
        /// Current members.
        pub members: u32,
    }
}

message! {
    /// Answer to ListGroups.
    pub struct ListGroupsResponse {
        /// Every group coordinated by the broker.
        pub groups: Vec<ListedGroup>,
    }
}

message! {
    /// Describes groups: state, members and their assignments.
    pub struct DescribeGroupsRequest {
        /// Group ids.
        pub groups: Vec<String>,
    }
}

message! {
    /// One member of a described group.
    pub struct DescribedMember {
        /// Member id.
        pub member_id: String,
        /// Static instance id, if any.
        pub group_instance_id: Option<String>,
        /// The client's name.
        pub client_id: String,
        /// The client's address as the coordinator saw it at join.
        pub client_host: String,
        /// Its metadata for the group's protocol.
        pub metadata: Vec<u8>,
        /// Its current assignment.
        pub assignment: Vec<u8>,
    }
}

message! {
    /// One described group.
    pub struct DescribedGroup {
        /// The group id.
        pub group_id: String,
        /// `GroupIdNotFound` for an unknown group.
        pub error: WireError,
        /// State name (see [`ListedGroup::state`]).
        pub state: String,
        /// Protocol type.
        pub protocol_type: String,
        /// The chosen assignment protocol.
        pub protocol: String,
        /// Current generation.
        pub generation: i32,
        /// Leader member id.
        pub leader: String,
        /// Current members.
        pub members: Vec<DescribedMember>,
    }
}

message! {
    /// Answer to DescribeGroups.
    pub struct DescribeGroupsResponse {
        /// One entry per group asked for.
        pub groups: Vec<DescribedGroup>,
    }
}

message! {
    /// Partitions of one topic (in consumer protocol payloads).
    pub struct TopicPartitions {
        /// Topic name.
        pub topic: String,
        /// Partition numbers.
        pub partitions: Vec<u32>,
    }
}

message! {
    /// A consumer's `JoinGroup` metadata: what it subscribes to and, for cooperative
    /// rebalancing and stickiness, what it owns now.
    pub struct ConsumerSubscription {
        /// Payload version (1).
        pub version: u16,
        /// Subscribed topics.
        pub topics: Vec<String>,
        /// Partitions the member owns now.
        pub owned: Vec<TopicPartitions>,
        /// Generation in which it got them (-1 if none): the newest owner wins a conflict.
        pub generation: i32,
    }
}

message! {
    /// What the leader assigns one consumer in `SyncGroup`.
    pub struct ConsumerAssignment {
        /// Payload version (1).
        pub version: u16,
        /// The member's partitions.
        pub partitions: Vec<TopicPartitions>,
    }
}

/// `protocol_type` of consumer groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Version of [`ConsumerSubscription`] and [`ConsumerAssignment`] written today.
pub const CONSUMER_PROTOCOL_VERSION: u16 = 1;

/// Name of the internal topic holding committed offsets.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Longest group id accepted.
pub const GROUP_ID_MAX_LEN: usize = 255;

/// Encodes a consumer protocol payload (no frame header or padding): the bytes that go into
/// `JoinGroupProtocol::metadata` or `SyncGroupAssignment::assignment`.
pub fn encode_payload<T: super::codec::Encode>(value: &T) -> Vec<u8> {
    let mut head = Vec::new();
    let mut writer = super::codec::FrameWriter::new(&mut head);
    value.encode(&mut writer);
    // Payloads hold no borrowed pieces: everything is in `head`, after the 4 bytes the writer
    // reserves for a frame's length prefix (never filled in: a payload is not a frame).
    drop(writer);
    head.split_off(4)
}

/// Decodes a consumer protocol payload written by [`encode_payload`]; every byte must be used.
pub fn decode_payload<'a, T: super::codec::Decode<'a>>(
    bytes: &'a [u8],
) -> Result<T, crate::error::ProtocolError> {
    let mut reader = super::codec::Reader::new(bytes, 0);
    let value = T::decode(&mut reader)?;
    if reader.remaining() != 0 {
        return Err(crate::error::ProtocolError::Malformed {
            position: reader.position(),
            reason: format!("{} trailing bytes in payload", reader.remaining()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Payloads round-trip and refuse trailing bytes.
    #[test]
    fn payload_round_trip() {
        let subscription = ConsumerSubscription {
            version: CONSUMER_PROTOCOL_VERSION,
            topics: vec!["a".into(), "b".into()],
            owned: vec![TopicPartitions {
                topic: "a".into(),
                partitions: vec![0, 2],
            }],
            generation: 7,
        };
        let bytes = encode_payload(&subscription);
        assert_eq!(
            decode_payload::<ConsumerSubscription>(&bytes).unwrap(),
            subscription
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_payload::<ConsumerSubscription>(&longer).is_err());
        for cut in 0..bytes.len() {
            assert!(decode_payload::<ConsumerSubscription>(&bytes[..cut]).is_err());
        }
    }
}
