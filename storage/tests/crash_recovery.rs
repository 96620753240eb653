//! Crash recovery: a kill -9 or a power loss can stop the log at any instant. These tests
//! reproduce what such a crash leaves on disk by editing the files of a closed log between two
//! opens (cuts at every byte, zeroed or garbage tails, replayed batches, bit flips), then check
//! what `Log::open` promises: the active segment keeps exactly its valid prefix, a sealed
//! segment that does not validate is reported as `Corrupt` (never skipped, never a panic), and
//! no batch that was reported durable is ever lost.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{batch, run, small_config, test_dir, values, view};
use storage::{now_ms, Durability, Log, LogConfig, ReadBatch, StorageError};
use wire::batch::{peek_header, BatchView, BATCH_HEADER_SIZE};
use wire::limits::BATCH_SIZE_MAX;

/// Path of the segment file whose first offset is `base`.
fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Path of the index file of the segment whose first offset is `base`.
fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// Base offsets of the segment files in `dir`, ascending.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let digits = name.strip_suffix(".log")?;
            (digits.len() == 20).then(|| digits.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// Where one batch sits in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spot {
    position: usize,
    len: usize,
    base_offset: u64,
    next_offset: u64,
}

impl Spot {
    fn end(&self) -> usize {
        self.position + self.len
    }
}

/// Walks the valid batches laid end to end from position 0 of `bytes`; stops at the first
/// that does not validate (CRC included) or does not continue the offsets.
fn walk(bytes: &[u8]) -> Vec<Spot> {
    let mut spots: Vec<Spot> = Vec::new();
    let mut position = 0;
    while let Ok(header) = peek_header(&bytes[position..], BATCH_SIZE_MAX) {
        if BatchView::validate(&bytes[position..], BATCH_SIZE_MAX).is_err() {
            break;
        }
        if spots
            .last()
            .is_some_and(|s| s.next_offset != header.base_offset)
        {
            break;
        }
        let spot = Spot {
            position,
            len: header.batch_length as usize,
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
        };
        spots.push(spot);
        position = spot.end();
    }
    spots
}

/// Reads segment `base` of a closed log: its valid batches and their bytes, cut right after
/// the last valid batch. Checks that whatever follows on disk is the zero padding the appender
/// writes up to the page end.
fn read_segment(dir: &Path, base: u64) -> (Vec<u8>, Vec<Spot>) {
    let mut bytes = std::fs::read(segment_path(dir, base)).unwrap();
    let spots = walk(&bytes);
    let end = spots.last().map_or(0, Spot::end);
    assert!(
        bytes[end..].iter().all(|&b| b == 0),
        "a closed segment holds only batches and zero padding"
    );
    bytes.truncate(end);
    (bytes, spots)
}

/// A small deterministic RNG (xorshift64*): reproducible runs without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-enough value in `[0, n)`; `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform-enough value in `[low, high]`.
    fn within(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Every batch of the log, in order, read through the public API.
async fn read_all(log: &Log) -> Vec<ReadBatch> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, 256 * 1024).await.unwrap();
        assert!(
            !read.batches.is_empty(),
            "no batch at offset {offset} below the log end"
        );
        offset = read.next_offset().unwrap();
        out.extend(read.batches);
    }
    out
}

/// Asserts that the log (one segment, based at 0) holds exactly the batches `spots` of `bytes`:
/// same count, same offsets, byte-identical, each validating; and nothing else.
async fn assert_holds(log: &Log, bytes: &[u8], spots: &[Spot]) {
    assert_eq!(
        log.log_end_offset(),
        spots.last().map_or(0, |s| s.next_offset)
    );
    let read = read_all(log).await;
    assert_eq!(
        read.len(),
        spots.len(),
        "the log must hold exactly the valid batches"
    );
    for (got, spot) in read.iter().zip(spots) {
        let checked = BatchView::validate(&got.bytes, BATCH_SIZE_MAX).unwrap();
        assert_eq!(checked.base_offset(), spot.base_offset);
        assert_eq!(got.base_offset, spot.base_offset);
        assert_eq!(got.last_offset + 1, spot.next_offset);
        assert!(
            got.bytes[..] == bytes[spot.position..spot.end()],
            "batch at {} differs",
            spot.base_offset
        );
    }
}

