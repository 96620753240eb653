//! What [`crate::Consumer::poll`] returns: [`Records`] owns the fetch-response frames exactly
//! as they were read from the socket, and [`ConsumerRecord`] views borrow keys, values,
//! headers and tags straight from them. Nothing is copied or deserialised per record.
//!
//! ```text
//!  Records ─ frames: [ AlignedVec<16> (a whole fetch response) , ... ]
//!          ─ batches: [ (frame, rkyv bytes range, topic/partition, base offset, first index) ]
//!                             │ in place (rkyv archived access)
//!  iter() ──▶ ConsumerRecord<'_> { topic: &str, key: Option<&[u8]>, value: &[u8], ... }
//! ```
//!
//! Every batch is validated once, when it is added (header, CRC32C, zero padding and the rkyv
//! structure check), before the consumer's position moves past it; iteration then reads the
//! already-checked bytes without checking them again.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use rkyv::string::ArchivedString;
use wire::limits::BATCH_SIZE_MAX;
use wire::{ArchivedRecordHeader, ArchivedRecords, BatchError, BatchIter, BATCH_HEADER_SIZE};

use crate::connection::{Frame, FRAME_POOL};

/// One validated batch inside one of the frames.
#[derive(Debug, Clone)]
struct BatchSlot {
    /// Index into `Records::frames`.
    frame: usize,
    /// Where the batch's rkyv archive lies in that frame (exactly the bytes that were checked).
    archive: Range<usize>,
    /// Index into `Records::partitions`.
    partition: usize,
    base_offset: u64,
    first_timestamp_ms: i64,
    /// First record handed out: records below the consumer's position are skipped.
    first_index: usize,
}

/// A topic partition whose batches are in this `Records`.
#[derive(Debug, Clone)]
struct PartitionSlot {
    topic: Arc<str>,
    partition: u32,
}

/// The records of one poll, owning the frames they were fetched in.
#[derive(Default)]
pub struct Records {
    frames: Vec<Frame>,
    partitions: Vec<PartitionSlot>,
    batches: Vec<BatchSlot>,
    len: usize,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("records", &self.len)
            .field("batches", &self.batches.len())
            .field("frames", &self.frames.len())
            .finish()
    }
}

impl Drop for Records {
    /// The fetched frames go back to the connections' pool, so the next fetch responses are
    /// read into memory that is already allocated and mapped.
    fn drop(&mut self) {
        for frame in self.frames.drain(..) {
            FRAME_POOL.give_back(frame);
        }
    }
}

impl Records {
    /// No records.
    pub fn new() -> Self {
        Records::default()
    }

    /// Number of records to hand out.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The records in fetch order (per partition in offset order).
    pub fn iter(&self) -> RecordsIter<'_> {
        RecordsIter {
            records: self,
            batch: 0,
            index: 0,
            current: None,
        }
    }

    /// Gives the frames back (the micro-benchmark reuses its frame).
    pub(crate) fn into_frames(mut self) -> Vec<Frame> {
        std::mem::take(&mut self.frames)
    }

    /// Takes ownership of a frame; returns its index for [`Records::add_partition`].
    pub(crate) fn add_frame(&mut self, frame: Frame) -> usize {
        self.frames.push(frame);
        self.frames.len() - 1
    }

    /// The bytes of frame `index`.
    #[cfg(test)]
    fn frame(&self, index: usize) -> &[u8] {
        self.frames.get(index).map_or(&[], |frame| &frame[..])
    }

    /// Validates the batches at `range` of frame `frame` (one partition's records in a fetch
    /// response) and adds their records at or above `position`. Returns the position after
    /// the last batch added (`position` when none was).
    ///
    /// A partial batch at the end is ignored (fetched again next time). An invalid batch
    /// after valid ones ends the walk: the valid ones are kept and the invalid one is fetched
    /// again, and reported, next time. An invalid first batch is an error and adds nothing.
    pub(crate) fn add_partition(
        &mut self,
        frame: usize,
        range: Range<usize>,
        topic: &Arc<str>,
        partition: u32,
        position: u64,
    ) -> Result<u64, BatchError> {
        let frame_bytes: &[u8] = self.frames.get(frame).map_or(&[], |f| &f[..]);
        let frame_address = frame_bytes.as_ptr().addr();
        let bytes = frame_bytes.get(range).unwrap_or_default();
        let mut next_position = position;
        let mut slots = Vec::new();
        let mut added = 0usize;
        for view in BatchIter::new(bytes, BATCH_SIZE_MAX) {
            let view = match view {
                Ok(view) => view,
                Err(e) if slots.is_empty() && next_position == position => return Err(e),
                Err(_) => break,
            };
            let header = view.header();
            if header.next_offset() <= next_position {
                continue; // entirely below the position (the fetch started inside it)
            }
            let archived = match view.records() {
                Ok(archived) => archived,
                Err(e) if slots.is_empty() && next_position == position => return Err(e),
                Err(_) => break,
            };
            let record_count = archived.len();
            let first_index = usize::try_from(next_position.saturating_sub(header.base_offset))
                .unwrap_or(usize::MAX)
                .min(record_count);
            let start = view.as_bytes().as_ptr().addr() - frame_address + BATCH_HEADER_SIZE;
            slots.push(BatchSlot {
                frame,
                archive: start..start + header.records_length as usize,
                partition: self.partitions.len(),
                base_offset: header.base_offset,
                first_timestamp_ms: header.first_timestamp_ms,
                first_index,
            });
            added += record_count - first_index;
            next_position = header.next_offset();
        }
        if !slots.is_empty() {
            self.partitions.push(PartitionSlot {
                topic: topic.clone(),
                partition,
            });
            self.batches.extend(slots);
            self.len += added;
        }
        Ok(next_position)
    }

    /// Appends every record of `other` (its frames move, nothing is copied).
    pub fn append(&mut self, mut other: Records) {
        let frame_base = self.frames.len();
        let partition_base = self.partitions.len();
        self.frames.append(&mut other.frames);
        self.partitions.append(&mut other.partitions);
        self.batches.extend(other.batches.drain(..).map(|mut slot| {
            slot.frame += frame_base;
            slot.partition += partition_base;
            slot
        }));
        self.len += other.len;
    }

    fn archived(&self, slot: &BatchSlot) -> &ArchivedRecords {
        let bytes = &self.frames[slot.frame][slot.archive.clone()];
        // SAFETY: `add_partition` created this slot only after `BatchView::records` accepted
        // exactly these bytes (`rkyv::access` with bytecheck, at this same address, hence with
        // the same alignment). The frame is owned by `self`, is never mutated and its heap
        // buffer does not move while `self` lives, so the bytes are still the checked ones.
        unsafe { rkyv::access_unchecked::<ArchivedRecords>(bytes) }
    }
}

