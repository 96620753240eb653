//! Producer id allocation, on shard 0 (the controller of this node). Ids are handed out from
//! blocks reserved durably in `<data>/producer_ids.meta`, so no id is ever given twice, even
//! across crashes, at the cost of one fsync per block instead of one per id.
//!
//! ```text
//!  producer_ids.meta: "SLP1" | next_block_start: u64 | crc32c: u32
//! ```

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

/// Ids reserved per fsync.
const BLOCK_SIZE: i64 = 1000;
const MAGIC: &[u8; 4] = b"SLP1";

/// Hands out producer ids.
#[derive(Debug)]
pub struct ProducerIds {
    next: i64,
    block_end: i64,
}

impl ProducerIds {
    /// Loads the allocator; the first id handed out is past every id reserved before.
    pub fn load(data_dir: &Path) -> anyhow::Result<ProducerIds> {
        let path = data_dir.join("producer_ids.meta");
        let start = match std::fs::read(&path) {
            Ok(bytes) => {
                decode(&bytes).with_context(|| format!("{} is damaged", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(ProducerIds {
            next: start,
            block_end: start,
        })
    }

    /// The next id, reserving a new block durably when the current one is used up.
    pub fn allocate(&mut self, data_dir: &Path) -> anyhow::Result<i64> {
        if self.next >= self.block_end {
            let block_end = self.next + BLOCK_SIZE;
            save(data_dir, block_end)?;
            self.block_end = block_end;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

fn decode(bytes: &[u8]) -> anyhow::Result<i64> {
    if bytes.len() != 16 || &bytes[..4] != MAGIC {
        bail!("bad size or magic");
    }
    if crc32c::crc32c(&bytes[..12]).to_le_bytes() != bytes[12..16] {
        bail!("checksum mismatch");
    }
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[4..12]);
    Ok(i64::from_le_bytes(value))
}

fn save(data_dir: &Path, next_block_start: i64) -> anyhow::Result<()> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&next_block_start.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = data_dir.join("producer_ids.meta.tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, data_dir.join("producer_ids.meta"))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Ids are unique across reloads (a crash skips the rest of a block, never reuses it).
    #[test]
    fn ids_are_never_reused() {
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let mut ids = ProducerIds::load(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.allocate(dir.path()).unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        let mut reloaded = ProducerIds::load(dir.path()).unwrap();
        assert_eq!(reloaded.allocate(dir.path()).unwrap(), BLOCK_SIZE);
        std::fs::write(dir.path().join("producer_ids.meta"), b"garbage").unwrap();
        assert!(ProducerIds::load(dir.path()).is_err());
    }
}