/// Opens a fresh log in `dir`, appends `batches` (each made durable), closes it and returns
/// the bytes and batches of its only segment.
fn build_log(
    dir: &Path,
    config: &LogConfig,
    batches: &[rkyv::util::AlignedVec<16>],
) -> (Vec<u8>, Vec<Spot>) {
    run(async {
        let log = Log::open(dir, config.clone()).await.unwrap();
        for bytes in batches {
            let info = log.append(view(bytes)).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        assert_eq!(
            log.segment_count(),
            1,
            "these scenarios need a single segment"
        );
        log.close().await.unwrap();
    });
    let (bytes, spots) = read_segment(dir, 0);
    assert_eq!(spots.len(), batches.len());
    (bytes, spots)
}

/// Size of a file.
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// A crash can stop the last append at any byte. For every cut point inside the last batch
/// (the batch straddles a page boundary, so cuts land on both sides of it), reopening keeps
/// exactly the batches that end at or before the cut, cuts the file there, and the log then
/// appends normally and keeps that append across another reopen.
#[test]
fn cut_at_every_byte_of_the_last_batch() {
    let dir = test_dir();
    let config = small_config(Durability::Always);
    let mut batches = Vec::new();
    let mut total = 0;
    while total < 3950 {
        let b = batch(batches.len() as u64, 1, 40, now_ms());
        total += b.len();
        batches.push(b);
    }
    batches.push(batch(999, 4, 60, now_ms()));
    let (bytes, spots) = build_log(dir.path(), &config, &batches);
    let last = *spots.last().unwrap();
    assert!(
        last.position < 4096 && last.end() > 4096,
        "the last batch must straddle the first page end"
    );
    let path = segment_path(dir.path(), 0);
    run(async {
        for cut in last.position..=last.end() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let kept: Vec<Spot> = spots.iter().copied().filter(|s| s.end() <= cut).collect();
            let kept_end = kept.last().map_or(0, Spot::end);
            let end_offset = kept.last().map_or(0, |s| s.next_offset);

            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            assert_eq!(
                file_len(&path),
                kept_end as u64,
                "cut {cut}: the torn tail must be cut off"
            );
            assert_eq!(log.durable_offset(), end_offset);
            assert_holds(&log, &bytes, &kept).await;

            let extra = batch(10_000 + cut as u64, 2, 20, now_ms());
            let info = log.append(view(&extra)).await.unwrap();
            assert_eq!(info.base_offset, end_offset, "cut {cut}");
            log.wait_durable(info.last_offset).await.unwrap();
            log.close().await.unwrap();

            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            assert_eq!(log.log_end_offset(), end_offset + 2, "cut {cut}");
            let read = read_all(&log).await;
            assert_eq!(read.len(), kept.len() + 1, "cut {cut}");
            for (got, spot) in read.iter().zip(&kept) {
                assert!(
                    got.bytes[..] == bytes[spot.position..spot.end()],
                    "cut {cut}"
                );
            }
            let appended = read.last().unwrap();
            assert_eq!(appended.base_offset, end_offset);
            assert_eq!(values(&appended.bytes), values(&extra), "cut {cut}");
            drop(log);
        }
    });
}

