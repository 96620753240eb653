//! The sparse offset index and time index of one segment.
//!
//! Both columns share one entry, added every `index_interval_bytes` of log:
//!
//! ```text
//!  entry (16 bytes, little-endian in the file)
//!  +-------------------+----------------+-----------------------------+
//!  | relative_offset:4 | position:4     | max_timestamp_before_ms:8   |
//!  +-------------------+----------------+-----------------------------+
//!  relative_offset  base offset of a batch minus the segment's base offset
//!  position         byte position of that batch in the segment file
//!  max_timestamp_before_ms  largest batch timestamp strictly before that batch
//!                   (i64::MIN for the first entry)
//! ```
//!
//! Offset lookup: the last entry at or below the wanted offset gives where to start walking
//! batch headers. Time lookup: every batch before an entry has a timestamp no greater than that
//! entry's `max_timestamp_before_ms`, so the last entry whose value is below the wanted time is
//! a safe place to start looking for the first batch at or after it.
//!
//! Sealed segments persist their index in `<base>.index`:
//!
//! ```text
//!  +--------+-------------+--------------+--------------+----------------+--------------+
//!  | "SLX1" | entries:u32 | base_offset  | end_position | next_offset    | max_ts_ms    |
//!  |   4    |     4       |    u64       |    u64       |    u64         |   i64        |
//!  +--------+-------------+--------------+--------------+----------------+--------------+
//!  | entries x 16 bytes ...                                     | crc32c of all before: u32 |
//!  +------------------------------------------------------------+---------------------------+
//! ```

/// Index file magic.
const INDEX_MAGIC: [u8; 4] = *b"SLX1";
/// Fixed part before the entries.
const INDEX_HEADER_SIZE: usize = 40;
/// Bytes per persisted entry.
const ENTRY_SIZE: usize = 16;

/// One sparse index point; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub(crate) relative_offset: u32,
    pub(crate) position: u32,
    pub(crate) max_timestamp_before_ms: i64,
}

/// What a scan or the index file knows about a whole segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub(crate) base_offset: u64,
    /// Bytes of valid batches; the file may be longer (a torn tail) until truncated.
    pub(crate) end_position: u64,
    /// Offset the next batch after this segment gets.
    pub(crate) next_offset: u64,
    /// Largest batch timestamp in the segment (i64::MIN when empty).
    pub(crate) max_timestamp_ms: i64,
}

/// The in-memory sparse index of one segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentIndex {
    entries: Vec<IndexEntry>,
    bytes_since_entry: u64,
    max_timestamp_ms: Option<i64>,
}

