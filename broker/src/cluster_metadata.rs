//! The broker's reading of the controller's [`MetadataImage`]: topic settings as the broker
//! uses them ([`TopicConfig`], carried in the image as Kafka-style `key=value` strings), the
//! topic registry every shard routes with, and what this broker holds of each partition
//! ([`ReplicaAssignment`]: replicas, ISR, leader, epochs). Pure functions, no I/O; shards call
//! them on every new image.

use std::collections::BTreeMap;

use controller::metadata::{PartitionState, TopicMetadata};
use controller::{BrokerId, MetadataImage};
use wire::protocol::TopicConfig;
use wire::Durability;

use crate::topics::TopicRegistry;

/// Image config key: retention time in ms (-1 forever).
pub const RETENTION_MS: &str = "retention.ms";
/// Image config key: retention size per partition in bytes (-1 none).
pub const RETENTION_BYTES: &str = "retention.bytes";
/// Image config key: segment size.
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// Image config key: largest batch.
pub const MAX_BATCH_BYTES: &str = "max.batch.bytes";
/// Image config key: the fsync policy's name (`always`, `interval`, `never`).
pub const DURABILITY: &str = "durability";
/// Image config key: the period of the `interval` policy, in ms.
pub const DURABILITY_INTERVAL_MS: &str = "durability.interval.ms";
/// Image config key: the byte threshold of the `interval` policy.
pub const DURABILITY_INTERVAL_BYTES: &str = "durability.interval.bytes";

/// The image's config strings of a topic's settings (the partition count and replication
/// factor are the image's own fields).
pub fn config_strings(config: &TopicConfig) -> BTreeMap<String, String> {
    let mut strings = BTreeMap::from([
        (RETENTION_MS.to_owned(), config.retention_ms.to_string()),
        (
            RETENTION_BYTES.to_owned(),
            config.retention_bytes.to_string(),
        ),
        (SEGMENT_BYTES.to_owned(), config.segment_bytes.to_string()),
        (
            MAX_BATCH_BYTES.to_owned(),
            config.max_batch_bytes.to_string(),
        ),
        (DURABILITY.to_owned(), config.durability.name().to_owned()),
    ]);
    if let Durability::Interval { interval_ms, bytes } = config.durability {
        strings.insert(DURABILITY_INTERVAL_MS.to_owned(), interval_ms.to_string());
        strings.insert(DURABILITY_INTERVAL_BYTES.to_owned(), bytes.to_string());
    }
    strings
}

/// A topic's settings from the image. A missing or unreadable key (written by a newer
/// broker, or by hand) takes `fallback`'s value rather than failing: the topic stays usable.
pub fn topic_config(topic: &TopicMetadata, fallback: &TopicConfig) -> TopicConfig {
    fn read<T: std::str::FromStr>(map: &BTreeMap<String, String>, key: &str, or: T) -> T {
        map.get(key).and_then(|v| v.parse().ok()).unwrap_or(or)
    }
    let map = &topic.config;
    TopicConfig {
        partitions: topic.partitions.len() as u32,
        replication_factor: topic.replication_factor,
        retention_ms: read(map, RETENTION_MS, fallback.retention_ms),
        retention_bytes: read(map, RETENTION_BYTES, fallback.retention_bytes),
        segment_bytes: read(map, SEGMENT_BYTES, fallback.segment_bytes),
        max_batch_bytes: read(map, MAX_BATCH_BYTES, fallback.max_batch_bytes),
        durability: match map.get(DURABILITY).map(String::as_str) {
            Some("always") => Durability::Always,
            Some("never") => Durability::Never,
            Some("interval") => {
                let default = Durability::interval(Durability::INTERVAL_MS_DEFAULT);
                let (default_ms, default_bytes) = match default {
                    Durability::Interval { interval_ms, bytes } => (interval_ms, bytes),
                    _ => (Durability::INTERVAL_MS_DEFAULT, 0),
                };
                Durability::Interval {
                    interval_ms: read(map, DURABILITY_INTERVAL_MS, default_ms),
                    bytes: read(map, DURABILITY_INTERVAL_BYTES, default_bytes),
                }
            }
            _ => fallback.durability,
        },
    }
}

/// The topic registry of an image: every topic with its settings.
pub fn registry_of(image: &MetadataImage, fallback: &TopicConfig) -> TopicRegistry {
    TopicRegistry {
        topics: image
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic_config(topic, fallback)))
            .collect(),
    }
}

