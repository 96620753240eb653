//! One consumer group's membership state machine, as its coordinator holds it. Pure logic:
//! time comes in as `now`, held requests are answered through reply channels, and nothing here
//! does I/O, so every transition is unit-tested.
//!
//! ```text
//!            join (first member)                     all members joined
//!   Empty ─────────────────────▶ PreparingRebalance ───────────────────▶ CompletingRebalance
//!     ▲      (initial delay)        ▲    │ rebalance timeout: laggards removed      │
//!     │                             │    │                                          │ leader's
//!     │ last member leaves/expires  │    ▼                                          │ SyncGroup
//!     └─────────────────────────────┴── join / leave / expiry ◀──── Stable ◀───────┘
//! ```
//!
//! Joins are held until every member has (re)joined; the leader (kept across generations while
//! it stays) gets every member's metadata and computes the assignment on the client, which it
//! hands back in its SyncGroup. A static member (with an instance id) that comes back under a
//! new member id while the group is Stable takes over its old slot and assignment with no
//! rebalance.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wire::protocol::{
    DescribedGroup, DescribedMember, ErrorCode, JoinGroupMember, JoinGroupRequest,
    JoinGroupResponse, ListedGroup, SyncGroupRequest, SyncGroupResponse, WireError,
};

use crate::shard::bus::{reply_channel, Reply};

/// A held JoinGroup's answer.
pub type JoinReply = Result<JoinGroupResponse, WireError>;
/// A held SyncGroup's answer.
pub type SyncReply = Result<SyncGroupResponse, WireError>;

/// The phases of a group (Kafka's names, shown by describe and list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members (there may be committed offsets).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl GroupState {
    /// The name shown to people and tools.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

pub use crate::config::GroupLimits;

/// One member.
#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    /// Supported protocols with their metadata, in preference order.
    protocols: Vec<(String, Vec<u8>)>,
    /// Current assignment (from the leader's last SyncGroup).
    assignment: Vec<u8>,
    /// Last request heard from it.
    last_seen: Instant,
    /// Order of (re)joining in this rebalance: the first becomes leader if none is kept.
    join_order: u64,
    pending_join: Option<Reply<JoinReply>>,
    pending_sync: Option<Reply<SyncReply>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Vec<u8> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }
}

/// What a join produced: an answer now, or one to wait for.
pub enum JoinOutcome {
    /// Answered at once (errors, static member rejoins).
    Now(JoinReply),
    /// Held until the join phase completes.
    Wait(flume::Receiver<JoinReply>),
}

/// What a sync produced.
pub enum SyncOutcome {
    /// Answered at once.
    Now(SyncReply),
    /// Held until the leader's assignment arrives.
    Wait(flume::Receiver<SyncReply>),
}

/// Membership of one group.
#[derive(Debug)]
pub struct Group {
    id: String,
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static instance id → member id.
    instances: BTreeMap<String, String>,
    /// When the current join phase gives up on members that have not rejoined.
    rebalance_deadline: Option<Instant>,
    /// A join phase of a group that was empty does not complete before this.
    initial_delay_until: Option<Instant>,
    /// When CompletingRebalance gives up on a leader that has not sent the assignment.
    sync_deadline: Option<Instant>,
    next_join_order: u64,
}

fn error<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, WireError> {
    Err(WireError::new(code, message))
}

