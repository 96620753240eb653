//! Consumer-group partition assignors: which member of a group reads which partition.
//!
//! As in Kafka, the coordinator does not assign partitions: the member it elects leader runs
//! [`assign`] over every member's subscription and sends the result back in its SyncGroup. Every
//! function here is pure (no I/O, no clock, no randomness) and deterministic: members and
//! partitions are sorted before anything is dealt, so two leaders given the same group compute
//! the same assignment.
//!
//! Members are ordered by their *sort key*: the static instance id when there is one, else the
//! member id. Kafka sorts by member id only, but a static member gets a new member id at every
//! restart, so sorting by instance id keeps its partitions where they were.
//!
//! # Strategies
//!
//! - `range` ([`AssignorKind::Range`]): topic by topic, the members subscribed to the topic
//!   split its partitions into contiguous ranges; the first `partitions % members` get one
//!   more. Co-partitioned topics line up (partition 3 of `orders` and of `payments` go to the
//!   same member), at the price of an imbalance across topics: the first members get the
//!   extra partition of every topic.
//! - `roundrobin` ([`AssignorKind::RoundRobin`]): every partition of every topic, sorted, is
//!   dealt in turn to the next member subscribed to its topic. Balanced across topics (counts
//!   differ by at most one when all members subscribe to the same topics).
//! - `cooperative-sticky` ([`AssignorKind::CooperativeSticky`]): balanced like roundrobin, but
//!   starts from what every member owns and moves as few partitions as balance needs; and moves
//!   them in two rebalances (below) so that no member stops consuming the partitions it keeps.
//!
//! # Eager and cooperative rebalancing
//!
//! With the eager strategies a member revokes all its partitions before it rejoins: the whole
//! group stops while it rebalances. With the cooperative one, members keep consuming while they
//! rejoin and report what they own ([`MemberSubscription::owned`]). The assignor computes a
//! sticky, balanced target, then withholds every partition whose target owner is not the member
//! owning it now: its owner is not assigned it any more, so it revokes it (revoked = owned −
//! assigned, see [`partitions_to_revoke`]) and rejoins at once; the follow-up rebalance finds
//! the partition unowned and hands it over. A partition is therefore never owned by two members
//! at once. Member D joins a group of three that owns topic `t` with 6 partitions:
//!
//! ```text
//!                         A       B       C       D
//! owned (rebalance 1)    0 1     2 3     4 5      -
//! sticky target          0       2 3     4 5     1      A has one too many: gives up its highest
//! sent                   0       2 3     4 5     -      1 withheld: A still owns it
//!   A revokes 1 (owned − assigned) and rejoins
//! owned (rebalance 2)    0       2 3     4 5     -
//! sticky target = sent   0       2 3     4 5     1      1 is unowned: handed over
//! ```
//!
//! B and C never stop consuming, A stops only partition 1.

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::cluster::TopicPartition;

/// An assignment as [`assign`] returns it: member id → its partitions, sorted by (topic,
/// partition). Every member of the group has an entry, possibly empty, so the leader sends
/// every member an answer.
pub type Assignment = BTreeMap<String, Vec<TopicPartition>>;

/// An assignment strategy. Members list the ones they support in their JoinGroup, under
/// [`AssignorKind::name`], and the coordinator picks one that all of them support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssignorKind {
    /// Contiguous ranges of each topic's partitions (eager).
    Range,
    /// All partitions dealt in turn (eager).
    RoundRobin,
    /// Sticky and balanced, moved in two rebalances without stopping the group (cooperative).
    CooperativeSticky,
}

impl AssignorKind {
    /// Every strategy, so a caller can list or validate them without repeating the names.
    pub const ALL: [AssignorKind; 3] = [
        AssignorKind::Range,
        AssignorKind::RoundRobin,
        AssignorKind::CooperativeSticky,
    ];

    /// The wire name, what goes into `JoinGroupProtocol::name` (Kafka's names, so that the
    /// same configuration strings work).
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Range => "range",
            AssignorKind::RoundRobin => "roundrobin",
            AssignorKind::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// The strategy with that wire name; `None` for a name this client does not know (a member
    /// of another client version may offer more).
    pub fn from_name(name: &str) -> Option<Self> {
        AssignorKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    /// True when members keep their partitions while they rejoin and revoke only the ones
    /// taken away from them (after the assignment); false when they revoke everything first.
    pub fn is_cooperative(self) -> bool {
        matches!(self, AssignorKind::CooperativeSticky)
    }
}

impl fmt::Display for AssignorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member of the group as the leader sees it: who it is, what it subscribes to and, for
/// the cooperative strategy, what it owns now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// Member id given by the coordinator; unique in the group (a repeated id is ignored after
    /// its first occurrence).
    pub member_id: String,
    /// Static instance id, if the member has one; sorts before the member id (see the module
    /// documentation).
    pub instance_id: Option<String>,
    /// Topics it subscribes to. Topics missing from the partition counts are ignored.
    pub topics: Vec<String>,
    /// Partitions it owns now (cooperative strategy; eager members revoke everything before
    /// they rejoin and report none).
    pub owned: Vec<TopicPartition>,
    /// Generation in which it got `owned` (-1 when it never had an assignment): when two
    /// members claim a partition, the more recent claim wins.
    pub generation: i32,
}

