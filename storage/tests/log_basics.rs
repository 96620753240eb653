//! The log's contract, one behaviour per test: offsets, reads, reopen, rolls, durability,
//! timestamps, truncation and retention — on real O_DIRECT files under target/.
#![allow(clippy::unwrap_used)]

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::{batch, run, small_config, test_dir, values, view};
use storage::{Durability, Log, LogConfig, StorageError};

/// Appends get consecutive offsets, reads return the same bytes with the offset stamped, and
/// the whole log survives a close and reopen.
#[test]
fn append_read_and_reopen() {
    let dir = test_dir();
    run(async {
        let log = Log::open(dir.path(), small_config(Durability::Always))
            .await
            .unwrap();
        let mut expected = Vec::new();
        for i in 0..50u64 {
            let bytes = batch(i, 3, 500, 1_000 + i as i64);
            let info = log.append(view(&bytes)).await.unwrap();
            assert_eq!(info.base_offset, i * 3);
            assert_eq!(info.last_offset, i * 3 + 2);
            expected.push(values(&bytes));
        }
        assert_eq!(log.log_end_offset(), 150);
        assert!(log.segment_count() > 1, "64 KiB segments must have rolled");
        let check = |log: Rc<Log>, expected: Vec<Vec<Vec<u8>>>| async move {
            let mut offset = 0;
            let mut seen = 0;
            while offset < 150 {
                let read = log.read(offset, 5000).await.unwrap();
                assert!(!read.batches.is_empty());
                for b in &read.batches {
                    let v = view(&b.bytes);
                    assert_eq!(v.base_offset(), b.base_offset);
                    assert_eq!(b.base_offset, seen as u64 * 3);
                    assert_eq!(values(&b.bytes), expected[seen]);
                    assert_eq!(
                        b.bytes.as_ptr() as usize % 16,
                        0,
                        "batches must be 16-aligned in memory"
                    );
                    seen += 1;
                }
                offset = read.next_offset().unwrap();
            }
            assert_eq!(seen, 50);
            // A read from inside a batch starts with that batch.
            let read = log.read(4, 1).await.unwrap();
            assert_eq!(read.batches[0].base_offset, 3);
            assert_eq!(read.batches.len(), 1);
            // The end is empty; past the end is an error.
            assert!(log.read(150, 1000).await.unwrap().batches.is_empty());
            assert!(matches!(
                log.read(151, 1000).await,
                Err(StorageError::OffsetOutOfRange { .. })
            ));
        };
        let log = Rc::new(log);
        check(log.clone(), expected.clone()).await;
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        let log = Rc::new(
            Log::open(dir.path(), small_config(Durability::Always))
                .await
                .unwrap(),
        );
        assert_eq!(log.log_end_offset(), 150);
        assert_eq!(log.durable_offset(), 150);
        check(log.clone(), expected).await;
        // Appends continue after the reopen.
        let info = log.append(view(&batch(99, 1, 10, 5))).await.unwrap();
        assert_eq!(info.base_offset, 150);
    });
}

/// `wait_durable` returns once an fdatasync covers the offset, under every policy; many
/// concurrent waiters all complete.
#[test]
fn durability_policies_report_durable_offsets() {
    for durability in [
        Durability::Always,
        Durability::Never,
        Durability::Interval {
            interval_ms: 5,
            bytes: 1 << 20,
        },
    ] {
        let dir = test_dir();
        run(async move {
            let log = Rc::new(
                Log::open(dir.path(), small_config(durability))
                    .await
                    .unwrap(),
            );
            let mut tasks = Vec::new();
            for t in 0..8u64 {
                let log = log.clone();
                tasks.push(glommio::spawn_local(async move {
                    for i in 0..20u64 {
                        let info = log
                            .append(view(&batch(t * 100 + i, 2, 300, 0)))
                            .await
                            .unwrap();
                        log.wait_durable(info.last_offset).await.unwrap();
                        assert!(log.durable_offset() > info.last_offset);
                    }
                }));
            }
            for task in tasks {
                task.await;
            }
            assert_eq!(log.log_end_offset(), 8 * 20 * 2);
            assert_eq!(log.durable_offset(), 8 * 20 * 2, "{durability:?}");
        });
    }
}

