//! Framing: every request and response is one length-prefixed frame.
//!
//! ```text
//!  request frame                                  response frame
//!  +-----------+---------+-------------+---------+  +-----------+----------------+-------------+------+
//!  | length:u32| api:u16 | version:u16 | corr:u32|  | length:u32| corr:u32       | error (code |      |
//!  +-----------+---------+-------------+---------+  +-----------+----------------+  + message) | body |
//!  | body ...                                    |  |                                          |      |
//!  +---------------------------------------------+  +------------------------------------------+------+
//!  length counts the bytes after itself; it is checked against FRAME_SIZE_MAX before any
//!  buffer is allocated. Frames are zero-padded so that length + 4 is a multiple of 16: frames
//!  read back to back into an aligned buffer all start 16-aligned.
//! ```
//!
//! A response carries a top-level error first so the broker can answer any request whose header
//! it could read, even one it could not decode further. Version policy: every API starts at
//! version 1; a broker answers a version it does not support with `UnsupportedVersion` and the
//! supported range is given by the handshake.

use super::codec::Reader;
use crate::error::ProtocolError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_SIZE: usize = 4;
/// Bytes of a request header, length prefix included.
pub const REQUEST_HEADER_SIZE: usize = 12;
/// Bytes of a response header (length + correlation id), before the top-level error.
pub const RESPONSE_HEADER_SIZE: usize = 8;
/// Hard upper bound on one frame: four maximal batches. Bounds the memory one connection can
/// make the broker allocate before the request is even parsed; brokers may set lower limits.
pub const FRAME_SIZE_MAX: usize = 4 * crate::limits::BATCH_SIZE_MAX;

/// The fixed part at the start of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Which API (see [`super::ApiKey`]).
    pub api_key: u16,
    /// Version of that API's request and response layout.
    pub api_version: u16,
    /// Echoed in the response so clients can pipeline requests.
    pub correlation_id: u32,
}

/// Cheap check of a receive buffer: `Ok(None)` while the length prefix is incomplete,
/// `Ok(Some(total))` with the total frame length once known (whether or not all of it has
/// arrived), `Err` when the length is absurd. Nothing is allocated.
pub fn check_frame(buffer: &[u8], frame_size_max: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(prefix) = buffer.get(..LENGTH_PREFIX_SIZE) else {
        return Ok(None);
    };
    let mut bytes = [0u8; LENGTH_PREFIX_SIZE];
    bytes.copy_from_slice(prefix);
    let length = u32::from_le_bytes(bytes) as usize;
    let max = frame_size_max.min(FRAME_SIZE_MAX);
    // Compare totals: `max - LENGTH_PREFIX_SIZE` would underflow for a limit below 4.
    let total = length.saturating_add(LENGTH_PREFIX_SIZE);
    if total > max {
        return Err(ProtocolError::FrameTooLarge { length, max });
    }
    if total % super::codec::FRAME_ALIGNMENT != 0 {
        return Err(ProtocolError::Malformed {
            position: 0,
            reason: format!("frame length {total} is not a multiple of 16"),
        });
    }
    Ok(Some(total))
}

/// Fails unless the length prefix of a complete frame counts exactly the bytes after it, so that
/// a frame is never decoded from a slice its own length disagrees with.
pub(crate) fn check_length_prefix(frame: &[u8]) -> Result<(), ProtocolError> {
    use super::codec::Decode;
    let mut reader = Reader::new(frame, 0);
    let length = u32::decode(&mut reader)? as usize;
    if length != reader.remaining() {
        return Err(ProtocolError::Malformed {
            position: 0,
            reason: format!(
                "length prefix says {length} bytes, the frame has {}",
                reader.remaining()
            ),
        });
    }
    Ok(())
}

/// Reads the request header of a complete frame and returns a reader positioned at the body.
pub fn decode_request_header(frame: &[u8]) -> Result<(RequestHeader, Reader<'_>), ProtocolError> {
    use super::codec::Decode;
    let mut reader = Reader::new(frame, LENGTH_PREFIX_SIZE);
    let header = RequestHeader {
        api_key: u16::decode(&mut reader)?,
        api_version: u16::decode(&mut reader)?,
        correlation_id: u32::decode(&mut reader)?,
    };
    Ok((header, reader))
}

/// Reads the correlation id of a complete response frame and returns a reader positioned at
/// the top-level error.
pub fn decode_response_header(frame: &[u8]) -> Result<(u32, Reader<'_>), ProtocolError> {
    use super::codec::Decode;
    let mut reader = Reader::new(frame, LENGTH_PREFIX_SIZE);
    let correlation_id = u32::decode(&mut reader)?;
    Ok((correlation_id, reader))
}
