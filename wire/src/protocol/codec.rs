//! The primitive codec: [`Reader`] decodes from a borrowed frame, [`FrameWriter`] encodes into
//! a caller's buffer plus borrowed pieces (record batches) that are written to the socket as they
//! are, never copied into the frame.
//!
//! Encoding rules, all little-endian:
//!
//! ```text
//!  integers      fixed width (u8, u16, u32, u64, i8, i16, i32, i64)
//!  bool          u8, 0 or 1
//!  string        u16 length + UTF-8 bytes
//!  bytes         u32 length + bytes
//!  Option<T>     u8 tag (0 = None, 1 = Some) + T
//!  Vec<T>        u32 count + elements
//!  frame         padded with zeros to a multiple of 16 bytes
//!  records       u32 length + zero padding to the next multiple of 16 of the frame position
//!                + batches (each a multiple of 16 bytes), so batches sit 16-aligned in any
//!                16-aligned receive buffer and their rkyv records can be read in place
//! ```

use crate::error::ProtocolError;

/// Every frame's total length (length prefix included) is a multiple of this.
pub const FRAME_ALIGNMENT: usize = 16;

/// Decodes primitive values from a frame, never panicking: every shortfall is an error.
/// Positions are frame positions (0 = the first byte of the length prefix), which is what
/// alignment of records is computed against.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole frame, starting at `position`.
    pub fn new(bytes: &'a [u8], position: usize) -> Self {
        Reader { bytes, position }
    }

    /// Current frame position.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.position)
    }

    /// Takes the next `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(ProtocolError::UnexpectedEof {
                position: self.position,
                need: len,
                have: self.remaining(),
            })?;
        let out = &self.bytes[self.position..end];
        self.position = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Skips zero padding up to the next multiple of `align` (a power of two).
    pub fn align(&mut self, align: usize) -> Result<(), ProtocolError> {
        let padding = self.position.next_multiple_of(align) - self.position;
        let bytes = self.take(padding)?;
        if bytes.iter().any(|b| *b != 0) {
            return Err(ProtocolError::Malformed {
                position: self.position,
                reason: "non-zero alignment padding".into(),
            });
        }
        Ok(())
    }

    /// Skips the frame's zero padding, then fails unless every byte was consumed.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        self.align(FRAME_ALIGNMENT)?;
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(ProtocolError::Malformed {
                position: self.position,
                reason: format!("{} trailing bytes", self.remaining()),
            })
        }
    }

    /// A collection count, checked against the bytes left so that a lying count cannot make
    /// the decoder allocate more than the frame could hold.
    pub fn count(&mut self, min_element_bytes: usize) -> Result<usize, ProtocolError> {
        let position = self.position;
        let count = u32::decode(self)? as usize;
        if count.saturating_mul(min_element_bytes.max(1)) > self.remaining() {
            return Err(ProtocolError::Malformed {
                position,
                reason: format!("count {count} exceeds the {} bytes left", self.remaining()),
            });
        }
        Ok(count)
    }
}

/// Builds one frame: owned bytes in the caller's buffer, interleaved with borrowed pieces
/// (record batches) that are written as they are. [`FrameWriter::finish`] fills in the length
/// prefix; [`FrameWriter::parts`] yields the byte slices to write in order.
pub struct FrameWriter<'a> {
    head: &'a mut Vec<u8>,
    /// Borrowed pieces and the position in `head` they follow.
    pieces: Vec<(usize, &'a [u8])>,
    pieces_len: usize,
}

impl<'a> FrameWriter<'a> {
    /// Starts a frame in `head` (cleared), reserving the 4-byte length prefix.
    pub fn new(head: &'a mut Vec<u8>) -> Self {
        head.clear();
        head.extend_from_slice(&[0u8; 4]);
        FrameWriter {
            head,
            pieces: Vec::new(),
            pieces_len: 0,
        }
    }

    /// Frame position of the next byte written.
    pub fn position(&self) -> usize {
        self.head.len() + self.pieces_len
    }

    /// Appends owned bytes.
    pub fn put(&mut self, bytes: &[u8]) {
        self.head.extend_from_slice(bytes);
    }

