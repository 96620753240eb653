//! Producer id allocation, a service of shard 0 of every broker. Ids are handed out from
//! blocks reserved durably in `<data>/producer_ids.meta`, so no id is ever given twice, even
//! across crashes, at the cost of one fsync per block instead of one per id. The file is
//! written with [`storage::metadata::atomic_write`], off the shard's event loop.
//!
//! Ids are unique across the cluster without asking the controller: an id is the broker id in
//! its high 32 bits and this broker's counter in the low 32 (4 billion producers per broker),
//! so a producer that fails over to another broker's partitions is never mistaken for another
//! producer there. A broker id reused on a fresh data directory starts its counter again: give
//! a replaced machine a new broker id.
//!
//! ```text
//!  producer_ids.meta: "SLP1" | next_block_start: u64 | crc32c: u32
//! ```

use std::path::{Path, PathBuf};

/// Ids reserved per fsync.
const BLOCK_SIZE: i64 = 1000;
const MAGIC: &[u8; 4] = b"SLP1";

/// Why the allocator's file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdsError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not one we wrote.
    #[error("{path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Ids one broker can hand out: the low 32 bits of an id.
const LOCAL_IDS: i64 = 1 << 32;

/// Hands out producer ids.
#[derive(Debug)]
pub struct ProducerIds {
    /// The broker id, shifted into the high bits of every id.
    prefix: i64,
    /// Next local counter value.
    next: i64,
    block_end: i64,
}

impl ProducerIds {
    /// Path of the allocator's file.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("producer_ids.meta")
    }

    /// Loads broker `broker_id`'s allocator (at start-up); the first id handed out is past
    /// every id reserved before.
    pub fn load(data_dir: &Path, broker_id: u32) -> Result<ProducerIds, ProducerIdsError> {
        let path = Self::path(data_dir);
        let start = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| ProducerIdsError::Damaged {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(ProducerIdsError::Io { path, source }),
        };
        Ok(ProducerIds {
            // Broker ids below 2^31 keep every id positive, as the wire needs (-1 is "none").
            prefix: i64::from(broker_id & 0x7fff_ffff) << 32,
            next: start,
            block_end: start,
        })
    }

    /// The end of the block to reserve before the next id can be handed out, if the current
    /// one is used up.
    pub fn block_needed(&self) -> Option<i64> {
        (self.next >= self.block_end).then_some(self.next + BLOCK_SIZE)
    }

    /// Records that ids up to `block_end` are reserved durably.
    pub fn reserved(&mut self, block_end: i64) {
        self.block_end = self.block_end.max(block_end);
    }

    /// The next id of the reserved block; `None` when a block must be reserved first, or
    /// when this broker has handed out all its [`LOCAL_IDS`].
    pub fn take(&mut self) -> Option<i64> {
        if self.next >= self.block_end || self.next >= LOCAL_IDS {
            return None;
        }
        let id = self.prefix | self.next;
        self.next += 1;
        Some(id)
    }

    /// Reserves ids below `block_end` durably (off the event loop).
    pub async fn save_block_end(data_dir: &Path, block_end: i64) -> Result<(), ProducerIdsError> {
        let path = Self::path(data_dir);
        storage::metadata::atomic_write(&path, encode(block_end))
            .await
            .map_err(|source| ProducerIdsError::Io { path, source })
    }
}

fn encode(next_block_start: i64) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&next_block_start.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<i64, &'static str> {
    if bytes.len() != 16 || &bytes[..4] != MAGIC {
        return Err("bad size or magic");
    }
    if crc32c::crc32c(&bytes[..12]).to_le_bytes() != bytes[12..16] {
        return Err("checksum mismatch");
    }
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[4..12]);
    Ok(i64::from_le_bytes(value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn allocate(ids: &mut ProducerIds, dir: &Path) -> i64 {
        if let Some(block_end) = ids.block_needed() {
            storage::metadata::atomic_write_blocking(&ProducerIds::path(dir), &encode(block_end))
                .unwrap();
            ids.reserved(block_end);
        }
        ids.take().unwrap()
    }

    /// Ids are unique across reloads (a crash skips the rest of a block, never reuses it).
    #[test]
    fn ids_are_never_reused() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let mut ids = ProducerIds::load(dir.path(), 0).unwrap();
        assert_eq!(ids.take(), None, "nothing is reserved yet");
        let first: Vec<i64> = (0..3).map(|_| allocate(&mut ids, dir.path())).collect();
        assert_eq!(first, vec![0, 1, 2]);
        let mut reloaded = ProducerIds::load(dir.path(), 0).unwrap();
        assert_eq!(allocate(&mut reloaded, dir.path()), BLOCK_SIZE);
        std::fs::write(ProducerIds::path(dir.path()), b"garbage").unwrap();
        assert!(ProducerIds::load(dir.path(), 0).is_err());
    }

    /// Two brokers hand out disjoint, positive ids from the same counter values.
    #[test]
    fn ids_of_two_brokers_never_collide() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
        std::fs::create_dir_all(&base).unwrap();
        let (one, two) = (
            tempfile::tempdir_in(&base).unwrap(),
            tempfile::tempdir_in(&base).unwrap(),
        );
        let mut first = ProducerIds::load(one.path(), 1).unwrap();
        let mut second = ProducerIds::load(two.path(), u32::MAX).unwrap();
        let a: Vec<i64> = (0..5).map(|_| allocate(&mut first, one.path())).collect();
        let b: Vec<i64> = (0..5).map(|_| allocate(&mut second, two.path())).collect();
        assert!(a.iter().chain(&b).all(|id| *id > 0));
        assert!(a.iter().all(|id| !b.contains(id)), "{a:?} vs {b:?}");
        assert_eq!(a[0], 1 << 32);
    }
}
