//! Which shard owns a partition: a pure function of the topic name, the partition number and
//! the shard count, so every shard (and nothing else) can compute it without asking anyone.
//! Partitions of one topic land on consecutive shards, spreading a topic over all cores.

/// FNV-1a of the topic name: stable across versions and platforms (it decides where data lives).
pub fn topic_hash(topic: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard that owns `partition` of `topic`.
pub fn shard_for(topic: &str, partition: u32, shards: usize) -> usize {
    let shards = shards.max(1) as u64;
    ((topic_hash(topic) % shards + u64::from(partition)) % shards) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partitions of a topic spread over every shard, and the mapping never changes.
    #[test]
    fn partitions_spread_over_shards() {
        let shards = 4;
        let owners: Vec<usize> = (0..8).map(|p| shard_for("orders", p, shards)).collect();
        for shard in 0..shards {
            assert_eq!(owners.iter().filter(|o| **o == shard).count(), 2);
        }
        assert_eq!(
            topic_hash("orders"),
            0x0012_5d92_50be_8b4c,
            "the hash must never change"
        );
        assert_eq!(shard_for("x", 7, 1), 0);
    }
}
