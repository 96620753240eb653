//! Small metadata files (the broker's topic registry, producer-id blocks, offsets snapshots)
//! written atomically and durably, off the calling shard's event loop.
//!
//! [`atomic_write`] writes `<path>.tmp`, fsyncs it, renames it over `path` and fsyncs the
//! directory, so a reader after any crash sees either the old file or the new one, whole. These
//! are blocking system calls (an fsync can take tens of milliseconds), so they run on glommio's
//! blocking thread pool: the shard keeps serving while the file is written.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Replaces `path` with `bytes`, atomically and durably (see the module doc). Must be called on
/// a glommio executor: the writes run on its blocking thread pool (see [`on_blocking_thread`]).
pub async fn atomic_write(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    on_blocking_thread(move || atomic_write_blocking(&path, &bytes)).await
}

thread_local! {
    /// Work handed to this executor's blocking thread by [`on_blocking_thread`] and not yet
    /// reported back. One executor per thread, so this counts exactly that executor's work.
    static BLOCKING_IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// Runs `work` on the calling glommio executor's blocking thread and returns its result.
///
/// The work is not cancelled with the caller: it runs in a detached task, counted until its
/// result is back on the executor, and [`blocking_work_done`] waits for that count to reach
/// zero. An executor must not stop while such work is out: glommio's blocking thread panics
/// when it cannot report a finished operation. This happened at shutdown, with thousands of
/// leader-epoch checkpoints still queued (`sluice/tests/many_partitions.rs`).
pub async fn on_blocking_thread<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let counted = BlockingInFlight::start();
    glommio::spawn_local(async move {
        let result = glommio::executor().spawn_blocking(work).await;
        drop(counted);
        result
    })
    .detach()
    .await
    .unwrap_or_else(|| Err(std::io::Error::other("the executor stopped")))
}

/// Waits until every [`on_blocking_thread`] work of this executor has reported back (a shard's
/// last step before its executor stops). Not bounded: each is a bounded file operation.
pub async fn blocking_work_done() {
    let started = Instant::now();
    let mut told = false;
    while BLOCKING_IN_FLIGHT.with(Cell::get) > 0 {
        if !told && started.elapsed() >= BLOCKING_WAIT_LOG_AFTER {
            let left = BLOCKING_IN_FLIGHT.with(Cell::get);
            tracing::info!(left, "waiting for metadata writes on the blocking thread");
            told = true;
        }
        glommio::timer::sleep(BLOCKING_POLL_PERIOD).await;
    }
}

/// How often [`blocking_work_done`] looks: once per shutdown, so polling costs nothing.
const BLOCKING_POLL_PERIOD: Duration = Duration::from_millis(5);
/// When [`blocking_work_done`] says what it waits for.
const BLOCKING_WAIT_LOG_AFTER: Duration = Duration::from_secs(1);

/// One count of [`BLOCKING_IN_FLIGHT`], given back when dropped.
struct BlockingInFlight;

impl BlockingInFlight {
    fn start() -> Self {
        BLOCKING_IN_FLIGHT.with(|count| count.set(count.get() + 1));
        BlockingInFlight
    }
}

impl Drop for BlockingInFlight {
    fn drop(&mut self) {
        BLOCKING_IN_FLIGHT.with(|count| count.set(count.get().saturating_sub(1)));
    }
}

/// [`atomic_write`] on the calling thread, for callers outside the shards (start-up, tools).
pub fn atomic_write_blocking(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(&directory)?.sync_all()
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The file holds exactly the last bytes written, no temporary file is left behind, and
    /// the write runs on a glommio executor without blocking its loop.
    #[test]
    fn replaces_the_file_whole() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let path = dir.path().join("registry.meta");
        atomic_write_blocking(&path, b"first").unwrap();
        let async_path = path.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                atomic_write(&async_path, b"second, longer".to_vec())
                    .await
                    .unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert!(!dir.path().join("registry.meta.tmp").exists());
        let missing = dir.path().join("no-such-dir").join("x.meta");
        assert!(atomic_write_blocking(&missing, b"x").is_err());
    }

    /// A write whose caller is dropped still runs to its end, counted until it has reported
    /// back, and `blocking_work_done` returns only then; the count is back at zero after.
    #[test]
    fn dropped_callers_are_waited_for() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let paths: Vec<PathBuf> = (0..20)
            .map(|i| dir.path().join(format!("{i}.meta")))
            .collect();
        let written = paths.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                for path in &written {
                    // Polled once, then dropped: the write has started and is not cancelled.
                    let write = atomic_write(path, b"kept".to_vec());
                    futures_lite::future::poll_once(Box::pin(write)).await;
                }
                assert!(BLOCKING_IN_FLIGHT.with(Cell::get) > 0);
                blocking_work_done().await;
                assert_eq!(BLOCKING_IN_FLIGHT.with(Cell::get), 0);
            })
            .unwrap()
            .join()
            .unwrap();
        for path in &paths {
            assert_eq!(std::fs::read(path).unwrap(), b"kept", "{}", path.display());
        }
    }
}
