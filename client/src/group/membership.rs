//! The membership task: one tokio task per subscribed consumer that keeps it in its group.
//!
//! It runs JoinGroup / SyncGroup (computing the assignment when it is the leader), heartbeats,
//! and reacts to what the coordinator says, while the application's `poll` keeps fetching the
//! partitions it owns. It never touches the consumer's fetch state: it publishes a
//! [`Directive`] and reads the consumer's [`AppState`], two watch channels of one value each.
//!
//! ```text
//!            ┌──────────────────────── Join ◀──────────────────────────────┐
//!            │ eager protocol, owns partitions: publish [] (revoke), wait ack │
//!            │ JoinGroup (held by the coordinator until all members rejoined) │
//!            │ leader: decode subscriptions, partition counts, assign         │
//!            │ SyncGroup ─▶ new assignment ─▶ publish it                      │
//!            │   revoked ≠ ∅: wait ack; cooperative ─▶ Join (second round) ───┘
//!            ▼
//!         Stable: Heartbeat every heartbeat_interval
//!            RebalanceInProgress, subscription or partition count changed ─▶ Join
//!            UnknownMemberId / IllegalGeneration ─▶ Lost, new member id ─▶ Join
//!            coordinator unreachable for session_timeout ─▶ Lost ─▶ Join
//!            FencedInstanceId (or another fatal error) ─▶ Lost, error for poll, stop
//!            no poll for max_poll_interval ─▶ PollExpired
//!         PollExpired: LeaveGroup, Lost, wait for the next poll ─▶ Join
//! ```
//!
//! Waiting for an acknowledgement (the consumer stopped fetching the revoked partitions and
//! committed them) keeps heartbeating, and gives up when the application has not polled for
//! `max_poll_interval`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use wire::protocol::{
    ApiKey, ErrorCode, HeartbeatRequest, JoinGroupMember, JoinGroupProtocol, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, SyncGroupAssignment, SyncGroupRequest, SyncGroupResponse,
    CONSUMER_PROTOCOL_TYPE,
};

use super::assignment::{
    decode_assignment, decode_subscription, encode_assignment, encode_subscription, AssignmentDiff,
};
use super::{millis, AssignorKind, GroupConfig};
use crate::assignor::{self, MemberSubscription};
use crate::cluster::{Cluster, TopicPartition};
use crate::connection::decode_body;
use crate::error::ClientError;

/// Time allowed for a JoinGroup or SyncGroup answer beyond the rebalance timeout: the
/// coordinator holds a join for up to the rebalance timeout, and the answer still has to
/// travel back.
const JOIN_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// How often the leader re-reads the partition counts of the group's topics, to rebalance
/// when a topic is created or grows. One metadata request per period per group (from the
/// leader only).
const METADATA_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// What the membership task tells the consumer. Each change that the consumer must apply bumps
/// `seq`; the consumer applies the latest value, so intermediate ones may be skipped safely
/// (a revocation waits for its acknowledgement before anything else is published, and a loss
/// is carried by `lost_epoch`, which never goes back).
#[derive(Debug, Clone)]
pub(crate) struct Directive {
    /// Bumped at every change of the fields below except `rebalancing`, `awaiting_poll`, and
    /// `generation` / `member_id` set by a JoinGroup answer.
    pub seq: u64,
    /// The member's generation (-1 outside the group): what commits are fenced with. Set as
    /// soon as JoinGroup answers (without a `seq` change), so during the rest of a
    /// rebalance it may be newer than the generation `assignment` came from: the coordinator
    /// fences commits with its current generation, which is the new one from then on.
    pub generation: i32,
    /// Member id (empty outside the group), set together with `generation`.
    pub member_id: String,
    /// The partitions the consumer may fetch, sorted.
    pub assignment: Vec<TopicPartition>,
    /// Bumped each time the member fell out of the group: everything the consumer held before
    /// is lost (dropped without committing).
    pub lost_epoch: u64,
    /// The task waits for [`AppState::acked`] to reach `seq` (partitions were revoked).
    pub ack_wanted: bool,
    /// The task left the group after the max poll interval and waits for the next poll.
    pub awaiting_poll: bool,
    /// A rebalance is under way (automatic commits wait for its end).
    pub rebalancing: bool,
    /// The task stopped on this error; every poll returns it.
    pub fatal: Option<ClientError>,
}

