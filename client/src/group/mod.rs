//! Consumer groups: the settings ([`GroupConfig`]), what the application sees of a rebalance
//! ([`RebalanceEvent`]) and the machinery behind [`crate::Consumer::subscribe`].
//!
//! Members of a group share the partitions of the topics they subscribe to; the broker's group
//! coordinator decides who is in the group and the member it elects leader computes who reads
//! what ([`crate::assignor`]). Committed offsets let a partition's next owner resume where the
//! previous one stopped.
//!
//! # Who does what
//!
//! A background task per consumer (`membership`) talks to the coordinator: JoinGroup,
//! SyncGroup, then a Heartbeat every `heartbeat_interval`. It never touches the consumer's
//! fetch state: it publishes a *directive* (the partitions the consumer may fetch, the
//! generation, whether partitions were lost) on a watch channel, and the consumer's
//! [`crate::Consumer::poll`] applies it at its start, or as soon as it changes while poll waits
//! for fetches. The consumer answers on another watch channel: the subscription, that it is
//! polling (for the max poll interval) and the acknowledgement of a revocation. Both channels
//! hold one value, so nothing queues up when the application does not poll.
//!
//! ```text
//!   application            Consumer (poll)                    membership task       coordinator
//!   ───────────            ───────────────                    ───────────────       ───────────
//!   subscribe ───────────▶ topics ─────── AppState ─────────▶ JoinGroup ───────────▶ (held until
//!                                                                                    all rejoined)
//!                                                             ◀──────── generation, leader, members
//!                                                             leader: assignor::assign
//!                                                             SyncGroup ───────────▶
//!                                                             ◀───────────────── own assignment
//!                          ◀────────── Directive ──────────── assignment, generation
//!   ◀── Revoked(p) ─────── stop fetching p, commit p
//!                          acked ───────── AppState ────────▶ (cooperative: rejoin for round 2)
//!   ◀── Assigned(q) ────── OffsetFetch q → start there (or auto_offset_reset)
//!   ◀── records ────────── fetch; auto-commit every auto_commit_interval
//!                                                             Heartbeat every heartbeat_interval
//!                                                             RebalanceInProgress ─▶ rejoin
//!                                                             UnknownMemberId ─▶ Lost, rejoin
//!   ◀── Lost(p) ───────── drop p, no commit  ◀── Directive ─── (lost epoch bumped)
//! ```
//!
//! * Group traffic has its own connections: one pool for the membership task, one for commits
//!   and offset fetches, apart from the fetch connections. The broker answers a connection's
//!   requests in order, so a JoinGroup held for a whole rebalance, or a long-poll fetch, would
//!   otherwise hold up everything queued behind it.
//! * Eager assignors (`range`, `roundrobin`): every partition is revoked (and committed) before
//!   the member rejoins, so the whole group stops during a rebalance.
//! * `cooperative-sticky`: members keep fetching while they rejoin; after SyncGroup only the
//!   partitions taken away are revoked, then the member rejoins once more so that the follow-up
//!   rebalance hands them to their new owner. Partitions kept are never interrupted.
//!
//! Modules: `assignment` (consumer protocol payloads, assignment diffs), `commit`
//! (OffsetCommit / OffsetFetch and commit bookkeeping), `membership` (the background task),
//! `handle` (the consumer's side of the channels).

pub(crate) mod assignment;
pub(crate) mod commit;
#[cfg(test)]
pub(crate) mod fake;
mod handle;
pub(crate) mod membership;

use std::collections::HashSet;
use std::time::Duration;

pub use crate::assignor::AssignorKind;
use crate::cluster::TopicPartition;
use crate::consumer::Offset;
use crate::error::ClientError;

pub(crate) use handle::GroupHandle;

