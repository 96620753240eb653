//! Property tests of the record batch codec.
//!
//! These are the main guard against panics on untrusted bytes (they run in
//! `cargo test`; the fuzz target in `wire/fuzz` explores further): arbitrary
//! bytes, arbitrary bytes behind a consistent header with a correct CRC (so
//! that garbage reaches the rkyv structure check), and mutated valid batches
//! go through every read entry point. They also check that random records
//! round-trip exactly and that any single-bit flip under the CRC is caught.

#![allow(clippy::unwrap_used)]

use proptest::collection::vec;
use proptest::prelude::*;
use wire::batch::{ATTR_CONTROL, ATTR_TRANSACTIONAL};
use wire::limits::BATCH_SIZE_MAX;
use wire::{
    peek_header, stamp_base_offset, AlignedVec, ArchivedRecords, BatchBuilder, BatchError,
    BatchHeader, BatchIter, BatchView, Record, RecordHeader, BATCH_ALIGNMENT, BATCH_HEADER_SIZE,
    CRC_START,
};

/// Touch every field of every archived record, so that a "valid" archive
/// that is not actually safe to read would crash here.
fn walk(records: &ArchivedRecords, first_timestamp_ms: i64) -> usize {
    let mut total = 0usize;
    for r in records.iter() {
        total = total.wrapping_add(r.timestamp_ms(first_timestamp_ms) as usize);
        total = total.wrapping_add(r.key_bytes().map_or(0, <[u8]>::len));
        total = total.wrapping_add(r.value_bytes().iter().map(|&b| usize::from(b)).sum());
        for h in r.headers.iter() {
            total = total.wrapping_add(h.key.as_str().len() + h.value.len());
        }
        if let Some(tags) = r.tags.as_ref() {
            for t in tags.iter() {
                total = total.wrapping_add(t.as_str().chars().count());
            }
        }
        total = total.wrapping_add(usize::from(r.has_tag("x")));
    }
    total
}

/// Run every read entry point over `bytes`; returns nothing, must not panic.
fn exercise(bytes: &[u8]) {
    // Copy into an aligned buffer so that records() reaches bytecheck
    // instead of stopping at the alignment check.
    let mut aligned = AlignedVec::<16>::new();
    aligned.extend_from_slice(bytes);
    for max in [BATCH_SIZE_MAX, 1024, 0] {
        let _ = peek_header(&aligned, max);
        if let Ok(view) = BatchView::validate(&aligned, max) {
            assert_eq!(view.len(), view.header().batch_length as usize);
            assert_eq!(view.as_bytes().len() % BATCH_ALIGNMENT, 0);
            if let Ok(records) = view.records() {
                assert_eq!(records.len(), view.record_count() as usize);
                walk(records, view.header().first_timestamp_ms);
            }
        }
        if let Ok(view) = BatchView::validate_deep(&aligned, max) {
            let records = view.records().unwrap();
            walk(records, view.header().first_timestamp_ms);
        }
        let mut iter = BatchIter::new(&aligned, max);
        let mut yielded = 0usize;
        for item in iter.by_ref() {
            match item {
                Ok(view) => {
                    yielded += view.len();
                    if let Ok(records) = view.records() {
                        walk(records, view.header().first_timestamp_ms);
                    }
                }
                Err(_) => break,
            }
        }
        assert_eq!(iter.position(), yielded);
        assert!(iter.position() <= aligned.len());
        assert!(iter.next().is_none());
    }
    // Also unaligned: must fail cleanly, not panic.
    if let Some(shifted) = aligned.get(1..) {
        if let Ok(view) = BatchView::validate(shifted, BATCH_SIZE_MAX) {
            let _ = view.records();
        }
    }
}

/// Arbitrary header fields that are consistent with each other, so that
/// `peek_header` accepts them and the body gets looked at.
fn consistent_header() -> impl Strategy<Value = BatchHeader> {
    (
        8u32..4096,
        any::<u64>(),
        prop_oneof![Just(0u16), Just(ATTR_TRANSACTIONAL), Just(ATTR_CONTROL)],
        any::<i16>(),
        1u32..64,
        0u32..16,
        any::<i64>(),
        any::<i64>(),
        any::<i64>(),
        any::<i32>(),
    )
        .prop_map(
            |(records_length, base, attributes, epoch, count, gap, first, max, pid, seq)| {
                let batch_length = (BATCH_HEADER_SIZE as u32 + records_length).div_ceil(16) * 16;
                BatchHeader {
                    batch_length,
                    base_offset: base >> 1,
                    crc: 0,
                    attributes,
                    producer_epoch: epoch,
                    last_offset_delta: count - 1 + gap,
                    record_count: count,
                    first_timestamp_ms: first,
                    max_timestamp_ms: max,
                    producer_id: pid,
                    base_sequence: seq,
                    records_length,
                }
            },
        )
}

