//! Fuzz target: arbitrary bytes into every read entry point of the batch
//! codec (`peek_header`, `BatchView::validate`, `validate_deep`, `records`,
//! `BatchIter`). None of them may panic.
//!
//! The first input byte is a mode: if its low bit is set, the CRC of the
//! batch at the start of the buffer is recomputed before validating, so the
//! fuzzer can get past the CRC and explore the rkyv structure check.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::limits::BATCH_SIZE_MAX;
use wire::{peek_header, AlignedVec, ArchivedRecords, BatchIter, BatchView, CRC_START};

fn walk(records: &ArchivedRecords, first_timestamp_ms: i64) -> usize {
    let mut total = 0usize;
    for r in records.iter() {
        total = total.wrapping_add(r.timestamp_ms(first_timestamp_ms) as usize);
        total = total.wrapping_add(r.key_bytes().map_or(0, <[u8]>::len));
        total = total.wrapping_add(r.value_bytes().len());
        for h in r.headers.iter() {
            total = total.wrapping_add(h.key.as_str().len() + h.value.len());
        }
        if let Some(tags) = r.tags.as_ref() {
            for t in tags.iter() {
                total = total.wrapping_add(t.as_str().len());
            }
        }
    }
    total
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Copy into a 16-aligned buffer, as segment and network reads are.
    let mut buf = AlignedVec::<16>::new();
    buf.extend_from_slice(rest);
    if mode & 1 == 1 {
        if let Ok(h) = peek_header(&buf, BATCH_SIZE_MAX) {
            let len = h.batch_length as usize;
            if let Some(covered) = buf.get(CRC_START..len) {
                let crc = crc32c::crc32c(covered);
                buf[16..20].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    let max = if mode & 2 == 2 { 4096 } else { BATCH_SIZE_MAX };

    let _ = peek_header(&buf, max);
    if let Ok(view) = BatchView::validate(&buf, max) {
        assert_eq!(view.len(), view.header().batch_length as usize);
        if let Ok(records) = view.records() {
            assert_eq!(records.len(), view.record_count() as usize);
            walk(records, view.header().first_timestamp_ms);
        }
    }
    if let Ok(view) = BatchView::validate_deep(&buf, max) {
        if let Ok(records) = view.records() {
            walk(records, view.header().first_timestamp_ms);
        } else {
            panic!("records() failed after validate_deep succeeded");
        }
    }
    let mut iter = BatchIter::new(&buf, max);
    for item in iter.by_ref() {
        match item {
            Ok(view) => {
                if let Ok(records) = view.records() {
                    walk(records, view.header().first_timestamp_ms);
                }
            }
            Err(_) => break,
        }
    }
    assert!(iter.position() <= buf.len());
});