/// Settings of a consumer's group membership ([`crate::ConsumerConfig::group`]).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group to join (1..=255 bytes). Consumers with the same group id share partitions
    /// and committed offsets.
    pub group_id: String,
    /// Static membership: a stable id per consumer instance. A static member that restarts
    /// within the session timeout gets its partitions back without a rebalance; it does not
    /// leave the group on [`crate::Consumer::close`].
    pub instance_id: Option<String>,
    /// Free-form client name shown by `group describe`. Default `sluice-client`.
    pub client_id: String,
    /// The coordinator removes the member when it hears nothing from it for this long.
    /// Default 10 s; the broker accepts 500 ms ..= 30 min by default.
    pub session_timeout: Duration,
    /// Pause between heartbeats. Default 3 s; must be below `session_timeout` (a third of it
    /// leaves room for two lost heartbeats).
    pub heartbeat_interval: Duration,
    /// Longest time between two calls to [`crate::Consumer::poll`] before the member leaves
    /// the group (its partitions go to others); also the rebalance timeout sent in JoinGroup,
    /// how long the coordinator waits for members to rejoin. Default 300 s.
    pub max_poll_interval: Duration,
    /// Assignment strategies this member supports, most preferred first; the group uses one
    /// every member supports. Default `[CooperativeSticky, Range]`.
    pub assignors: Vec<AssignorKind>,
    /// Commit policy: when positions are committed relative to handing records out.
    /// Default [`Delivery::AtLeastOnce`].
    pub delivery: Delivery,
    /// With [`Delivery::AtLeastOnce`]: commit positions in the background every
    /// `auto_commit_interval`, on revocation and on close. Default true.
    pub auto_commit: bool,
    /// Pause between automatic commits. Default 5 s.
    pub auto_commit_interval: Duration,
    /// Where a newly assigned partition starts when the group has no committed offset for it.
    /// Default [`Offset::Latest`].
    pub auto_offset_reset: Offset,
}

impl GroupConfig {
    /// Defaults for group `group_id`.
    pub fn new(group_id: impl Into<String>) -> Self {
        GroupConfig {
            group_id: group_id.into(),
            instance_id: None,
            client_id: "sluice-client".to_owned(),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            assignors: vec![AssignorKind::CooperativeSticky, AssignorKind::Range],
            delivery: Delivery::AtLeastOnce,
            auto_commit: true,
            auto_commit_interval: Duration::from_secs(5),
            auto_offset_reset: Offset::Latest,
        }
    }

    /// Checks the values (the broker checks the session timeout against its own bounds).
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |message: String| Err(ClientError::Config(message));
        let group_id_len = self.group_id.len();
        if group_id_len == 0 || group_id_len > wire::protocol::GROUP_ID_MAX_LEN {
            return invalid(format!(
                "group_id must be 1..={} bytes, not {group_id_len}",
                wire::protocol::GROUP_ID_MAX_LEN
            ));
        }
        if self.instance_id.as_deref().is_some_and(str::is_empty) {
            return invalid("instance_id must not be empty (use None)".into());
        }
        for (name, value) in [
            ("session_timeout", self.session_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("max_poll_interval", self.max_poll_interval),
        ] {
            if value.is_zero() || millis(value).is_none() {
                return invalid(format!("{name} must be between 1 ms and {} ms", u32::MAX));
            }
        }
        if self.heartbeat_interval >= self.session_timeout {
            return invalid(format!(
                "heartbeat_interval ({:?}) must be below session_timeout ({:?})",
                self.heartbeat_interval, self.session_timeout
            ));
        }
        if self.assignors.is_empty() {
            return invalid("assignors must list at least one strategy".into());
        }
        let mut seen = HashSet::new();
        if let Some(repeated) = self.assignors.iter().find(|kind| !seen.insert(**kind)) {
            return invalid(format!("assignor {repeated} is listed twice"));
        }
        if self.auto_commit && self.auto_commit_interval.is_zero() {
            return invalid("auto_commit_interval must be positive".into());
        }
        Ok(())
    }

    /// True for a static member.
    pub(crate) fn is_static(&self) -> bool {
        self.instance_id.is_some()
    }

    /// True when positions are committed in the background and on revocation / close.
    pub(crate) fn commits_automatically(&self) -> bool {
        self.delivery == Delivery::AtLeastOnce && self.auto_commit
    }
}

/// `duration` in whole milliseconds, if it fits in the wire's `u32`.
pub(crate) fn millis(duration: Duration) -> Option<u32> {
    u32::try_from(duration.as_millis()).ok()
}

/// When positions are committed relative to handing records to the application, i.e. what a
/// crash while processing costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Positions are committed after the application had the records (automatically at the
    /// next polls, on revocation and on close, or by hand): a crash redelivers the records
    /// processed since the last commit, none is lost.
    #[default]
    AtLeastOnce,
    /// [`crate::Consumer::poll`] commits the new positions before it returns the records: a
    /// crash while processing loses those records, none is delivered twice.
    AtMostOnce,
}