impl Default for Directive {
    fn default() -> Self {
        Directive {
            seq: 0,
            generation: -1,
            member_id: String::new(),
            assignment: Vec::new(),
            lost_epoch: 0,
            ack_wanted: false,
            awaiting_poll: false,
            rebalancing: false,
            fatal: None,
        }
    }
}

/// What the consumer tells the membership task.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// Subscribed topics, sorted and deduplicated; a change triggers a rejoin.
    pub topics: Vec<String>,
    /// The last directive `seq` applied (revocations acknowledged up to there).
    pub acked: u64,
    /// A `poll` call is running (the application is not stuck).
    pub polling: bool,
    /// When the last `poll` call started or ended.
    pub polled_at: Instant,
    /// Bumped when a commit was fenced: the task heartbeats at once to find out why.
    pub rejoin_requests: u64,
}

/// The consumer's ends of a running membership task.
pub(crate) struct Channels {
    /// The task; aborting it stops the membership without leaving the group.
    pub task: JoinHandle<()>,
    /// Directives from the task.
    pub directive: watch::Receiver<Directive>,
    /// State for the task.
    pub app: watch::Sender<AppState>,
}

/// Starts the membership task of a consumer subscribed to `topics` (sorted, deduplicated).
pub(crate) fn spawn(
    config: Arc<GroupConfig>,
    cluster: Arc<Cluster>,
    request_timeout: Duration,
    retry_backoff: Duration,
    topics: Vec<String>,
) -> Channels {
    let (directive_tx, directive_rx) = watch::channel(Directive::default());
    let (app_tx, app_rx) = watch::channel(AppState {
        topics,
        acked: 0,
        polling: true,
        polled_at: Instant::now(),
        rejoin_requests: 0,
    });
    let membership = Membership {
        config,
        cluster,
        request_timeout,
        retry_backoff,
        directive: directive_tx,
        app: app_rx,
        member_id: String::new(),
        generation: -1,
        protocol: None,
        is_leader: false,
        owned: Vec::new(),
        owned_generation: -1,
        topics: Vec::new(),
        rejoin_requests: 0,
        last_contact: Instant::now(),
        group_topics: Vec::new(),
        assigned_counts: HashMap::new(),
    };
    let task = tokio::spawn(membership.run());
    Channels {
        task,
        directive: directive_rx,
        app: app_tx,
    }
}

/// Sends LeaveGroup (best effort: a failure only means the session timeout removes the member
/// instead). `instance_id` set gives up a static member's slot.
pub(crate) async fn leave_group(
    cluster: &Cluster,
    group_id: &str,
    member_id: &str,
    instance_id: Option<String>,
    timeout: Duration,
) -> Result<(), ClientError> {
    let request = LeaveGroupRequest {
        group_id: group_id.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: instance_id,
    };
    cluster
        .coordinator_request(
            group_id,
            ApiKey::LeaveGroup,
            &request,
            timeout,
            Instant::now() + timeout,
        )
        .await?;
    info!(group = group_id, member_id, "left the group");
    Ok(())
}

/// The next phase of the task.
enum Next {
    Join,
    Stable,
    PollExpired,
}

/// Why the task stops.
enum Stop {
    /// The consumer is gone.
    Closed,
    /// An error the member cannot recover from (fenced, configuration refused).
    Fatal(ClientError),
}

/// Outcome of one heartbeat.
enum Beat {
    Ok,
    /// The group is rebalancing: rejoin.
    Rebalance,
    /// The member is out of the group (partitions already published as lost): rejoin.
    Lost,
    /// A transient failure: try again soon.
    Retry,
}