/// Computes the assignment of a group with the `kind` strategy.
///
/// Each partition of a known topic (a key of `partitions_per_topic`) subscribed by at least one
/// member goes to exactly one member subscribed to that topic, except that the cooperative
/// strategy withholds the partitions that change owner until their owner has revoked them
/// (module documentation). Every member appears in the result, possibly with no partitions.
pub fn assign(
    kind: AssignorKind,
    members: &[MemberSubscription],
    partitions_per_topic: &HashMap<String, u32>,
) -> Assignment {
    let group = Group::new(members, partitions_per_topic);
    let assignment = match kind {
        AssignorKind::Range => range(&group),
        AssignorKind::RoundRobin => round_robin(&group),
        AssignorKind::CooperativeSticky => cooperative_sticky(&group),
    };
    group
        .members
        .iter()
        .zip(assignment)
        .map(|(member, partitions)| (member.id.to_owned(), partitions.into_iter().collect()))
        .collect()
}

/// What a member must revoke after an assignment: the partitions it owns that it was not
/// assigned, sorted. With the cooperative strategy a non-empty answer means the member must
/// rejoin once it has revoked them, so that the follow-up rebalance hands them over.
pub fn partitions_to_revoke(
    owned: &[TopicPartition],
    assigned: &[TopicPartition],
) -> Vec<TopicPartition> {
    let assigned: HashSet<&TopicPartition> = assigned.iter().collect();
    let revoked: BTreeSet<&TopicPartition> =
        owned.iter().filter(|tp| !assigned.contains(tp)).collect();
    revoked.into_iter().cloned().collect()
}

/// The partitions of every member, by its index in [`Group::members`].
type MemberPartitions = Vec<BTreeSet<TopicPartition>>;

/// A member, reduced to what the strategies read.
struct Member<'a> {
    id: &'a str,
    /// Known topics it subscribes to.
    topics: BTreeSet<&'a str>,
    owned: &'a [TopicPartition],
    generation: i32,
}

/// A known topic with at least one subscriber.
struct Topic {
    partitions: u32,
    /// Indexes of its subscribers in [`Group::members`], in sort-key order.
    subscribers: Vec<usize>,
}

/// The group, sorted: what every strategy starts from.
struct Group<'a> {
    /// Members by sort key, repeated ids removed.
    members: Vec<Member<'a>>,
    /// Known topics with at least one subscriber, by name.
    topics: BTreeMap<&'a str, Topic>,
}

impl<'a> Group<'a> {
    fn new(
        members: &'a [MemberSubscription],
        partitions_per_topic: &'a HashMap<String, u32>,
    ) -> Self {
        let mut seen = HashSet::new();
        let mut sorted: Vec<&MemberSubscription> = members
            .iter()
            .filter(|member| seen.insert(member.member_id.as_str()))
            .collect();
        sorted.sort_by_key(|member| {
            (
                member.instance_id.as_deref().unwrap_or(&member.member_id),
                member.member_id.as_str(),
            )
        });
        let members: Vec<Member<'a>> = sorted
            .into_iter()
            .map(|member| Member {
                id: &member.member_id,
                topics: member
                    .topics
                    .iter()
                    .map(String::as_str)
                    .filter(|topic| partitions_per_topic.contains_key(*topic))
                    .collect(),
                owned: &member.owned,
                generation: member.generation,
            })
            .collect();
        let mut topics: BTreeMap<&'a str, Topic> = BTreeMap::new();
        for (index, member) in members.iter().enumerate() {
            for &topic in &member.topics {
                let partitions = partitions_per_topic.get(topic).copied().unwrap_or(0);
                topics
                    .entry(topic)
                    .or_insert_with(|| Topic {
                        partitions,
                        subscribers: Vec::new(),
                    })
                    .subscribers
                    .push(index);
            }
        }
        Group { members, topics }
    }

    /// Every partition to assign, sorted by (topic, partition).
    fn partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.topics.iter().flat_map(|(&name, topic)| {
            (0..topic.partitions).map(move |partition| TopicPartition::new(name, partition))
        })
    }

    /// True when `member` may be assigned `tp`: it subscribes to the topic and the partition
    /// exists.
    fn may_own(&self, member: usize, tp: &TopicPartition) -> bool {
        self.members[member].topics.contains(tp.topic.as_str())
            && self
                .topics
                .get(tp.topic.as_str())
                .is_some_and(|topic| tp.partition < topic.partitions)
    }

    /// The subscriber of `topic` with the fewest partitions (ties: first by sort key), other
    /// than `except`.
    fn least_loaded(
        &self,
        assignment: &MemberPartitions,
        topic: &str,
        except: Option<usize>,
    ) -> Option<usize> {
        self.topics
            .get(topic)?
            .subscribers
            .iter()
            .copied()
            .filter(|&member| Some(member) != except)
            .min_by_key(|&member| (assignment[member].len(), member))
    }
}

