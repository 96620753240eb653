//! Replica placement for new partitions: pure and deterministic.
//!
//! [`assign`] spreads the replicas of a batch of new partitions (a new topic, or partitions
//! added to one) over the live brokers. Called by the metadata state machine
//! ([`crate::metadata::MetadataImage::apply`]) while applying `CreateTopic` and
//! `AddPartitions`; since every controller replica applies the same log to the same image, the
//! result must depend only on its arguments (no randomness, no clock, no hash-map order).
//!
//! # The rule
//!
//! Partitions are placed one after the other, greedily:
//!
//! 1. The leader (first replica) is the broker with the fewest partitions led *in this batch*,
//!    then the fewest replicas in this batch, then the lightest cluster-wide load, then the
//!    lowest id. So preferred-leader counts differ by at most one across brokers.
//! 2. Each follower is the broker not yet in the partition with, first, a rack not yet used by
//!    the partition (only when racks are set), then the fewest replicas in this batch, then the
//!    lightest cluster-wide load, then the lowest id. Without racks, replica counts differ by
//!    at most one across brokers; with racks, a partition's replicas are on distinct racks
//!    whenever there are at least as many racks as replicas (balance then yields to racks:
//!    with racks of unequal size the brokers of a small rack carry more).
//!
//! The cluster-wide load (what each broker hosts already) only breaks ties, so consecutive
//! topics start on different brokers while each batch stays balanced on its own.

use crate::error::ControllerError;
use crate::metadata::BrokerId;

/// A live broker as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    /// The broker.
    pub id: BrokerId,
    /// Its rack; brokers without one share the "no rack" rack when others have one.
    pub rack: Option<String>,
    /// Replicas it hosts already, over all topics.
    pub replicas_hosted: u64,
    /// Partitions whose preferred leader it is already.
    pub partitions_led: u64,
}