impl<'a> IntoIterator for &'a Records {
    type Item = ConsumerRecord<'a>;
    type IntoIter = RecordsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Iterator over [`Records`].
pub struct RecordsIter<'a> {
    records: &'a Records,
    batch: usize,
    index: usize,
    current: Option<&'a ArchivedRecords>,
}

impl fmt::Debug for RecordsIter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordsIter")
            .field("batch", &self.batch)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for RecordsIter<'a> {
    type Item = ConsumerRecord<'a>;

    fn next(&mut self) -> Option<ConsumerRecord<'a>> {
        loop {
            let slot = self.records.batches.get(self.batch)?;
            let archived = match self.current {
                Some(archived) => archived,
                None => {
                    let archived = self.records.archived(slot);
                    self.current = Some(archived);
                    self.index = slot.first_index;
                    archived
                }
            };
            if let Some(record) = archived.get(self.index) {
                let partition = &self.records.partitions[slot.partition];
                let offset = slot.base_offset + self.index as u64;
                self.index += 1;
                return Some(ConsumerRecord {
                    topic: &partition.topic,
                    partition: partition.partition,
                    offset,
                    timestamp_ms: record.timestamp_ms(slot.first_timestamp_ms),
                    key: record.key_bytes(),
                    value: record.value_bytes(),
                    headers: Headers(record.headers.as_slice()),
                    tags: Tags(record.tags.as_ref().map_or(&[], |tags| tags.as_slice())),
                });
            }
            self.batch += 1;
            self.current = None;
        }
    }
}

/// One record, borrowed from the fetched frame.
#[derive(Clone, Copy)]
pub struct ConsumerRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Key, if the record has one.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub value: &'a [u8],
    /// Application headers.
    pub headers: Headers<'a>,
    /// Tags.
    pub tags: Tags<'a>,
}

impl fmt::Debug for ConsumerRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("key_len", &self.key.map(<[u8]>::len))
            .field("value_len", &self.value.len())
            .field("headers", &self.headers)
            .field("tags", &self.tags)
            .finish()
    }
}

/// A record's headers, read in place.
#[derive(Clone, Copy)]
pub struct Headers<'a>(&'a [ArchivedRecordHeader]);

impl<'a> Headers<'a> {
    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.0
            .iter()
            .map(|header| (header.key.as_str(), header.value.as_slice()))
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(key, _)| *key == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(name, value)| (name, value.len())))
            .finish()
    }
}

/// A record's tags, read in place.
#[derive(Clone, Copy)]
pub struct Tags<'a>(&'a [ArchivedString]);

impl<'a> Tags<'a> {
    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tags in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().map(ArchivedString::as_str)
    }

    /// Whether the record carries `tag`.
    pub fn contains(&self, tag: &str) -> bool {
        self.iter().any(|t| t == tag)
    }
}