/// What can follow the last batch after a crash — a zeroed (preallocated) tail, random
/// garbage, a stale copy of an earlier batch, a batch whose later page never reached the disk —
/// is cut on open: the log keeps exactly the valid batches, the file ends at the last of them,
/// and appends continue from there.
#[test]
fn garbage_and_zeroed_tails_are_cut() {
    let dir = test_dir();
    let config = small_config(Durability::Always);
    let batches: Vec<_> = (0..12u64)
        .map(|i| batch(i, 1 + i as usize % 3, 150, now_ms()))
        .collect();
    let (bytes, spots) = build_log(dir.path(), &config, &batches);
    let end = bytes.len();
    let path = segment_path(dir.path(), 0);
    let mut rng = Rng(0x5eed_0001);

    let mut tails: Vec<(String, Vec<u8>)> = Vec::new();
    for zeros in [1, 16, 63, 64, 65, 4096 - end % 4096, 4096, 100_000] {
        tails.push((format!("{zeros} zero bytes"), vec![0; zeros]));
    }
    for len in [1, 15, 16, 63, 64, 200, 4096, 20_000] {
        tails.push((format!("{len} random bytes"), rng.bytes(len)));
    }
    for (i, spot) in spots.iter().enumerate().take(spots.len() - 1) {
        let mut copy = bytes[spot.position..spot.end()].to_vec();
        let junk = rng.below(100);
        copy.extend(rng.bytes(junk));
        tails.push((format!("a stale copy of batch {i}"), copy));
    }
    let last = spots[spots.len() - 1];
    tails.push((
        "a second copy of the last batch".into(),
        bytes[last.position..last.end()].to_vec(),
    ));
    // A valid next batch whose second half was never written (zeros where it should be).
    let next = {
        let b = batch(500, 6, 300, now_ms());
        let mut stamped = b.to_vec();
        wire::batch::stamp_base_offset(&mut stamped, last.next_offset).unwrap();
        assert!(BatchView::validate(&stamped, BATCH_SIZE_MAX).is_ok());
        stamped
    };
    let mut torn = next.clone();
    let half = torn.len() / 2;
    torn[half..].fill(0);
    tails.push(("a next batch with its second half zeroed".into(), torn));
    tails.push((
        "a next batch cut after its header".into(),
        next[..BATCH_HEADER_SIZE + 16].to_vec(),
    ));
    tails.push((
        "only the header of a next batch".into(),
        next[..BATCH_HEADER_SIZE].to_vec(),
    ));

    run(async {
        for (what, tail) in &tails {
            let mut content = bytes.clone();
            content.extend_from_slice(tail);
            std::fs::write(&path, &content).unwrap();
            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            assert_eq!(
                file_len(&path),
                end as u64,
                "after {what}: the file must end at the last valid batch"
            );
            assert_holds(&log, &bytes, &spots).await;
            let extra = batch(7, 1, 10, now_ms());
            let info = log.append(view(&extra)).await.unwrap();
            assert_eq!(info.base_offset, last.next_offset, "after {what}");
            log.wait_durable(info.last_offset).await.unwrap();
            log.close().await.unwrap();
            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            assert_eq!(log.log_end_offset(), last.next_offset + 1, "after {what}");
            let read = log.read(last.next_offset, 1).await.unwrap();
            assert_eq!(
                values(&read.batches[0].bytes),
                values(&extra),
                "after {what}"
            );
            drop(log);
        }
    });
    // Sanity check of the scenario: a valid next batch that continues the offsets is kept,
    // so the cuts above are the validator's doing, not a blanket cut after the known end.
    let mut content = bytes.clone();
    content.extend_from_slice(&next);
    std::fs::write(&path, &content).unwrap();
    run(async {
        let log = Log::open(dir.path(), config.clone()).await.unwrap();
        assert_eq!(log.log_end_offset(), last.next_offset + 6);
        let mut spots_with_next = spots.clone();
        spots_with_next.push(Spot {
            position: end,
            len: next.len(),
            base_offset: last.next_offset,
            next_offset: last.next_offset + 6,
        });
        assert_holds(&log, &content, &spots_with_next).await;
    });
}

/// A bit flip in the last batch of the active segment (a torn or damaged last write) drops
/// that batch and keeps every earlier one; a bit flip inside an earlier batch of the active
/// segment cuts the log at that batch, because recovery cannot tell damage in the active
/// segment from a torn tail and keeps only the valid prefix. No batch read back after either
/// ever fails validation.
#[test]
fn bit_flips_in_the_active_segment_cut_at_the_damaged_batch() {
    let dir = test_dir();
    let config = small_config(Durability::Always);
    let batches: Vec<_> = (0..10u64)
        .map(|i| batch(i, 1 + i as usize % 4, 120, now_ms()))
        .collect();
    let (bytes, spots) = build_log(dir.path(), &config, &batches);
    let path = segment_path(dir.path(), 0);
    let mut rng = Rng(0x5eed_0002);
    let last_index = spots.len() - 1;
    // (batch, byte in it, bit): 64 flips in the last batch, 32 in earlier ones, plus one in
    // each header field of the last batch.
    let mut flips = Vec::new();
    for _ in 0..64 {
        flips.push((last_index, rng.below(spots[last_index].len), rng.below(8)));
    }
    for _ in 0..32 {
        let i = rng.below(last_index);
        flips.push((i, rng.below(spots[i].len), rng.below(8)));
    }
    for byte in [
        0,
        3,
        4,
        8,
        16,
        20,
        40,
        60,
        BATCH_HEADER_SIZE,
        spots[last_index].len - 1,
    ] {
        flips.push((last_index, byte, 0));
    }
    run(async {
        for &(i, byte, bit) in &flips {
            let damaged = spots[i];
            let mut content = bytes.clone();
            content[damaged.position + byte] ^= 1 << bit;
            std::fs::write(&path, &content).unwrap();
            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            let what = format!("bit {bit} of byte {byte} of batch {i}");
            assert_eq!(
                log.log_end_offset(),
                damaged.base_offset,
                "{what}: the log must end before the damaged batch"
            );
            assert_eq!(file_len(&path), damaged.position as u64, "{what}");
            assert_holds(&log, &bytes, &spots[..i]).await;
            drop(log);
        }
    });
}

