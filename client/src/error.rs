//! The client's one error type, [`ClientError`], and how each error is classified: whether the
//! same operation may succeed if retried ([`ClientError::is_retriable`]) and whether the
//! metadata cache should be refreshed first ([`ClientError::invalidates_metadata`]).
//!
//! Errors are `Clone` because one failure (a dead connection, a rejected batch) is delivered to
//! every request or record it affects; I/O errors are therefore kept behind an `Arc`.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use wire::protocol::{ApiKey, ErrorCode, WireError};
use wire::{BatchError, ProtocolError};

/// Everything that can go wrong in the client.
#[derive(Debug, Error, Clone)]
pub enum ClientError {
    /// Connecting to, reading from or writing to a broker failed.
    #[error("I/O error talking to {addr}: {source}")]
    Io {
        /// The broker endpoint (`host:port`).
        addr: String,
        /// What the operating system said.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The connection died (closed by the broker, or an I/O error on another request) while
    /// this request was pending. Retriable: the next attempt opens a new connection.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// The broker endpoint.
        addr: String,
        /// Why the connection was declared dead.
        reason: String,
    },

    /// The broker answered with an error code.
    #[error("broker error {code}: {message}")]
    Broker {
        /// The stable wire code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },

    /// The broker sent bytes this client cannot decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),

    /// A record batch could not be built or a fetched one failed validation.
    #[error("record batch error: {0}")]
    Batch(#[from] BatchError),

    /// A fetched batch failed validation (CRC, structure): nothing of it was handed out and
    /// the consumer's position did not move.
    #[error("corrupt batch in {topic}/{partition} at offset {offset}: {source}")]
    CorruptBatch {
        /// Topic of the batch.
        topic: String,
        /// Partition of the batch.
        partition: u32,
        /// The position the fetch started from.
        offset: u64,
        /// What the validation found.
        #[source]
        source: BatchError,
    },

    /// No answer within the request timeout.
    #[error("request to {addr} timed out after {timeout:?}")]
    Timeout {
        /// The broker endpoint.
        addr: String,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// The topic does not exist (according to fresh metadata).
    #[error("unknown topic {topic:?}")]
    UnknownTopic {
        /// The topic asked for.
        topic: String,
    },

    /// The topic exists but has no such partition.
    #[error("unknown partition {topic}/{partition} (the topic has {partitions} partitions)")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },

    /// The partition currently has no leader (or its leader advertises no endpoint).
    #[error("no leader for {topic}/{partition}")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// A fetch asked for an offset outside the partition's log. The consumer does not reset
    /// its position by itself: seek to `Earliest`, `Latest` or an offset in range.
    #[error(
        "offset {offset} is out of range for {topic}/{partition} \
         (log start {log_start_offset}, high watermark {high_watermark}); seek to a valid offset"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset that was asked for.
        offset: u64,
        /// The first offset still in the log, as reported by the broker.
        log_start_offset: u64,
        /// The end of the readable log, as reported by the broker.
        high_watermark: u64,
    },

    /// The broker does not speak the protocol version of an API this client needs.
    #[error("broker {addr} does not support {api:?} version {version}")]
    UnsupportedApi {
        /// The broker endpoint.
        addr: String,
        /// The API.
        api: ApiKey,
        /// The version this client speaks.
        version: u16,
    },

    /// A record is too large to ever fit in a batch (or in the producer's buffer).
    #[error("record of about {size_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    RecordTooLarge {
        /// Estimated encoded size of the record.
        size_bytes: usize,
        /// The limit that applies.
        max_bytes: usize,
    },

    /// The partition is not assigned to this consumer.
    #[error("{topic}/{partition} is not assigned to this consumer")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The producer (or client object) was closed; nothing more can be sent.
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// The error for an I/O failure on `addr`.
    pub fn io(addr: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Io {
            addr: addr.into(),
            source: Arc::new(source),
        }
    }

    /// The error for a wire error code (`code` must not be `None`).
    pub fn broker(error: WireError) -> Self {
        ClientError::Broker {
            code: error.code,
            message: error.message,
        }
    }

    /// The broker's error code, when the error came from the broker.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the same operation may succeed if retried later (after a metadata refresh,
    /// a reconnect or a backoff). Producers retry these; other errors fail the records at once.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoLeader { .. } => true,
            ClientError::Broker { code, .. } => code.is_retriable(),
            _ => false,
        }
    }

    /// True when the error suggests the cached metadata is stale (the partition moved, the
    /// broker restarted or went away, the leader epoch the request named is older or newer
    /// than the replica's), so it should be refreshed before retrying.
    pub fn invalidates_metadata(&self) -> bool {
        match self {
            ClientError::Io { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::NoLeader { .. }
            | ClientError::UnknownTopic { .. }
            | ClientError::UnknownPartition { .. } => true,
            ClientError::Broker { code, .. } => matches!(
                code,
                ErrorCode::NotLeader
                    | ErrorCode::UnknownTopicOrPartition
                    | ErrorCode::BrokerShuttingDown
                    | ErrorCode::FencedLeaderEpoch
                    | ErrorCode::UnknownLeaderEpoch
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retriability follows the wire code table; local errors are classified here.
    #[test]
    fn classification() {
        let not_leader = ClientError::Broker {
            code: ErrorCode::NotLeader,
            message: String::new(),
        };
        assert!(not_leader.is_retriable());
        assert!(not_leader.invalidates_metadata());
        let corrupt = ClientError::Broker {
            code: ErrorCode::CorruptMessage,
            message: String::new(),
        };
        assert!(!corrupt.is_retriable());
        let too_large = ClientError::Broker {
            code: ErrorCode::MessageTooLarge,
            message: String::new(),
        };
        assert!(!too_large.is_retriable());
        let lost = ClientError::ConnectionLost {
            addr: "a:1".into(),
            reason: "eof".into(),
        };
        assert!(lost.is_retriable() && lost.invalidates_metadata());
        assert!(!ClientError::Closed.is_retriable());
        assert_eq!(corrupt.code(), Some(ErrorCode::CorruptMessage));
    }

    /// A stale or too-new leader epoch (KIP-320) is retried after a metadata refresh; a
    /// controller without a leader is retried without one.
    #[test]
    fn leader_epoch_errors_refresh_metadata() {
        let broker = |code| ClientError::Broker {
            code,
            message: String::new(),
        };
        for code in [ErrorCode::FencedLeaderEpoch, ErrorCode::UnknownLeaderEpoch] {
            assert!(broker(code).is_retriable(), "{code:?}");
            assert!(broker(code).invalidates_metadata(), "{code:?}");
        }
        assert!(broker(ErrorCode::ControllerNotAvailable).is_retriable());
        assert!(!broker(ErrorCode::ControllerNotAvailable).invalidates_metadata());
        assert!(!broker(ErrorCode::InvalidReplicaAssignment).is_retriable());
    }

    /// Group errors: a missing or moved coordinator is retried (after finding it again);
    /// membership errors are handled by the consumer group machinery, not retried as is.
    #[test]
    fn group_error_classification() {
        let broker = |code| ClientError::Broker {
            code,
            message: String::new(),
        };
        for code in [
            ErrorCode::CoordinatorNotAvailable,
            ErrorCode::NotCoordinator,
        ] {
            assert!(broker(code).is_retriable());
            assert!(!broker(code).invalidates_metadata());
        }
        for code in [
            ErrorCode::IllegalGeneration,
            ErrorCode::UnknownMemberId,
            ErrorCode::RebalanceInProgress,
            ErrorCode::InconsistentGroupProtocol,
            ErrorCode::InvalidSessionTimeout,
            ErrorCode::NonEmptyGroup,
            ErrorCode::FencedInstanceId,
            ErrorCode::GroupIdNotFound,
            ErrorCode::InvalidGroupId,
            ErrorCode::GroupMaxSizeReached,
        ] {
            assert!(!broker(code).is_retriable(), "{code:?}");
        }
    }
}