/// A change of the consumer's assignment, passed to the [`crate::Consumer::on_rebalance`]
/// callback from inside [`crate::Consumer::poll`] (or [`crate::Consumer::close`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were added. Called before any of their records is returned.
    Assigned(Vec<TopicPartition>),
    /// These partitions were taken away in an orderly way: no more of their records will be
    /// returned, and their positions are committed (with auto-commit) right after the
    /// callback. The place to flush work derived from them.
    Revoked(Vec<TopicPartition>),
    /// These partitions were lost: the member fell out of the group (session expired, fenced,
    /// max poll interval exceeded), so another member may own them already and committing
    /// their positions would fail. Nothing was committed.
    Lost(Vec<TopicPartition>),
}

impl RebalanceEvent {
    /// The partitions the event is about.
    pub fn partitions(&self) -> &[TopicPartition] {
        match self {
            RebalanceEvent::Assigned(partitions)
            | RebalanceEvent::Revoked(partitions)
            | RebalanceEvent::Lost(partitions) => partitions,
        }
    }
}

/// Who this consumer is in its group right now: what a transactional producer needs to commit
/// offsets as part of a transaction (fenced by generation like a consumer's own commit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    /// The group id.
    pub group_id: String,
    /// Current generation; -1 before the first join (or with manual assignment).
    pub generation: i32,
    /// Member id given by the coordinator; empty before the first join.
    pub member_id: String,
    /// Static instance id, if any.
    pub instance_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults are valid and match the documented values.
    #[test]
    fn defaults() {
        let config = GroupConfig::new("g");
        assert!(config.validate().is_ok());
        assert_eq!(config.client_id, "sluice-client");
        assert_eq!(config.session_timeout, Duration::from_secs(10));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(config.max_poll_interval, Duration::from_secs(300));
        assert_eq!(
            config.assignors,
            vec![AssignorKind::CooperativeSticky, AssignorKind::Range]
        );
        assert_eq!(config.delivery, Delivery::AtLeastOnce);
        assert!(config.auto_commit && config.commits_automatically());
        assert_eq!(config.auto_offset_reset, Offset::Latest);
        assert!(!config.is_static());
    }

    /// Each rule of `validate` rejects what it should.
    #[test]
    fn validation() {
        let check = |change: &dyn Fn(&mut GroupConfig)| {
            let mut config = GroupConfig::new("g");
            change(&mut config);
            config.validate()
        };
        assert!(check(&|c| c.group_id.clear()).is_err());
        assert!(check(&|c| c.group_id = "x".repeat(256)).is_err());
        assert!(check(&|c| c.group_id = "x".repeat(255)).is_ok());
        assert!(check(&|c| c.instance_id = Some(String::new())).is_err());
        assert!(check(&|c| c.instance_id = Some("i-1".into())).is_ok());
        assert!(check(&|c| c.session_timeout = Duration::ZERO).is_err());
        assert!(check(&|c| c.max_poll_interval = Duration::from_secs(u64::MAX / 4)).is_err());
        assert!(check(&|c| c.heartbeat_interval = c.session_timeout).is_err());
        assert!(check(&|c| c.heartbeat_interval = Duration::ZERO).is_err());
        assert!(check(&|c| c.assignors.clear()).is_err());
        assert!(check(&|c| c.assignors = vec![AssignorKind::Range, AssignorKind::Range]).is_err());
        assert!(check(&|c| c.auto_commit_interval = Duration::ZERO).is_err());
        // Without auto-commit the interval is irrelevant.
        assert!(check(&|c| {
            c.auto_commit = false;
            c.auto_commit_interval = Duration::ZERO;
        })
        .is_ok());
        assert!(!check_static_at_most_once().commits_automatically());
    }

    fn check_static_at_most_once() -> GroupConfig {
        GroupConfig {
            delivery: Delivery::AtMostOnce,
            instance_id: Some("i".into()),
            ..GroupConfig::new("g")
        }
    }

    /// Events expose their partitions whatever their kind.
    #[test]
    fn event_partitions() {
        let tp = TopicPartition::new("t", 1);
        for event in [
            RebalanceEvent::Assigned(vec![tp.clone()]),
            RebalanceEvent::Revoked(vec![tp.clone()]),
            RebalanceEvent::Lost(vec![tp.clone()]),
        ] {
            assert_eq!(event.partitions(), std::slice::from_ref(&tp));
        }
        assert!(check_static_at_most_once().is_static());
    }
}
