//! The one place where internal errors become wire error codes (with a message for people).

use storage::StorageError;
use wire::protocol::{ErrorCode, WireError};

/// Maps a storage error to the code and message a client sees.
pub fn from_storage(error: &StorageError) -> WireError {
    let code = match error {
        StorageError::NoSpace { .. } => ErrorCode::DiskFull,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::InvalidBatch(_) => ErrorCode::CorruptMessage,
        StorageError::BatchTooLarge { .. } => ErrorCode::MessageTooLarge,
        StorageError::Closed { .. } => ErrorCode::BrokerShuttingDown,
        StorageError::Io { .. } | StorageError::Poisoned { .. } | StorageError::Corrupt { .. } => {
            ErrorCode::StorageError
        }
        StorageError::DirectIoUnavailable { .. } | StorageError::Config(_) => ErrorCode::Unknown,
    };
    WireError::new(code, error.to_string())
}

/// Maps a batch validation failure.
pub fn from_batch(error: &wire::BatchError) -> WireError {
    let code = match error {
        wire::BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        _ => ErrorCode::CorruptMessage,
    };
    WireError::new(code, format!("invalid record batch: {error}"))
}

/// The error for a topic or partition this broker does not have.
pub fn unknown_partition(topic: &str, partition: u32) -> WireError {
    WireError::new(
        ErrorCode::UnknownTopicOrPartition,
        format!("topic {topic:?} partition {partition} does not exist"),
    )
}
