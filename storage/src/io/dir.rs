//! Directory operations of the log: create, list, probe, remove, sync. Like the files, they all
//! happen here and nowhere else in the crate.

use std::path::Path;

use glommio::io::{Directory, OpenOptions};

use crate::error::{Result, StorageError};

/// Creates `dir` and its parents if missing.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))
}

/// Names of the entries of `dir` that are valid UTF-8 (every file the log writes is).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Whether `path` exists (an error to stat it counts as missing).
pub(crate) fn file_exists(path: &Path) -> bool {
    path.exists()
}

/// Makes glommio's io_uring polling probe for the device under `dir` see real data.
///
/// glommio decides once per block device whether to use its IOPOLL ring by reading the first
/// block of the first file opened there, and caches the answer. When that file is empty (a
/// segment just created), the read succeeds without reaching the device, glommio wrongly
/// concludes that polling works, and every later read fails with EOPNOTSUPP on devices without
/// poll queues. Opening a one-page file with data first gives the probe a real read.
pub(crate) async fn prime_device_probe(dir: &Path) -> Result<()> {
    // A segment with data is the best probe: it needs no new space (a restart after a full
    // disk must not fail here).
    let existing = std::fs::read_dir(dir)
        .map_err(|e| StorageError::io(dir, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".log"))
        })
        .find(|entry| entry.metadata().is_ok_and(|m| m.len() >= 4096))
        .map(|entry| entry.path());
    let (path, temporary) = match existing {
        Some(path) => (path, false),
        None => {
            let path = dir.join(".sluice-io-probe");
            if let Err(error) = std::fs::write(&path, [0u8; 4096]) {
                // Without space for the probe, go on: the next files opened decide instead.
                tracing::warn!(dir = %dir.display(), %error, "could not write the io_uring probe file");
                let _ = std::fs::remove_file(&path);
                return Ok(());
            }
            (path, true)
        }
    };
    let opened = OpenOptions::new().read(true).dma_open(&path).await;
    if temporary {
        remove_file(&path)?;
    }
    let file = opened.map_err(|e| StorageError::io(&path, e.into()))?;
    file.close()
        .await
        .map_err(|e| StorageError::io(&path, e.into()))
}

/// Checks, synchronously, that files in `dir` can be opened with O_DIRECT (tmpfs cannot), so a
/// program can refuse to start on the wrong filesystem instead of failing at the first log.
pub fn check_direct_io(dir: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Recent kernels accept O_DIRECT on tmpfs but do no direct I/O there (and glommio drops the
    // flag on tmpfs): refuse memory filesystems by type first.
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| StorageError::Config(format!("path {} contains a NUL byte", dir.display())))?;
    // SAFETY: `statfs` writes into the zeroed struct we own and reads the NUL-terminated path.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid for the duration of the call.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } != 0 {
        return Err(StorageError::io(dir, std::io::Error::last_os_error()));
    }
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let filesystem = stats.f_type as i64;
    if filesystem == libc::TMPFS_MAGIC || filesystem == RAMFS_MAGIC {
        return Err(StorageError::DirectIoUnavailable {
            path: dir.to_path_buf(),
        });
    }
    let path = dir.join(".sluice-direct-io-check");
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let _ = std::fs::remove_file(&path);
    match opened {
        Ok(_) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            Err(StorageError::DirectIoUnavailable {
                path: dir.to_path_buf(),
            })
        }
        Err(error) => Err(StorageError::io(&path, error)),
    }
}

/// Deletes a file; a file that is already gone is not an error.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Makes file creations, renames and deletions in `dir` durable.
pub(crate) async fn sync_dir(dir: &Path) -> Result<()> {
    let directory = Directory::open(dir)
        .await
        .map_err(|e| StorageError::io(dir, e.into()))?;
    directory
        .sync()
        .await
        .map_err(|e| StorageError::io(dir, e.into()))?;
    directory
        .close()
        .await
        .map_err(|e| StorageError::io(dir, e.into()))
}