impl fmt::Debug for Tags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wire::{stamp_base_offset, BatchBuilder};

    /// A batch of `values` at `base_offset`, timestamps 1000, 1001, ...
    fn batch(base_offset: u64, values: &[&str]) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for (i, value) in values.iter().enumerate() {
            let key = format!("k{}", base_offset + i as u64);
            builder.push(
                1000 + i as i64,
                Some(key.as_bytes()),
                value.as_bytes(),
                &[("h", b"1")],
                Some(&["tag"]),
            );
        }
        let mut bytes = builder.build().unwrap();
        stamp_base_offset(&mut bytes, base_offset).unwrap();
        bytes.to_vec()
    }

    /// A frame holding `prefix` junk bytes (a multiple of 16) then the batches, as a fetch
    /// response would; returns it and the range of the batches.
    fn make_frame(prefix: usize, batches: &[Vec<u8>]) -> (Frame, Range<usize>) {
        let mut frame = Frame::new();
        frame.extend_from_slice(&vec![0xEE; prefix]);
        for batch in batches {
            frame.extend_from_slice(batch);
        }
        let len = frame.len();
        (frame, prefix..len)
    }

    /// Records below the position are skipped, including whole batches and the start of the
    /// first batch; the position moves past the last batch; views borrow every field.
    #[test]
    fn iterates_in_place_skipping_below_position() {
        let topic: Arc<str> = Arc::from("orders");
        let (frame, range) = make_frame(
            32,
            &[
                batch(10, &["a", "b"]),
                batch(12, &["c", "d", "e"]),
                batch(15, &["f"]),
            ],
        );
        let mut records = Records::new();
        let index = records.add_frame(frame);
        let next = records.add_partition(index, range, &topic, 3, 13).unwrap();
        assert_eq!(next, 16);
        assert_eq!(records.len(), 3);
        let seen: Vec<(u64, String)> = records
            .iter()
            .map(|r| (r.offset, String::from_utf8_lossy(r.value).into_owned()))
            .collect();
        assert_eq!(
            seen,
            vec![(13, "d".into()), (14, "e".into()), (15, "f".into())]
        );
        let first = records.iter().next().unwrap();
        assert_eq!(first.topic, "orders");
        assert_eq!(first.partition, 3);
        assert_eq!(first.key, Some(&b"k13"[..]));
        assert_eq!(first.timestamp_ms, 1001);
        assert_eq!(first.headers.get("h"), Some(&b"1"[..]));
        assert!(first.tags.contains("tag"));
        // The value points into the frame: zero copy.
        let frame_bytes = records.frame(index);
        let frame_range = frame_bytes.as_ptr_range();
        assert!(frame_range.contains(&first.value.as_ptr()));
    }

    /// A position past everything adds nothing and keeps the position; a partial batch at
    /// the end is left for the next fetch.
    #[test]
    fn nothing_at_or_after_position_and_partial_tail() {
        let topic: Arc<str> = Arc::from("t");
        let full = batch(0, &["a", "b"]);
        let partial = batch(2, &["c"]);
        let mut bytes = vec![full.clone()];
        bytes.push(partial[..partial.len() - 16].to_vec());
        let (frame, range) = make_frame(0, &bytes);
        let mut records = Records::new();
        let index = records.add_frame(frame);
        assert_eq!(
            records
                .add_partition(index, range.clone(), &topic, 0, 2)
                .unwrap(),
            2
        );
        assert!(records.is_empty());
        assert_eq!(
            records.add_partition(index, range, &topic, 0, 0).unwrap(),
            2
        );
        assert_eq!(records.len(), 2);
    }

    /// A corrupt first batch is an error and adds nothing; after a valid batch it only ends
    /// the walk.
    #[test]
    fn corrupt_batches() {
        let topic: Arc<str> = Arc::from("t");
        let good = batch(0, &["a"]);
        let mut bad = batch(1, &["b"]);
        let last = bad.len() - 20;
        bad[last] ^= 0xff;
        let (frame, range) = make_frame(16, &[bad.clone()]);
        let mut records = Records::new();
        let index = records.add_frame(frame);
        assert!(records.add_partition(index, range, &topic, 0, 1).is_err());
        assert!(records.is_empty());

        let (frame, range) = make_frame(16, &[good, bad]);
        let index = records.add_frame(frame);
        assert_eq!(
            records.add_partition(index, range, &topic, 0, 0).unwrap(),
            1
        );
        assert_eq!(records.len(), 1);
    }

    /// Appending moves frames and keeps every view valid.
    #[test]
    fn append_merges() {
        let a_topic: Arc<str> = Arc::from("a");
        let b_topic: Arc<str> = Arc::from("b");
        let mut a = Records::new();
        let (frame_a, range_a) = make_frame(0, &[batch(0, &["x"])]);
        let index = a.add_frame(frame_a);
        a.add_partition(index, range_a, &a_topic, 0, 0).unwrap();
        let mut b = Records::new();
        let (frame_b, range_b) = make_frame(16, &[batch(5, &["y", "z"])]);
        let index = b.add_frame(frame_b);
        b.add_partition(index, range_b, &b_topic, 1, 5).unwrap();
        a.append(b);
        let seen: Vec<(&str, u32, u64, &[u8])> = a
            .iter()
            .map(|r| (r.topic, r.partition, r.offset, r.value))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a", 0, 0, &b"x"[..]),
                ("b", 1, 5, &b"y"[..]),
                ("b", 1, 6, &b"z"[..])
            ]
        );
    }
}
