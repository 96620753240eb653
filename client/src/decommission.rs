//! The decommission planner: which partitions must move, and where, so that a broker holds no
//! replica any more. A pure function over the cluster's current placement, used by
//! `sluice cluster decommission` (which prints the plan and submits it with
//! [`crate::Admin::reassign_partitions`]) and unit-tested on its own.
//!
//! ```text
//!  placement (topic, partition, replicas) ──┐
//!  broker to drain, live brokers ───────────┴─▶ plan_decommission ──▶ moves (old → new replicas)
//! ```
//!
//! Rules: every replica on the drained broker is replaced by one live broker that does not
//! already hold a replica of that partition (the replication factor is kept, and no broker
//! ever holds two replicas of one partition); the replacement takes the drained broker's
//! place in the replica list (a partition the drained broker led preferentially gets its new
//! replica as preferred leader, so leadership spreads like the replicas). Even spread: first,
//! partition by partition, the eligible broker holding the fewest replicas so far (those it
//! has plus those the plan gave it; ties to the lowest id); then, while a broker holds two
//! replicas more than another one that a chain of re-targeted moves can reach (move A from
//! broker x to y, move B from y to z, ...: each move's target stays eligible), the chain is
//! applied, which takes one replica from the fuller broker to the emptier one. Greedy choices
//! alone can get stuck (the only emptier broker already holds the partitions still to
//! place); the chains undo them. A partition for which no eligible broker is left makes the
//! whole plan fail: nothing is moved half-way.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::cluster::TopicPartition;

/// Where one partition's replicas are now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// The partition.
    pub partition: TopicPartition,
    /// Its replica set, preferred leader first.
    pub replicas: Vec<u32>,
}

/// One reassignment of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    /// The partition.
    pub partition: TopicPartition,
    /// Its replicas now.
    pub from: Vec<u32>,
    /// Its replicas after the move (same length, the drained broker replaced).
    pub to: Vec<u32>,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// A partition has more replicas than there are live brokers other than the drained one
    /// (counting those that already hold it): its replication factor cannot be kept.
    #[error(
        "{partition} has {replication_factor} replicas but only {available} live brokers \
         besides broker {broker} can hold them; add a broker first"
    )]
    NotEnoughBrokers {
        /// The partition that cannot move.
        partition: TopicPartition,
        /// Its replication factor.
        replication_factor: usize,
        /// Live brokers other than the drained one.
        available: usize,
        /// The broker being drained.
        broker: u32,
    },
}

/// The moves that take every replica off `broker`, onto `live_brokers` (the brokers that may
/// receive replicas; `broker` itself is ignored if listed). Partitions without a replica on
/// `broker` are left alone; the moves come sorted by partition. See the module doc for the
/// rules.
pub fn plan_decommission(
    placement: &[PartitionPlacement],
    broker: u32,
    live_brokers: &[u32],
) -> Result<Vec<PlannedMove>, PlanError> {
    // Replicas per eligible broker: the load the plan evens out.
    let mut load: BTreeMap<u32, usize> = live_brokers
        .iter()
        .filter(|&&id| id != broker)
        .map(|&id| (id, 0))
        .collect();
    for current in placement {
        for replica in &current.replicas {
            if let Some(count) = load.get_mut(replica) {
                *count += 1;
            }
        }
    }
    let mut affected: Vec<&PartitionPlacement> = placement
        .iter()
        .filter(|current| current.replicas.contains(&broker))
        .collect();
    affected.sort_by(|a, b| a.partition.cmp(&b.partition));
    let mut moves = Vec::with_capacity(affected.len());
    for current in affected {
        let replacement = load
            .iter()
            .filter(|(id, _)| !current.replicas.contains(id))
            .min_by_key(|&(&id, &count)| (count, id))
            .map(|(&id, _)| id);
        let Some(replacement) = replacement else {
            return Err(PlanError::NotEnoughBrokers {
                partition: current.partition.clone(),
                replication_factor: current.replicas.len(),
                available: load.len(),
                broker,
            });
        };
        if let Some(count) = load.get_mut(&replacement) {
            *count += 1;
        }
        let to = current
            .replicas
            .iter()
            .map(|&replica| {
                if replica == broker {
                    replacement
                } else {
                    replica
                }
            })
            .collect();
        moves.push(PlannedMove {
            partition: current.partition.clone(),
            from: current.replicas.clone(),
            to,
        });
    }
    let slots: Vec<usize> = moves
        .iter()
        .map(|planned| {
            planned
                .from
                .iter()
                .position(|&replica| replica == broker)
                .unwrap_or(0)
        })
        .collect();
    while let Some(chain) = find_balancing_chain(&moves, &slots, &load) {
        for (index, from, to) in chain {
            moves[index].to[slots[index]] = to;
            if let Some(count) = load.get_mut(&from) {
                *count -= 1;
            }
            if let Some(count) = load.get_mut(&to) {
                *count += 1;
            }
        }
    }
    Ok(moves)
}

