//! Durable small files: the one place the controller writes its Raft state to disk.
//!
//! Every file the controller keeps — the vote, the log segments, the purge point and the
//! snapshot — is written whole through [`atomic_write_blocking`]: temp file in the same
//! directory, `write_all`, `fsync`, `rename` over the target, `fsync` of the directory. After a
//! crash the target holds the old bytes or the new ones, never a mix. The content is framed
//! with a CRC32C so a damaged file is an error naming the file, not a wrong vote.
//!
//! This is the same contract as `storage::metadata::atomic_write_blocking`, which was not in
//! this crate's base when it was written; the two are to be unified (see README status).
//! Called by [`super::log_store`] and [`super::state_machine`], on the controller thread:
//! the calls block that thread (a small file and two fsyncs: milliseconds), never a shard.
//!
//! ```text
//!   file = magic "SLCF" (4) | payload length u32 LE (4) | crc32c(payload) u32 LE (4) | payload
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use crate::error::ControllerError;

const MAGIC: &[u8; 4] = b"SLCF";
const HEADER_BYTES: usize = 12;

/// Write `payload` to `path` atomically and durably (see the module doc).
pub fn atomic_write_blocking(path: &Path, payload: &[u8]) -> Result<(), ControllerError> {
    let storage_error = |error: io::Error| ControllerError::storage(path, &error);
    let dir = path.parent().ok_or_else(|| ControllerError::Storage {
        path: path.display().to_string(),
        message: "no parent directory".into(),
    })?;
    let file_name = path
        .file_name()
        .ok_or_else(|| ControllerError::Storage {
            path: path.display().to_string(),
            message: "no file name".into(),
        })?
        .to_string_lossy();
    let temp = dir.join(format!(".{file_name}.tmp"));
    let length = u32::try_from(payload.len()).map_err(|_| ControllerError::Storage {
        path: path.display().to_string(),
        message: format!("{} bytes is too large for one file", payload.len()),
    })?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(storage_error)?;
        file.write_all(&bytes).map_err(storage_error)?;
        file.sync_all().map_err(storage_error)?;
    }
    fs::rename(&temp, path).map_err(storage_error)?;
    sync_dir(dir)
}

/// Read a file written by [`atomic_write_blocking`]; `None` when it does not exist.
pub fn read_checked(path: &Path) -> Result<Option<Vec<u8>>, ControllerError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(ControllerError::storage(path, &error)),
    };
    let corrupt = |what: &str| ControllerError::Storage {
        path: path.display().to_string(),
        message: format!("corrupt file: {what}"),
    };
    if bytes.len() < HEADER_BYTES || &bytes[..4] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let word =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let length = word(4) as usize;
    let crc = word(8);
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() != length {
        return Err(corrupt("length mismatch"));
    }
    if crc32c::crc32c(payload) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(Some(payload.to_vec()))
}

/// Remove `path` (absent is fine) and make the removal durable.
pub fn remove_durably(path: &Path) -> Result<(), ControllerError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(ControllerError::storage(path, &error)),
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Create `dir` and its parents, durably.
pub fn create_dir_durably(dir: &Path) -> Result<(), ControllerError> {
    fs::create_dir_all(dir).map_err(|error| ControllerError::storage(dir, &error))?;
    sync_dir(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), ControllerError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| ControllerError::storage(dir, &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_dir(name: &str) -> std::path::PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/test-data/controller-files")
            .join(name);
        let _ = fs::remove_dir_all(&dir);
        create_dir_durably(&dir).expect("test dir");
        dir
    }

    #[test]
    fn write_read_replace_remove() {
        let dir = test_dir("roundtrip");
        let path = dir.join("vote");
        assert_eq!(read_checked(&path), Ok(None));
        atomic_write_blocking(&path, b"first").expect("write");
        atomic_write_blocking(&path, b"second").expect("replace");
        assert_eq!(read_checked(&path), Ok(Some(b"second".to_vec())));
        assert!(!dir.join(".vote.tmp").exists(), "temp file renamed away");
        remove_durably(&path).expect("remove");
        assert_eq!(read_checked(&path), Ok(None));
    }

    #[test]
    fn damaged_files_are_errors_not_data() {
        let dir = test_dir("damaged");
        let path = dir.join("snapshot");
        atomic_write_blocking(&path, b"metadata image").expect("write");
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        fs::write(&path, &bytes).expect("damage");
        assert!(matches!(
            read_checked(&path),
            Err(ControllerError::Storage { .. })
        ));
        fs::write(&path, &bytes[..6]).expect("truncate");
        assert!(matches!(
            read_checked(&path),
            Err(ControllerError::Storage { .. })
        ));
    }
}