impl SegmentIndex {
    /// Records a batch appended at `position`; adds an entry every `interval_bytes`.
    pub(crate) fn on_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        batch_length: u32,
        max_timestamp_ms: i64,
        interval_bytes: u32,
    ) {
        if self.entries.is_empty() || self.bytes_since_entry >= u64::from(interval_bytes) {
            self.entries.push(IndexEntry {
                relative_offset,
                position,
                max_timestamp_before_ms: self.max_timestamp_ms.unwrap_or(i64::MIN),
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += u64::from(batch_length);
        self.max_timestamp_ms = Some(
            self.max_timestamp_ms
                .map_or(max_timestamp_ms, |m| m.max(max_timestamp_ms)),
        );
    }

    /// Largest batch timestamp indexed so far (i64::MIN when empty).
    pub(crate) fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms.unwrap_or(i64::MIN)
    }

    /// The last entry whose batch starts at or below `relative_offset`.
    pub(crate) fn lookup_offset(&self, relative_offset: u32) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry before which no batch reaches `timestamp_ms`.
    pub(crate) fn lookup_timestamp(&self, timestamp_ms: i64) -> Option<IndexEntry> {
        let after = self
            .entries
            .partition_point(|e| e.max_timestamp_before_ms < timestamp_ms);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Serialises the index and the segment summary into the `.index` file format.
    pub(crate) fn encode(&self, summary: &SegmentSummary) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER_SIZE + self.entries.len() * ENTRY_SIZE + 4);
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        out.extend_from_slice(&summary.base_offset.to_le_bytes());
        out.extend_from_slice(&summary.end_position.to_le_bytes());
        out.extend_from_slice(&summary.next_offset.to_le_bytes());
        out.extend_from_slice(&summary.max_timestamp_ms.to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.relative_offset.to_le_bytes());
            out.extend_from_slice(&entry.position.to_le_bytes());
            out.extend_from_slice(&entry.max_timestamp_before_ms.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses an `.index` file. `None` for anything inconsistent: the caller rebuilds the index
    /// by scanning the segment instead.
    pub(crate) fn decode(bytes: &[u8]) -> Option<(SegmentIndex, SegmentSummary)> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc || body.get(..4)? != INDEX_MAGIC {
            return None;
        }
        let u32_at = |at: usize| Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?));
        let count = u32_at(4)? as usize;
        if body.len() != INDEX_HEADER_SIZE + count.checked_mul(ENTRY_SIZE)? {
            return None;
        }
        let summary = SegmentSummary {
            base_offset: u64_at(8)?,
            end_position: u64_at(16)?,
            next_offset: u64_at(24)?,
            max_timestamp_ms: u64_at(32)? as i64,
        };
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = INDEX_HEADER_SIZE + i * ENTRY_SIZE;
            entries.push(IndexEntry {
                relative_offset: u32_at(at)?,
                position: u32_at(at + 4)?,
                max_timestamp_before_ms: u64_at(at + 8)? as i64,
            });
        }
        let sorted = entries.windows(2).all(|w| {
            w[0].relative_offset < w[1].relative_offset
                && w[0].position < w[1].position
                && w[0].max_timestamp_before_ms <= w[1].max_timestamp_before_ms
        });
        if !sorted
            || entries
                .last()
                .is_some_and(|e| u64::from(e.position) >= summary.end_position)
        {
            return None;
        }
        let index = SegmentIndex {
            entries,
            bytes_since_entry: 0,
            max_timestamp_ms: (summary.max_timestamp_ms != i64::MIN)
                .then_some(summary.max_timestamp_ms),
        };
        Some((index, summary))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> SegmentIndex {
        let mut index = SegmentIndex::default();
        // 10 batches of 1000 bytes, 10 records each, timestamps 100, 200, ... ; entry every 3000 B.
        for i in 0..10u32 {
            index.on_batch(i * 10, i * 1000, 1000, i64::from(i + 1) * 100, 3000);
        }
        index
    }

    /// Entries are sparse and lookups return the closest entry at or below the target.
    #[test]
    fn lookups_find_the_closest_entry_below() {
        let index = sample();
        assert_eq!(index.entries.len(), 4); // batches 0, 3, 6, 9
        assert_eq!(index.lookup_offset(0).unwrap().position, 0);
        assert_eq!(index.lookup_offset(29).unwrap().position, 0);
        assert_eq!(index.lookup_offset(30).unwrap().position, 3000);
        assert_eq!(index.lookup_offset(1000).unwrap().position, 9000);
        // Batch 3 has timestamp 400; everything before it is <= 300.
        assert_eq!(index.lookup_timestamp(350).unwrap().position, 3000);
        assert_eq!(index.lookup_timestamp(300).unwrap().position, 0);
        assert_eq!(index.lookup_timestamp(i64::MIN).map(|e| e.position), None);
        assert_eq!(index.max_timestamp_ms(), 1000);
    }

    /// The file format round-trips and any flipped byte is refused.
    #[test]
    fn encode_decode_round_trip_and_detects_damage() {
        let index = sample();
        let summary = SegmentSummary {
            base_offset: 500,
            end_position: 10_000,
            next_offset: 600,
            max_timestamp_ms: 1000,
        };
        let bytes = index.encode(&summary);
        let (decoded, decoded_summary) = SegmentIndex::decode(&bytes).unwrap();
        assert_eq!(decoded.entries, index.entries);
        assert_eq!(decoded_summary, summary);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(
                SegmentIndex::decode(&damaged).is_none(),
                "flip at {at} not detected"
            );
        }
        assert!(SegmentIndex::decode(&bytes[..bytes.len() - 1]).is_none());
        assert!(SegmentIndex::decode(&[]).is_none());
    }
}
