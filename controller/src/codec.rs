//! The controller's byte format: `postcard` (compact serde) for commands, the metadata image,
//! Raft messages and files, plus the length-prefixed frames of its TCP protocol.
//!
//! Pure: no I/O here. [`crate::raft::network`] reads and writes frames on sockets,
//! [`crate::raft::log_store`] and [`crate::raft::state_machine`] encode what they store.
//! Decoding never panics on hostile bytes: postcard checks every length against the input,
//! and frames are bounded by [`FRAME_MAX_BYTES`] before anything is allocated.
//!
//! ```text
//!   frame = payload length u32 BE (4) | payload (postcard)
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ControllerError;

/// Largest frame the controller protocol accepts: one snapshot chunk (openraft's
/// `snapshot_max_chunk_size`, set to [`SNAPSHOT_CHUNK_BYTES`]) or one append batch of at most
/// `max_payload_entries` (300) commands of at most a few KiB each, with room to spare.
pub const FRAME_MAX_BYTES: usize = 16 << 20;

/// Snapshot chunk size for openraft's chunked snapshot transfer: 4 MiB, a quarter of
/// [`FRAME_MAX_BYTES`].
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;

/// Length of a frame's length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Encode a value.
pub fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, ControllerError> {
    postcard::to_stdvec(value).map_err(|error| ControllerError::Decode {
        what: what.to_string(),
        message: format!("encode: {error}"),
    })
}

/// Decode a value; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, ControllerError> {
    postcard::from_bytes(bytes).map_err(|error| ControllerError::Decode {
        what: what.to_string(),
        message: error.to_string(),
    })
}

/// Encode a value as one frame (length prefix included).
pub fn encode_frame<T: Serialize>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, ControllerError> {
    let mut frame = postcard::to_extend(value, vec![0u8; FRAME_HEADER_BYTES]).map_err(|error| {
        ControllerError::Decode {
            what: what.to_string(),
            message: format!("encode: {error}"),
        }
    })?;
    let payload_len = frame.len() - FRAME_HEADER_BYTES;
    if payload_len > FRAME_MAX_BYTES {
        return Err(ControllerError::FrameTooLarge {
            len_bytes: payload_len as u64,
            max_bytes: FRAME_MAX_BYTES as u64,
        });
    }
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&(payload_len as u32).to_be_bytes());
    Ok(frame)
}

/// The payload length announced by a frame header, checked against [`FRAME_MAX_BYTES`].
pub fn frame_payload_len(header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, ControllerError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > FRAME_MAX_BYTES {
        return Err(ControllerError::FrameTooLarge {
            len_bytes: len as u64,
            max_bytes: FRAME_MAX_BYTES as u64,
        });
    }
    Ok(len)
}