/// Outcome of waiting for a revocation's acknowledgement.
enum Ack {
    Acked,
    Lost,
    PollExpired,
}

/// Which request failed, for the error handling they share.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Join,
    Sync,
}

/// The task's state.
struct Membership {
    config: Arc<GroupConfig>,
    cluster: Arc<Cluster>,
    request_timeout: Duration,
    retry_backoff: Duration,
    directive: watch::Sender<Directive>,
    app: watch::Receiver<AppState>,
    /// Empty until the first join, and after the coordinator forgot the member.
    member_id: String,
    /// Generation of the last join (-1 outside the group).
    generation: i32,
    /// The protocol the group chose at the last join.
    protocol: Option<AssignorKind>,
    /// This member computed the current assignment.
    is_leader: bool,
    /// Partitions published to the consumer, sorted.
    owned: Vec<TopicPartition>,
    /// Generation in which `owned` was assigned.
    owned_generation: i32,
    /// The subscription of the last join.
    topics: Vec<String>,
    /// [`AppState::rejoin_requests`] already handled.
    rejoin_requests: u64,
    /// Last answer from the coordinator about this member (for the session timeout).
    last_contact: Instant,
    /// Leader: every topic some member subscribes to.
    group_topics: Vec<String>,
    /// Leader: the partition counts the current assignment was computed from.
    assigned_counts: HashMap<String, u32>,
}

impl Membership {
    async fn run(mut self) {
        info!(group = %self.config.group_id, topics = ?self.app.borrow().topics, "joining group");
        let mut next = Next::Join;
        loop {
            let step = match next {
                Next::Join => self.rebalance().await,
                Next::Stable => self.stable().await,
                Next::PollExpired => self.poll_expired().await,
            };
            match step {
                Ok(step) => next = step,
                Err(Stop::Closed) => {
                    debug!(group = %self.config.group_id, "consumer gone; membership stops");
                    return;
                }
                Err(Stop::Fatal(error)) => {
                    error!(group = %self.config.group_id, %error, "group membership failed");
                    self.publish(|directive| directive.fatal = Some(error));
                    return;
                }
            }
        }
    }

    /// Publishes a change for the consumer and returns its `seq`.
    fn publish(&self, change: impl FnOnce(&mut Directive)) -> u64 {
        let mut seq = 0;
        self.directive.send_modify(|directive| {
            directive.seq += 1;
            directive.generation = self.generation;
            directive.member_id.clone_from(&self.member_id);
            directive.ack_wanted = false;
            change(directive);
            seq = directive.seq;
        });
        seq
    }

    /// Publishes the generation and member id a JoinGroup answer gave (no `seq` change:
    /// nothing for the consumer to apply). From the answer on, the coordinator fences commits
    /// with the new generation, while the member still owns (cooperative) what it owned
    /// before: commits made until the assignment is published must carry the new
    /// generation, or they fail with IllegalGeneration.
    fn publish_identity(&self) {
        self.directive.send_if_modified(|directive| {
            let changed =
                directive.generation != self.generation || directive.member_id != self.member_id;
            directive.generation = self.generation;
            directive.member_id.clone_from(&self.member_id);
            changed
        });
    }

    /// Sets the `rebalancing` flag (no `seq` change: nothing for the consumer to apply).
    fn set_rebalancing(&self, rebalancing: bool) {
        self.directive.send_if_modified(|directive| {
            let changed = directive.rebalancing != rebalancing;
            directive.rebalancing = rebalancing;
            changed
        });
    }

    /// Makes `partitions` the consumer's assignment; with `revoking`, the consumer must
    /// acknowledge (after committing what it gives up).
    fn set_owned(&mut self, partitions: Vec<TopicPartition>, revoking: bool) -> u64 {
        self.owned = partitions;
        let owned = self.owned.clone();
        self.publish(|directive| {
            directive.assignment = owned;
            directive.ack_wanted = revoking;
            directive.rebalancing = false;
        })
    }