/// A consistent header followed by random record bytes, zero padding and a
/// correct CRC: passes `validate`, so the garbage reaches bytecheck.
fn garbage_batch() -> impl Strategy<Value = Vec<u8>> {
    consistent_header().prop_flat_map(|h| {
        vec(any::<u8>(), h.records_length as usize).prop_map(move |body| {
            let mut bytes = h.encode().to_vec();
            bytes.extend_from_slice(&body);
            bytes.resize(h.batch_length as usize, 0);
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[16..20].copy_from_slice(&crc.to_le_bytes());
            bytes
        })
    })
}

#[derive(Debug, Clone)]
struct Input {
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    tags: Option<Vec<String>>,
}

fn input(base_ts: i64) -> impl Strategy<Value = Input> {
    (
        prop_oneof![0i64..1000, 0i64..=i64::from(u32::MAX)],
        proptest::option::of(vec(any::<u8>(), 0..48)),
        vec(any::<u8>(), 0..300),
        vec(("\\PC{0,10}", vec(any::<u8>(), 0..24)), 0..4),
        proptest::option::of(vec("[a-z0-9._-]{0,20}", 0..5)),
    )
        .prop_map(move |(delta, key, value, headers, tags)| Input {
            timestamp_ms: base_ts + delta,
            key,
            value,
            headers,
            tags,
        })
}

/// Between 1 and `max_records - 1` records around a random base timestamp.
fn inputs_up_to(max_records: usize) -> impl Strategy<Value = Vec<Input>> {
    (-(1i64 << 60)..(1i64 << 60)).prop_flat_map(move |base| vec(input(base), 1..max_records))
}

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    inputs_up_to(40)
}

/// Small batches, for the tests whose cost is per generated case.
fn small_inputs() -> impl Strategy<Value = Vec<Input>> {
    inputs_up_to(6)
}