impl Group {
    /// A new, empty group.
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_owned(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            instances: BTreeMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            next_join_order: 0,
        }
    }

    /// Current phase.
    #[cfg(test)]
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// True when the group has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Handles a JoinGroup. `member_id` is the id given to a new member.
    pub fn join(
        &mut self,
        request: &JoinGroupRequest,
        new_member_id: impl FnOnce() -> String,
        client_host: &str,
        limits: &GroupLimits,
        now: Instant,
    ) -> JoinOutcome {
        let session_timeout = Duration::from_millis(u64::from(request.session_timeout_ms));
        if session_timeout < limits.min_session_timeout
            || session_timeout > limits.max_session_timeout
        {
            return JoinOutcome::Now(error(
                ErrorCode::InvalidSessionTimeout,
                format!(
                    "session timeout {} ms is outside [{}, {}] ms",
                    request.session_timeout_ms,
                    limits.min_session_timeout.as_millis(),
                    limits.max_session_timeout.as_millis()
                ),
            ));
        }
        if request.protocols.is_empty() || request.protocol_type.is_empty() {
            return JoinOutcome::Now(error(
                ErrorCode::InconsistentGroupProtocol,
                "a member must name its protocol type and at least one protocol",
            ));
        }
        if !self.members.is_empty() && request.protocol_type != self.protocol_type {
            return JoinOutcome::Now(error(
                ErrorCode::InconsistentGroupProtocol,
                format!(
                    "group {:?} uses protocol type {:?}, not {:?}",
                    self.id, self.protocol_type, request.protocol_type
                ),
            ));
        }
        let others_share_a_protocol = request.protocols.iter().any(|p| {
            self.members
                .iter()
                .filter(|(id, _)| **id != request.member_id)
                .all(|(_, m)| m.supports(&p.name))
        });
        if !others_share_a_protocol {
            return JoinOutcome::Now(error(
                ErrorCode::InconsistentGroupProtocol,
                format!(
                    "none of the protocols {:?} is supported by every member of group {:?}",
                    request
                        .protocols
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>(),
                    self.id
                ),
            ));
        }
        let protocols: Vec<(String, Vec<u8>)> = request
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        let rebalance_timeout = Duration::from_millis(u64::from(request.rebalance_timeout_ms))
            .max(Duration::from_millis(1));

        // A static member coming back (a restart: new or empty member id).
        if let Some(instance) = &request.group_instance_id {
            if let Some(old_id) = self.instances.get(instance).cloned() {
                if request.member_id != old_id {
                    if !request.member_id.is_empty() {
                        return JoinOutcome::Now(error(
                            ErrorCode::FencedInstanceId,
                            format!(
                                "instance {instance:?} of group {:?} belongs to another member",
                                self.id
                            ),
                        ));
                    }
                    let new_id = new_member_id();
                    self.replace_static_member(&old_id, &new_id, instance);
                    if let Some(member) = self.members.get_mut(&new_id) {
                        member.protocols = protocols.clone();
                        member.session_timeout = session_timeout;
                        member.rebalance_timeout = rebalance_timeout;
                        member.client_id = request.client_id.clone();
                        member.client_host = client_host.to_owned();
                        member.last_seen = now;
                    }
                    if self.state == GroupState::Stable {
                        let protocol = self.protocol.clone().unwrap_or_default();
                        let still_supported = protocols.iter().any(|(name, _)| *name == protocol);
                        if still_supported {
                            let leader = self.leader.clone().unwrap_or_default();
                            return JoinOutcome::Now(Ok(JoinGroupResponse {
                                generation: self.generation,
                                protocol_name: protocol,
                                skip_assignment: leader == new_id,
                                leader,
                                member_id: new_id,
                                members: Vec::new(),
                            }));
                        }
                    }
                    return self.rejoin(&new_id, now, limits);
                }
            }
        }

        if request.member_id.is_empty() {
            if self.members.len() >= limits.max_members {
                return JoinOutcome::Now(error(
                    ErrorCode::GroupMaxSizeReached,
                    format!(
                        "group {:?} already has {} members, the most allowed",
                        self.id, limits.max_members
                    ),
                ));
            }
            let member_id = new_member_id();
            if let Some(instance) = &request.group_instance_id {
                self.instances.insert(instance.clone(), member_id.clone());
            }
            if self.members.is_empty() {
                self.protocol_type = request.protocol_type.clone();
            }
            self.members.insert(
                member_id.clone(),
                Member {
                    instance_id: request.group_instance_id.clone(),
                    client_id: request.client_id.clone(),
                    client_host: client_host.to_owned(),
                    session_timeout,
                    rebalance_timeout,
                    protocols,
                    assignment: Vec::new(),
                    last_seen: now,
                    join_order: 0,
                    pending_join: None,
                    pending_sync: None,
                },
            );
            return self.rejoin(&member_id, now, limits);
        }

        let Some(member) = self.members.get_mut(&request.member_id) else {
            return JoinOutcome::Now(self.unknown_member(&request.member_id, None));
        };
        if let Some(instance) = &request.group_instance_id {
            if member.instance_id.as_deref() != Some(instance.as_str()) {
                return JoinOutcome::Now(error(
                    ErrorCode::FencedInstanceId,
                    format!(
                        "member {:?} is not instance {instance:?}",
                        request.member_id
                    ),
                ));
            }
        }
        member.protocols = protocols;
        member.session_timeout = session_timeout;
        member.rebalance_timeout = rebalance_timeout;
        member.last_seen = now;
        let member_id = request.member_id.clone();
        self.rejoin(&member_id, now, limits)
    }

    /// Marks `member_id` as joined for this rebalance (starting one if needed) and holds its
    /// answer.
    fn rejoin(&mut self, member_id: &str, now: Instant, limits: &GroupLimits) -> JoinOutcome {
        match self.state {
            GroupState::Empty => {
                self.start_rebalance(now);
                self.initial_delay_until = Some(now + limits.initial_rebalance_delay);
            }
            GroupState::Stable | GroupState::CompletingRebalance => self.start_rebalance(now),
            GroupState::PreparingRebalance => {}
        }
        let (reply, answer) = reply_channel();
        let order = self.next_join_order;
        self.next_join_order += 1;
        if let Some(member) = self.members.get_mut(member_id) {
            if let Some(previous) = member.pending_join.replace(reply) {
                let _ = previous.send(error(
                    ErrorCode::RebalanceInProgress,
                    "superseded by a newer JoinGroup from the same member",
                ));
            }
            member.join_order = order;
        }
        self.maybe_complete_join(now);
        JoinOutcome::Wait(answer)
    }

    /// Enters PreparingRebalance: held syncs are told to rejoin, members learn it from their
    /// heartbeats.
    fn start_rebalance(&mut self, now: Instant) {
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(1));
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
        self.initial_delay_until = None;
        self.sync_deadline = None;
        for member in self.members.values_mut() {
            if let Some(sync) = member.pending_sync.take() {
                let _ = sync.send(error(
                    ErrorCode::RebalanceInProgress,
                    "the group is rebalancing: rejoin",
                ));
            }
        }
    }

    /// Completes the join phase when every member has rejoined (after the initial delay), or
    /// when the rebalance timeout has passed (dropping those that did not).
    pub fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.pending_join.is_some());
        let timed_out = self.rebalance_deadline.is_some_and(|d| now >= d);
        let delayed = self.initial_delay_until.is_some_and(|d| now < d);
        if !(timed_out || (all_joined && !delayed)) {
            return;
        }
        // Members whose held join nobody waits for any more (the client went away or gave up)
        // would get partitions they never consume: they go now, not at their session timeout.
        let abandoned: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.pending_join.as_ref().is_some_and(|r| r.is_disconnected()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in abandoned {
            tracing::info!(group = self.id, member = id, "member abandoned its join");
            self.remove_member(&id);
        }
        if timed_out {
            let laggards: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| m.pending_join.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in laggards {
                tracing::info!(
                    group = self.id,
                    member = id,
                    "member did not rejoin in time"
                );
                self.remove_member(&id);
            }
        }
        self.rebalance_deadline = None;
        self.initial_delay_until = None;
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        let protocol = self.choose_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.join_order)
                .map(|(id, _)| id.clone());
        }
        let leader = self.leader.clone().unwrap_or_default();
        let everyone: Vec<JoinGroupMember> = self
            .members
            .iter()
            .map(|(id, m)| JoinGroupMember {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        self.state = GroupState::CompletingRebalance;
        let sync_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(1));
        self.sync_deadline = Some(now + sync_timeout);
        self.protocol = Some(protocol.clone());
        for (id, member) in &mut self.members {
            member.assignment.clear();
            member.last_seen = now;
            if let Some(reply) = member.pending_join.take() {
                let _ = reply.send(Ok(JoinGroupResponse {
                    generation: self.generation,
                    protocol_name: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    skip_assignment: false,
                    members: if *id == leader {
                        everyone.clone()
                    } else {
                        Vec::new()
                    },
                }));
            }
        }
        tracing::info!(
            group = self.id,
            generation = self.generation,
            protocol,
            leader,
            members = self.members.len(),
            "group rebalanced"
        );
    }

    /// The protocol every member supports that most members prefer (first choice votes; ties
    /// go to the earlier in the leader-candidate's list).
    fn choose_protocol(&self) -> String {
        let Some(first) = self.members.values().min_by_key(|m| m.join_order) else {
            return String::new();
        };
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.supports(name)))
            .collect();
        let mut best: Option<(&String, usize)> = None;
        for candidate in candidates {
            let votes = self
                .members
                .values()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(name, _)| name)
                        .find(|name| self.members.values().all(|o| o.supports(name)))
                        == Some(candidate)
                })
                .count();
            if best.is_none_or(|(_, most)| votes > most) {
                best = Some((candidate, votes));
            }
        }
        best.map(|(name, _)| name.clone()).unwrap_or_default()
    }

    /// Handles a SyncGroup.
    pub fn sync(&mut self, request: &SyncGroupRequest, now: Instant) -> SyncOutcome {
        if let Err(e) = self.check_member(
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation,
            now,
        ) {
            return SyncOutcome::Now(Err(e));
        }
        match self.state {
            GroupState::Empty | GroupState::PreparingRebalance => SyncOutcome::Now(error(
                ErrorCode::RebalanceInProgress,
                "the group is rebalancing: rejoin",
            )),
            GroupState::Stable => SyncOutcome::Now(Ok(SyncGroupResponse {
                assignment: self
                    .members
                    .get(&request.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default(),
            })),
            GroupState::CompletingRebalance => {
                let (reply, answer) = reply_channel();
                if let Some(member) = self.members.get_mut(&request.member_id) {
                    if let Some(previous) = member.pending_sync.replace(reply) {
                        let _ = previous.send(error(
                            ErrorCode::RebalanceInProgress,
                            "superseded by a newer SyncGroup from the same member",
                        ));
                    }
                }
                if self.leader.as_deref() == Some(request.member_id.as_str()) {
                    for assignment in &request.assignments {
                        if let Some(member) = self.members.get_mut(&assignment.member_id) {
                            member.assignment = assignment.assignment.clone();
                        }
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    for member in self.members.values_mut() {
                        if let Some(reply) = member.pending_sync.take() {
                            let _ = reply.send(Ok(SyncGroupResponse {
                                assignment: member.assignment.clone(),
                            }));
                        }
                    }
                    tracing::debug!(
                        group = self.id,
                        generation = self.generation,
                        "assignment distributed"
                    );
                }
                SyncOutcome::Wait(answer)
            }
        }
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), WireError> {
        self.check_member(member_id, instance_id, generation, now)?;
        if self.state == GroupState::PreparingRebalance {
            return error(
                ErrorCode::RebalanceInProgress,
                "the group is rebalancing: rejoin",
            );
        }
        Ok(())
    }

    /// Handles a LeaveGroup: the member goes, the others rebalance.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), WireError> {
        let id = match instance_id {
            Some(instance) => match self.instances.get(instance) {
                Some(id) if member_id.is_empty() || id == member_id => id.clone(),
                Some(_) => {
                    return error(
                        ErrorCode::FencedInstanceId,
                        format!("instance {instance:?} belongs to another member"),
                    )
                }
                None => return self.unknown_member(member_id, Some(instance)),
            },
            None => member_id.to_owned(),
        };
        if !self.members.contains_key(&id) {
            return self.unknown_member(&id, None);
        }
        tracing::info!(group = self.id, member = id, "member left");
        self.remove_member(&id);
        self.after_departure(now);
        Ok(())
    }

    /// Removes members whose session expired (not those held in a join or a sync: they are
    /// waiting on the coordinator, not silent), and, when the leader has not sent the
    /// assignment within the rebalance timeout, every member that has not synced (the leader
    /// included); returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let sync_overdue = self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| now >= d);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                let waiting = m.pending_join.is_some() || m.pending_sync.is_some();
                let silent = now >= m.last_seen + m.session_timeout;
                (!waiting && silent) || (sync_overdue && m.pending_sync.is_none())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            tracing::info!(group = self.id, member = id, "member session expired");
            self.remove_member(id);
        }
        if !expired.is_empty() {
            self.after_departure(now);
        }
        self.maybe_complete_join(now);
        expired
    }

    /// Answers every held join and sync with `CoordinatorNotAvailable` (the broker is
    /// stopping): clients find the coordinator again once it is back.
    pub fn release_waiters(&mut self) {
        for member in self.members.values_mut() {
            if let Some(reply) = member.pending_join.take() {
                let _ = reply.send(error(
                    ErrorCode::CoordinatorNotAvailable,
                    "the coordinator is shutting down",
                ));
            }
            if let Some(reply) = member.pending_sync.take() {
                let _ = reply.send(error(
                    ErrorCode::CoordinatorNotAvailable,
                    "the coordinator is shutting down",
                ));
            }
        }
    }

    /// After members left: rebalance the rest, or become empty.
    fn after_departure(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation = self.generation.wrapping_add(1).max(1);
            self.protocol = None;
            self.leader = None;
            self.rebalance_deadline = None;
            self.initial_delay_until = None;
            return;
        }
        if self.state != GroupState::PreparingRebalance {
            self.start_rebalance(now);
        }
        self.maybe_complete_join(now);
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(member) = self.members.remove(id) {
            if let Some(instance) = &member.instance_id {
                if self.instances.get(instance).is_some_and(|m| m == id) {
                    self.instances.remove(instance);
                }
            }
            if let Some(reply) = member.pending_join {
                let _ = reply.send(error(ErrorCode::UnknownMemberId, "removed from the group"));
            }
            if let Some(reply) = member.pending_sync {
                let _ = reply.send(error(ErrorCode::UnknownMemberId, "removed from the group"));
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Moves a static member's slot to a new member id, fencing the old one.
    fn replace_static_member(&mut self, old_id: &str, new_id: &str, instance: &str) {
        if let Some(mut member) = self.members.remove(old_id) {
            if let Some(reply) = member.pending_join.take() {
                let _ = reply.send(error(
                    ErrorCode::FencedInstanceId,
                    "a newer instance with the same instance id joined",
                ));
            }
            if let Some(reply) = member.pending_sync.take() {
                let _ = reply.send(error(
                    ErrorCode::FencedInstanceId,
                    "a newer instance with the same instance id joined",
                ));
            }
            self.members.insert(new_id.to_owned(), member);
        }
        self.instances
            .insert(instance.to_owned(), new_id.to_owned());
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.to_owned());
        }
        tracing::info!(
            group = self.id,
            instance,
            old = old_id,
            new = new_id,
            "static member rejoined"
        );
    }

    /// Checks that a request comes from a current member of the current generation, and
    /// refreshes its session.
    fn check_member(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), WireError> {
        if let Some(instance) = instance_id {
            if let Some(owner) = self.instances.get(instance) {
                if owner != member_id {
                    return error(
                        ErrorCode::FencedInstanceId,
                        format!("instance {instance:?} now belongs to member {owner:?}"),
                    );
                }
            }
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return self.unknown_member(member_id, instance_id);
        };
        member.last_seen = now;
        if generation != self.generation {
            return error(
                ErrorCode::IllegalGeneration,
                format!(
                    "generation {generation} is not the group's current {}",
                    self.generation
                ),
            );
        }
        Ok(())
    }

    fn unknown_member<T>(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<T, WireError> {
        if let Some(instance) = instance_id {
            if self.instances.contains_key(instance) {
                return error(
                    ErrorCode::FencedInstanceId,
                    format!("instance {instance:?} belongs to another member"),
                );
            }
        }
        error(
            ErrorCode::UnknownMemberId,
            format!("member {member_id:?} is not in group {:?}: rejoin", self.id),
        )
    }

    /// Checks that an offset commit may be applied: from a current member of the current
    /// generation, or (generation -1, no member id) for a group without members.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), WireError> {
        if generation < 0 && member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return error(
                ErrorCode::NonEmptyGroup,
                format!(
                    "group {:?} has {} active members: only they may commit",
                    self.id,
                    self.members.len()
                ),
            );
        }
        self.check_member(member_id, instance_id, generation, now)
    }

    /// The group as ListGroups shows it.
    pub fn listing(&self) -> ListedGroup {
        ListedGroup {
            group_id: self.id.clone(),
            state: self.state.name().to_owned(),
            protocol_type: self.protocol_type.clone(),
            members: self.members.len() as u32,
        }
    }

    /// The group as DescribeGroups shows it.
    pub fn describe(&self) -> DescribedGroup {
        let protocol = self.protocol.clone().unwrap_or_default();
        DescribedGroup {
            group_id: self.id.clone(),
            error: WireError::none(),
            state: self.state.name().to_owned(),
            protocol_type: self.protocol_type.clone(),
            protocol: protocol.clone(),
            generation: self.generation,
            leader: self.leader.clone().unwrap_or_default(),
            members: self
                .members
                .iter()
                .map(|(id, m)| DescribedMember {
                    member_id: id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wire::protocol::{JoinGroupProtocol, SyncGroupAssignment};

    fn limits() -> GroupLimits {
        GroupLimits {
            min_session_timeout: Duration::from_millis(100),
            max_session_timeout: Duration::from_secs(60),
            initial_rebalance_delay: Duration::ZERO,
            max_members: 3,
        }
    }

    fn join_request(
        member_id: &str,
        instance: Option<&str>,
        protocols: &[&str],
    ) -> JoinGroupRequest {
        JoinGroupRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_owned),
            client_id: "c".into(),
            session_timeout_ms: 1000,
            rebalance_timeout_ms: 5000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|name| JoinGroupProtocol {
                    name: (*name).into(),
                    metadata: name.as_bytes().to_vec(),
                })
                .collect(),
        }
    }

    fn wait(outcome: JoinOutcome) -> flume::Receiver<JoinReply> {
        match outcome {
            JoinOutcome::Wait(answer) => answer,
            JoinOutcome::Now(reply) => panic!("answered at once: {reply:?}"),
        }
    }

    fn join_new(group: &mut Group, id: &str, now: Instant) -> flume::Receiver<JoinReply> {
        let id = id.to_owned();
        wait(group.join(
            &join_request("", None, &["range"]),
            || id,
            "h",
            &limits(),
            now,
        ))
    }

    fn sync(
        group: &mut Group,
        id: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
        now: Instant,
    ) -> SyncOutcome {
        group.sync(
            &SyncGroupRequest {
                group_id: "g".into(),
                generation,
                member_id: id.into(),
                group_instance_id: None,
                assignments: assignments
                    .iter()
                    .map(|(member, bytes)| SyncGroupAssignment {
                        member_id: (*member).into(),
                        assignment: bytes.to_vec(),
                    })
                    .collect(),
            },
            now,
        )
    }

    /// One member: join, sync, stable; a second member triggers a rebalance that the first
    /// learns from its heartbeat, and completes once both joined.
    #[test]
    fn join_sync_heartbeat_rebalance() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        let a = join_new(&mut group, "a", t0);
        let joined = a.try_recv().unwrap().unwrap();
        assert_eq!((joined.generation, joined.leader.as_str()), (1, "a"));
        assert_eq!(joined.members.len(), 1);
        assert!(
            matches!(sync(&mut group, "a", 1, &[("a", b"A")], t0), SyncOutcome::Wait(r) if r.try_recv().unwrap().unwrap().assignment == b"A")
        );
        assert_eq!(group.state(), GroupState::Stable);
        assert!(group.heartbeat("a", None, 1, t0).is_ok());

        let b = join_new(&mut group, "b", t0);
        assert!(b.try_recv().is_err(), "held until a rejoins");
        assert_eq!(
            group.heartbeat("a", None, 1, t0).unwrap_err().code,
            ErrorCode::RebalanceInProgress
        );
        let a = wait(group.join(
            &join_request("a", None, &["range"]),
            || unreachable!(),
            "h",
            &limits(),
            t0,
        ));
        let (ja, jb) = (
            a.try_recv().unwrap().unwrap(),
            b.try_recv().unwrap().unwrap(),
        );
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!(ja.leader, "a", "the leader is kept");
        assert_eq!((ja.members.len(), jb.members.len()), (2, 0));
        let SyncOutcome::Wait(follower) = sync(&mut group, "b", 2, &[], t0) else {
            panic!()
        };
        assert!(follower.try_recv().is_err(), "waits for the leader");
        assert_eq!(
            sync(&mut group, "a", 1, &[], t0).now_error(),
            Some(ErrorCode::IllegalGeneration)
        );
        let SyncOutcome::Wait(leader) = sync(&mut group, "a", 2, &[("a", b"A2"), ("b", b"B2")], t0)
        else {
            panic!()
        };
        assert_eq!(leader.try_recv().unwrap().unwrap().assignment, b"A2");
        assert_eq!(follower.try_recv().unwrap().unwrap().assignment, b"B2");
        assert_eq!(group.describe().members.len(), 2);
    }

    /// A silent member is removed after its session timeout; one that never rejoins a
    /// rebalance is removed at the rebalance timeout.
    #[test]
    fn expiry_and_rebalance_timeout() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        let a = join_new(&mut group, "a", t0);
        a.try_recv().unwrap().unwrap();
        let b = join_new(&mut group, "b", t0);
        // a never rejoins nor heartbeats: at its session timeout (1 s) it is expired, and b's
        // join completes alone.
        assert!(group.expire(t0 + Duration::from_millis(999)).is_empty());
        assert_eq!(
            group.expire(t0 + Duration::from_millis(1000)),
            vec!["a".to_owned()]
        );
        let joined = b.try_recv().unwrap().unwrap();
        assert_eq!((joined.generation, joined.leader.as_str()), (2, "b"));

        // a heartbeating member that never rejoins is dropped at the rebalance timeout (5 s).
        let t1 = t0 + Duration::from_secs(2);
        let SyncOutcome::Wait(_) = sync(&mut group, "b", 2, &[("b", b"B")], t1) else {
            panic!()
        };
        let c = join_new(&mut group, "c", t1);
        for step in 1..=6 {
            let now = t1 + Duration::from_millis(900 * step);
            let _ = group.heartbeat("b", None, 2, now);
            group.expire(now);
        }
        let joined = c.try_recv().unwrap().unwrap();
        assert_eq!(joined.generation, 3);
        assert_eq!(group.describe().members.len(), 1);
    }

    /// A static member restarting (empty member id, same instance id) keeps its slot and its
    /// assignment with no new generation; its old id is fenced.
    #[test]
    fn static_member_rejoins_without_rebalance() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        let a = wait(group.join(
            &join_request("", Some("i-a"), &["range"]),
            || "a1".into(),
            "h",
            &limits(),
            t0,
        ));
        a.try_recv().unwrap().unwrap();
        let b = join_new(&mut group, "b", t0);
        let a = wait(group.join(
            &join_request("a1", Some("i-a"), &["range"]),
            || unreachable!(),
            "h",
            &limits(),
            t0,
        ));
        let _ = (
            a.try_recv().unwrap().unwrap(),
            b.try_recv().unwrap().unwrap(),
        );
        let SyncOutcome::Wait(_) = sync(&mut group, "b", 2, &[], t0) else {
            panic!()
        };
        let SyncOutcome::Wait(_) = sync(&mut group, "a1", 2, &[("a1", b"A"), ("b", b"B")], t0)
        else {
            panic!()
        };
        assert_eq!(group.state(), GroupState::Stable);

        let JoinOutcome::Now(Ok(back)) = group.join(
            &join_request("", Some("i-a"), &["range"]),
            || "a2".into(),
            "h",
            &limits(),
            t0,
        ) else {
            panic!("a static rejoin is answered at once")
        };
        assert_eq!(
            (
                back.generation,
                back.member_id.as_str(),
                back.leader.as_str()
            ),
            (2, "a2", "a2")
        );
        assert!(back.skip_assignment);
        assert_eq!(group.state(), GroupState::Stable);
        let SyncOutcome::Now(Ok(assignment)) = group.sync(
            &SyncGroupRequest {
                group_id: "g".into(),
                generation: 2,
                member_id: "a2".into(),
                group_instance_id: Some("i-a".into()),
                assignments: vec![],
            },
            t0,
        ) else {
            panic!()
        };
        assert_eq!(assignment.assignment, b"A");
        assert_eq!(
            group.heartbeat("a1", Some("i-a"), 2, t0).unwrap_err().code,
            ErrorCode::FencedInstanceId
        );
        assert!(
            group.heartbeat("b", None, 2, t0).is_ok(),
            "no rebalance for the others"
        );
    }

    /// Commits: members of the current generation only; generation -1 only for an empty group.
    #[test]
    fn commit_fencing() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        assert!(group.check_commit("", None, -1, t0).is_ok());
        let a = join_new(&mut group, "a", t0);
        a.try_recv().unwrap().unwrap();
        assert_eq!(
            group.check_commit("", None, -1, t0).unwrap_err().code,
            ErrorCode::NonEmptyGroup
        );
        assert!(group.check_commit("a", None, 1, t0).is_ok());
        assert_eq!(
            group.check_commit("a", None, 0, t0).unwrap_err().code,
            ErrorCode::IllegalGeneration
        );
        assert_eq!(
            group.check_commit("zz", None, 1, t0).unwrap_err().code,
            ErrorCode::UnknownMemberId
        );
        group.leave("a", None, t0).unwrap();
        assert_eq!(group.state(), GroupState::Empty);
        assert!(group.check_commit("", None, -1, t0).is_ok());
    }

    /// The protocol is chosen among those every member supports.
    #[test]
    fn protocol_vote_and_inconsistency() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        let a = wait(group.join(
            &join_request("", None, &["cooperative-sticky", "range"]),
            || "a".into(),
            "h",
            &limits(),
            t0,
        ));
        assert_eq!(
            a.try_recv().unwrap().unwrap().protocol_name,
            "cooperative-sticky"
        );
        let b = wait(group.join(
            &join_request("", None, &["range"]),
            || "b".into(),
            "h",
            &limits(),
            t0,
        ));
        let a = wait(group.join(
            &join_request("a", None, &["cooperative-sticky", "range"]),
            || unreachable!(),
            "h",
            &limits(),
            t0,
        ));
        assert_eq!(b.try_recv().unwrap().unwrap().protocol_name, "range");
        assert_eq!(a.try_recv().unwrap().unwrap().protocol_name, "range");
        let JoinOutcome::Now(Err(e)) = group.join(
            &join_request("", None, &["roundrobin"]),
            || "c".into(),
            "h",
            &limits(),
            t0,
        ) else {
            panic!()
        };
        assert_eq!(e.code, ErrorCode::InconsistentGroupProtocol);
    }

    /// A follower waiting in SyncGroup is not expired for silence; a leader that never sends the
    /// assignment is removed at the rebalance timeout and the others rebalance without it.
    #[test]
    fn held_syncs_and_silent_leaders() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        let a = join_new(&mut group, "a", t0);
        a.try_recv().unwrap().unwrap();
        let b = join_new(&mut group, "b", t0);
        let a = wait(group.join(
            &join_request("a", None, &["range"]),
            || unreachable!(),
            "h",
            &limits(),
            t0,
        ));
        a.try_recv().unwrap().unwrap();
        b.try_recv().unwrap().unwrap();
        let SyncOutcome::Wait(follower) = sync(&mut group, "b", 2, &[], t0) else {
            panic!()
        };
        // The leader heartbeats but never syncs; b waits in SyncGroup past its session (1 s).
        for step in 1..=4 {
            let now = t0 + Duration::from_millis(900 * step);
            assert!(group.heartbeat("a", None, 2, now).is_ok());
            assert!(
                group.expire(now).is_empty(),
                "nobody is silent at step {step}"
            );
        }
        // Rebalance timeout (5 s): the leader goes; b is told to rejoin.
        assert_eq!(
            group.expire(t0 + Duration::from_secs(5)),
            vec!["a".to_owned()]
        );
        assert_eq!(
            follower.try_recv().unwrap().unwrap_err().code,
            ErrorCode::RebalanceInProgress
        );
        assert_eq!(group.state(), GroupState::PreparingRebalance);
    }

    /// A member whose held join nobody waits for (its client went away) is dropped when the
    /// join phase completes, instead of getting partitions it would never consume.
    #[test]
    fn abandoned_joins_are_dropped() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        let a = join_new(&mut group, "a", t0);
        a.try_recv().unwrap().unwrap();
        let SyncOutcome::Wait(_) = sync(&mut group, "a", 1, &[("a", b"A")], t0) else {
            panic!()
        };
        drop(join_new(&mut group, "ghost", t0));
        let a = wait(group.join(
            &join_request("a", None, &["range"]),
            || unreachable!(),
            "h",
            &limits(),
            t0,
        ));
        let joined = a.try_recv().unwrap().unwrap();
        assert_eq!(
            joined.members.len(),
            1,
            "the ghost is not in the generation"
        );
        assert_eq!(group.describe().members.len(), 1);
    }

    /// A group holds at most `max_members` members.
    #[test]
    fn group_size_is_capped() {
        let t0 = Instant::now();
        let mut group = Group::new("g");
        let _held: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|id| join_new(&mut group, id, t0))
            .collect();
        let JoinOutcome::Now(Err(e)) = group.join(
            &join_request("", None, &["range"]),
            || "d".into(),
            "h",
            &limits(),
            t0,
        ) else {
            panic!()
        };
        assert_eq!(e.code, ErrorCode::GroupMaxSizeReached);
        assert_eq!(group.describe().members.len(), 3);
    }

    impl SyncOutcome {
        fn now_error(self) -> Option<ErrorCode> {
            match self {
                SyncOutcome::Now(Err(e)) => Some(e.code),
                _ => None,
            }
        }
    }
}