/// Under `interval`, data becomes durable without anyone asking (nobody calls
/// `wait_durable`): not before the first interval has passed, and then on its own (waited for
/// with a generous deadline, since a loaded machine may delay the timer).
#[test]
fn interval_policy_syncs_on_its_own() {
    const INTERVAL_MS: u32 = 500;
    let dir = test_dir();
    run(async {
        let config = small_config(Durability::Interval {
            interval_ms: INTERVAL_MS,
            bytes: 1 << 30,
        });
        // Before the open: no interval can have ended before `started + INTERVAL_MS`.
        let started = std::time::Instant::now();
        let log = Log::open(dir.path(), config).await.unwrap();
        log.append(view(&batch(1, 1, 10, 0))).await.unwrap();
        let durable_after_append = log.durable_offset();
        if started.elapsed() < Duration::from_millis(u64::from(INTERVAL_MS)) {
            assert_eq!(durable_after_append, 0, "synced before the interval ended");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while log.durable_offset() < 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the interval never synced the append"
            );
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(log.durable_offset(), 1);
    });
}

/// Timestamp lookups find the first record at or after the time, across segments.
#[test]
fn offset_for_timestamp() {
    let dir = test_dir();
    run(async {
        let log = Log::open(dir.path(), small_config(Durability::Never))
            .await
            .unwrap();
        // Batch i holds records with timestamps 1000*i + 0..10.
        for i in 0..40u64 {
            log.append(view(&batch(i, 10, 300, 1000 * i as i64)))
                .await
                .unwrap();
        }
        assert!(log.segment_count() > 1);
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some(0));
        assert_eq!(log.offset_for_timestamp(5_005).await.unwrap(), Some(55));
        assert_eq!(log.offset_for_timestamp(5_009).await.unwrap(), Some(59));
        assert_eq!(log.offset_for_timestamp(5_010).await.unwrap(), Some(60));
        assert_eq!(log.offset_for_timestamp(39_009).await.unwrap(), Some(399));
        assert_eq!(log.offset_for_timestamp(39_010).await.unwrap(), None);
    });
}

/// Truncation removes the batch holding the offset and everything after, in the active
/// segment or across sealed ones; appends continue from the new end, also after reopen.
#[test]
fn truncate_to_offset() {
    let dir = test_dir();
    run(async {
        let log = Log::open(dir.path(), small_config(Durability::Always))
            .await
            .unwrap();
        for i in 0..120u64 {
            log.append(view(&batch(i, 2, 1000, 0))).await.unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 2);
        // Inside the active segment, mid-batch: batch [230, 231] goes.
        assert_eq!(log.truncate_to(231).await.unwrap(), 230);
        assert_eq!(log.log_end_offset(), 230);
        assert_eq!(log.segment_count(), segments);
        // Back into a sealed segment.
        assert_eq!(log.truncate_to(21).await.unwrap(), 20);
        assert!(log.segment_count() < segments);
        let read = log.read(18, 100_000).await.unwrap();
        assert_eq!(read.batches.len(), 1);
        assert_eq!(read.batches[0].base_offset, 18);
        let info = log.append(view(&batch(777, 1, 10, 0))).await.unwrap();
        assert_eq!(info.base_offset, 20);
        log.close().await.unwrap();
        let log = Log::open(dir.path(), small_config(Durability::Always))
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 21);
        let read = log.read(20, 1000).await.unwrap();
        assert_eq!(values(&read.batches[0].bytes), vec![b"777-0.....".to_vec()]);
        // Below the start: the log restarts empty at that offset.
        assert_eq!(log.truncate_to(0).await.unwrap(), 0);
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(
            log.append(view(&batch(1, 1, 10, 0)))
                .await
                .unwrap()
                .base_offset,
            0
        );
    });
}

