//! Error codes on the wire. Stable forever: a code is never renumbered, and a retired code is
//! never reused. Every code travels with a human-readable message.

use super::codec::{Decode, Encode, FrameWriter, Reader};
use crate::error::ProtocolError;

macro_rules! error_codes {
    ($($(#[$meta:meta])* $name:ident = $value:literal, $retriable:literal;)*) => {
        /// What went wrong with a request or with one partition of it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        #[repr(u16)]
        pub enum ErrorCode {
            $($(#[$meta])* $name = $value,)*
        }

        impl ErrorCode {
            /// The code for a wire value; unknown values (from a newer peer) map to `Unknown`.
            pub fn from_u16(value: u16) -> ErrorCode {
                match value {
                    $($value => ErrorCode::$name,)*
                    _ => ErrorCode::Unknown,
                }
            }

            /// True when the same request may succeed if retried later (after a metadata
            /// refresh, a reconnect or a backoff).
            pub fn is_retriable(self) -> bool {
                match self {
                    $(ErrorCode::$name => $retriable,)*
                }
            }
        }
    };
}

error_codes! {
    /// Success.
    #[default]
    None = 0, false;
    /// An error the broker did not expect; the message says more.
    Unknown = 1, false;
    /// A record batch failed validation (CRC, length, structure).
    CorruptMessage = 2, false;
    /// The topic or partition does not exist.
    UnknownTopicOrPartition = 3, true;
    /// The offset is outside the partition's [log start, log end].
    OffsetOutOfRange = 4, false;
    /// A batch or request is larger than the limit.
    MessageTooLarge = 5, false;
    /// The request is malformed or inconsistent.
    InvalidRequest = 6, false;
    /// CreateTopics for a name that exists.
    TopicAlreadyExists = 7, false;
    /// This broker or shard does not lead the partition; refresh metadata.
    NotLeader = 8, true;
    /// The request did not complete within its timeout.
    RequestTimedOut = 9, true;
    /// The API or API version is not supported by this broker.
    UnsupportedVersion = 10, false;
    /// A topic name or setting is invalid.
    InvalidConfig = 11, false;
    /// The storage layer failed (I/O error, poisoned log).
    StorageError = 12, true;
    /// The disk is full; nothing was written.
    DiskFull = 13, true;
    /// The broker is shutting down.
    BrokerShuttingDown = 14, true;
    /// Too many requests in flight; back off and retry.
    Throttled = 15, true;
    /// Fewer in-sync replicas than `min.insync.replicas`.
    NotEnoughReplicas = 16, true;
    /// An idempotent producer's batch does not follow its previous one (a gap or a reorder):
    /// records were lost between producer and broker; the producer must not retry blindly.
    OutOfOrderSequence = 17, false;
    /// The producer's epoch is older than the broker's: a newer instance has taken over.
    InvalidProducerEpoch = 18, false;
    /// The same batch is being appended right now (a retry racing its original); retry.
    DuplicateInFlight = 19, true;
    /// The group coordinator is not ready (still loading committed offsets, or stopping).
    CoordinatorNotAvailable = 20, true;
    /// This shard or broker does not coordinate the group; find the coordinator again.
    NotCoordinator = 21, true;
    /// The member's generation is not the group's: it missed a rebalance and must rejoin.
    IllegalGeneration = 22, false;
    /// The group does not know this member (removed after its session timed out): rejoin
    /// with an empty member id.
    UnknownMemberId = 23, false;
    /// The group is rebalancing: rejoin to take part.
    RebalanceInProgress = 24, false;
    /// The member's assignment protocols share none with the group's.
    InconsistentGroupProtocol = 25, false;
    /// The session timeout is outside the broker's allowed range.
    InvalidSessionTimeout = 26, false;
    /// The operation needs a group with no members (e.g. resetting offsets).
    NonEmptyGroup = 27, false;
    /// Another member took over this static instance id.
    FencedInstanceId = 28, false;
    /// The group does not exist.
    GroupIdNotFound = 29, false;
    /// The group id is empty or too long.
    InvalidGroupId = 30, false;
    /// The group has as many members as the broker allows (`--group-max-size`).
    GroupMaxSizeReached = 31, false;
    /// The request carried an older leader epoch than the replica's: the sender's metadata is
    /// stale (KIP-320); refresh it and retry.
    FencedLeaderEpoch = 32, true;
    /// The request carried a newer leader epoch than the replica knows: this broker has not
    /// learned the change yet; retry.
    UnknownLeaderEpoch = 33, true;
    /// The batch was appended, but the in-sync replicas fell below `min.insync.replicas`
    /// before it was committed; it may or may not survive a failover.
    NotEnoughReplicasAfterAppend = 34, true;
    /// The cluster's controller quorum has no leader or did not answer in time.
    ControllerNotAvailable = 35, true;
    /// A replica assignment names an unknown broker, a duplicate, or the wrong count.
    InvalidReplicaAssignment = 36, false;
}

impl ErrorCode {
    /// The wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?} ({})", self.as_u16())
    }
}

impl Encode for ErrorCode {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        writer.put(&self.as_u16().to_le_bytes());
    }
}

impl<'a> Decode<'a> for ErrorCode {
    const MIN_SIZE: usize = 2;
    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        Ok(ErrorCode::from_u16(u16::decode(reader)?))
    }
}

super::codec::message! {
    /// An error code with its message; `code == None` means success (empty message).
    pub struct WireError {
        /// What went wrong.
        pub code: ErrorCode,
        /// For people: what, and what to do.
        pub message: String,
    }
}

impl WireError {
    /// Success.
    pub fn none() -> Self {
        WireError::default()
    }

    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
        }
    }

    /// True for success.
    pub fn is_ok(&self) -> bool {
        self.code == ErrorCode::None
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
