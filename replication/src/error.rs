//! The one error type of the replication core.
//!
//! Every refusal the state machines of this crate can give — to a producer, a consumer, a
//! follower's fetch, a fetched batch, a controller answer or a checkpoint file — is a variant
//! here with the numbers that explain it. The broker maps each variant to a wire error code in
//! its one error-code table (Kafka's names are given so the mapping is obvious); nothing in this
//! crate knows the codes.

use crate::ReplicaId;

/// Why the replication core refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    /// An `acks=all` produce arrived while fewer replicas than `min.insync.replicas` are in
    /// sync; nothing was appended (Kafka's `NOT_ENOUGH_REPLICAS`).
    #[error(
        "not enough in-sync replicas: {isr} in sync, min.insync.replicas is {min}; write refused"
    )]
    NotEnoughReplicas {
        /// Size of the confirmed in-sync replica set, leader included.
        isr: usize,
        /// The partition's `min.insync.replicas`.
        min: usize,
    },

    /// An `acks=all` batch is committed (below the high watermark), but the ISR shrank below
    /// `min.insync.replicas` while it waited, so it is on fewer replicas than the producer asked
    /// for (Kafka's `NOT_ENOUGH_REPLICAS_AFTER_APPEND`; the producer may retry, idempotence
    /// removes the duplicate).
    #[error(
        "batch ending at offset {batch_end_offset} was appended, but only {isr} replicas are in \
         sync (min.insync.replicas is {min})"
    )]
    NotEnoughReplicasAfterAppend {
        /// Offset just past the batch's last record.
        batch_end_offset: u64,
        /// Size of the confirmed in-sync replica set, leader included.
        isr: usize,
        /// The partition's `min.insync.replicas`.
        min: usize,
    },

    /// This replica is not the partition's leader (Kafka's `NOT_LEADER_OR_FOLLOWER`).
    #[error("replica {replica} is not the leader of this partition (leader: {leader:?}, epoch {leader_epoch})")]
    NotLeader {
        /// The replica that received the request.
        replica: ReplicaId,
        /// The leader it follows, if it knows one.
        leader: Option<ReplicaId>,
        /// The leader epoch it knows.
        leader_epoch: u32,
    },

    /// The request carries an older leader epoch than the leader's: the sender's metadata is
    /// stale and it must refresh it (Kafka's `FENCED_LEADER_EPOCH`, KIP-320).
    #[error("fenced leader epoch: the request says epoch {requested}, the leader is at {current}")]
    FencedLeaderEpoch {
        /// The leader epoch of this replica.
        current: u32,
        /// The leader epoch in the request.
        requested: u32,
    },

    /// The request carries a newer leader epoch than this replica knows: this replica has not yet
    /// heard of the leader change and the sender should retry (Kafka's `UNKNOWN_LEADER_EPOCH`).
    #[error(
        "unknown leader epoch: the request says epoch {requested}, this replica knows {current}"
    )]
    UnknownLeaderEpoch {
        /// The leader epoch of this replica.
        current: u32,
        /// The leader epoch in the request.
        requested: u32,
    },

    /// A fetch asked for an offset outside `[log_start, log_end]` (Kafka's
    /// `OFFSET_OUT_OF_RANGE`).
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First offset still in the log.
        log_start_offset: u64,
        /// Offset of the next record to be appended.
        log_end_offset: u64,
    },

    /// A fetch came from a replica that is not in the partition's replica set.
    #[error("replica {replica} is not assigned to this partition")]
    UnknownReplica {
        /// The sender.
        replica: ReplicaId,
    },

    /// A fetched batch does not start where the follower's log ends (a reordered, duplicated or
    /// stale response); it was not appended.
    #[error(
        "fetched batch starts at offset {base_offset}, the follower's log ends at {log_end_offset}"
    )]
    BatchOutOfOrder {
        /// The first offset of the batch.
        base_offset: u64,
        /// Where the follower's log ends.
        log_end_offset: u64,
    },

    /// A fetch answer does not answer the follower's current request (its log or epoch moved
    /// since it was sent: a delayed, duplicated or reordered answer); it was ignored.
    #[error(
        "stale fetch answer: it answers a fetch from offset {answered_fetch_offset} in leader \
         epoch {answered_leader_epoch}; the follower now fetches from {log_end_offset} in epoch \
         {leader_epoch}"
    )]
    StaleFetchResponse {
        /// The fetch offset of the request it answers.
        answered_fetch_offset: u64,
        /// The leader epoch of the request it answers.
        answered_leader_epoch: u32,
        /// Where the follower's log ends now.
        log_end_offset: u64,
        /// The leader epoch the follower follows now.
        leader_epoch: u32,
    },

    /// A batch's offsets are empty or reversed (`end_offset <= base_offset`).
    #[error("batch offsets are invalid: base {base_offset}, end {end_offset}")]
    InvalidBatchOffsets {
        /// The first offset of the batch.
        base_offset: u64,
        /// Offset just past the batch's last record.
        end_offset: u64,
    },

    /// A batch or an epoch assignment carries a leader epoch older than the last one in the log,
    /// or newer than the leader that sent it.
    #[error("leader epoch {epoch} out of order: the log's latest epoch is {latest}, the leader's is {leader}")]
    EpochOutOfOrder {
        /// The epoch of the batch or assignment.
        epoch: u32,
        /// The latest epoch in the log's epoch cache.
        latest: u32,
        /// The leader epoch the replica follows (or leads).
        leader: u32,
    },

    /// A divergence answer would truncate the follower below its high watermark, i.e. remove a
    /// committed record. This never happens with clean leader elections; the follower refuses it
    /// and stops fetching rather than lose acknowledged data.
    #[error(
        "refusing to truncate to offset {truncate_to}: below the high watermark {high_watermark} \
         (committed records would be lost)"
    )]
    TruncationBelowHighWatermark {
        /// Where the divergence answer says the log should end.
        truncate_to: u64,
        /// The follower's high watermark.
        high_watermark: u64,
    },

    /// The controller's ISR does not fit the partition: it names a replica outside the replica
    /// set, repeats one, or leaves out the leader.
    #[error("controller ISR {isr:?} (version {version}) is invalid for replicas {replicas:?} led by {leader}")]
    InvalidIsr {
        /// The ISR the controller sent.
        isr: Vec<ReplicaId>,
        /// Its version.
        version: u32,
        /// The partition's replica set.
        replicas: Vec<ReplicaId>,
        /// This leader.
        leader: ReplicaId,
    },

    /// A leader-epoch checkpoint could not be parsed; `line` is 1-based.
    #[error("leader-epoch checkpoint line {line}: {reason}")]
    EpochCheckpoint {
        /// 1-based line number of the fault.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}
