//! The topic registry: every topic's name and settings, persisted in `<data>/topics.meta` so
//! topics survive restarts. Shard 0 is the only writer (the controller of this single node;
//! the Raft controller replaces it when the cluster lands); every shard holds an immutable
//! snapshot, replaced wholesale on change.
//!
//! ```text
//!  topics.meta: "SLT1" | count:u32 | (name: string, config: TopicConfig)* | crc32c:u32
//! ```
//! Written with [`storage::metadata::atomic_write`] (temporary file, fsync, rename, directory
//! fsync), off the shard's event loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wire::protocol::{Decode, Encode, FrameWriter, Reader, TopicConfig};

const MAGIC: &[u8; 4] = b"SLT1";

/// Why the registry file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
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
        reason: String,
    },
}

/// All topics, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRegistry {
    /// Settings by topic name.
    pub topics: BTreeMap<String, TopicConfig>,
}

impl TopicRegistry {
    /// Path of the registry file.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("topics.meta")
    }

    /// Loads the registry; an absent file is an empty registry.
    pub fn load(data_dir: &Path) -> Result<TopicRegistry, RegistryError> {
        let path = Self::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TopicRegistry::default())
            }
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        Self::decode(&bytes).map_err(|reason| RegistryError::Damaged { path, reason })
    }

    fn decode(bytes: &[u8]) -> Result<TopicRegistry, String> {
        let Some(body_len) = bytes.len().checked_sub(4) else {
            return Err("too short".into());
        };
        let (body, crc) = bytes.split_at(body_len);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("checksum mismatch".into());
        }
        if body.get(..4) != Some(MAGIC.as_slice()) {
            return Err("bad magic".into());
        }
        let mut reader = Reader::new(body, 4);
        let count = reader.count(2).map_err(|e| e.to_string())?;
        let mut topics = BTreeMap::new();
        for _ in 0..count {
            let name = String::decode(&mut reader).map_err(|e| e.to_string())?;
            let config = TopicConfig::decode(&mut reader).map_err(|e| e.to_string())?;
            topics.insert(name, config);
        }
        if reader.remaining() != 0 {
            return Err("trailing bytes".into());
        }
        Ok(TopicRegistry { topics })
    }

    fn encode(&self) -> Vec<u8> {
        // The frame writer reserves 4 bytes at the start (the magic goes there); the registry is
        // not a frame, so it is never finished (no length prefix, no padding).
        let mut body = Vec::new();
        let mut writer = FrameWriter::new(&mut body);
        writer.put_u32(self.topics.len() as u32);
        for (name, config) in &self.topics {
            name.encode(&mut writer);
            config.encode(&mut writer);
        }
        drop(writer);
        body[..4].copy_from_slice(MAGIC);
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    /// Writes the registry atomically and durably, off the event loop (on a shard).
    pub async fn save(&self, data_dir: &Path) -> Result<(), RegistryError> {
        let path = Self::path(data_dir);
        storage::metadata::atomic_write(&path, self.encode())
            .await
            .map_err(|source| RegistryError::Io { path, source })
    }

    /// [`TopicRegistry::save`] on the calling thread (node start-up, before any shard runs).
    pub fn save_blocking(&self, data_dir: &Path) -> Result<(), RegistryError> {
        let path = Self::path(data_dir);
        storage::metadata::atomic_write_blocking(&path, &self.encode())
            .map_err(|source| RegistryError::Io { path, source })
    }

    /// Directory of one partition's log.
    pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
        data_dir
            .join("topics")
            .join(topic)
            .join(partition.to_string())
    }
}

/// True for the broker's internal topics (`__consumer_offsets`): clients may read them but
/// not create, write or delete them, and "every topic" listings leave them out.
pub fn is_internal_topic(name: &str) -> bool {
    name.starts_with("__")
}

/// Checks a topic name: 1 to 200 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err(format!(
            "topic name must be 1 to 200 characters, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be '.' or '..'".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} has invalid character {bad:?}: use [A-Za-z0-9._-]"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The registry file round-trips, and damage is detected rather than misread.
    #[test]
    fn registry_round_trip_and_damage() {
        let mut registry = TopicRegistry::default();
        for (i, name) in ["a", "orders", "x.y_z-1"].iter().enumerate() {
            registry.topics.insert(
                name.to_string(),
                TopicConfig {
                    partitions: i as u32 + 1,
                    replication_factor: 1,
                    retention_ms: -1,
                    retention_bytes: 1000,
                    segment_bytes: 1 << 20,
                    max_batch_bytes: 1 << 16,
                    durability: wire::Durability::Always,
                },
            );
        }
        let bytes = registry.encode();
        assert_eq!(TopicRegistry::decode(&bytes).unwrap(), registry);
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert!(TopicRegistry::decode(&damaged).is_err(), "flip at {at}");
        }
        assert_eq!(
            TopicRegistry::decode(&TopicRegistry::default().encode()).unwrap(),
            TopicRegistry::default()
        );
    }

    /// Names that could escape the data directory or confuse tools are refused.
    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders-2024.v1_x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(201)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
