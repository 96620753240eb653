//! Failure paths of the log, driven by the fault-injecting I/O seam ([`FaultPlan`]) on real
//! O_DIRECT files: a failed fsync poisons the log, a full disk is a clean error, a short or torn
//! write is never acknowledged and recovery cuts it, a read error names the file. After each,
//! a reopen (a restart) finds every batch that was reported durable.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use common::{batch, run, small_config, test_dir, values, view};
use proptest::prelude::*;
use storage::{Durability, FaultPlan, Log, LogConfig, StorageError};

/// A batch acknowledged durable: its base offset and record values.
type Acked = (u64, Vec<Vec<u8>>);

fn config_with(plan: &Arc<FaultPlan>, durability: Durability) -> LogConfig {
    LogConfig {
        faults: Some(plan.clone()),
        ..small_config(durability)
    }
}

/// Appends a batch and waits until it is durable; returns it as acknowledged.
async fn append_durable(log: &Log, tag: u64, value_len: usize) -> Acked {
    let bytes = batch(tag, 3, value_len, 1_000 + tag as i64);
    let info = log.append(view(&bytes)).await.unwrap();
    log.wait_durable(info.last_offset).await.unwrap();
    (info.base_offset, values(&bytes))
}

/// Every acknowledged batch reads back at its offset with its values.
async fn assert_holds(log: &Log, acked: &[Acked]) {
    for (base, expected) in acked {
        let read = log.read(*base, 1).await.unwrap();
        let got = read
            .batches
            .first()
            .expect("an acknowledged batch is missing");
        assert_eq!(got.base_offset, *base);
        assert_eq!(&values(&got.bytes), expected, "batch at {base}");
    }
}

fn is_poisoned(result: &Result<impl std::fmt::Debug, StorageError>, dir: &Path) -> bool {
    match result {
        Err(
            error @ StorageError::Poisoned {
                dir: poisoned_dir, ..
            },
        ) => poisoned_dir == dir && error.to_string().contains("poisoned"),
        _ => false,
    }
}