/// Retention deletes whole sealed segments by size and by age and moves the log start; reads
/// below it are out of range.
#[test]
fn retention_by_size_and_time() {
    let dir = test_dir();
    run(async {
        let config = LogConfig {
            retention_bytes: Some(150 * 1024),
            retention_time: None,
            ..small_config(Durability::Never)
        };
        let log = Log::open(dir.path(), config).await.unwrap();
        for i in 0..100u64 {
            log.append(view(&batch(i, 4, 1000, 1_000))).await.unwrap();
        }
        let before = log.size_bytes();
        let report = log.enforce_retention(storage::now_ms()).await.unwrap();
        assert!(report.segments_deleted > 0);
        assert!(log.size_bytes() < before);
        assert!(log.size_bytes() >= 150 * 1024, "never below the limit");
        assert_eq!(log.log_start_offset(), report.log_start_offset);
        assert!(matches!(
            log.read(0, 10).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        let read = log.read(report.log_start_offset, 10).await.unwrap();
        assert_eq!(read.batches[0].base_offset, report.log_start_offset);
        drop(log);

        // By time: records stamped at 1000 ms since the epoch are far older than 14 days.
        let log = Log::open(dir.path(), small_config(Durability::Never))
            .await
            .unwrap();
        let report = log.enforce_retention(storage::now_ms()).await.unwrap();
        assert!(report.segments_deleted > 0);
        assert_eq!(log.segment_count(), 1, "only the active segment stays");
        // Fresh records are kept.
        let log_end = log.log_end_offset();
        for i in 0..40u64 {
            log.append(view(&batch(i, 4, 1000, storage::now_ms())))
                .await
                .unwrap();
        }
        // The segment that was active still held old records and may go once sealed; the
        // fresh ones stay.
        let report = log.enforce_retention(storage::now_ms()).await.unwrap();
        assert!(report.log_start_offset <= log_end);
        assert_eq!(
            log.read(log_end, 10).await.unwrap().batches[0].base_offset,
            log_end
        );
        assert_eq!(
            log.enforce_retention(storage::now_ms())
                .await
                .unwrap()
                .segments_deleted,
            0
        );
    });
}

/// `delete_segments_before` removes exactly the sealed segments wholly below the offset (never
/// the active one), moves the log start, and survives a reopen.
#[test]
fn delete_segments_before_an_offset() {
    let dir = test_dir();
    run(async {
        let log = Log::open(dir.path(), small_config(Durability::Never))
            .await
            .unwrap();
        for i in 0..100u64 {
            log.append(view(&batch(i, 4, 1000, storage::now_ms())))
                .await
                .unwrap();
        }
        let segments = log.segment_count();
        assert!(segments > 3);
        assert_eq!(
            log.delete_segments_before(0)
                .await
                .unwrap()
                .segments_deleted,
            0
        );
        let cut = 200; // offsets 0..400: half the log
        let report = log.delete_segments_before(cut).await.unwrap();
        assert!(report.segments_deleted > 0);
        let start = log.log_start_offset();
        assert_eq!(start, report.log_start_offset);
        assert!(start <= cut, "the segment holding {cut} stays");
        assert!(start > 0);
        assert_eq!(
            log.read(start, 10).await.unwrap().batches[0].base_offset,
            start
        );
        let end = log.log_end_offset();
        let report = log.delete_segments_before(u64::MAX).await.unwrap();
        assert_eq!(log.segment_count(), 1, "the active segment stays");
        assert!(report.log_start_offset <= end);
        let start = log.log_start_offset();
        log.close().await.unwrap();
        let log = Log::open(dir.path(), small_config(Durability::Never))
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    });
}

/// Oversized batches and reads outside the log are clear errors.
#[test]
fn bad_requests_get_clear_errors() {
    let dir = test_dir();
    run(async {
        let config = LogConfig {
            batch_bytes_max: 4096,
            ..small_config(Durability::Never)
        };
        let log = Log::open(dir.path(), config).await.unwrap();
        let big = batch(1, 1, 5000, 0);
        assert!(matches!(
            log.append(view(&big)).await,
            Err(StorageError::BatchTooLarge { .. })
        ));
        assert!(matches!(
            log.wait_durable(0).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.log_end_offset(), 0);
    });
}

/// Whether `path` is on a tmpfs (by its filesystem's magic number).
fn is_tmpfs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: all-zero bytes are a valid `statfs` (plain integers).
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stats` a live, writable `statfs`.
    let result = unsafe { libc::statfs(c_path.as_ptr(), &mut stats) };
    result == 0 && stats.f_type == libc::TMPFS_MAGIC
}

/// A tmpfs mounted by this test (as root) under target/, unmounted on drop.
struct MountedTmpfs {
    dir: tempfile::TempDir,
}

impl Drop for MountedTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// The data directory must really be O_DIRECT: a directory on tmpfs (checked to be one) is
/// refused with a clear error. It uses /dev/shm when that is a tmpfs, else mounts one as root;
/// without either it is skipped with a message, unless `SLUICE_REQUIRE_DISK_FULL` is set (as
/// in CI), which makes it fail.
#[test]
fn tmpfs_is_refused() {
    let shm = std::path::Path::new("/dev/shm");
    let mut mounted = None;
    let parent = if is_tmpfs(shm) {
        shm.to_path_buf()
    } else {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let dir = test_dir();
        let status = root.then(|| {
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
                .arg(dir.path())
                .status()
        });
        match status {
            Some(Ok(status)) if status.success() => {
                let path = dir.path().to_path_buf();
                mounted = Some(MountedTmpfs { dir });
                path
            }
            outcome => {
                let why = format!("/dev/shm is not a tmpfs and none could be mounted: {outcome:?}");
                assert!(
                    std::env::var_os("SLUICE_REQUIRE_DISK_FULL").is_none(),
                    "{why} (SLUICE_REQUIRE_DISK_FULL is set)"
                );
                eprintln!("SKIPPED tmpfs_is_refused: {why}");
                return;
            }
        }
    };
    assert!(is_tmpfs(&parent), "{} is not a tmpfs", parent.display());
    let dir = tempfile::tempdir_in(&parent).unwrap();
    run(async {
        match Log::open(dir.path(), LogConfig::default()).await {
            Err(StorageError::DirectIoUnavailable { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("tmpfs accepted as O_DIRECT"),
        }
    });
    drop(dir);
    drop(mounted);
}

/// `wait_written` puts the tail in the file without a sync: the written offset moves, the
/// durable offset does not, and the bytes are in the file for any other reader (what a kill -9
/// of this process would leave). Concurrent waiters share the write, and waiting past the end
/// is an error.
#[test]
fn wait_written_writes_the_tail_without_a_sync() {
    let dir = test_dir();
    run(async {
        let log = Rc::new(
            Log::open(dir.path(), small_config(Durability::Never))
                .await
                .unwrap(),
        );
        let bytes = batch(0, 4, 100, 1_000);
        let info = log.append(view(&bytes)).await.unwrap();
        assert_eq!(log.written_offset(), 0, "a small append stays in memory");
        let (first, second) = futures_lite::future::zip(
            log.wait_written(info.last_offset),
            log.wait_written(info.base_offset),
        )
        .await;
        first.unwrap();
        second.unwrap();
        assert_eq!(log.written_offset(), 4);
        assert_eq!(log.durable_offset(), 0, "written is not synced");
        let file = std::fs::read(dir.path().join(format!("{:020}.log", 0))).unwrap();
        let on_disk = &file[..bytes.len()];
        assert_eq!(values(on_disk), values(&bytes));
        assert!(matches!(
            log.wait_written(4).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // A sync moves both offsets.
        let more = batch(4, 2, 100, 1_001);
        log.append(view(&more)).await.unwrap();
        log.flush().await.unwrap();
        assert_eq!((log.durable_offset(), log.written_offset()), (6, 6));
    });
}
