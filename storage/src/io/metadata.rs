//! Small metadata files (the broker's topic registry, producer-id blocks, offsets snapshots)
//! written atomically and durably, off the calling shard's event loop.
//!
//! [`atomic_write`] writes `<path>.tmp`, fsyncs it, renames it over `path` and fsyncs the
//! directory, so a reader after any crash sees either the old file or the new one, whole. These
//! are blocking system calls (an fsync can take tens of milliseconds), so they run on glommio's
//! blocking thread pool: the shard keeps serving while the file is written.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes`, atomically and durably (see the module doc). Must be called on
/// a glommio executor: the writes run on its blocking thread pool.
pub async fn atomic_write(path: &Path, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || atomic_write_blocking(&path, &bytes))
        .await
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
}