/// Place `partitions` new partitions with `replication_factor` replicas each over `brokers`
/// (the live ones). Returns, per partition, its replicas with the preferred leader first.
///
/// Fails with [`ControllerError::NotEnoughBrokers`] when there are fewer brokers than
/// replicas per partition.
pub fn assign(
    brokers: &[PlacementBroker],
    partitions: u32,
    replication_factor: u16,
) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
    let replication_factor_usize = usize::from(replication_factor);
    if replication_factor == 0 || brokers.len() < replication_factor_usize {
        return Err(ControllerError::NotEnoughBrokers {
            replication_factor,
            live: brokers.len(),
        });
    }
    let mut sorted: Vec<&PlacementBroker> = brokers.iter().collect();
    sorted.sort_by_key(|b| b.id);
    sorted.dedup_by_key(|b| b.id);
    let racks_set = sorted.iter().any(|b| b.rack.is_some());
    // Per broker (same order as `sorted`): (led in batch, replicas in batch).
    let mut led_in_batch = vec![0u64; sorted.len()];
    let mut hosted_in_batch = vec![0u64; sorted.len()];
    let mut placed = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let mut members: Vec<usize> = Vec::with_capacity(replication_factor_usize);
        let leader = (0..sorted.len())
            .min_by_key(|&i| {
                (
                    led_in_batch[i],
                    hosted_in_batch[i],
                    sorted[i].partitions_led + sorted[i].replicas_hosted,
                    sorted[i].id,
                )
            })
            .ok_or(ControllerError::NotEnoughBrokers {
                replication_factor,
                live: 0,
            })?;
        members.push(leader);
        while members.len() < replication_factor_usize {
            let follower = (0..sorted.len())
                .filter(|i| !members.contains(i))
                .min_by_key(|&i| {
                    let rack_used =
                        racks_set && members.iter().any(|&m| sorted[m].rack == sorted[i].rack);
                    (
                        rack_used,
                        hosted_in_batch[i],
                        sorted[i].replicas_hosted,
                        sorted[i].id,
                    )
                })
                .ok_or(ControllerError::NotEnoughBrokers {
                    replication_factor,
                    live: sorted.len(),
                })?;
            members.push(follower);
        }
        led_in_batch[leader] += 1;
        for &m in &members {
            hosted_in_batch[m] += 1;
        }
        placed.push(members.iter().map(|&m| sorted[m].id).collect());
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    fn brokers(count: u32, racks: Option<u32>) -> Vec<PlacementBroker> {
        (0..count)
            .map(|i| PlacementBroker {
                id: BrokerId(i * 7 % 101 + 1),
                rack: racks.map(|r| format!("rack-{}", i % r)),
                replicas_hosted: 0,
                partitions_led: 0,
            })
            .collect()
    }

    fn spread(counts: &BTreeMap<BrokerId, u64>, all: &[PlacementBroker]) -> u64 {
        let values: Vec<u64> = all
            .iter()
            .map(|b| counts.get(&b.id).copied().unwrap_or(0))
            .collect();
        values.iter().max().copied().unwrap_or(0) - values.iter().min().copied().unwrap_or(0)
    }

    proptest! {
        /// Without racks: distinct replicas per partition, replica and leader counts within one
        /// of each other, and the same answer every time.
        #[test]
        fn balanced_and_deterministic(
            broker_count in 1u32..12,
            partitions in 0u32..200,
            rf in 1u16..=5,
            preload in proptest::collection::vec(0u64..50, 12),
        ) {
            let mut all = brokers(broker_count, None);
            for (b, load) in all.iter_mut().zip(&preload) {
                b.replicas_hosted = *load;
                b.partitions_led = *load / 2;
            }
            let result = assign(&all, partitions, rf);
            if usize::from(rf) > all.len() {
                let is_not_enough = matches!(result, Err(ControllerError::NotEnoughBrokers { .. }));
                prop_assert!(is_not_enough);
                return Ok(());
            }
            let placed = result.expect("enough brokers");
            prop_assert_eq!(placed.len(), partitions as usize);
            let mut hosted = BTreeMap::new();
            let mut led = BTreeMap::new();
            for replicas in &placed {
                prop_assert_eq!(replicas.len(), usize::from(rf));
                let distinct: BTreeSet<_> = replicas.iter().collect();
                prop_assert_eq!(distinct.len(), replicas.len());
                *led.entry(replicas[0]).or_insert(0u64) += 1;
                for id in replicas {
                    *hosted.entry(*id).or_insert(0u64) += 1;
                }
            }
            prop_assert!(spread(&hosted, &all) <= 1, "replica counts {:?}", hosted);
            prop_assert!(spread(&led, &all) <= 1, "leader counts {:?}", led);
            let mut reversed = all.clone();
            reversed.reverse();
            prop_assert_eq!(assign(&reversed, partitions, rf).ok(), Some(placed));
        }

        /// With racks: a partition's replicas are on distinct racks whenever there are enough
        /// racks, and leaders stay balanced.
        #[test]
        fn rack_aware(
            broker_count in 1u32..12,
            rack_count in 1u32..5,
            partitions in 1u32..100,
            rf in 1u16..=4,
        ) {
            let all = brokers(broker_count, Some(rack_count));
            let Ok(placed) = assign(&all, partitions, rf) else {
                prop_assert!(usize::from(rf) > all.len());
                return Ok(());
            };
            let rack_of: BTreeMap<BrokerId, Option<String>> =
                all.iter().map(|b| (b.id, b.rack.clone())).collect();
            let racks: BTreeSet<_> = rack_of.values().collect();
            let mut led = BTreeMap::new();
            for replicas in &placed {
                *led.entry(replicas[0]).or_insert(0u64) += 1;
                let used: BTreeSet<_> = replicas.iter().map(|id| &rack_of[id]).collect();
                prop_assert_eq!(used.len(), replicas.len().min(racks.len()), "{:?}", replicas);
            }
            prop_assert!(spread(&led, &all) <= 1, "leader counts {:?}", led);
        }
    }

    #[test]
    fn too_few_brokers_is_an_error() {
        assert_eq!(
            assign(&brokers(2, None), 3, 3),
            Err(ControllerError::NotEnoughBrokers {
                replication_factor: 3,
                live: 2
            })
        );
    }
}