/// What the cluster decided for one partition, as its replicas act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAssignment {
    /// Every replica, preferred leader first.
    pub replicas: Vec<u32>,
    /// The in-sync replicas.
    pub isr: Vec<u32>,
    /// The leader, if any.
    pub leader: Option<u32>,
    /// Bumped at every leader change.
    pub leader_epoch: u32,
    /// Bumped at every ISR or replica change (KIP-497's version of the ISR).
    pub partition_epoch: u32,
    /// `min.insync.replicas` of the topic.
    pub min_insync_replicas: u16,
}

impl ReplicaAssignment {
    /// The assignment of a partition in the image.
    pub fn of(topic: &TopicMetadata, state: &PartitionState) -> ReplicaAssignment {
        let ids = |list: &[BrokerId]| list.iter().map(|id| id.0).collect::<Vec<u32>>();
        ReplicaAssignment {
            replicas: ids(&state.replicas),
            isr: ids(&state.isr),
            leader: state.leader.map(|id| id.0),
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            min_insync_replicas: topic.min_insync,
        }
    }

    /// The single-node assignment: `broker` alone leads, epoch 0. What a partition starts
    /// with before the first image reaches its shard.
    pub fn sole(broker: u32) -> ReplicaAssignment {
        ReplicaAssignment {
            replicas: vec![broker],
            isr: vec![broker],
            leader: Some(broker),
            leader_epoch: 0,
            partition_epoch: 0,
            min_insync_replicas: 1,
        }
    }
}

/// The assignment of `partition` of `topic`, if the image has it.
pub fn assignment(image: &MetadataImage, topic: &str, partition: u32) -> Option<ReplicaAssignment> {
    let metadata = image.topics.get(topic)?;
    let state = metadata.partitions.get(partition as usize)?;
    Some(ReplicaAssignment::of(metadata, state))
}

/// True when `broker` holds a replica of `partition` of `topic` in the image.
pub fn holds_replica(image: &MetadataImage, broker: u32, topic: &str, partition: u32) -> bool {
    image
        .partition(topic, partition)
        .is_some_and(|state| state.replicas.contains(&BrokerId(broker)))
}

/// A registered `host:port` endpoint split into host and port.
pub fn split_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// How many shards `broker` registered endpoints for (at least 1).
pub fn broker_shard_count(image: &MetadataImage, broker: u32) -> usize {
    broker_endpoints(image, broker).map_or(1, |endpoints| endpoints.len().saturating_sub(1).max(1))
}

/// The client endpoints a broker registered: the main listener first, then one per shard.
/// `None` for an unknown broker.
pub fn broker_endpoints(image: &MetadataImage, broker: u32) -> Option<&[String]> {
    image
        .brokers
        .get(&BrokerId(broker))
        .map(|registration| registration.endpoints.as_slice())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn any_config() -> impl Strategy<Value = TopicConfig> {
        (
            1u32..100,
            1u16..5,
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
            any::<u32>(),
            prop_oneof![
                Just(Durability::Never),
                Just(Durability::Always),
                (1u32..100_000, any::<u64>())
                    .prop_map(|(interval_ms, bytes)| Durability::Interval { interval_ms, bytes })
            ],
        )
            .prop_map(
                |(
                    partitions,
                    replication_factor,
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                    max_batch_bytes,
                    durability,
                )| TopicConfig {
                    partitions,
                    replication_factor,
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                    max_batch_bytes,
                    durability,
                },
            )
    }

    proptest! {
        /// Every setting survives the trip through the image's strings.
        #[test]
        fn config_round_trips_through_the_image(config in any_config()) {
            let topic = TopicMetadata {
                name: "t".into(),
                replication_factor: config.replication_factor,
                min_insync: 1,
                config: config_strings(&config),
                unclean_leader_election: false,
                partitions: vec![PartitionState {
                    replicas: vec![BrokerId(1)],
                    isr: vec![BrokerId(1)],
                    leader: Some(BrokerId(1)),
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding: vec![],
                    removing: vec![],
                }; config.partitions as usize],
            };
            let fallback = TopicConfig { partitions: 0, replication_factor: 0, retention_ms: 0, retention_bytes: 0, segment_bytes: 0, max_batch_bytes: 0, durability: Durability::Never };
            prop_assert_eq!(topic_config(&topic, &fallback), config);
        }
    }
}
