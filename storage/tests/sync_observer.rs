//! The sync observer (`LogConfig::sync_observer`): a log reports every data sync it runs, so
//! the broker can publish fsync latency. Under `always`, each awaited durable append is covered
//! by a sync, and the observer hears about each of them; under `never` no append asks for one.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{batch, run, small_config, test_dir, view};
use storage::{Durability, Log, SyncObserver};

/// Counts the syncs it is told about and adds up their durations.
fn counting_observer() -> (SyncObserver, Arc<AtomicU64>, Arc<AtomicU64>) {
    let syncs = Arc::new(AtomicU64::new(0));
    let total_ns = Arc::new(AtomicU64::new(0));
    let (counted, summed) = (syncs.clone(), total_ns.clone());
    let observer = SyncObserver(Arc::new(move |took: std::time::Duration| {
        counted.fetch_add(1, Ordering::Relaxed);
        summed.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }));
    (observer, syncs, total_ns)
}

/// Three appends waited for one after the other under `always` are three syncs, each of
/// measurable length; appends under `never` that nobody waits for cause none.
#[test]
fn observer_hears_every_sync() {
    let dir = test_dir();
    let (observer, syncs, total_ns) = counting_observer();
    run(async {
        let mut config = small_config(Durability::Always);
        config.sync_observer = Some(observer);
        let log = Log::open(dir.path().join("always"), config).await.unwrap();
        for i in 0..3 {
            let info = log
                .append(view(&batch(i * 2, 2, 10, storage::now_ms())))
                .await
                .unwrap();
            log.wait_durable(info.last_offset).await.unwrap();
            assert_eq!(
                syncs.load(Ordering::Relaxed),
                i + 1,
                "one sync per awaited append"
            );
        }
        log.close().await.unwrap();
    });
    assert!(total_ns.load(Ordering::Relaxed) > 0, "syncs take time");

    let (observer, quiet_syncs, _) = counting_observer();
    run(async {
        let mut config = small_config(Durability::Never);
        config.sync_observer = Some(observer);
        let log = Log::open(dir.path().join("never"), config).await.unwrap();
        for i in 0..3 {
            log.append(view(&batch(i * 2, 2, 10, storage::now_ms())))
                .await
                .unwrap();
        }
        assert_eq!(
            quiet_syncs.load(Ordering::Relaxed),
            0,
            "nothing asked for a sync"
        );
        log.close().await.unwrap();
    });
}