    /// Appends a `u16`.
    pub fn put_u16(&mut self, value: u16) {
        self.put(&value.to_le_bytes());
    }

    /// Appends a `u32`.
    pub fn put_u32(&mut self, value: u32) {
        self.put(&value.to_le_bytes());
    }

    /// Appends borrowed bytes without copying them.
    pub fn put_borrowed(&mut self, bytes: &'a [u8]) {
        if !bytes.is_empty() {
            self.pieces.push((self.head.len(), bytes));
            self.pieces_len += bytes.len();
        }
    }

    /// Pads with zeros to the next multiple of `align` (a power of two).
    pub fn align(&mut self, align: usize) {
        let position = self.position();
        let padding = position.next_multiple_of(align) - position;
        self.head.extend(std::iter::repeat_n(0u8, padding));
    }

    /// Pads the frame to a multiple of 16 bytes and writes the length prefix. Whole frames of
    /// 16-multiple length keep every frame (and so every batch in it) 16-aligned when frames are
    /// read back to back into one aligned receive buffer.
    pub fn finish(mut self) -> FrameParts<'a> {
        self.align(FRAME_ALIGNMENT);
        let total = self.head.len() + self.pieces_len;
        let body = (total - 4) as u32;
        self.head[..4].copy_from_slice(&body.to_le_bytes());
        FrameParts {
            head: self.head,
            pieces: self.pieces,
            total,
        }
    }
}

/// A finished frame: the slices to write, in order.
pub struct FrameParts<'a> {
    head: &'a [u8],
    pieces: Vec<(usize, &'a [u8])>,
    total: usize,
}

impl<'a> FrameParts<'a> {
    /// Total bytes of the frame, length prefix included.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True for an empty frame (never produced by the encoders).
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The slices to write, in order.
    pub fn parts(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let mut at = 0;
        let mut out = Vec::with_capacity(self.pieces.len() * 2 + 1);
        for (head_position, piece) in &self.pieces {
            if *head_position > at {
                out.push(&self.head[at..*head_position]);
            }
            out.push(*piece);
            at = *head_position;
        }
        if at < self.head.len() {
            out.push(&self.head[at..]);
        }
        out.into_iter()
    }

    /// Copies the frame into one buffer (tests, and small frames).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.total);
        for part in self.parts() {
            out.extend_from_slice(part);
        }
        out
    }
}

/// A value that can be written into a frame.
pub trait Encode {
    /// Appends `self` to the frame; borrowed data may be referenced, not copied.
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>);
}

/// A value that can be read from a frame, possibly borrowing from it.
pub trait Decode<'a>: Sized {
    /// Smallest encoding of one value, used to bound collection counts.
    const MIN_SIZE: usize;
    /// Reads one value.
    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError>;
}

macro_rules! integer_codec {
    ($($ty:ty),*) => {$(
        impl Encode for $ty {
            fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
                writer.put(&self.to_le_bytes());
            }
        }
        impl<'a> Decode<'a> for $ty {
            const MIN_SIZE: usize = std::mem::size_of::<$ty>();
            fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
                Ok(<$ty>::from_le_bytes(reader.array()?))
            }
        }
    )*};
}
integer_codec!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Encode for bool {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        writer.put(&[u8::from(*self)]);
    }
}

impl<'a> Decode<'a> for bool {
    const MIN_SIZE: usize = 1;
    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        let position = reader.position();
        match u8::decode(reader)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtocolError::Malformed {
                position,
                reason: format!("bool byte {other}"),
            }),
        }
    }
}

impl Encode for String {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        let bytes = self.as_bytes();
        // Longer strings are cut, on a character boundary so that the frame still decodes.
        let mut len = bytes.len().min(u16::MAX as usize);
        while !self.is_char_boundary(len) {
            len -= 1;
        }
        writer.put_u16(len as u16);
        writer.put(&bytes[..len]);
    }
}

impl<'a> Decode<'a> for String {
    const MIN_SIZE: usize = 2;
    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        let position = reader.position();
        let len = u16::decode(reader)? as usize;
        let bytes = reader.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::Malformed {
                position,
                reason: "string is not UTF-8".into(),
            })
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        match self {
            None => 0u8.encode(writer),
            Some(value) => {
                1u8.encode(writer);
                value.encode(writer);
            }
        }
    }
}