fn build(inputs: &[Input], producer: (i64, i16, i32)) -> AlignedVec<16> {
    let mut b = BatchBuilder::new().with_producer(producer.0, producer.1, producer.2);
    for i in inputs {
        let headers: Vec<(&str, &[u8])> = i
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let tags: Option<Vec<&str>> = i
            .tags
            .as_ref()
            .map(|t| t.iter().map(String::as_str).collect());
        b.push(
            i.timestamp_ms,
            i.key.as_deref(),
            &i.value,
            &headers,
            tags.as_deref(),
        );
    }
    let out = b.build().unwrap();
    assert!(
        b.estimated_size() >= out.len(),
        "estimate is an upper bound"
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes never make any decoder (peek, validate, deep validation, iteration,
    /// record walk) panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..4096)) {
        exercise(&bytes);
    }

    /// The same with the magic forced at the start, so that decoding gets past the first
    /// check.
    #[test]
    fn arbitrary_bytes_with_magic_never_panic(mut bytes in vec(any::<u8>(), 0..4096)) {
        // Random bytes rarely start with the magic; force it to go deeper.
        for (dst, src) in bytes.iter_mut().zip(b"SLB\x01") {
            *dst = *src;
        }
        exercise(&bytes);
    }

    /// Garbage records behind a consistent header with a valid CRC (which passes `validate`)
    /// never make the deeper decoding panic, with or without trailing bytes.
    #[test]
    fn garbage_behind_valid_header_never_panics(
        bytes in garbage_batch(),
        tail in vec(any::<u8>(), 0..200),
    ) {
        let view = BatchView::validate(&bytes, BATCH_SIZE_MAX);
        prop_assert!(view.is_ok(), "constructed batch must pass validate: {view:?}");
        exercise(&bytes);
        let mut with_tail = bytes.clone();
        with_tail.extend_from_slice(&tail);
        exercise(&with_tail);
    }

    /// Random header fields after a valid magic, followed by random bytes, never make decoding
    /// panic.
    #[test]
    fn random_header_fields_never_panic(
        header in any::<[u8; 64]>(),
        body in vec(any::<u8>(), 0..1024),
    ) {
        let mut bytes = header.to_vec();
        bytes[..4].copy_from_slice(b"SLB\x01");
        bytes.extend_from_slice(&body);
        exercise(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A valid batch with up to 8 bytes overwritten (and its CRC fixed up or not) never makes
    /// decoding panic.
    #[test]
    fn mutated_valid_batches_never_panic(
        inputs in small_inputs(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        fix_crc in any::<bool>(),
    ) {
        let mut bytes = build(&inputs, (-1, -1, -1));
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if fix_crc {
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        exercise(&bytes);
    }

    /// Any records with any producer fields and base offset build into an aligned batch that
    /// validates deeply and reads back every header field and every record exactly as built.
    #[test]
    fn records_round_trip(
        inputs in inputs(),
        producer in (any::<i64>(), any::<i16>(), any::<i32>()),
        base_offset in 0u64..(u64::MAX / 2),
    ) {
        let mut bytes = build(&inputs, producer);
        prop_assert_eq!(bytes.len() % BATCH_ALIGNMENT, 0);
        prop_assert_eq!(bytes.as_ptr().addr() % BATCH_ALIGNMENT, 0);
        stamp_base_offset(&mut bytes, base_offset).unwrap();

        let view = BatchView::validate_deep(&bytes, BATCH_SIZE_MAX).unwrap();
        let h = view.header();
        let first = inputs.iter().map(|i| i.timestamp_ms).min().unwrap();
        let max = inputs.iter().map(|i| i.timestamp_ms).max().unwrap();
        prop_assert_eq!(h.first_timestamp_ms, first);
        prop_assert_eq!(h.max_timestamp_ms, max);
        prop_assert_eq!(h.record_count as usize, inputs.len());
        prop_assert_eq!(h.last_offset_delta as usize, inputs.len() - 1);
        prop_assert_eq!(view.base_offset(), base_offset);
        prop_assert_eq!(view.last_offset(), base_offset + inputs.len() as u64 - 1);
        prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), producer);
        prop_assert_eq!(peek_header(&bytes, BATCH_SIZE_MAX).unwrap(), h);

        let archived = view.records().unwrap();
        let records: Vec<Record> =
            rkyv::deserialize::<Vec<Record>, rkyv::rancor::Error>(archived).unwrap();
        let expected: Vec<Record> = inputs
            .iter()
            .map(|i| Record {
                timestamp_delta_ms: u32::try_from(i.timestamp_ms - first).unwrap(),
                key: i.key.clone(),
                value: i.value.clone(),
                headers: i
                    .headers
                    .iter()
                    .map(|(k, v)| RecordHeader { key: k.clone(), value: v.clone() })
                    .collect(),
                tags: i.tags.clone(),
            })
            .collect();
        prop_assert_eq!(&records, &expected);
        for (a, i) in archived.iter().zip(&inputs) {
            prop_assert_eq!(a.timestamp_ms(first), i.timestamp_ms);
            prop_assert_eq!(a.key_bytes(), i.key.as_deref());
            prop_assert_eq!(a.value_bytes(), i.value.as_slice());
        }
    }

    /// Concatenated batches iterate back in order with their base offsets and record counts;
    /// cut anywhere, the iterator yields exactly the complete batches before the cut and stops
    /// at the partial one.
    #[test]
    fn concatenated_batches_iterate_back(
        batches in vec(small_inputs(), 1..5),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = AlignedVec::<16>::new();
        let mut ends = Vec::new();
        for (n, inputs) in batches.iter().enumerate() {
            let mut b = build(inputs, (-1, -1, -1));
            stamp_base_offset(&mut b, n as u64 * 100).unwrap();
            buf.extend_from_slice(&b);
            ends.push(buf.len());
        }
        let views: Vec<BatchView<'_>> =
            BatchIter::new(&buf, BATCH_SIZE_MAX).map(Result::unwrap).collect();
        prop_assert_eq!(views.len(), batches.len());
        for (n, (v, inputs)) in views.iter().zip(&batches).enumerate() {
            prop_assert_eq!(v.base_offset(), n as u64 * 100);
            prop_assert_eq!(v.records().unwrap().len(), inputs.len());
        }

        // Cut the buffer anywhere: the iterator yields exactly the complete
        // batches before the cut and stops cleanly at the partial one.
        let at = cut.index(buf.len() + 1);
        let complete = ends.iter().filter(|&&e| e <= at).count();
        let mut iter = BatchIter::new(&buf[..at], BATCH_SIZE_MAX);
        let n = iter.by_ref().map(Result::unwrap).count();
        prop_assert_eq!(n, complete);
        prop_assert_eq!(iter.position(), if complete == 0 { 0 } else { ends[complete - 1] });
    }

    /// Any single bit flipped in the CRC-covered region is detected by `validate`.
    #[test]
    fn single_bit_flip_under_crc_is_detected(
        inputs in small_inputs(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = build(&inputs, (-1, -1, -1));
        let i = CRC_START + at.index(bytes.len() - CRC_START);
        bytes[i] ^= 1 << bit;
        let err = BatchView::validate(&bytes, BATCH_SIZE_MAX);
        prop_assert!(err.is_err(), "flip of bit {} at {} not detected", bit, i);
    }

    /// A batch cut at any length short of its end is `UnexpectedEof`.
    #[test]
    fn truncated_batches_are_unexpected_eof(inputs in small_inputs(), at in any::<prop::sample::Index>()) {
        let bytes = build(&inputs, (-1, -1, -1));
        let n = at.index(bytes.len());
        let err = BatchView::validate(&bytes[..n], BATCH_SIZE_MAX).unwrap_err();
        let is_eof = matches!(err, BatchError::UnexpectedEof { .. });
        prop_assert!(is_eof, "{:?}", err);
    }
}