    /// The member fell out of the group: everything the consumer holds is lost.
    fn lose(&mut self, reason: &str) {
        if self.owned.is_empty() {
            info!(group = %self.config.group_id, reason, "out of the group");
        } else {
            warn!(group = %self.config.group_id, reason, lost = ?self.owned, "partitions lost");
        }
        self.owned.clear();
        self.owned_generation = -1;
        self.publish(|directive| {
            directive.assignment.clear();
            directive.lost_epoch += 1;
        });
    }

    /// Forgets the member id: the next join enters as a new member.
    fn reset_member(&mut self) {
        self.member_id.clear();
        self.generation = -1;
        self.is_leader = false;
    }

    /// Stops on `error`, after publishing the partitions as lost.
    fn fatal(&mut self, error: ClientError) -> Stop {
        self.lose(&format!("fatal error: {error}"));
        Stop::Fatal(error)
    }

    /// True when the application has not polled for longer than the max poll interval.
    fn poll_expired_now(&self) -> bool {
        let app = self.app.borrow();
        !app.polling && app.polled_at.elapsed() > self.config.max_poll_interval
    }

    /// When the max poll interval expires if the application does not poll before.
    fn poll_deadline(&self) -> Instant {
        let app = self.app.borrow();
        if app.polling {
            Instant::now() + self.config.max_poll_interval
        } else {
            app.polled_at + self.config.max_poll_interval
        }
    }

    /// One round of the rebalance protocol: revoke first (eager), join, sync, publish.
    async fn rebalance(&mut self) -> Result<Next, Stop> {
        if self.poll_expired_now() {
            return Ok(Next::PollExpired);
        }
        self.topics = self.app.borrow_and_update().topics.clone();
        self.set_rebalancing(true);
        let cooperative = self.protocol.is_some_and(AssignorKind::is_cooperative);
        if !cooperative && !self.owned.is_empty() {
            info!(group = %self.config.group_id, revoked = ?self.owned, "revoking every partition before rejoining (eager protocol)");
            let seq = self.set_owned(Vec::new(), true);
            self.set_rebalancing(true);
            match self.await_ack(seq).await? {
                Ack::Acked => {}
                Ack::Lost => return Ok(Next::Join),
                Ack::PollExpired => return Ok(Next::PollExpired),
            }
        }
        let Some(join) = self.join().await? else {
            return Ok(Next::Join);
        };
        let Some(assignment) = self.sync(&join).await? else {
            return Ok(Next::Join);
        };
        self.complete(&join, assignment).await
    }