impl<'a, T: Decode<'a>> Decode<'a> for Option<T> {
    const MIN_SIZE: usize = 1;
    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        match bool::decode(reader)? {
            false => Ok(None),
            true => T::decode(reader).map(Some),
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        writer.put_u32(self.len() as u32);
        for item in self {
            item.encode(writer);
        }
    }
}

impl<'a, T: Decode<'a>> Decode<'a> for Vec<T> {
    const MIN_SIZE: usize = 4;
    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        let count = reader.count(T::MIN_SIZE)?;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(T::decode(reader)?);
        }
        Ok(out)
    }
}

/// Record batches laid end to end, 16-aligned in the frame (see the module docs). Decoded as
/// one borrowed slice; encoded from any number of borrowed slices (batches served straight
/// from the log's buffers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records<'a> {
    /// The batches' bytes, in order.
    pub parts: Vec<&'a [u8]>,
}

impl<'a> Records<'a> {
    /// Records from one contiguous slice.
    pub fn from_slice(bytes: &'a [u8]) -> Self {
        Records { parts: vec![bytes] }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as one slice. Meant for the decoded form, which always has at most one part;
    /// records built from several parts (for encoding) give an empty slice here.
    pub fn as_slice(&self) -> &'a [u8] {
        match self.parts.as_slice() {
            [] => &[],
            [one] => one,
            _ => &[],
        }
    }
}

impl Encode for Records<'_> {
    fn encode<'b>(&'b self, writer: &mut FrameWriter<'b>) {
        writer.put_u32(self.len() as u32);
        writer.align(crate::batch::BATCH_ALIGNMENT);
        for part in &self.parts {
            writer.put_borrowed(part);
        }
    }
}

impl<'a> Decode<'a> for Records<'a> {
    const MIN_SIZE: usize = 4;
    fn decode(reader: &mut Reader<'a>) -> Result<Self, ProtocolError> {
        let len = u32::decode(reader)? as usize;
        reader.align(crate::batch::BATCH_ALIGNMENT)?;
        let bytes = reader.take(len)?;
        Ok(if bytes.is_empty() {
            Records::default()
        } else {
            Records::from_slice(bytes)
        })
    }
}

/// Declares a message struct (owned fields) with its field-by-field codec, in field order.
macro_rules! message {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

        impl $crate::protocol::codec::Encode for $name {
            #[allow(unused_variables)]
            fn encode<'b>(&'b self, writer: &mut $crate::protocol::codec::FrameWriter<'b>) {
                $( $crate::protocol::codec::Encode::encode(&self.$field, writer); )*
            }
        }

        impl<'a> $crate::protocol::codec::Decode<'a> for $name {
            const MIN_SIZE: usize = 0 $(+ <$ty as $crate::protocol::codec::Decode<'a>>::MIN_SIZE)*;
            #[allow(unused_variables)]
            fn decode(reader: &mut $crate::protocol::codec::Reader<'a>) -> Result<Self, $crate::error::ProtocolError> {
                Ok($name { $($field: $crate::protocol::codec::Decode::decode(reader)?),* })
            }
        }
    };
    ($(#[$meta:meta])* pub struct $name:ident<'a> { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name<'a> { $($(#[$fmeta])* pub $field: $ty),* }

        impl $crate::protocol::codec::Encode for $name<'_> {
            #[allow(unused_variables)]
            fn encode<'b>(&'b self, writer: &mut $crate::protocol::codec::FrameWriter<'b>) {
                $( $crate::protocol::codec::Encode::encode(&self.$field, writer); )*
            }
        }

        impl<'a> $crate::protocol::codec::Decode<'a> for $name<'a> {
            const MIN_SIZE: usize = 0 $(+ <$ty as $crate::protocol::codec::Decode<'a>>::MIN_SIZE)*;
            #[allow(unused_variables)]
            fn decode(reader: &mut $crate::protocol::codec::Reader<'a>) -> Result<Self, $crate::error::ProtocolError> {
                Ok($name { $($field: $crate::protocol::codec::Decode::decode(reader)?),* })
            }
        }
    };
}
pub(crate) use message;
