//! The two delivery policies every crate shares, defined once: a topic's [`Durability`] (when
//! its partitions are synced to disk) and a producer's [`Acks`] (when a produce is answered).
//! Storage, broker, client, command line and bench all use these types; the text forms
//! ([`FromStr`]/[`Display`]) are what flags and config files say.
//!
//! ```text
//!  Durability on the wire: kind: u8 (0 never, 1 interval, 2 always) | interval_ms: u32 | interval_bytes: u64
//!  Acks on the wire:       i8 (0 none, 1 leader, -1 all)
//! ```

use std::fmt;
use std::str::FromStr;

use crate::error::ProtocolError;
use crate::protocol::{Decode, Encode, FrameWriter, Reader};

/// How a topic's partitions are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every append is reported durable only after an fdatasync that covers it; appends that
    /// arrive while a sync runs share the next one (group commit). Acknowledged means synced.
    #[default]
    Always,
    /// A sync runs `interval_ms` after the first unsynced append, or as soon as `bytes` unsynced
    /// bytes have piled up, whichever comes first.
    Interval {
        /// Longest time an append stays unsynced, in ms.
        interval_ms: u32,
        /// Most unsynced bytes before a sync starts at once.
        bytes: u64,
    },
    /// No sync except when a segment is sealed or the log is closed: the data is written with
    /// O_DIRECT (it survives a crash of the process, not of the machine); replicas provide the
    /// durability.
    Never,
}

impl Durability {
    /// Unsynced bytes of `interval` when nothing else is said: 4 MiB, a few batches of the
    /// largest default size, written in well under the default 10 ms interval on any SSD.
    pub const INTERVAL_BYTES_DEFAULT: u64 = 4 << 20;
    /// Sync interval of `interval` when nothing else is said.
    pub const INTERVAL_MS_DEFAULT: u32 = 10;

    const KIND_NEVER: u8 = 0;
    const KIND_INTERVAL: u8 = 1;
    const KIND_ALWAYS: u8 = 2;

    /// `interval` with the given period (at least 1 ms) and the default byte bound.
    pub fn interval(interval_ms: u32) -> Durability {
        Durability::Interval {
            interval_ms: interval_ms.max(1),
            bytes: Self::INTERVAL_BYTES_DEFAULT,
        }
    }

    /// True when acknowledgements (and visibility) wait for fsync.
    pub fn syncs_before_ack(&self) -> bool {
        matches!(self, Durability::Always)
    }

    /// The policy's name without parameters: `always`, `interval` or `never`.
    pub fn name(&self) -> &'static str {
        match self {
            Durability::Always => "always",
            Durability::Interval { .. } => "interval",
            Durability::Never => "never",
        }
    }
}

/// `always`, `never`, or `interval(10ms,4194304B)` for people.
impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Interval { interval_ms, bytes } => {
                write!(f, "interval({interval_ms}ms,{bytes}B)")
            }
            other => f.write_str(other.name()),
        }
    }
}

/// A text form was not one of the accepted names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?}: expected {expected}")]
pub struct ParsePolicyError {
    what: &'static str,
    text: String,
    expected: &'static str,
}

/// Parses `always`, `never` or `interval` (with [`Durability::INTERVAL_MS_DEFAULT`]; set the
/// period with [`Durability::interval`]).
impl FromStr for Durability {
    type Err = ParsePolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            "interval" => Ok(Durability::interval(Self::INTERVAL_MS_DEFAULT)),
            _ => Err(ParsePolicyError {
                what: "durability",
                text: text.to_owned(),
                expected: "always, interval or never",
            }),
        }
    }
}

impl Encode for Durability {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        let (kind, interval_ms, bytes) = match *self {
            Durability::Never => (Self::KIND_NEVER, 0, 0),
            Durability::Interval { interval_ms, bytes } => {
                (Self::KIND_INTERVAL, interval_ms, bytes)
            }
            Durability::Always => (Self::KIND_ALWAYS, 0, 0),
        };
        writer.put(&[kind]);
        writer.put(&interval_ms.to_le_bytes());
        writer.put(&bytes.to_le_bytes());
    }
}

impl<'a> Decode<'a> for Durability {
    const MIN_SIZE: usize = 1 + 4 + 8;

    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        let position = reader.position();
        let kind = u8::decode(reader)?;
        let interval_ms = u32::decode(reader)?;
        let bytes = u64::decode(reader)?;
        // Only the canonical encoding decodes: parameters only with `interval`, and positive.
        let durability = match (kind, interval_ms, bytes) {
            (Self::KIND_NEVER, 0, 0) => Durability::Never,
            (Self::KIND_ALWAYS, 0, 0) => Durability::Always,
            (Self::KIND_INTERVAL, 1.., 1..) => Durability::Interval { interval_ms, bytes },
            _ => {
                return Err(ProtocolError::Malformed {
                    position,
                    reason: format!(
                        "durability kind {kind} with interval {interval_ms} ms, {bytes} bytes"
                    ),
                })
            }
        };
        Ok(durability)
    }
}

/// When a produce request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// No acknowledgement (`acks = 0`): the broker sends no response. At-most-once.
    None,
    /// Once the leader appended the batch (and synced it if the topic's durability is
    /// `always`).
    #[default]
    Leader,
    /// Once every in-sync replica has the batch (on one node: as `Leader`).
    All,
}

impl Acks {
    /// The wire value: 0, 1 or -1.
    pub fn as_i8(self) -> i8 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }

    /// The policy of a wire value; `None` for anything but 0, 1 and -1.
    pub fn from_i8(value: i8) -> Option<Acks> {
        match value {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// `0`, `1` or `all`.
impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

/// Parses `0`, `1`, `all` (or `-1`).
impl FromStr for Acks {
    type Err = ParsePolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(ParsePolicyError {
                what: "acks",
                text: text.to_owned(),
                expected: "0, 1 or all",
            }),
        }
    }
}

impl Encode for Acks {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        writer.put(&self.as_i8().to_le_bytes());
    }
}

impl<'a> Decode<'a> for Acks {
    const MIN_SIZE: usize = 1;

    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        let position = reader.position();
        let value = i8::decode(reader)?;
        Acks::from_i8(value).ok_or_else(|| ProtocolError::Malformed {
            position,
            reason: format!("acks {value}: expected 0, 1 or -1"),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Text forms round-trip through FromStr and name the accepted values when wrong.
    #[test]
    fn text_forms() {
        for acks in [Acks::None, Acks::Leader, Acks::All] {
            assert_eq!(acks.to_string().parse::<Acks>().unwrap(), acks);
            assert_eq!(Acks::from_i8(acks.as_i8()), Some(acks));
        }
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert!("2"
            .parse::<Acks>()
            .unwrap_err()
            .to_string()
            .contains("0, 1 or all"));
        for durability in [Durability::Always, Durability::Never] {
            assert_eq!(
                durability.to_string().parse::<Durability>().unwrap(),
                durability
            );
        }
        assert_eq!(
            "interval".parse::<Durability>().unwrap(),
            Durability::interval(Durability::INTERVAL_MS_DEFAULT)
        );
        assert!("sometimes".parse::<Durability>().is_err());
    }
}
