//! The consumer protocol's payloads and assignment arithmetic: what a member puts in its
//! JoinGroup metadata ([`ConsumerSubscription`]), what the leader hands out in SyncGroup
//! ([`ConsumerAssignment`]), and how an assignment change splits into revoked, added and kept
//! partitions. Pure functions, used by the membership task and the consumer.
//!
//! ```text
//!  ConsumerSubscription { version 1, topics, owned: [TopicPartitions], generation }
//!  ConsumerAssignment   { version 1, partitions: [TopicPartitions] }
//!  TopicPartitions      { topic, partitions: [u32] }   one entry per topic, both sorted
//! ```

use std::collections::{BTreeMap, BTreeSet};

use wire::protocol::{
    decode_payload, encode_payload, ConsumerAssignment, ConsumerSubscription, JoinGroupMember,
    TopicPartitions, CONSUMER_PROTOCOL_VERSION,
};
use wire::ProtocolError;

use crate::assignor::MemberSubscription;
use crate::cluster::TopicPartition;

/// Groups partitions by topic, both sorted, duplicates dropped (the wire form).
pub(crate) fn to_wire(partitions: &[TopicPartition]) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
    for tp in partitions {
        by_topic
            .entry(tp.topic.as_str())
            .or_default()
            .insert(tp.partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions {
            topic: topic.to_owned(),
            partitions: partitions.into_iter().collect(),
        })
        .collect()
}

/// Flattens the wire form into sorted, deduplicated partitions.
pub(crate) fn from_wire(topics: &[TopicPartitions]) -> Vec<TopicPartition> {
    let set: BTreeSet<TopicPartition> = topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|&partition| TopicPartition::new(topic.topic.as_str(), partition))
        })
        .collect();
    set.into_iter().collect()
}

/// The JoinGroup metadata of a member subscribing to `topics` that owns `owned` since
/// `generation` (-1 when it owns nothing).
pub(crate) fn encode_subscription(
    topics: &[String],
    owned: &[TopicPartition],
    generation: i32,
) -> Vec<u8> {
    let topics: BTreeSet<&String> = topics.iter().collect();
    encode_payload(&ConsumerSubscription {
        version: CONSUMER_PROTOCOL_VERSION,
        topics: topics.into_iter().cloned().collect(),
        owned: to_wire(owned),
        generation: if owned.is_empty() { -1 } else { generation },
    })
}

/// A member of a JoinGroup answer as the assignor wants it.
pub(crate) fn decode_subscription(
    member: &JoinGroupMember,
) -> Result<MemberSubscription, ProtocolError> {
    let subscription: ConsumerSubscription = decode_payload(&member.metadata)?;
    check_version(subscription.version)?;
    Ok(MemberSubscription {
        member_id: member.member_id.clone(),
        instance_id: member.group_instance_id.clone(),
        topics: subscription.topics,
        owned: from_wire(&subscription.owned),
        generation: subscription.generation,
    })
}

/// The SyncGroup assignment bytes of a member given `partitions`.
pub(crate) fn encode_assignment(partitions: &[TopicPartition]) -> Vec<u8> {
    encode_payload(&ConsumerAssignment {
        version: CONSUMER_PROTOCOL_VERSION,
        partitions: to_wire(partitions),
    })
}

/// This member's partitions from its SyncGroup answer. An empty answer (a leader that omitted
/// the member) is an empty assignment.
pub(crate) fn decode_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>, ProtocolError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let assignment: ConsumerAssignment = decode_payload(bytes)?;
    check_version(assignment.version)?;
    Ok(from_wire(&assignment.partitions))
}

/// Version 0 never existed; later versions are expected to be read as version 1 (they would
/// only append fields, which `decode_payload` refuses anyway).
fn check_version(version: u16) -> Result<(), ProtocolError> {
    if version == 0 {
        return Err(ProtocolError::Malformed {
            position: 0,
            reason: "consumer protocol payload version 0".into(),
        });
    }
    Ok(())
}

/// How an assignment changes: what goes, what comes (both sorted). Partitions in both the old
/// and the new assignment are in neither list: they are never interrupted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AssignmentDiff {
    /// Held before, not any more.
    pub revoked: Vec<TopicPartition>,
    /// New.
    pub added: Vec<TopicPartition>,
}

impl AssignmentDiff {
    /// The difference from `before` to `after`.
    pub fn between(before: &[TopicPartition], after: &[TopicPartition]) -> Self {
        let before: BTreeSet<&TopicPartition> = before.iter().collect();
        let after: BTreeSet<&TopicPartition> = after.iter().collect();
        AssignmentDiff {
            revoked: before.difference(&after).map(|tp| (*tp).clone()).collect(),
            added: after.difference(&before).map(|tp| (*tp).clone()).collect(),
        }
    }
}