/// Range: per topic, contiguous ranges to its subscribers in sort-key order.
fn range(group: &Group<'_>) -> MemberPartitions {
    let mut assignment = vec![BTreeSet::new(); group.members.len()];
    for (&name, topic) in &group.topics {
        let members = topic.subscribers.len();
        let partitions = usize::try_from(topic.partitions).unwrap_or(usize::MAX);
        let (base, extra) = (partitions / members, partitions % members);
        let mut next = 0..topic.partitions;
        for (rank, &member) in topic.subscribers.iter().enumerate() {
            let len = base + usize::from(rank < extra);
            assignment[member].extend(
                next.by_ref()
                    .take(len)
                    .map(|partition| TopicPartition::new(name, partition)),
            );
        }
    }
    assignment
}

/// Roundrobin: every partition in order to the next member (circularly, by sort key) that
/// subscribes to its topic.
fn round_robin(group: &Group<'_>) -> MemberPartitions {
    let members = group.members.len();
    let mut assignment = vec![BTreeSet::new(); members];
    let mut cursor = 0;
    for tp in group.partitions() {
        // Every partition has a subscriber (its topic is in `group.topics`), so this finds one
        // within a turn of the circle.
        let taker = (0..members)
            .map(|step| (cursor + step) % members)
            .find(|&member| group.members[member].topics.contains(tp.topic.as_str()));
        if let Some(member) = taker {
            assignment[member].insert(tp);
            cursor = member + 1;
        }
    }
    assignment
}

/// Cooperative-sticky: the sticky target, minus every partition that another member than its
/// target owner owns now (it must be revoked first).
fn cooperative_sticky(group: &Group<'_>) -> MemberPartitions {
    let mut assignment = sticky_target(group);
    let mut owners: HashMap<&TopicPartition, BTreeSet<usize>> = HashMap::new();
    for (index, member) in group.members.iter().enumerate() {
        for tp in member.owned {
            owners.entry(tp).or_default().insert(index);
        }
    }
    for (index, partitions) in assignment.iter_mut().enumerate() {
        partitions.retain(|tp| {
            owners
                .get(tp)
                .is_none_or(|owners| owners.iter().all(|&owner| owner == index))
        });
    }
    assignment
}

/// The balanced assignment closest to what members own now.
///
/// 1. Valid claims are kept: a member keeps what it owns of its subscribed topics' existing
///    partitions; of two claims on one partition, the higher generation wins (tie: the first
///    by sort key).
/// 2. Unowned partitions go, the most constrained first (fewest subscribers), to the least
///    loaded subscriber.
/// 3. A partition moves only while a member has at least two more than another subscriber of
///    its topic: from the most loaded member, its highest partition first, to the least loaded.
///
/// When all members subscribe to the same topics this ends with floor or ceil(total / members)
/// partitions each and moves the fewest partitions that balance allows: only members that keep
/// more than their share give any, and the members allowed one extra are those that own most.
/// With different subscriptions it is a best effort (no move makes it better by itself).
fn sticky_target(group: &Group<'_>) -> MemberPartitions {
    let mut assignment = vec![BTreeSet::new(); group.members.len()];
    let mut claims: BTreeMap<TopicPartition, usize> = BTreeMap::new();
    for (index, member) in group.members.iter().enumerate() {
        for tp in member.owned {
            if !group.may_own(index, tp) {
                continue;
            }
            match claims.entry(tp.clone()) {
                Entry::Vacant(entry) => {
                    entry.insert(index);
                }
                Entry::Occupied(mut entry) => {
                    // Members are in sort-key order: a later one wins only with a newer claim.
                    if member.generation > group.members[*entry.get()].generation {
                        entry.insert(index);
                    }
                }
            }
        }
    }
    let mut unowned: Vec<(usize, TopicPartition)> = group
        .partitions()
        .filter(|tp| !claims.contains_key(tp))
        .map(|tp| {
            let subscribers = group
                .topics
                .get(tp.topic.as_str())
                .map_or(0, |topic| topic.subscribers.len());
            (subscribers, tp)
        })
        .collect();
    unowned.sort();
    for (tp, member) in claims {
        assignment[member].insert(tp);
    }
    for (_, tp) in unowned {
        if let Some(member) = group.least_loaded(&assignment, &tp.topic, None) {
            assignment[member].insert(tp);
        }
    }
    balance(group, &mut assignment);
    assignment
}