    /// JoinGroup; `None` when it must be retried (the error is handled).
    async fn join(&mut self) -> Result<Option<JoinGroupResponse>, Stop> {
        let metadata = encode_subscription(&self.topics, &self.owned, self.owned_generation);
        let request = JoinGroupRequest {
            group_id: self.config.group_id.clone(),
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            client_id: self.config.client_id.clone(),
            session_timeout_ms: millis(self.config.session_timeout).unwrap_or(u32::MAX),
            rebalance_timeout_ms: millis(self.config.max_poll_interval).unwrap_or(u32::MAX),
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_owned(),
            protocols: self
                .config
                .assignors
                .iter()
                .map(|kind| JoinGroupProtocol {
                    name: kind.name().to_owned(),
                    metadata: metadata.clone(),
                })
                .collect(),
        };
        debug!(group = %self.config.group_id, member_id = %self.member_id, owned = self.owned.len(), "JoinGroup");
        let timeout = self.config.max_poll_interval + JOIN_TIMEOUT_MARGIN;
        let result = self
            .cluster
            .coordinator_request(
                &self.config.group_id,
                ApiKey::JoinGroup,
                &request,
                timeout,
                Instant::now() + self.config.session_timeout,
            )
            .await
            .and_then(|frame| decode_body::<JoinGroupResponse>(&frame));
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                self.request_failed(Phase::Join, error).await?;
                return Ok(None);
            }
        };
        self.last_contact = Instant::now();
        self.member_id.clone_from(&response.member_id);
        self.generation = response.generation;
        self.is_leader = response.leader == response.member_id;
        self.publish_identity();
        let Some(protocol) = AssignorKind::from_name(&response.protocol_name) else {
            return Err(self.fatal(ClientError::Broker {
                code: ErrorCode::InconsistentGroupProtocol,
                message: format!(
                    "the group chose protocol {:?}, which this client does not know",
                    response.protocol_name
                ),
            }));
        };
        self.protocol = Some(protocol);
        debug!(
            group = %self.config.group_id,
            generation = response.generation,
            member_id = %response.member_id,
            leader = self.is_leader,
            %protocol,
            "joined"
        );
        Ok(Some(response))
    }

    /// SyncGroup (with every member's assignment when leader); the member's new assignment,
    /// or `None` when it must rejoin (the error is handled).
    async fn sync(
        &mut self,
        join: &JoinGroupResponse,
    ) -> Result<Option<Vec<TopicPartition>>, Stop> {
        let assignments = match self.protocol {
            Some(protocol) if self.is_leader && !join.skip_assignment => {
                self.compute_assignment(protocol, join.generation, &join.members)
                    .await
            }
            _ => Vec::new(),
        };
        let request = SyncGroupRequest {
            group_id: self.config.group_id.clone(),
            generation: join.generation,
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
            assignments,
        };
        let timeout = self.config.max_poll_interval + JOIN_TIMEOUT_MARGIN;
        let result = self
            .cluster
            .coordinator_request(
                &self.config.group_id,
                ApiKey::SyncGroup,
                &request,
                timeout,
                Instant::now() + self.config.session_timeout,
            )
            .await
            .and_then(|frame| decode_body::<SyncGroupResponse>(&frame));
        match result {
            Ok(response) => {
                self.last_contact = Instant::now();
                match decode_assignment(&response.assignment) {
                    Ok(partitions) => Ok(Some(partitions)),
                    Err(error) => {
                        error!(group = %self.config.group_id, %error, "undecodable assignment from the leader; taking none");
                        Ok(Some(Vec::new()))
                    }
                }
            }
            Err(error) => {
                self.request_failed(Phase::Sync, error).await?;
                Ok(None)
            }
        }
    }

    /// Handles a failed JoinGroup or SyncGroup before the rejoin.
    async fn request_failed(&mut self, phase: Phase, error: ClientError) -> Result<(), Stop> {
        let group = &self.config.group_id;
        match error.code() {
            Some(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration) => {
                let was_member = !self.member_id.is_empty();
                self.lose(&format!("{phase:?}: {error}"));
                self.reset_member();
                if !was_member {
                    tokio::time::sleep(self.retry_backoff).await;
                }
                Ok(())
            }
            Some(ErrorCode::RebalanceInProgress) => {
                debug!(group = %group, ?phase, "rebalance restarted; rejoining");
                if phase == Phase::Join {
                    tokio::time::sleep(self.retry_backoff).await;
                }
                Ok(())
            }
            Some(
                ErrorCode::FencedInstanceId
                | ErrorCode::InconsistentGroupProtocol
                | ErrorCode::InvalidSessionTimeout
                | ErrorCode::InvalidGroupId
                | ErrorCode::GroupMaxSizeReached
                | ErrorCode::GroupIdNotFound,
            ) => Err(self.fatal(error)),
            _ if error.is_retriable() => {
                warn!(group = %group, ?phase, %error, "coordinator unavailable; retrying");
                if !self.owned.is_empty()
                    && self.last_contact.elapsed() >= self.config.session_timeout
                {
                    self.lose("coordinator unreachable for longer than the session timeout");
                }
                tokio::time::sleep(self.retry_backoff).await;
                Ok(())
            }
            _ => Err(self.fatal(error)),
        }
    }

    /// Leader: every member's assignment for `protocol`.
    async fn compute_assignment(
        &mut self,
        protocol: AssignorKind,
        generation: i32,
        members: &[JoinGroupMember],
    ) -> Vec<SyncGroupAssignment> {
        let subscriptions: Vec<MemberSubscription> = members
            .iter()
            .map(|member| {
                decode_subscription(member).unwrap_or_else(|error| {
                    warn!(group = %self.config.group_id, member = %member.member_id, %error, "undecodable subscription; the member gets nothing");
                    MemberSubscription {
                        member_id: member.member_id.clone(),
                        instance_id: member.group_instance_id.clone(),
                        topics: Vec::new(),
                        owned: Vec::new(),
                        generation: -1,
                    }
                })
            })
            .collect();
        let topics: BTreeSet<&String> = subscriptions
            .iter()
            .flat_map(|subscription| subscription.topics.iter())
            .collect();
        self.group_topics = topics.into_iter().cloned().collect();
        self.assigned_counts = self.partition_counts().await;
        let assignment = assignor::assign(protocol, &subscriptions, &self.assigned_counts);
        info!(
            group = %self.config.group_id,
            generation,
            %protocol,
            members = members.len(),
            topics = ?self.assigned_counts,
            "computed the group's assignment as leader"
        );
        members
            .iter()
            .map(|member| SyncGroupAssignment {
                member_id: member.member_id.clone(),
                assignment: encode_assignment(
                    assignment
                        .get(&member.member_id)
                        .map_or(&[][..], Vec::as_slice),
                ),
            })
            .collect()
    }

    /// Partition counts of the group's topics from fresh metadata (the cached metadata when
    /// the refresh fails); unknown topics are left out.
    async fn partition_counts(&self) -> HashMap<String, u32> {
        if self.group_topics.is_empty() {
            return HashMap::new();
        }
        let snapshot = match self.cluster.refresh(Some(&self.group_topics)).await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                warn!(group = %self.config.group_id, %error, "metadata refresh failed; assigning from cached metadata");
                self.cluster.snapshot()
            }
        };
        self.group_topics
            .iter()
            .filter_map(|topic| {
                let route = snapshot.topics.get(topic)?;
                Some((topic.clone(), route.partition_count()))
            })
            .collect()
    }

    /// Publishes the assignment of a finished join; waits for the revocations it implies.
    async fn complete(
        &mut self,
        join: &JoinGroupResponse,
        assignment: Vec<TopicPartition>,
    ) -> Result<Next, Stop> {
        let diff = AssignmentDiff::between(&self.owned, &assignment);
        let cooperative = self.protocol.is_some_and(AssignorKind::is_cooperative);
        info!(
            group = %self.config.group_id,
            generation = join.generation,
            protocol = %join.protocol_name,
            member_id = %self.member_id,
            leader = self.is_leader,
            assigned = ?diff.added,
            revoked = ?diff.revoked,
            owned = assignment.len(),
            "rebalance complete"
        );
        self.owned_generation = join.generation;
        let revoking = !diff.revoked.is_empty();
        let seq = self.set_owned(assignment, revoking);
        if !revoking {
            return Ok(Next::Stable);
        }
        match self.await_ack(seq).await? {
            Ack::Acked if cooperative => {
                debug!(group = %self.config.group_id, "revocation done; rejoining so the partitions move");
                Ok(Next::Join)
            }
            Ack::Acked => Ok(Next::Stable),
            Ack::Lost => Ok(Next::Join),
            Ack::PollExpired => Ok(Next::PollExpired),
        }
    }

    /// Waits until the consumer acknowledged directive `seq`, heartbeating meanwhile (the
    /// session must not expire while the application commits).
    async fn await_ack(&mut self, seq: u64) -> Result<Ack, Stop> {
        let mut next_heartbeat = Instant::now() + self.config.heartbeat_interval;
        loop {
            if self.app.borrow_and_update().acked >= seq {
                return Ok(Ack::Acked);
            }
            if self.poll_expired_now() {
                warn!(group = %self.config.group_id, "revocation not acknowledged within max_poll_interval");
                return Ok(Ack::PollExpired);
            }
            let wake = next_heartbeat.min(self.poll_deadline());
            tokio::select! {
                changed = self.app.changed() => changed.map_err(|_| Stop::Closed)?,
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= next_heartbeat {
                        match self.heartbeat().await? {
                            Beat::Ok | Beat::Rebalance => {
                                next_heartbeat = Instant::now() + self.config.heartbeat_interval;
                            }
                            Beat::Retry => next_heartbeat = Instant::now() + self.retry_backoff,
                            Beat::Lost => return Ok(Ack::Lost),
                        }
                    }
                }
            }
        }
    }

    /// In the group with an assignment: heartbeat until something asks for a rejoin.
    async fn stable(&mut self) -> Result<Next, Stop> {
        let mut next_heartbeat = Instant::now() + self.config.heartbeat_interval;
        let mut next_metadata_check = Instant::now() + METADATA_CHECK_INTERVAL;
        loop {
            {
                let app = self.app.borrow_and_update();
                if app.topics != self.topics {
                    info!(group = %self.config.group_id, topics = ?app.topics, "subscription changed; rejoining");
                    return Ok(Next::Join);
                }
                if app.rejoin_requests != self.rejoin_requests {
                    self.rejoin_requests = app.rejoin_requests;
                    next_heartbeat = Instant::now();
                }
            }
            if self.poll_expired_now() {
                return Ok(Next::PollExpired);
            }
            let mut wake = next_heartbeat.min(self.poll_deadline());
            if self.is_leader {
                wake = wake.min(next_metadata_check);
            }
            tokio::select! {
                changed = self.app.changed() => changed.map_err(|_| Stop::Closed)?,
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= next_heartbeat {
                        match self.heartbeat().await? {
                            Beat::Ok => next_heartbeat = now + self.config.heartbeat_interval,
                            Beat::Retry => next_heartbeat = now + self.retry_backoff,
                            Beat::Rebalance => {
                                info!(group = %self.config.group_id, generation = self.generation, "group is rebalancing; rejoining");
                                return Ok(Next::Join);
                            }
                            Beat::Lost => return Ok(Next::Join),
                        }
                    }
                    if self.is_leader && now >= next_metadata_check {
                        next_metadata_check = now + METADATA_CHECK_INTERVAL;
                        let counts = self.partition_counts().await;
                        if counts != self.assigned_counts {
                            info!(group = %self.config.group_id, before = ?self.assigned_counts, now = ?counts, "partition counts changed; rejoining to reassign");
                            return Ok(Next::Join);
                        }
                    }
                }
            }
        }
    }

    /// One heartbeat, and what it means.
    async fn heartbeat(&mut self) -> Result<Beat, Stop> {
        if self.member_id.is_empty() || self.generation < 0 {
            return Ok(Beat::Ok);
        }
        let request = HeartbeatRequest {
            group_id: self.config.group_id.clone(),
            generation: self.generation,
            member_id: self.member_id.clone(),
            group_instance_id: self.config.instance_id.clone(),
        };
        let session = self.config.session_timeout;
        let result = self
            .cluster
            .coordinator_request(
                &self.config.group_id,
                ApiKey::Heartbeat,
                &request,
                session.min(self.request_timeout),
                self.last_contact + session,
            )
            .await;
        let Err(error) = result else {
            self.last_contact = Instant::now();
            return Ok(Beat::Ok);
        };
        match error.code() {
            Some(ErrorCode::RebalanceInProgress) => {
                self.last_contact = Instant::now();
                Ok(Beat::Rebalance)
            }
            Some(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration) => {
                self.lose(&format!("heartbeat: {error}"));
                self.reset_member();
                Ok(Beat::Lost)
            }
            Some(ErrorCode::FencedInstanceId) => Err(self.fatal(error)),
            _ if error.is_retriable() => {
                if self.last_contact.elapsed() >= session {
                    warn!(group = %self.config.group_id, %error, "no heartbeat answered within the session timeout");
                    self.lose("coordinator unreachable for longer than the session timeout");
                    Ok(Beat::Lost)
                } else {
                    debug!(group = %self.config.group_id, %error, "heartbeat failed; retrying");
                    Ok(Beat::Retry)
                }
            }
            _ => {
                warn!(group = %self.config.group_id, %error, "heartbeat failed");
                Ok(Beat::Retry)
            }
        }
    }

    /// The application stopped polling: leave, give the partitions up, wait for a poll.
    async fn poll_expired(&mut self) -> Result<Next, Stop> {
        warn!(
            group = %self.config.group_id,
            max_poll_interval = ?self.config.max_poll_interval,
            "poll not called within max_poll_interval: leaving the group until the next poll"
        );
        if !self.member_id.is_empty() {
            if let Err(error) = leave_group(
                &self.cluster,
                &self.config.group_id,
                &self.member_id,
                self.config.instance_id.clone(),
                self.request_timeout,
            )
            .await
            {
                warn!(group = %self.config.group_id, %error, "LeaveGroup failed; the session timeout will remove the member");
            }
        }
        self.lose("max poll interval exceeded");
        self.reset_member();
        let since = Instant::now();
        self.directive
            .send_modify(|directive| directive.awaiting_poll = true);
        loop {
            {
                let app = self.app.borrow_and_update();
                if app.polling || app.polled_at > since {
                    break;
                }
            }
            self.app.changed().await.map_err(|_| Stop::Closed)?;
        }
        self.directive
            .send_modify(|directive| directive.awaiting_poll = false);
        info!(group = %self.config.group_id, "poll resumed; rejoining");
        Ok(Next::Join)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::connection::ConnectionConfig;
    use crate::group::commit::Committer;
    use crate::group::fake::{Behavior, FakeCoordinator};

    /// Between the JoinGroup answer and the published assignment (a cooperative member keeps
    /// consuming then), commits already carry the new generation and member id, which the
    /// coordinator fences with from the answer on; the consumer is not asked to apply
    /// anything (`seq` unchanged).
    #[tokio::test]
    async fn commits_use_the_generation_of_the_join_answer() {
        let behavior = Behavior::default();
        let coordinator = FakeCoordinator::start(behavior.clone()).await;
        let config = GroupConfig {
            assignors: vec![AssignorKind::CooperativeSticky],
            ..GroupConfig::new("g")
        };
        let timeout = Duration::from_secs(5);
        let cluster =
            || Arc::new(Cluster::new(&coordinator.addr, ConnectionConfig::default()).unwrap());
        let Channels {
            task,
            directive,
            app,
        } = spawn(
            Arc::new(config),
            cluster(),
            timeout,
            Duration::from_millis(10),
            vec!["t".into()],
        );
        let mut watching = directive.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            watching.wait_for(|d| d.generation == behavior.generation),
        )
        .await
        .unwrap()
        .unwrap();
        {
            let now = directive.borrow();
            assert_eq!(now.member_id, behavior.member_id);
            assert_eq!(now.seq, 0, "nothing for the consumer to apply yet");
            assert!(now.rebalancing, "the rebalance is not over");
        }
        let committer = Committer::new(cluster(), "g".into(), None, timeout)
            .with_membership(directive.clone(), app.clone());
        committer
            .commit(&[(TopicPartition::new("t", 0), 5)])
            .await
            .unwrap();
        let commits = coordinator.commits();
        assert_eq!(commits.len(), 1);
        assert_eq!(
            (commits[0].generation, commits[0].member_id.as_str()),
            (behavior.generation, behavior.member_id.as_str())
        );
        task.abort();
    }
}