/// A sealed segment is immutable, so a batch that no longer validates there is corruption, not
/// a torn tail. With its index file intact the log opens (trusting the index) but reading the
/// damaged batch is `Corrupt` naming the file and the batch's position, while other batches
/// stay readable; without the index, the rebuild scan finds the damage and `Log::open` itself
/// fails with that same error, leaving the file untouched. Never a panic, never a silent skip.
#[test]
fn damage_in_a_sealed_segment_is_reported_as_corrupt() {
    let dir = test_dir();
    let config = small_config(Durability::Always);
    let (log_end, second_base) = run(async {
        let log = Log::open(dir.path(), config.clone()).await.unwrap();
        for i in 0..150u64 {
            let info = log
                .append(view(&batch(i, 3, 500, now_ms() + i as i64)))
                .await
                .unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        assert!(log.segment_count() >= 3, "64 KiB segments must have rolled");
        let end = log.log_end_offset();
        log.close().await.unwrap();
        let bases = segment_bases(dir.path());
        (end, bases[1])
    });
    let path = segment_path(dir.path(), 0);
    let original = std::fs::read(&path).unwrap();
    let spots = walk(&original);
    assert_eq!(
        spots.last().unwrap().end(),
        original.len(),
        "a sealed segment is cut to its last batch"
    );
    assert_eq!(spots.last().unwrap().next_offset, second_base);
    let victim = spots[spots.len() / 2];
    let mut damaged = original.clone();
    damaged[victim.position + victim.len / 2] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();

    let is_this_corruption = |error: &StorageError| matches!(error, StorageError::Corrupt { path: p, position, .. } if *p == path && *position == victim.position as u64);
    // (a) Index intact: open succeeds, the damage is found when read.
    assert!(index_path(dir.path(), 0).exists());
    run(async {
        let log = Log::open(dir.path(), config.clone()).await.unwrap();
        assert_eq!(log.log_end_offset(), log_end);
        for offset in [
            victim.base_offset,
            victim.base_offset + 1,
            victim.next_offset - 1,
        ] {
            let error = log.read(offset, 1).await.unwrap_err();
            assert!(is_this_corruption(&error), "read at {offset}: {error:?}");
        }
        // A read that starts before the damage and would run over it does not skip it.
        let before = spots[spots.len() / 2 - 1];
        let error = log.read(before.base_offset, 1 << 20).await.unwrap_err();
        assert!(is_this_corruption(&error), "{error:?}");
        // Batches before it and later segments stay readable.
        let read = log.read(0, 1).await.unwrap();
        assert!(read.batches[0].bytes[..] == original[..spots[0].len]);
        let read = log.read(before.base_offset, 1).await.unwrap();
        assert!(read.batches[0].bytes[..] == original[before.position..before.end()]);
        let read = log.read(second_base, 1).await.unwrap();
        assert_eq!(read.batches[0].base_offset, second_base);
        view(&read.batches[0].bytes);
    });
    // (b) Index gone: the rebuild scan meets the damage and open fails.
    std::fs::remove_file(index_path(dir.path(), 0)).unwrap();
    run(async {
        for _ in 0..2 {
            match Log::open(dir.path(), config.clone()).await {
                Err(error) => assert!(is_this_corruption(&error), "{error:?}"),
                Ok(_) => panic!("a damaged sealed segment without index must not open"),
            }
        }
    });
    assert!(
        std::fs::read(&path).unwrap() == damaged,
        "a failed open must leave the segment as it was"
    );
}

/// A batch reported durable survives any crash that tears only what came after it. Each
/// scenario appends batches made durable one by one (rolling segments on the way), then more
/// batches nobody waited for, closes, and tears the active segment only after the durable end
/// (cut, garbage overwrite, zeroed tail, bit flip, replayed stale batch). On reopen every
/// durable batch is there byte for byte, whatever survived after it is valid and contiguous,
/// and the log appends again.
#[test]
fn durable_batches_survive_tears_after_them() {
    for scenario in 0..10u64 {
        let dir = test_dir();
        let config = small_config(Durability::Always);
        let mut rng = Rng(0x5eed_1000 + scenario);
        let durable_count = rng.within(20, 80);
        let later_count = rng.within(1, 12);
        let mut specs = Vec::new();
        for i in 0..durable_count + later_count {
            specs.push(batch(
                i as u64,
                rng.within(1, 4),
                rng.within(50, 700),
                now_ms() + i as i64,
            ));
        }
        let (durable_offset, durable) = run(async {
            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            for bytes in &specs[..durable_count] {
                let info = log.append(view(bytes)).await.unwrap();
                log.wait_durable(info.last_offset).await.unwrap();
                assert!(log.durable_offset() > info.last_offset);
            }
            let durable_offset = log.durable_offset();
            let durable: Vec<(u64, Vec<u8>)> = read_all(&log)
                .await
                .into_iter()
                .map(|b| (b.base_offset, b.bytes.to_vec()))
                .collect();
            for bytes in &specs[durable_count..] {
                log.append(view(bytes)).await.unwrap();
            }
            log.close().await.unwrap();
            (durable_offset, durable)
        });
        assert_eq!(durable.len(), durable_count);

        // Where the durable data ends in the active (last) segment.
        let active_base = *segment_bases(dir.path()).last().unwrap();
        let path = segment_path(dir.path(), active_base);
        let (bytes, spots) = read_segment(dir.path(), active_base);
        let tear_start = if durable_offset <= active_base {
            0
        } else if let Some(spot) = spots.iter().find(|s| s.base_offset == durable_offset) {
            spot.position
        } else {
            assert_eq!(spots.last().unwrap().next_offset, durable_offset);
            bytes.len()
        };
        let mut content = bytes.clone();
        let kind = scenario % 5;
        let at = if kind == 4 {
            // The stale batch goes at a batch boundary, where recovery really meets it.
            let boundaries: Vec<usize> = spots
                .iter()
                .map(|s| s.position)
                .chain([bytes.len()])
                .filter(|&p| p >= tear_start)
                .collect();
            boundaries[rng.below(boundaries.len())]
        } else if kind == 0 && tear_start < content.len() {
            // A cut at the very end would cut nothing.
            rng.within(tear_start, content.len() - 1)
        } else {
            rng.within(tear_start, content.len())
        };
        match kind {
            0 => content.truncate(at),
            1 => {
                let len = rng.within(1, 3000);
                let garbage = rng.bytes(len);
                content.resize(content.len().max(at + garbage.len()), 0);
                content[at..at + garbage.len()].copy_from_slice(&garbage);
            }
            2 => {
                content[at..].fill(0);
                // At least one zero, so that a fill at the very end still changes the file.
                content.extend(vec![0; rng.within(1, 8192)]);
            }
            3 if at < content.len() => content[at] ^= 1 << rng.below(8),
            3 => content.extend(rng.bytes(100)),
            _ => {
                content.truncate(at);
                let (_, stale) = &durable[rng.below(durable.len())];
                content.extend_from_slice(stale);
            }
        }
        assert!(
            content[..tear_start] == bytes[..tear_start],
            "the tear must spare the durable bytes"
        );
        // Every tear changes the file, except a cut when everything in it is durable (there
        // is nothing after the durable end to cut).
        assert!(
            content != bytes || (kind == 0 && tear_start == bytes.len()),
            "scenario {scenario}: tear kind {kind} at {at} changed nothing"
        );
        std::fs::write(&path, &content).unwrap();

        run(async {
            let what =
                format!("scenario {scenario} (tear kind {kind} at {at}, durable end {tear_start})");
            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            assert!(log.log_end_offset() >= durable_offset, "{what}");
            let read = read_all(&log).await;
            assert!(read.len() >= durable.len(), "{what}");
            for ((base, expected), got) in durable.iter().zip(&read) {
                assert_eq!(got.base_offset, *base, "{what}");
                assert!(
                    got.bytes[..] == expected[..],
                    "{what}: durable batch {base} changed"
                );
            }
            let mut next = 0;
            for got in &read {
                let checked = BatchView::validate(&got.bytes, BATCH_SIZE_MAX).unwrap();
                assert_eq!(checked.base_offset(), next, "{what}");
                next = checked.header().next_offset();
            }
            assert_eq!(next, log.log_end_offset(), "{what}");
            let info = log
                .append(view(&batch(4242, 1, 10, now_ms())))
                .await
                .unwrap();
            assert_eq!(info.base_offset, next, "{what}");
            log.wait_durable(info.last_offset).await.unwrap();
            log.close().await.unwrap();
        });
    }
}

/// The base offset is the one header field outside the CRC (the broker stamps it in place), so
/// a flip there leaves a batch whose CRC still matches. In a sealed segment that is corruption
/// just the same: without the index, the rebuild scan sees the broken offset sequence and
/// `Log::open` fails with `Corrupt` at the batch; with the index intact, a read that walks over
/// the batch must fail the same way instead of returning it under wrong offsets (or skipping
/// the offsets it held). Checked for a flip that raises the base offset and one that lowers it.
#[test]
fn base_offset_damage_in_a_sealed_segment_is_reported_as_corrupt() {
    let dir = test_dir();
    let config = small_config(Durability::Always);
    run(async {
        let log = Log::open(dir.path(), config.clone()).await.unwrap();
        for i in 0..150u64 {
            let info = log.append(view(&batch(i, 3, 500, now_ms()))).await.unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
        }
        assert!(log.segment_count() >= 3);
        log.close().await.unwrap();
    });
    let path = segment_path(dir.path(), 0);
    let index = index_path(dir.path(), 0);
    let original = std::fs::read(&path).unwrap();
    let original_index = std::fs::read(&index).unwrap();
    let spots = walk(&original);
    let victim = spots[spots.len() / 2];
    let before = spots[spots.len() / 2 - 1];
    let highest_bit = 63 - victim.base_offset.leading_zeros();
    // (what, new base offset): raised past the segment, and lowered below the batch before.
    let damages = [
        ("raised", victim.base_offset | 1 << 20),
        ("lowered", victim.base_offset & !(1 << highest_bit)),
    ];
    for (what, bad_base) in damages {
        assert!(bad_base > spots.last().unwrap().next_offset || bad_base < before.base_offset);
        let mut damaged = original.clone();
        let field = victim.position + wire::batch::BASE_OFFSET_POSITION;
        damaged[field..field + 8].copy_from_slice(&bad_base.to_le_bytes());
        assert!(
            BatchView::validate(&damaged[victim.position..], BATCH_SIZE_MAX).is_ok(),
            "the CRC does not cover it"
        );
        std::fs::write(&path, &damaged).unwrap();
        let is_this_corruption = |error: &StorageError| matches!(error, StorageError::Corrupt { path: p, position, .. } if *p == path && *position == victim.position as u64);
        // Without the index: the scan's offset continuity check catches it.
        std::fs::remove_file(&index).unwrap();
        run(async {
            match Log::open(dir.path(), config.clone()).await {
                Err(error) => assert!(is_this_corruption(&error), "{what}: {error:?}"),
                Ok(_) => {
                    panic!("{what}: a sealed segment with a broken offset sequence must not open")
                }
            }
        });
        // With the index: reads over the batch must not hand it out.
        std::fs::write(&index, &original_index).unwrap();
        run(async {
            let log = Log::open(dir.path(), config.clone()).await.unwrap();
            for (from, max_bytes) in [
                (victim.base_offset, 1),
                (victim.base_offset + 1, 1),
                (before.base_offset, 1 << 20),
            ] {
                match log.read(from, max_bytes).await {
                    Err(error) => assert!(is_this_corruption(&error), "{what}, read at {from}: {error:?}"),
                    Ok(read) => panic!(
                        "{what}: read at {from} returned {:?} instead of reporting the damaged batch at {}",
                        read.batches.iter().map(|b| b.base_offset..=b.last_offset).collect::<Vec<_>>(),
                        victim.position
                    ),
                }
            }
        });
    }
}