/// A chain of re-targeted moves (move index, from broker, to broker) that takes one replica
/// from a broker to another holding at least two fewer, or `None` when the plan is as even
/// as such chains make it. Breadth-first from each broker, fullest first; each step lowers
/// the sum of squared loads, so applying chains until none is left terminates.
fn find_balancing_chain(
    moves: &[PlannedMove],
    slots: &[usize],
    load: &BTreeMap<u32, usize>,
) -> Option<Vec<(usize, u32, u32)>> {
    let mut fullest: Vec<(u32, usize)> = load.iter().map(|(&id, &count)| (id, count)).collect();
    fullest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for &(start, start_load) in &fullest {
        // Broker → (the broker it was reached from, the move re-targeted to reach it).
        let mut reached: BTreeMap<u32, Option<(u32, usize)>> = BTreeMap::new();
        reached.insert(start, None);
        let mut queue = VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            if load.get(&at).is_some_and(|&count| count + 2 <= start_load) {
                let mut chain = Vec::new();
                let mut node = at;
                while let Some(Some((previous, index))) = reached.get(&node).copied() {
                    chain.push((index, previous, node));
                    node = previous;
                }
                chain.reverse();
                return Some(chain);
            }
            for (index, planned) in moves.iter().enumerate() {
                if planned.to[slots[index]] != at {
                    continue;
                }
                for &next in load.keys() {
                    if !reached.contains_key(&next) && !planned.to.contains(&next) {
                        reached.insert(next, Some((at, index)));
                        queue.push_back(next);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// `partitions` partitions of topic "t" with `rf` replicas each, placed round-robin over
    /// `brokers` (1..=brokers), as the controller places a new topic.
    fn round_robin(partitions: u32, rf: usize, brokers: u32) -> Vec<PartitionPlacement> {
        (0..partitions)
            .map(|p| PartitionPlacement {
                partition: TopicPartition::new("t", p),
                replicas: (0..rf as u32).map(|r| (p + r) % brokers + 1).collect(),
            })
            .collect()
    }

    /// Replicas per broker after applying `moves` to `placement`.
    fn loads(placement: &[PartitionPlacement], moves: &[PlannedMove]) -> BTreeMap<u32, usize> {
        let mut after: BTreeMap<&TopicPartition, &Vec<u32>> = placement
            .iter()
            .map(|p| (&p.partition, &p.replicas))
            .collect();
        for planned in moves {
            after.insert(&planned.partition, &planned.to);
        }
        let mut load = BTreeMap::new();
        for replicas in after.values() {
            for &replica in replicas.iter() {
                *load.entry(replica).or_insert(0) += 1;
            }
        }
        load
    }

    /// Five brokers, RF 3: the 18 replicas of broker 5 spread over brokers 1-4 so that they
    /// end within one replica of each other, each partition keeps 3 distinct replicas, the
    /// replacement takes the drained broker's place, and untouched partitions are not listed.
    #[test]
    fn drains_a_broker_evenly() {
        let placement = round_robin(30, 3, 5);
        let moves = plan_decommission(&placement, 5, &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(
            moves.len(),
            18,
            "every partition with a replica on broker 5"
        );
        for planned in &moves {
            assert!(planned.from.contains(&5));
            assert!(!planned.to.contains(&5));
            assert_eq!(planned.to.len(), 3);
            let distinct: BTreeSet<u32> = planned.to.iter().copied().collect();
            assert_eq!(distinct.len(), 3, "{planned:?}");
            let at = planned.from.iter().position(|&b| b == 5).unwrap();
            for (i, (&before, &after)) in planned.from.iter().zip(&planned.to).enumerate() {
                if i != at {
                    assert_eq!(before, after, "only broker 5's slot changes: {planned:?}");
                }
            }
        }
        let load = loads(&placement, &moves);
        assert_eq!(load.get(&5), None);
        let (min, max) = (load.values().min().unwrap(), load.values().max().unwrap());
        assert!(max - min <= 1, "{load:?}");
        assert_eq!(load.values().sum::<usize>(), 90, "replication factor kept");
    }

    /// Uneven starting loads are evened out: the emptiest broker gets the moves first.
    #[test]
    fn fills_the_emptiest_broker_first() {
        let placement = vec![
            PartitionPlacement {
                partition: TopicPartition::new("a", 0),
                replicas: vec![1, 2],
            },
            PartitionPlacement {
                partition: TopicPartition::new("a", 1),
                replicas: vec![1, 2],
            },
            PartitionPlacement {
                partition: TopicPartition::new("b", 0),
                replicas: vec![4, 1],
            },
            PartitionPlacement {
                partition: TopicPartition::new("b", 1),
                replicas: vec![2, 4],
            },
        ];
        let moves = plan_decommission(&placement, 4, &[1, 2, 3, 4]).unwrap();
        assert_eq!(
            moves,
            vec![
                PlannedMove {
                    partition: TopicPartition::new("b", 0),
                    from: vec![4, 1],
                    to: vec![3, 1],
                },
                PlannedMove {
                    partition: TopicPartition::new("b", 1),
                    from: vec![2, 4],
                    to: vec![2, 3],
                },
            ]
        );
    }

    /// Three brokers, RF 3: no broker is left to take broker 3's replicas; the plan is
    /// refused as a whole. A fenced broker left out of `live_brokers` does not count.
    #[test]
    fn refuses_when_too_few_brokers() {
        let placement = round_robin(4, 3, 3);
        let error = plan_decommission(&placement, 3, &[1, 2, 3]).unwrap_err();
        assert!(matches!(
            error,
            PlanError::NotEnoughBrokers {
                replication_factor: 3,
                available: 2,
                broker: 3,
                ..
            }
        ));
        assert!(error.to_string().contains("add a broker first"), "{error}");
        let placement = round_robin(4, 2, 3);
        assert!(
            plan_decommission(&placement, 3, &[1, 3]).is_err(),
            "2 is down"
        );
        assert_eq!(
            plan_decommission(&placement, 3, &[1, 2, 3]).unwrap().len(),
            2
        );
    }

    /// Where placing partition by partition gets stuck (broker 5 can only take partitions
    /// placed first), the plan still ends even: every remaining broker with 5 replicas.
    #[test]
    fn evens_out_what_greedy_choices_cannot() {
        let placement = round_robin(10, 2, 5);
        let moves = plan_decommission(&placement, 1, &[1, 2, 3, 4, 5]).unwrap();
        let load = loads(&placement, &moves);
        assert_eq!(
            load.values().copied().collect::<Vec<_>>(),
            [5, 5, 5, 5],
            "{load:?}"
        );
    }

    /// A broker holding nothing needs no move.
    #[test]
    fn nothing_to_move() {
        let placement = round_robin(6, 2, 3);
        assert!(plan_decommission(&placement, 9, &[1, 2, 3, 9])
            .unwrap()
            .is_empty());
    }

    proptest! {
        /// For any round-robin placement with enough brokers: the drained broker ends with no
        /// replica, every partition keeps its replica count with distinct brokers, only
        /// partitions that had a replica there move, and the brokers that received replicas
        /// end within one replica of each other when they all started equal.
        #[test]
        fn plans_are_valid(
            brokers in 2u32..8,
            rf_seed in 1usize..8,
            partitions in 1u32..60,
            drained_seed in 0u32..8,
        ) {
            let rf = 1 + rf_seed % (brokers as usize - 1); // rf < brokers: a plan exists
            let drained = 1 + drained_seed % brokers;
            let placement = round_robin(partitions, rf, brokers);
            let live: Vec<u32> = (1..=brokers).collect();
            let moves = plan_decommission(&placement, drained, &live).unwrap();
            let expected = placement.iter().filter(|p| p.replicas.contains(&drained)).count();
            prop_assert_eq!(moves.len(), expected);
            for planned in &moves {
                prop_assert!(!planned.to.contains(&drained));
                prop_assert_eq!(planned.to.len(), rf);
                let distinct: BTreeSet<u32> = planned.to.iter().copied().collect();
                prop_assert_eq!(distinct.len(), rf);
                prop_assert!(planned.to.iter().all(|b| live.contains(b)));
            }
            let load = loads(&placement, &moves);
            prop_assert!(!load.contains_key(&drained));
            prop_assert_eq!(load.values().sum::<usize>(), partitions as usize * rf);
            if (partitions as usize * rf) % brokers as usize == 0 {
                let (min, max) = (load.values().min(), load.values().max());
                if let (Some(min), Some(max)) = (min, max) {
                    prop_assert!(max - min <= 1, "{:?}", load);
                }
            }
        }
    }
}
