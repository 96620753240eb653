//! Which partition a record goes to.
//!
//! * **Keyed records**: `murmur2(key) & 0x7fff_ffff % partitions`, bit for bit Kafka's default
//!   partitioner, so the same key always lands in the same partition (and in the same
//!   partition a Kafka client would pick for it, which eases migrations). The hash is
//!   implemented here; it is stable across releases, platforms and processes.
//! * **Keyless records**: *sticky* partitioning: every keyless record of a topic goes to the
//!   topic's current sticky partition until a batch for that partition is cut, then the sticky
//!   partition moves to the next one (round robin from a random start). Records are thus
//!   spread evenly over time while each batch stays as large as possible.
//! * **Explicit partition**: used as given (checked against the partition count).
//!
//! Owned by the producer's sender task; pure and synchronous.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// Kafka's murmur2 hash (the 32-bit MurmurHash2 variant with seed `0x9747b28c`), as in
/// `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's `seed ^ length` on an int: the length wraps like the original.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if let Some(&first) = tail.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a keyed record: `toPositive(murmur2(key)) % partitions`, as Kafka.
/// `partitions` must be at least 1.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Sticky partition choice for keyless records, per topic.
#[derive(Debug)]
pub(crate) struct Partitioner {
    /// Each topic's current sticky partition.
    sticky: Vec<(Arc<str>, u32)>,
    /// Where each topic is in `sticky`.
    index: HashMap<Arc<str>, usize>,
    /// The entry `keyless` used last: a run of records to one topic finds it by pointer
    /// comparison, without hashing the topic name per record.
    last: Option<usize>,
    /// Seeds each topic's first sticky partition, so that many producers started together do
    /// not all begin on partition 0.
    seed: RandomState,
}

impl Default for Partitioner {
    fn default() -> Self {
        Partitioner {
            sticky: Vec::new(),
            index: HashMap::new(),
            last: None,
            seed: RandomState::new(),
        }
    }
}

impl Partitioner {
    /// The partition for a keyless record of `topic` with `partitions` partitions.
    pub fn keyless(&mut self, topic: &Arc<str>, partitions: u32) -> u32 {
        let partitions = partitions.max(1);
        let entry = match self.last {
            Some(entry) if Arc::ptr_eq(&self.sticky[entry].0, topic) => entry,
            _ => {
                let next = self.sticky.len();
                let entry = *self.index.entry(topic.clone()).or_insert(next);
                if entry == next {
                    let first = (self.seed.hash_one(&**topic) % u64::from(partitions)) as u32;
                    self.sticky.push((topic.clone(), first));
                } else {
                    // Same name, maybe another allocation (a newer metadata snapshot): keep
                    // the caller's, so the next records take the pointer comparison.
                    self.sticky[entry].0 = topic.clone();
                }
                self.last = Some(entry);
                entry
            }
        };
        let current = &mut self.sticky[entry].1;
        if *current >= partitions {
            // The topic shrank in the metadata (or was recreated); start over.
            *current %= partitions;
        }
        *current
    }

    /// A batch of `topic`/`partition` was cut: if keyless records of the topic were sticking
    /// to that partition, they move on to the next one.
    pub fn batch_cut(&mut self, topic: &str, partition: u32, partitions: u32) {
        if let Some(&entry) = self.index.get(topic) {
            let current = &mut self.sticky[entry].1;
            if *current == partition {
                *current = (partition + 1) % partitions.max(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors (`UtilsTest.testMurmur2`), as signed Java ints.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key) as i32, expected, "{key:?}");
        }
    }

    /// The same key always maps to the same partition, and keys spread over all partitions.
    #[test]
    fn same_key_same_partition_and_spread() {
        let partitions = 12;
        let mut counts = vec![0u32; partitions as usize];
        for i in 0..12_000u32 {
            let key = format!("user-{i}");
            let p = partition_for_key(key.as_bytes(), partitions);
            assert_eq!(p, partition_for_key(key.as_bytes(), partitions));
            assert!(p < partitions);
            counts[p as usize] += 1;
        }
        // 1000 expected per partition; murmur2 keeps every one well within 20 %.
        for count in counts {
            assert!((800..=1200).contains(&count), "{count}");
        }
        assert_eq!(partition_for_key(b"", 1), 0);
    }

    /// Keyless records stick to one partition until its batch is cut, then move round robin
    /// through every partition.
    #[test]
    fn keyless_is_sticky_then_round_robin() {
        let mut partitioner = Partitioner::default();
        let topic: Arc<str> = Arc::from("t");
        let partitions = 5;
        let first = partitioner.keyless(&topic, partitions);
        assert_eq!(partitioner.keyless(&topic, partitions), first);
        // A cut of another partition does not move the sticky one.
        partitioner.batch_cut("t", (first + 1) % partitions, partitions);
        assert_eq!(partitioner.keyless(&topic, partitions), first);
        let mut seen = vec![false; partitions as usize];
        for _ in 0..partitions {
            let p = partitioner.keyless(&topic, partitions);
            seen[p as usize] = true;
            partitioner.batch_cut("t", p, partitions);
        }
        assert!(seen.iter().all(|s| *s));
        // Shrinking keeps the choice in range.
        assert!(partitioner.keyless(&topic, 1) == 0);
    }
}
