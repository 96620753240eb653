//! Durable small files: the one place the controller writes its Raft state to disk.
//!
//! Every file the controller keeps — the vote, the log segments, the purge point and the
//! snapshot — is written whole through [`write_checked`], which frames the content with a
//! CRC32C and hands it to [`atomic_write_blocking`]: `<name>.tmp` in the same directory,
//! `write_all`, `fsync`, `rename` over the target, `fsync` of the directory. After a crash the
//! target holds the old bytes or the new ones, never a mix, and a damaged file is an error
//! naming the file ([`read_checked`]), not a wrong vote.
//!
//! [`atomic_write_blocking`] has the contract and the signature of
//! `storage::metadata::atomic_write_blocking`, which was not in this crate's base when it was
//! written: at merge its body becomes a call to that one (the controller then depends on the
//! storage crate). Called by [`super::log_store`] and [`super::state_machine`], on the
//! controller thread: the calls block that thread (a small file and two fsyncs:
//! milliseconds), never a shard.
//!
//! ```text
//!   file = magic "SLCF" (4) | payload length u32 LE (4) | crc32c(payload) u32 LE (4) | payload
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::ControllerError;

const MAGIC: &[u8; 4] = b"SLCF";
const HEADER_BYTES: usize = 12;

/// The suffix of an atomic write's temporary file (`<name>.tmp`); one left behind by a crash
/// is garbage: its target still holds the old content.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Replace `path` with `bytes`, atomically and durably (see the module doc).
pub fn atomic_write_blocking(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut temp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    temp_name.push(TEMP_SUFFIX);
    let temp = path.with_file_name(temp_name);
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, path)?;
    File::open(&directory)?.sync_all()
}

/// Write `payload` to `path` with its checksum header, through [`atomic_write_blocking`].
pub fn write_checked(path: &Path, payload: &[u8]) -> Result<(), ControllerError> {
    let length = u32::try_from(payload.len()).map_err(|_| ControllerError::Storage {
        path: path.display().to_string(),
        message: format!("{} bytes is too large for one file", payload.len()),
    })?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    atomic_write_blocking(path, &bytes).map_err(|error| ControllerError::storage(path, &error))
}

/// Read a file written by [`write_checked`]; `None` when it does not exist.
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
        write_checked(&path, b"first").expect("write");
        write_checked(&path, b"second").expect("replace");
        assert_eq!(read_checked(&path), Ok(Some(b"second".to_vec())));
        assert!(!dir.join("vote.tmp").exists(), "temp file renamed away");
        remove_durably(&path).expect("remove");
        assert_eq!(read_checked(&path), Ok(None));
    }

    #[test]
    fn damaged_files_are_errors_not_data() {
        let dir = test_dir("damaged");
        let path = dir.join("snapshot");
        write_checked(&path, b"metadata image").expect("write");
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