/// What the consumer must do to go from the partitions it `held` to a published `target`:
/// first drop everything as lost when `lost` (no commit), then revoke (commit) what the target
/// no longer has, then add what is new.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    /// Dropped without committing.
    pub lost: Vec<TopicPartition>,
    /// Dropped after committing.
    pub revoked: Vec<TopicPartition>,
    /// To start fetching (from the committed offset).
    pub added: Vec<TopicPartition>,
}

impl Reconciliation {
    /// The steps from `held` to `target`; `lost` says the member fell out of the group since
    /// the last reconciliation, so everything held is lost (even what `target` lists again:
    /// its position is stale, the partition restarts from its committed offset).
    pub fn plan(held: &[TopicPartition], target: &[TopicPartition], lost: bool) -> Self {
        let mut lost_partitions: Vec<TopicPartition> = Vec::new();
        let held: &[TopicPartition] = if lost {
            let set: BTreeSet<&TopicPartition> = held.iter().collect();
            lost_partitions = set.into_iter().cloned().collect();
            &[]
        } else {
            held
        };
        let diff = AssignmentDiff::between(held, target);
        Reconciliation {
            lost: lost_partitions,
            revoked: diff.revoked,
            added: diff.added,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tps(list: &[(&str, u32)]) -> Vec<TopicPartition> {
        list.iter()
            .map(|&(topic, partition)| TopicPartition::new(topic, partition))
            .collect()
    }

    /// The wire form groups by topic, sorts, dedups, and flattens back.
    #[test]
    fn wire_form_round_trip() {
        let partitions = tps(&[("b", 1), ("a", 2), ("b", 0), ("a", 2)]);
        let wire = to_wire(&partitions);
        assert_eq!(
            wire,
            vec![
                TopicPartitions {
                    topic: "a".into(),
                    partitions: vec![2]
                },
                TopicPartitions {
                    topic: "b".into(),
                    partitions: vec![0, 1]
                },
            ]
        );
        assert_eq!(from_wire(&wire), tps(&[("a", 2), ("b", 0), ("b", 1)]));
    }

    /// A subscription survives the JoinGroup round trip into the assignor's form; owning
    /// nothing reports generation -1.
    #[test]
    fn subscription_round_trip() {
        let owned = tps(&[("t", 3), ("t", 1)]);
        let member = JoinGroupMember {
            member_id: "m-1".into(),
            group_instance_id: Some("i".into()),
            metadata: encode_subscription(&["u".into(), "t".into(), "t".into()], &owned, 7),
        };
        let decoded = decode_subscription(&member).unwrap();
        assert_eq!(decoded.member_id, "m-1");
        assert_eq!(decoded.instance_id.as_deref(), Some("i"));
        assert_eq!(decoded.topics, vec!["t".to_owned(), "u".to_owned()]);
        assert_eq!(decoded.owned, tps(&[("t", 1), ("t", 3)]));
        assert_eq!(decoded.generation, 7);

        let empty = JoinGroupMember {
            metadata: encode_subscription(&["t".into()], &[], 7),
            ..member
        };
        assert_eq!(decode_subscription(&empty).unwrap().generation, -1);
    }

    /// Assignments round-trip; empty bytes are an empty assignment; garbage and version 0
    /// are refused.
    #[test]
    fn assignment_round_trip() {
        let partitions = tps(&[("x", 0), ("a", 5)]);
        let bytes = encode_assignment(&partitions);
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            tps(&[("a", 5), ("x", 0)])
        );
        assert!(decode_assignment(&[]).unwrap().is_empty());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_assignment(&trailing).is_err());
        let version_zero = encode_payload(&ConsumerAssignment {
            version: 0,
            partitions: Vec::new(),
        });
        assert!(decode_assignment(&version_zero).is_err());
    }

    /// Kept partitions are neither revoked nor added.
    #[test]
    fn diff_keeps_common_partitions() {
        let before = tps(&[("t", 0), ("t", 1), ("t", 2)]);
        let after = tps(&[("t", 2), ("t", 3), ("t", 1)]);
        let diff = AssignmentDiff::between(&before, &after);
        assert_eq!(diff.revoked, tps(&[("t", 0)]));
        assert_eq!(diff.added, tps(&[("t", 3)]));
        assert_eq!(
            AssignmentDiff::between(&before, &before),
            AssignmentDiff::default()
        );
    }

    /// Without loss a reconciliation is the diff; with loss everything held is lost and the
    /// whole target is added again.
    #[test]
    fn reconciliation_plans() {
        let held = tps(&[("t", 0), ("t", 1)]);
        let target = tps(&[("t", 1), ("t", 2)]);
        assert_eq!(
            Reconciliation::plan(&held, &target, false),
            Reconciliation {
                lost: Vec::new(),
                revoked: tps(&[("t", 0)]),
                added: tps(&[("t", 2)]),
            }
        );
        assert_eq!(
            Reconciliation::plan(&held, &target, true),
            Reconciliation {
                lost: held.clone(),
                revoked: Vec::new(),
                added: target.clone(),
            }
        );
        assert_eq!(
            Reconciliation::plan(&held, &held, false),
            Reconciliation::default()
        );
    }
}
