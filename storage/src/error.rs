//! The storage crate's one error type. The broker maps each variant to a stable wire code in one
//! place; nothing here knows about the network.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in a partition log.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed; `path` names the file or directory it was about.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory the call was about.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The filesystem is full. Nothing was appended; the log stays usable once space is freed.
    #[error("no space left on the device holding {path}")]
    NoSpace {
        /// File that could not grow.
        path: PathBuf,
    },
    /// The file was opened but the kernel silently fell back to buffered I/O (tmpfs does this).
    #[error(
        "O_DIRECT is not in effect for {path}: keep the data directory on a real disk, not tmpfs"
    )]
    DirectIoUnavailable {
        /// File that was opened without O_DIRECT.
        path: PathBuf,
    },
    /// A batch on disk failed validation where no crash can explain it (a sealed segment, or
    /// a position the log had already reported written).
    #[error("corrupt data in {path} at byte position {position}: {reason}")]
    Corrupt {
        /// Segment or index file.
        path: PathBuf,
        /// Byte position of the bad batch in that file.
        position: u64,
        /// What the validator said.
        reason: String,
    },
    /// A read or a seek named an offset the log does not hold.
    #[error(
        "offset {requested} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        /// Offset asked for.
        requested: u64,
        /// First offset still in the log.
        log_start_offset: u64,
        /// Offset the next append will get.
        log_end_offset: u64,
    },
    /// The batch handed to `append` is not a valid batch.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] wire::BatchError),
    /// The batch is larger than this log accepts.
    #[error("batch of {size_bytes} bytes exceeds this log's limit of {max_bytes} bytes")]
    BatchTooLarge {
        /// Size of the offered batch.
        size_bytes: usize,
        /// The log's `batch_bytes_max`.
        max_bytes: usize,
    },
    /// An earlier write or fdatasync failed; the log refuses further appends until it is
    /// reopened, because it can no longer say which bytes reached the disk.
    /// Nothing appended after the failure is ever reported durable; reads of what was durable
    /// before still work.
    #[error("log in {dir} is poisoned by an earlier I/O failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The log's directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
    /// The log was closed.
    #[error("log in {dir} is closed")]
    Closed {
        /// The log's directory.
        dir: PathBuf,
    },
    /// A `LogConfig` value is out of its allowed range.
    #[error("invalid log configuration: {0}")]
    Config(String),
}

impl StorageError {
    /// Wraps an I/O error with the path it concerns, turning ENOSPC into [`StorageError::NoSpace`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
            || source.to_string().contains("No space left on device")
        {
            StorageError::NoSpace { path }
        } else {
            StorageError::Io { path, source }
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