/// A failed fsync: every waiter of that sync gets an error, nothing appended after it is
/// reported durable, later appends, waits and flushes fail with `Poisoned` naming the log,
/// reads of the durable prefix still work, and a reopen finds exactly that prefix intact.
#[test]
fn failed_fsync_poisons_the_log_and_the_durable_prefix_survives_reopen() {
    let dir = test_dir();
    let plan = Arc::new(FaultPlan::new());
    run(async {
        let log = Rc::new(
            Log::open(dir.path(), config_with(&plan, Durability::Always))
                .await
                .unwrap(),
        );
        let mut acked = Vec::new();
        for tag in 0..5 {
            acked.push(append_durable(&log, tag, 300).await);
        }
        let durable_before = log.durable_offset();
        plan.fail_next_fsyncs(1);
        // Four appenders share the failing sync (group commit): all of them must hear of it.
        let outcomes = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = (0..4u64)
            .map(|i| {
                let log = log.clone();
                let outcomes = outcomes.clone();
                glommio::spawn_local(async move {
                    let bytes = batch(100 + i, 2, 200, 5_000);
                    let outcome = match log.append(view(&bytes)).await {
                        Ok(info) => log.wait_durable(info.last_offset).await,
                        Err(error) => Err(error),
                    };
                    outcomes.borrow_mut().push(outcome);
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        assert_eq!(plan.fired().fsyncs_failed, 1);
        let dir_path = log.dir().to_path_buf();
        for outcome in outcomes.borrow().iter() {
            assert!(is_poisoned(outcome, &dir_path), "got {outcome:?}");
        }
        assert_eq!(
            log.durable_offset(),
            durable_before,
            "nothing new is durable"
        );
        let bytes = batch(200, 1, 10, 6_000);
        assert!(is_poisoned(&log.append(view(&bytes)).await, &dir_path));
        assert!(is_poisoned(&log.flush().await, &dir_path));
        assert!(is_poisoned(
            &log.wait_durable(log.log_end_offset() - 1).await,
            &dir_path
        ));
        assert_holds(&log, &acked).await;
        let log = Rc::try_unwrap(log).ok().unwrap();
        log.close().await.unwrap();

        plan.clear();
        let log = Log::open(dir.path(), config_with(&plan, Durability::Always))
            .await
            .unwrap();
        assert!(log.log_end_offset() >= durable_before);
        assert_holds(&log, &acked).await;
        // The reopened log accepts appends again.
        acked.push(append_durable(&log, 300, 100).await);
        assert_holds(&log, &acked).await;
        log.close().await.unwrap();
    });
}

/// A full disk at reservation time: the append fails with `NoSpace` before any byte is
/// written, the log is not poisoned, reads keep working, and appends resume on the same open
/// log once space is back; everything acknowledged survives a reopen.
#[test]
fn enospc_at_reservation_is_a_clean_error_and_appends_resume() {
    let dir = test_dir();
    let plan = Arc::new(FaultPlan::new());
    run(async {
        let log = Log::open(dir.path(), config_with(&plan, Durability::Always))
            .await
            .unwrap();
        let mut acked = Vec::new();
        for tag in 0..3 {
            acked.push(append_durable(&log, tag, 300).await);
        }
        let end = log.log_end_offset();
        plan.no_space_after_bytes(0);
        // 48 KB does not fit in the 32 KiB reserved so far: the file must grow first.
        let big = batch(10, 4, 12_000, 2_000);
        let refused = log.append(view(&big)).await;
        assert!(
            matches!(&refused, Err(StorageError::NoSpace { path }) if path.starts_with(log.dir())),
            "got {refused:?}"
        );
        assert!(refused.unwrap_err().to_string().contains("no space left"));
        assert_eq!(log.log_end_offset(), end, "nothing was appended");
        assert_holds(&log, &acked).await;
        plan.restore_space();
        let info = log.append(view(&big)).await.unwrap();
        log.wait_durable(info.last_offset).await.unwrap();
        acked.push((info.base_offset, values(&big)));
        assert_holds(&log, &acked).await;
        log.close().await.unwrap();
        let log = Log::open(dir.path(), config_with(&plan, Durability::Always))
            .await
            .unwrap();
        assert_holds(&log, &acked).await;
        log.close().await.unwrap();
    });
}

/// A full disk under a write (space already reserved, the write refused anyway): the write
/// cannot be proven harmless, so the flush fails with `Poisoned` whose cause says the disk is
/// full; reads of durable data work; a reopen finds the durable prefix.
#[test]
fn enospc_on_a_write_poisons_and_reopen_recovers_the_durable_prefix() {
    let dir = test_dir();
    let plan = Arc::new(FaultPlan::new());
    run(async {
        let log = Log::open(dir.path(), config_with(&plan, Durability::Never))
            .await
            .unwrap();
        let mut acked = Vec::new();
        for tag in 0..3 {
            acked.push(append_durable(&log, tag, 300).await);
        }
        let bytes = batch(50, 2, 100, 3_000);
        log.append(view(&bytes)).await.unwrap();
        plan.no_space_after_bytes(0);
        let flushed = log.flush().await;
        match &flushed {
            Err(StorageError::Poisoned { cause, .. }) => {
                assert!(cause.contains("no space left"), "cause: {cause}")
            }
            other => panic!("expected Poisoned, got {other:?}"),
        }
        assert_holds(&log, &acked).await;
        log.close().await.unwrap();
        plan.clear();
        let log = Log::open(dir.path(), config_with(&plan, Durability::Never))
            .await
            .unwrap();
        assert_eq!(
            log.log_end_offset(),
            acked.last().map(|(b, v)| b + v.len() as u64).unwrap(),
            "the refused write left nothing behind"
        );
        assert_holds(&log, &acked).await;
        log.close().await.unwrap();
    });
}

/// A short write and a torn write (a page of it reaches the file, then an error): the batch is
/// never acknowledged, the log is poisoned, and recovery cuts the partial batch so the log
/// reopens at the end of the durable prefix and keeps appending.
#[test]
fn short_and_torn_writes_are_never_acknowledged_and_recovery_cuts_them() {
    for torn in [false, true] {
        let dir = test_dir();
        let plan = Arc::new(FaultPlan::new());
        run(async {
            let log = Log::open(dir.path(), config_with(&plan, Durability::Always))
                .await
                .unwrap();
            let mut acked = Vec::new();
            for tag in 0..3 {
                acked.push(append_durable(&log, tag, 300).await);
            }
            let durable_end = log.log_end_offset();
            if torn {
                plan.tear_next_write(4096);
            } else {
                plan.short_next_write(4096);
            }
            // ~6 KB from ~1 KB on: the write covers two pages and only the first lands.
            let bytes = batch(9, 3, 2_000, 4_000);
            let info = log.append(view(&bytes)).await.unwrap();
            let waited = log.wait_durable(info.last_offset).await;
            assert!(is_poisoned(&waited, log.dir()), "torn={torn}: {waited:?}");
            assert_eq!(plan.fired().writes_cut, 1);
            assert_eq!(log.durable_offset(), durable_end);
            log.close().await.unwrap();

            plan.clear();
            let log = Log::open(dir.path(), config_with(&plan, Durability::Always))
                .await
                .unwrap();
            assert_eq!(
                log.log_end_offset(),
                durable_end,
                "torn={torn}: tail not cut"
            );
            assert_holds(&log, &acked).await;
            acked.push(append_durable(&log, 20, 300).await);
            assert_eq!(acked.last().unwrap().0, durable_end);
            assert_holds(&log, &acked).await;
            log.close().await.unwrap();
        });
    }
}

/// EIO on reading a segment: the read fails with an I/O error naming the file; the log stays
/// usable (appends, other reads) and the same read works once the fault is gone.
#[test]
fn a_read_error_names_the_file_and_the_log_stays_usable() {
    let dir = test_dir();
    let plan = Arc::new(FaultPlan::new());
    run(async {
        let log = Log::open(dir.path(), config_with(&plan, Durability::Always))
            .await
            .unwrap();
        let mut acked = Vec::new();
        for tag in 0..40 {
            acked.push(append_durable(&log, tag, 1_000).await);
        }
        assert!(log.segment_count() > 1, "64 KiB segments must have rolled");
        let first_segment = "00000000000000000000.log";
        plan.fail_reads_of(first_segment);
        let failed = log.read(0, 1).await;
        match &failed {
            Err(error @ StorageError::Io { path, .. }) => {
                assert!(path.ends_with(first_segment), "path {}", path.display());
                assert!(error.to_string().contains(first_segment));
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert_eq!(plan.fired().reads_failed, 1);
        acked.push(append_durable(&log, 100, 100).await);
        let last = acked.last().unwrap().0;
        assert_eq!(
            log.read(last, 1).await.unwrap().batches[0].base_offset,
            last
        );
        plan.clear();
        assert_holds(&log, &acked).await;
        log.close().await.unwrap();
    });
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    /// Append a batch with values of this many bytes.
    Append(usize),
    /// Wait until everything appended is durable.
    Flush,
    /// The next fsync fails.
    FailFsync,
    /// The next write keeps this many bytes (rounded down to the page) and fails.
    Tear(usize),
    /// Writes and growth may take this many more bytes.
    NoSpace(u64),
    /// Close (on a poisoned log too) and reopen without faults armed.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..3_000).prop_map(Op::Append),
        4 => Just(Op::Flush),
        1 => Just(Op::FailFsync),
        1 => (0usize..12_000).prop_map(Op::Tear),
        1 => (0u64..40_000).prop_map(Op::NoSpace),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random appends and flushes with random faults never lose a batch reported durable:
    /// after every reopen (and at the end) each one reads back at its offset.
    #[test]
    fn faults_never_lose_a_batch_reported_durable(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = test_dir();
        let plan = Arc::new(FaultPlan::new());
        run(async {
            let config = config_with(&plan, Durability::Never);
            let mut log = Log::open(dir.path(), config.clone()).await.unwrap();
            let mut acked: Vec<Acked> = Vec::new();
            let mut pending: Vec<Acked> = Vec::new();
            // Durable offset when the log first reported itself poisoned: it never moves after.
            let mut poisoned_at: Option<u64> = None;
            for (step, op) in ops.into_iter().enumerate() {
                let mut note = |result: &Result<(), StorageError>, durable: u64| {
                    if matches!(result, Err(StorageError::Poisoned { .. })) {
                        poisoned_at.get_or_insert(durable);
                    }
                };
                match op {
                    Op::Append(value_len) => {
                        let bytes = batch(step as u64, 2, value_len, 1_000);
                        match log.append(view(&bytes)).await {
                            Ok(info) => pending.push((info.base_offset, values(&bytes))),
                            Err(error) => note(&Err(error), log.durable_offset()),
                        }
                    }
                    Op::Flush => {
                        let flushed = log.flush().await;
                        if flushed.is_ok() {
                            acked.append(&mut pending);
                        }
                        note(&flushed, log.durable_offset());
                    }
                    Op::FailFsync => plan.fail_next_fsyncs(1),
                    Op::Tear(prefix) => plan.tear_next_write(prefix),
                    Op::NoSpace(bytes) => plan.no_space_after_bytes(bytes),
                    Op::Reopen => {
                        let _ = log.close().await;
                        plan.clear();
                        pending.clear();
                        poisoned_at = None;
                        log = Log::open(dir.path(), config.clone()).await.unwrap();
                        assert_holds(&log, &acked).await;
                    }
                }
                // What the log reports durable is acknowledged, whoever ran the sync.
                let durable = log.durable_offset();
                if let Some(frozen) = poisoned_at {
                    assert_eq!(durable, frozen, "a poisoned log reported more data durable");
                }
                let (now, later): (Vec<_>, Vec<_>) = pending
                    .drain(..)
                    .partition(|(base, values)| base + values.len() as u64 <= durable);
                acked.extend(now);
                pending = later;
            }
            let _ = log.close().await;
            plan.clear();
            let log = Log::open(dir.path(), config).await.unwrap();
            assert_holds(&log, &acked).await;
            log.close().await.unwrap();
        });
    }
}