/// Step 3 of [`sticky_target`]: moves partitions one at a time while a move helps.
fn balance(group: &Group<'_>, assignment: &mut MemberPartitions) {
    // A move from a member with `a` partitions to one with `b <= a - 2` lowers the sum of the
    // squared counts by 2(a - b) - 2 >= 2; that sum starts at most at total², which bounds the
    // number of moves.
    let total: usize = assignment.iter().map(BTreeSet::len).sum();
    let moves_max = total.saturating_mul(total) / 2;
    for _ in 0..moves_max {
        let Some((giver, tp, taker)) = find_move(group, assignment) else {
            return;
        };
        assignment[giver].remove(&tp);
        assignment[taker].insert(tp);
    }
    debug_assert!(find_move(group, assignment).is_none());
}

/// The next partition to move for balance: (giver, partition, taker), or `None` when no move
/// helps. Tries the most loaded members first (ties by sort key), each from its highest
/// partition, towards the least loaded subscriber of that partition's topic.
fn find_move(
    group: &Group<'_>,
    assignment: &MemberPartitions,
) -> Option<(usize, TopicPartition, usize)> {
    let min_load = assignment.iter().map(BTreeSet::len).min()?;
    let mut givers: Vec<usize> = (0..assignment.len()).collect();
    givers.sort_by_key(|&member| (Reverse(assignment[member].len()), member));
    for giver in givers {
        let load = assignment[giver].len();
        if load < min_load + 2 {
            // Sorted by load: nobody after this one can give either.
            return None;
        }
        let mut takers: HashMap<&str, Option<usize>> = HashMap::new();
        for tp in assignment[giver].iter().rev() {
            let taker = *takers
                .entry(tp.topic.as_str())
                .or_insert_with(|| group.least_loaded(assignment, &tp.topic, Some(giver)));
            if let Some(taker) = taker.filter(|&taker| assignment[taker].len() + 2 <= load) {
                return Some((giver, tp.clone(), taker));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_owned(),
            instance_id: None,
            topics: topics.iter().map(|topic| (*topic).to_owned()).collect(),
            owned: Vec::new(),
            generation: -1,
        }
    }

    fn owning(id: &str, topics: &[&str], owned: &[TopicPartition]) -> MemberSubscription {
        MemberSubscription {
            owned: owned.to_vec(),
            generation: 1,
            ..member(id, topics)
        }
    }

    fn counts(topics: &[(&str, u32)]) -> HashMap<String, u32> {
        topics
            .iter()
            .map(|&(topic, partitions)| (topic.to_owned(), partitions))
            .collect()
    }

    fn partitions_of(assignment: &Assignment, member: &str) -> Vec<u32> {
        assignment[member].iter().map(|tp| tp.partition).collect()
    }

    /// The members of the next rebalance: each revoked what it was not assigned
    /// (owned := owned ∩ assigned) and got the new generation.
    fn after_revoking(
        members: &[MemberSubscription],
        assignment: &Assignment,
    ) -> Vec<MemberSubscription> {
        members
            .iter()
            .map(|member| {
                let assigned = &assignment[&member.member_id];
                let revoked = partitions_to_revoke(&member.owned, assigned);
                MemberSubscription {
                    owned: member
                        .owned
                        .iter()
                        .filter(|tp| !revoked.contains(tp))
                        .cloned()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                    generation: member.generation.max(0) + 1,
                    ..member.clone()
                }
            })
            .collect()
    }

    /// The members once they consume what they were assigned.
    fn owning_assignment(
        members: &[MemberSubscription],
        assignment: &Assignment,
    ) -> Vec<MemberSubscription> {
        members
            .iter()
            .map(|member| MemberSubscription {
                owned: assignment[&member.member_id].clone(),
                generation: member.generation.max(0) + 1,
                ..member.clone()
            })
            .collect()
    }

    /// Every partition the group must read: those of known topics with a subscriber.
    fn expected_partitions(
        members: &[MemberSubscription],
        partitions_per_topic: &HashMap<String, u32>,
    ) -> BTreeSet<TopicPartition> {
        let subscribed: BTreeSet<&String> = members.iter().flat_map(|m| &m.topics).collect();
        subscribed
            .into_iter()
            .filter_map(|topic| partitions_per_topic.get(topic).map(|&n| (topic, n)))
            .flat_map(|(topic, n)| (0..n).map(move |partition| tp(topic, partition)))
            .collect()
    }

    /// Every member has an entry, nothing is assigned twice, only subscribed members get a
    /// topic's partitions and only existing partitions are assigned; returns what is assigned.
    fn check_valid(
        members: &[MemberSubscription],
        partitions_per_topic: &HashMap<String, u32>,
        assignment: &Assignment,
    ) -> BTreeSet<TopicPartition> {
        let ids: BTreeSet<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
        let keys: BTreeSet<&str> = assignment.keys().map(String::as_str).collect();
        assert_eq!(ids, keys, "every member, and only members, has an entry");
        let expected = expected_partitions(members, partitions_per_topic);
        let mut assigned = BTreeSet::new();
        for (id, partitions) in assignment {
            let member = members.iter().find(|m| &m.member_id == id).unwrap();
            for partition in partitions {
                assert!(
                    member.topics.contains(&partition.topic),
                    "{partition} given to {id}, not subscribed"
                );
                assert!(expected.contains(partition), "{partition} does not exist");
                assert!(
                    assigned.insert(partition.clone()),
                    "{partition} assigned twice"
                );
            }
        }
        assigned
    }

    /// [`check_valid`], and every partition is assigned.
    fn check_complete(
        members: &[MemberSubscription],
        partitions_per_topic: &HashMap<String, u32>,
        assignment: &Assignment,
    ) {
        let assigned = check_valid(members, partitions_per_topic, assignment);
        assert_eq!(assigned, expected_partitions(members, partitions_per_topic));
    }

    fn spread(assignment: &Assignment) -> usize {
        let max = assignment.values().map(Vec::len).max().unwrap_or(0);
        let min = assignment.values().map(Vec::len).min().unwrap_or(0);
        max - min
    }

    /// Fewest partitions that must change owner to balance a group whose members own
    /// `owned[i]` partitions each out of `total` (identical subscriptions, no conflicts): the
    /// members owning most are allowed the extra one.
    fn moves_min(owned: &mut [usize], total: usize) -> usize {
        owned.sort_unstable_by(|a, b| b.cmp(a));
        let members = owned.len();
        owned
            .iter()
            .enumerate()
            .map(|(rank, &count)| {
                let quota = total / members + usize::from(rank < total % members);
                count.saturating_sub(quota)
            })
            .sum()
    }

    /// Every assignor kind round-trips through its protocol name; unknown names are refused;
    /// only cooperative-sticky is cooperative.
    #[test]
    fn names_round_trip() {
        for kind in AssignorKind::ALL {
            assert_eq!(AssignorKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(AssignorKind::RoundRobin.name(), "roundrobin");
        assert_eq!(AssignorKind::from_name("sticky"), None);
        assert!(AssignorKind::CooperativeSticky.is_cooperative());
        assert!(!AssignorKind::Range.is_cooperative());
        assert!(!AssignorKind::RoundRobin.is_cooperative());
    }

    /// Range gives members, sorted by member id, contiguous ranges of a topic, the first ones
    /// one partition more when the count does not divide.
    #[test]
    fn range_contiguous_ranges() {
        let members = [
            member("c", &["t"]),
            member("a", &["t"]),
            member("b", &["t"]),
        ];
        let six = assign(AssignorKind::Range, &members, &counts(&[("t", 6)]));
        assert_eq!(partitions_of(&six, "a"), [0, 1]);
        assert_eq!(partitions_of(&six, "b"), [2, 3]);
        assert_eq!(partitions_of(&six, "c"), [4, 5]);
        let seven = assign(AssignorKind::Range, &members, &counts(&[("t", 7)]));
        assert_eq!(partitions_of(&seven, "a"), [0, 1, 2]);
        assert_eq!(partitions_of(&seven, "b"), [3, 4]);
        assert_eq!(partitions_of(&seven, "c"), [5, 6]);
    }

    /// Static members sort by instance id, so a restart (new member id) keeps the ranges.
    #[test]
    fn range_sorts_static_members_by_instance_id() {
        let members = [
            MemberSubscription {
                instance_id: Some("z".into()),
                ..member("a", &["t"])
            },
            member("m", &["t"]),
        ];
        let assignment = assign(AssignorKind::Range, &members, &counts(&[("t", 4)]));
        assert_eq!(partitions_of(&assignment, "m"), [0, 1]);
        assert_eq!(partitions_of(&assignment, "a"), [2, 3]);
    }

    /// Each topic is split among its own subscribers only; unknown topics are ignored.
    #[test]
    fn range_per_topic_subscribers() {
        let members = [member("a", &["x", "y", "gone"]), member("b", &["y"])];
        let assignment = assign(
            AssignorKind::Range,
            &members,
            &counts(&[("x", 2), ("y", 3)]),
        );
        assert_eq!(
            assignment["a"],
            [tp("x", 0), tp("x", 1), tp("y", 0), tp("y", 1)]
        );
        assert_eq!(assignment["b"], [tp("y", 2)]);
    }

    /// Round robin deals the partitions of all topics, in topic then partition order, to the
    /// members in turn.
    #[test]
    fn round_robin_deals_in_turn() {
        let members = [member("a", &["x", "y"]), member("b", &["x", "y"])];
        let assignment = assign(
            AssignorKind::RoundRobin,
            &members,
            &counts(&[("x", 3), ("y", 3)]),
        );
        assert_eq!(assignment["a"], [tp("x", 0), tp("x", 2), tp("y", 1)]);
        assert_eq!(assignment["b"], [tp("x", 1), tp("y", 0), tp("y", 2)]);
    }

    /// Members not subscribed to a topic are skipped, and the turn goes on from the taker.
    #[test]
    fn round_robin_skips_unsubscribed() {
        let members = [
            member("a", &["x"]),
            member("b", &["x", "y"]),
            member("c", &["x", "y"]),
        ];
        let assignment = assign(
            AssignorKind::RoundRobin,
            &members,
            &counts(&[("x", 2), ("y", 3)]),
        );
        assert_eq!(assignment["a"], [tp("x", 0)]);
        assert_eq!(assignment["b"], [tp("x", 1), tp("y", 1)]);
        assert_eq!(assignment["c"], [tp("y", 0), tp("y", 2)]);
    }

    /// With no members every assignor assigns nothing; members subscribed to no known topic
    /// each get an empty assignment.
    #[test]
    fn empty_inputs() {
        for kind in AssignorKind::ALL {
            assert!(assign(kind, &[], &counts(&[("t", 3)])).is_empty());
            let members = [member("a", &["gone"]), member("b", &[])];
            let assignment = assign(kind, &members, &counts(&[("t", 3)]));
            assert_eq!(assignment.len(), 2);
            assert!(assignment.values().all(Vec::is_empty));
        }
    }

    /// The module documentation's example: D joins A, B, C that own 6 partitions.
    #[test]
    fn cooperative_new_member_two_rounds() {
        let topics = counts(&[("t", 6)]);
        let members = vec![
            owning("a", &["t"], &[tp("t", 0), tp("t", 1)]),
            owning("b", &["t"], &[tp("t", 2), tp("t", 3)]),
            owning("c", &["t"], &[tp("t", 4), tp("t", 5)]),
            member("d", &["t"]),
        ];
        let first = assign(AssignorKind::CooperativeSticky, &members, &topics);
        assert_eq!(partitions_of(&first, "a"), [0]);
        assert_eq!(partitions_of(&first, "b"), [2, 3]);
        assert_eq!(partitions_of(&first, "c"), [4, 5]);
        assert_eq!(partitions_of(&first, "d"), [] as [u32; 0]);
        assert_eq!(
            partitions_to_revoke(&members[0].owned, &first["a"]),
            [tp("t", 1)]
        );

        let members = after_revoking(&members, &first);
        let second = assign(AssignorKind::CooperativeSticky, &members, &topics);
        check_complete(&members, &topics, &second);
        assert_eq!(partitions_of(&second, "a"), [0]);
        assert_eq!(partitions_of(&second, "b"), [2, 3]);
        assert_eq!(partitions_of(&second, "c"), [4, 5]);
        assert_eq!(partitions_of(&second, "d"), [1]);
    }

    /// A balanced group that owns everything keeps exactly what it owns.
    #[test]
    fn cooperative_no_movement_when_balanced() {
        let topics = counts(&[("t", 5), ("u", 2)]);
        let members = [
            owning("a", &["t", "u"], &[tp("t", 4), tp("u", 0)]),
            owning("b", &["t", "u"], &[tp("t", 0), tp("t", 1), tp("u", 1)]),
            owning("c", &["t", "u"], &[tp("t", 2), tp("t", 3)]),
        ];
        let assignment = assign(AssignorKind::CooperativeSticky, &members, &topics);
        for member in &members {
            assert_eq!(assignment[&member.member_id], member.owned);
        }
    }

    /// Two claims on one partition: the newer generation is its target owner, but does not
    /// get it in this round since the stale claimant still owns it; once that one has revoked
    /// it, the next round hands it over.
    #[test]
    fn cooperative_conflicting_claims() {
        let topics = counts(&[("t", 2)]);
        let members = vec![
            MemberSubscription {
                generation: 1,
                ..owning("a", &["t"], &[tp("t", 0), tp("t", 1)])
            },
            MemberSubscription {
                generation: 2,
                ..owning("b", &["t"], &[tp("t", 0)])
            },
        ];
        let first = assign(AssignorKind::CooperativeSticky, &members, &topics);
        assert_eq!(partitions_of(&first, "a"), [1]);
        assert_eq!(partitions_of(&first, "b"), [] as [u32; 0]);
        let members = after_revoking(&members, &first);
        let second = assign(AssignorKind::CooperativeSticky, &members, &topics);
        assert_eq!(partitions_of(&second, "a"), [1]);
        assert_eq!(partitions_of(&second, "b"), [0]);
    }

    /// Partitions of a topic a member left, or that no longer exist, are not kept.
    #[test]
    fn cooperative_drops_invalid_claims() {
        let topics = counts(&[("t", 2), ("u", 1)]);
        let members = vec![
            owning("a", &["t"], &[tp("u", 0), tp("t", 7)]),
            owning("b", &["t", "u"], &[tp("t", 0), tp("t", 1)]),
        ];
        let first = assign(AssignorKind::CooperativeSticky, &members, &topics);
        // b must give t/1 to a, and u/0 (owned by a) is withheld from b until a revokes it.
        assert_eq!(first["a"], [] as [TopicPartition; 0]);
        assert_eq!(first["b"], [tp("t", 0)]);
        let members = after_revoking(&members, &first);
        let second = assign(AssignorKind::CooperativeSticky, &members, &topics);
        assert_eq!(second["a"], [tp("t", 1)]);
        assert_eq!(second["b"], [tp("t", 0), tp("u", 0)]);
    }

    const TOPICS: [&str; 4] = ["a", "b", "c", "unknown"];

    /// Raw member: topic mask over [`TOPICS`], static or not, owned (topic index, partition),
    /// generation.
    type RawMember = (u8, bool, Vec<(usize, u32)>, i32);

    fn raw_members() -> impl Strategy<Value = Vec<RawMember>> {
        vec(
            (
                0u8..16,
                any::<bool>(),
                vec((0usize..4, 0u32..9), 0..6),
                -1i32..3,
            ),
            1..7,
        )
    }

    fn topic_counts() -> impl Strategy<Value = HashMap<String, u32>> {
        (0u32..8, 0u32..8, 0u32..8).prop_map(|(a, b, c)| counts(&[("a", a), ("b", b), ("c", c)]))
    }

    fn kinds() -> impl Strategy<Value = AssignorKind> {
        proptest::sample::select(AssignorKind::ALL.to_vec())
    }

    /// Builds the members; `shared_mask` gives them all the same subscription. Instance ids,
    /// when present, sort in the reverse order of member ids.
    fn build(raw: &[RawMember], shared_mask: Option<u8>) -> Vec<MemberSubscription> {
        raw.iter()
            .enumerate()
            .map(|(index, (mask, is_static, owned, generation))| {
                let mask = shared_mask.unwrap_or(*mask);
                MemberSubscription {
                    member_id: format!("m{index}"),
                    instance_id: is_static.then(|| format!("i{}", 9 - index)),
                    topics: (0..TOPICS.len())
                        .filter(|&topic| mask & (1 << topic) != 0)
                        .map(|topic| TOPICS[topic].to_owned())
                        .collect(),
                    owned: owned
                        .iter()
                        .map(|&(topic, p)| tp(TOPICS[topic], p))
                        .collect(),
                    generation: *generation,
                }
            })
            .collect()
    }

    /// Members that own nothing yet (eager members always report none).
    fn fresh(mut members: Vec<MemberSubscription>) -> Vec<MemberSubscription> {
        for member in &mut members {
            member.owned.clear();
            member.generation = -1;
        }
        members
    }

    proptest! {
        /// Every strategy assigns every partition exactly once, to subscribed members only,
        /// and answers every member, when nobody owns anything yet.
        #[test]
        fn complete_and_valid(raw in raw_members(), topics in topic_counts(), kind in kinds()) {
            let members = fresh(build(&raw, None));
            let assignment = assign(kind, &members, &topics);
            check_complete(&members, &topics, &assignment);
            // Eager strategies ignore ownership.
            if !kind.is_cooperative() {
                prop_assert_eq!(assign(kind, &build(&raw, None), &topics), assignment);
            }
        }

        /// Range is balanced per topic, whatever the subscriptions.
        #[test]
        fn range_balanced_per_topic(raw in raw_members(), topics in topic_counts()) {
            let members = build(&raw, None);
            let assignment = assign(AssignorKind::Range, &members, &topics);
            for topic in TOPICS {
                let per_member: Vec<usize> = members
                    .iter()
                    .filter(|m| m.topics.iter().any(|t| t == topic))
                    .map(|m| assignment[&m.member_id].iter().filter(|tp| tp.topic == topic).count())
                    .collect();
                let max = per_member.iter().max().copied().unwrap_or(0);
                let min = per_member.iter().min().copied().unwrap_or(0);
                prop_assert!(max - min <= 1, "{topic}: {per_member:?}");
            }
        }

        /// Roundrobin and a fresh cooperative-sticky group are balanced globally with
        /// identical subscriptions.
        #[test]
        fn balanced_with_identical_subscriptions(
            raw in raw_members(), mask in 0u8..16, topics in topic_counts(),
        ) {
            let members = fresh(build(&raw, Some(mask)));
            for kind in [AssignorKind::RoundRobin, AssignorKind::CooperativeSticky] {
                let assignment = assign(kind, &members, &topics);
                prop_assert!(spread(&assignment) <= 1, "{kind}: {assignment:?}");
            }
        }

        /// Whatever members claim (conflicts, stale or invalid claims), the first round never
        /// gives a member a partition that another member owns.
        #[test]
        fn cooperative_never_takes_owned(raw in raw_members(), topics in topic_counts()) {
            let members = build(&raw, None);
            let assignment = assign(AssignorKind::CooperativeSticky, &members, &topics);
            check_valid(&members, &topics, &assignment);
            for (id, partitions) in &assignment {
                for partition in partitions {
                    for other in members.iter().filter(|m| &m.member_id != id) {
                        prop_assert!(!other.owned.contains(partition), "{partition}: {id} and {}", other.member_id);
                    }
                }
            }
        }

        /// With identical subscriptions and any claims: after round 1 and the revocations,
        /// round 2 is complete and balanced, takes nothing from anybody, and the next
        /// rebalance moves nothing. Members own either what they kept (owned ∩ assigned) or,
        /// as a real consumer does, everything they were assigned.
        #[test]
        fn cooperative_two_rounds_converge(
            raw in raw_members(), mask in 0u8..16, topics in topic_counts(),
        ) {
            type Next = fn(&[MemberSubscription], &Assignment) -> Vec<MemberSubscription>;
            for next in [after_revoking as Next, owning_assignment as Next] {
                let members = build(&raw, Some(mask));
                let first = assign(AssignorKind::CooperativeSticky, &members, &topics);
                let members = next(&members, &first);
                let second = assign(AssignorKind::CooperativeSticky, &members, &topics);
                check_complete(&members, &topics, &second);
                prop_assert!(spread(&second) <= 1, "{second:?}");
                for member in &members {
                    prop_assert!(
                        partitions_to_revoke(&member.owned, &second[&member.member_id]).is_empty(),
                        "{} asked to give up a partition", member.member_id
                    );
                }
                let members = owning_assignment(&members, &second);
                let third = assign(AssignorKind::CooperativeSticky, &members, &topics);
                prop_assert_eq!(&third, &second);
            }
        }

        /// With different subscriptions, a few rebalances reach a complete assignment that
        /// the next rebalance leaves alone.
        #[test]
        fn cooperative_converges_with_different_subscriptions(
            raw in raw_members(), topics in topic_counts(),
        ) {
            let mut members = build(&raw, None);
            let mut rounds = 0;
            loop {
                let assignment = assign(AssignorKind::CooperativeSticky, &members, &topics);
                check_valid(&members, &topics, &assignment);
                if members.iter().all(|m| assignment[&m.member_id] == m.owned) {
                    check_complete(&members, &topics, &assignment);
                    break;
                }
                rounds += 1;
                prop_assert!(rounds <= 4, "no convergence: {members:?} → {assignment:?}");
                members = owning_assignment(&members, &assignment);
            }
        }

        /// With identical subscriptions and disjoint ownership, the two rounds move exactly
        /// the fewest partitions balance needs, and what a member keeps in round 1 it keeps in
        /// round 2 (whether it then owns only what it kept or all it was assigned).
        #[test]
        fn cooperative_moves_the_minimum(
            members_count in 1usize..7,
            topics in topic_counts(),
            owners in vec(0usize..10, 21),
        ) {
            type Next = fn(&[MemberSubscription], &Assignment) -> Vec<MemberSubscription>;
            let raw: Vec<RawMember> =
                (0..members_count).map(|_| (0b111, false, Vec::new(), 1)).collect();
            let mut initial = build(&raw, None);
            let all = expected_partitions(&initial, &topics);
            for (partition, &owner) in all.iter().zip(&owners) {
                if let Some(member) = initial.get_mut(owner) {
                    member.owned.push(partition.clone());
                }
            }
            let mut owned_counts: Vec<usize> = initial.iter().map(|m| m.owned.len()).collect();
            let moves_needed = moves_min(&mut owned_counts, all.len());
            for next in [after_revoking as Next, owning_assignment as Next] {
                let first = assign(AssignorKind::CooperativeSticky, &initial, &topics);
                let members = next(&initial, &first);
                let second = assign(AssignorKind::CooperativeSticky, &members, &topics);
                check_complete(&members, &topics, &second);
                prop_assert!(spread(&second) <= 1);
                let moved: usize = initial
                    .iter()
                    .map(|m| partitions_to_revoke(&m.owned, &second[&m.member_id]).len())
                    .sum();
                prop_assert_eq!(moved, moves_needed);
                for member in &members {
                    let id = &member.member_id;
                    prop_assert!(member.owned.iter().all(|tp| second[id].contains(tp)));
                }
            }
        }
    }

    /// One member joins a balanced group of three with six partitions: exactly one partition
    /// moves, the new member gets it, old members keep everything else.
    #[test]
    fn cooperative_join_moves_minimum() {
        let topics = counts(&[("t", 6)]);
        let old = vec![
            owning("a", &["t"], &[tp("t", 0), tp("t", 3)]),
            owning("b", &["t"], &[tp("t", 1), tp("t", 4)]),
            owning("c", &["t"], &[tp("t", 2), tp("t", 5)]),
        ];
        let mut members = old.clone();
        members.push(member("d", &["t"]));
        let first = assign(AssignorKind::CooperativeSticky, &members, &topics);
        let members = after_revoking(&members, &first);
        let second = assign(AssignorKind::CooperativeSticky, &members, &topics);
        check_complete(&members, &topics, &second);
        assert!((1..=2).contains(&second["d"].len()));
        let lost: usize = old
            .iter()
            .map(|m| {
                let kept = &second[&m.member_id];
                assert!(first[&m.member_id].iter().all(|tp| kept.contains(tp)));
                assert!(kept.iter().all(|tp| m.owned.contains(tp)));
                m.owned.len() - kept.len()
            })
            .sum();
        assert_eq!(lost, 1);
    }
}
