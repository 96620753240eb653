//! The consumer's side of group membership: the subscription, the membership task's channels,
//! the rebalance callback, commits and their bookkeeping. Owned by [`crate::Consumer`], which
//! calls it from `poll` and applies the [`Step`]s it returns to its fetch state.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::assignment::Reconciliation;
use super::commit::{self, CommitTracker, Committer};
use super::membership::{self, AppState, Channels, Directive};
use super::{Delivery, GroupConfig, GroupMetadata, RebalanceEvent};
use crate::cluster::{Cluster, TopicPartition};
use crate::connection::ConnectionConfig;
use crate::error::ClientError;

/// The application's rebalance callback.
pub(crate) type RebalanceCallback = Box<dyn FnMut(&RebalanceEvent) + Send + 'static>;

/// The callback behind a mutex only so that the consumer stays `Sync` (callers hold `&Consumer`
/// across awaits in spawned tasks) without asking the callback to be `Sync`. Never locked: it
/// is reached through `&mut` ([`std::sync::Mutex::get_mut`]).
type CallbackSlot = std::sync::Mutex<Option<RebalanceCallback>>;

/// One commit made in the background: the offsets it sent and its outcome.
struct CommitOutcome {
    offsets: Vec<(TopicPartition, u64)>,
    result: Result<(), ClientError>,
    /// An automatic commit (its failure is only logged); else one the application asked for
    /// with `commit_async`, which gets the outcome through its own handle.
    automatic: bool,
}

/// The commits running in the background, chained so that they land in the order they were
/// started: the task resolves with the outcome of each, oldest first.
struct BackgroundCommit {
    task: JoinHandle<Vec<CommitOutcome>>,
    /// Only an automatic commit is aborted when the consumer is dropped; a commit the
    /// application asked for runs to its end.
    automatic: bool,
}

/// What the consumer must apply to follow the membership task (see
/// [`Reconciliation::plan`]), then acknowledge.
#[derive(Debug)]
pub(crate) struct Step {
    /// Partitions to drop and add.
    pub plan: Reconciliation,
    /// Directive to acknowledge once revoked partitions are committed.
    pub ack: Option<u64>,
    /// The membership stopped on this error (after the plan is applied).
    pub fatal: Option<ClientError>,
}

/// A running membership task, as the consumer sees it.
struct Member {
    task: JoinHandle<()>,
    directive: watch::Receiver<Directive>,
    app: watch::Sender<AppState>,
    /// `seq` of the last directive applied.
    applied_seq: u64,
    /// `lost_epoch` of the last directive applied.
    lost_epoch: u64,
    /// The task ended (its directive channel is closed): nothing more will change.
    task_gone: bool,
}

/// Marks a `poll` call as running for the max poll interval; dropped when the call ends
/// (returns, fails, or its future is dropped).
pub(crate) struct PollGuard {
    app: watch::Sender<AppState>,
}

impl PollGuard {
    fn new(app: watch::Sender<AppState>, wake_task: bool) -> Self {
        app.send_if_modified(|state| {
            state.polling = true;
            state.polled_at = Instant::now();
            // Waking the task at every poll would be wasted work; it only waits for a poll
            // after leaving on the max poll interval.
            wake_task
        });
        PollGuard { app }
    }
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.app.send_if_modified(|state| {
            state.polling = false;
            state.polled_at = Instant::now();
            false
        });
    }
}

/// Group state of one consumer.
pub(crate) struct GroupHandle {
    config: Arc<GroupConfig>,
    /// Connections for commits and offset fetches. Not the consumer's: the broker answers the
    /// requests of a connection in order, so a commit queued behind a long-poll fetch would
    /// wait for it (up to `fetch_max_wait`).
    cluster: Arc<Cluster>,
    /// Connections for the membership task: a JoinGroup is held by the coordinator for up to
    /// the rebalance timeout, and must hold up neither fetches nor commits.
    membership_cluster: Arc<Cluster>,
    request_timeout: Duration,
    retry_backoff: Duration,
    /// Subscribed topics (sorted, deduplicated); `None` with manual assignment.
    topics: Option<Vec<String>>,
    member: Option<Member>,
    callback: CallbackSlot,
    /// What is known to be committed (moved positions only are auto-committed).
    tracker: CommitTracker,
    committer: Committer,
    /// The background commits in flight (automatic, or `commit_async`), as one chain: at
    /// most one automatic commit, and no automatic commit starts while one is there.
    background: Option<BackgroundCommit>,
    /// Sticky: the membership stopped on it.
    fatal: Option<ClientError>,
    /// A revocation handed to the consumer and not acknowledged yet: if the `poll` applying
    /// it is cancelled mid-commit, the next call acknowledges it (the partitions are gone
    /// already; their commit is what was lost, which only means redelivery).
    unacked: Option<u64>,
}

impl std::fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupHandle")
            .field("group_id", &self.config.group_id)
            .field("topics", &self.topics)
            .field("running", &self.member.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        // A consumer dropped without close looks like a crash to the group: no LeaveGroup and
        // no commit; the session timeout removes the member.
        if let Some(member) = &self.member {
            member.task.abort();
        }
        if let Some(commit) = self.background.as_ref().filter(|commit| commit.automatic) {
            commit.task.abort();
        }
    }
}

impl GroupHandle {
    /// Group state for a consumer of the cluster at `bootstrap` configured with `config`
    /// (validated). Opens its own connections, lazily: one pool for commits, one for the
    /// membership task (see the fields).
    pub fn new(
        config: GroupConfig,
        bootstrap: &str,
        connection: ConnectionConfig,
        request_timeout: Duration,
        retry_backoff: Duration,
    ) -> Result<Self, ClientError> {
        let cluster = Arc::new(Cluster::new(bootstrap, connection.clone())?);
        let membership_cluster = Arc::new(Cluster::new(bootstrap, connection)?);
        let tracker = CommitTracker::new(config.auto_commit_interval, Instant::now());
        let committer = Committer::new(
            cluster.clone(),
            config.group_id.clone(),
            config.instance_id.clone(),
            request_timeout,
        );
        Ok(GroupHandle {
            config: Arc::new(config),
            cluster,
            membership_cluster,
            request_timeout,
            retry_backoff,
            topics: None,
            member: None,
            callback: std::sync::Mutex::new(None),
            tracker,
            committer,
            background: None,
            fatal: None,
            unacked: None,
        })
    }

    /// The group's settings.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// True once `subscribe` was called.
    pub fn is_subscribed(&self) -> bool {
        self.topics.is_some()
    }

    /// Replaces the subscription; a running membership rejoins with it.
    pub fn subscribe(&mut self, topics: Vec<String>) {
        if let Some(member) = &self.member {
            member.app.send_if_modified(|state| {
                let changed = state.topics != topics;
                state.topics.clone_from(&topics);
                changed
            });
        }
        info!(group = %self.config.group_id, ?topics, "subscribed");
        self.topics = Some(topics);
    }

    /// Sets the rebalance callback.
    pub fn set_callback(&mut self, callback: RebalanceCallback) {
        *self.callback.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(callback);
    }

    /// Called at the start of `poll`: starts the membership task after `subscribe`, and marks
    /// the poll as running until the returned guard is dropped.
    pub fn begin_poll(&mut self) -> Option<PollGuard> {
        if self.member.is_none() && self.fatal.is_none() {
            if let Some(topics) = &self.topics {
                let Channels {
                    task,
                    directive,
                    app,
                } = membership::spawn(
                    self.config.clone(),
                    self.membership_cluster.clone(),
                    self.request_timeout,
                    self.retry_backoff,
                    topics.clone(),
                );
                self.committer = self
                    .committer
                    .clone()
                    .with_membership(directive.clone(), app.clone());
                self.member = Some(Member {
                    task,
                    directive,
                    app,
                    applied_seq: 0,
                    lost_epoch: 0,
                    task_gone: false,
                });
            }
        }
        let member = self.member.as_ref()?;
        let wake_task = member.directive.borrow().awaiting_poll;
        Some(PollGuard::new(member.app.clone(), wake_task))
    }

    /// The next step to apply from `held` (the partitions the consumer fetches now), if the
    /// membership task published one since the last call. Fails with a fatal error seen
    /// earlier.
    pub fn next_step(&mut self, held: &[TopicPartition]) -> Result<Option<Step>, ClientError> {
        if let Some(fatal) = &self.fatal {
            return Err(fatal.clone());
        }
        if let Some(seq) = self.unacked {
            self.ack(seq);
        }
        let Some(member) = &mut self.member else {
            return Ok(None);
        };
        let directive = member.directive.borrow_and_update();
        if directive.seq == member.applied_seq {
            return Ok(None);
        }
        let lost = directive.lost_epoch != member.lost_epoch;
        let step = Step {
            plan: Reconciliation::plan(held, &directive.assignment, lost),
            ack: directive.ack_wanted.then_some(directive.seq),
            fatal: directive.fatal.clone(),
        };
        member.applied_seq = directive.seq;
        member.lost_epoch = directive.lost_epoch;
        drop(directive);
        self.unacked = step.ack;
        if let Some(fatal) = &step.fatal {
            self.fatal = Some(fatal.clone());
        }
        Ok(Some(step))
    }

    /// Tells the membership task that directive `seq` is applied.
    pub fn ack(&mut self, seq: u64) {
        if self.unacked.is_some_and(|unacked| unacked <= seq) {
            self.unacked = None;
        }
        if let Some(member) = &self.member {
            member.app.send_if_modified(|state| {
                let newer = seq > state.acked;
                state.acked = state.acked.max(seq);
                newer
            });
        }
    }

    /// Resolves when the membership task publishes something (never without a running task).
    pub async fn changed(&mut self) {
        match &mut self.member {
            Some(member) if !member.task_gone => {
                if member.directive.changed().await.is_err() {
                    member.task_gone = true;
                    futures::future::pending::<()>().await;
                }
            }
            _ => futures::future::pending().await,
        }
    }

    /// Passes `event` to the application's callback (empty events are not passed).
    pub fn emit(&mut self, event: RebalanceEvent) {
        if event.partitions().is_empty() {
            return;
        }
        debug!(group = %self.config.group_id, ?event, "rebalance event");
        let callback = self.callback.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(callback) = callback {
            callback(&event);
        }
    }

    /// Forgets the commit bookkeeping of partitions that are no longer assigned.
    pub fn forget(&mut self, partitions: &[TopicPartition]) {
        self.tracker.forget(partitions);
    }

    /// Records offsets known to be committed (fetched for a new assignment).
    pub fn record_committed(&mut self, offsets: &[(TopicPartition, u64)]) {
        self.tracker.record(offsets);
    }

    /// True when revoked partitions are committed before the revocation is acknowledged.
    pub fn commits_on_revoke(&self) -> bool {
        self.config.commits_automatically() || self.config.delivery == Delivery::AtMostOnce
    }

    /// Commits `offsets` now, after the background commits in flight (so that commits land in
    /// order); with `only_moved`, skips partitions known to be committed at those offsets.
    pub async fn commit(
        &mut self,
        offsets: &[(TopicPartition, u64)],
        only_moved: bool,
    ) -> Result<(), ClientError> {
        self.settle_background().await;
        let offsets = if only_moved {
            self.tracker.uncommitted(offsets)
        } else {
            offsets.to_vec()
        };
        self.committer.commit(&offsets).await?;
        self.tracker.record(&offsets);
        Ok(())
    }

    /// Commits `offsets` in a background task, after the background commits in flight (an
    /// older automatic commit landing after it would move the committed offsets back). The
    /// returned handle resolves with its outcome; once it succeeded, the next poll records
    /// the offsets as committed, so that automatic commits do not send them again.
    pub fn commit_in_background(
        &mut self,
        offsets: Vec<(TopicPartition, u64)>,
    ) -> JoinHandle<Result<(), ClientError>> {
        self.reap_background();
        let earlier = self.background.take();
        let committer = self.committer.clone();
        let (report, reported) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut outcomes = match earlier {
                Some(earlier) => earlier.task.await.unwrap_or_default(),
                None => Vec::new(),
            };
            let result = committer.commit(&offsets).await;
            let _ = report.send(result.clone());
            outcomes.push(CommitOutcome {
                offsets,
                result,
                automatic: false,
            });
            outcomes
        });
        self.background = Some(BackgroundCommit {
            task,
            automatic: false,
        });
        tokio::spawn(async move { reported.await.unwrap_or(Err(ClientError::Closed)) })
    }

    /// The committed offsets of `partitions`.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Result<Option<u64>, ClientError>>, ClientError> {
        commit::fetch_committed(
            &self.cluster,
            &self.config.group_id,
            partitions,
            self.request_timeout,
        )
        .await
    }

    /// Starts an automatic commit of `positions` (the positions at the start of a poll) if
    /// one is due: at-least-once with auto-commit, interval elapsed, no background commit in
    /// flight, no rebalance under way, and some position moved.
    pub fn maybe_auto_commit(&mut self, positions: impl FnOnce() -> Vec<(TopicPartition, u64)>) {
        self.reap_background();
        if !self.config.commits_automatically() || self.background.is_some() {
            return;
        }
        let rebalancing = self
            .member
            .as_ref()
            .is_some_and(|member| member.directive.borrow().rebalancing);
        if rebalancing || !self.tracker.auto_commit_due(Instant::now()) {
            return;
        }
        let offsets = self.tracker.uncommitted(&positions());
        if offsets.is_empty() {
            return;
        }
        let committer = self.committer.clone();
        let task = tokio::spawn(async move {
            let result = committer.commit(&offsets).await;
            vec![CommitOutcome {
                offsets,
                result,
                automatic: true,
            }]
        });
        self.background = Some(BackgroundCommit {
            task,
            automatic: true,
        });
    }

    /// Takes the results of finished background commits.
    fn reap_background(&mut self) {
        if !self
            .background
            .as_ref()
            .is_some_and(|commit| commit.task.is_finished())
        {
            return;
        }
        if let Some(joined) = self
            .background
            .take()
            .and_then(|commit| commit.task.now_or_never())
        {
            self.background_done(joined);
        }
    }

    /// Waits for the background commits in flight, if any.
    async fn settle_background(&mut self) {
        if let Some(commit) = self.background.take() {
            let joined = commit.task.await;
            self.background_done(joined);
        }
    }

    /// Records what the background commits committed, in the order they landed.
    fn background_done(&mut self, joined: Result<Vec<CommitOutcome>, tokio::task::JoinError>) {
        let outcomes = match joined {
            Ok(outcomes) => outcomes,
            Err(error) => {
                debug!(group = %self.config.group_id, %error, "background commit task ended");
                return;
            }
        };
        for outcome in outcomes {
            match outcome.result {
                Ok(()) => self.tracker.record(&outcome.offsets),
                Err(error) if outcome.automatic => {
                    warn!(group = %self.config.group_id, %error, "automatic commit failed");
                }
                // `commit_async`'s handle reports it.
                Err(error) => debug!(group = %self.config.group_id, %error, "commit_async failed"),
            }
        }
    }

    /// Test seam: attaches membership channels without a task, so that a test can play the
    /// membership task's part.
    #[cfg(test)]
    pub fn attach_channels(&mut self) -> (watch::Sender<Directive>, watch::Receiver<AppState>) {
        let (directive_tx, directive) = watch::channel(Directive::default());
        let (app, app_rx) = watch::channel(AppState {
            topics: self.topics.clone().unwrap_or_default(),
            acked: 0,
            polling: false,
            polled_at: Instant::now(),
            rejoin_requests: 0,
        });
        self.committer = self
            .committer
            .clone()
            .with_membership(directive.clone(), app.clone());
        self.member = Some(Member {
            task: tokio::spawn(async {}),
            directive,
            app,
            applied_seq: 0,
            lost_epoch: 0,
            task_gone: false,
        });
        (directive_tx, app_rx)
    }

    /// Who this consumer is in its group now.
    pub fn metadata(&self) -> GroupMetadata {
        let identity = self.committer.identity();
        GroupMetadata {
            group_id: self.config.group_id.clone(),
            generation: identity.generation,
            member_id: identity.member_id,
            instance_id: self.config.instance_id.clone(),
        }
    }

    /// Closes the membership: passes `held` to the callback as revoked, then commits
    /// `positions` (at-least-once with auto-commit), like a revocation in `poll`; then stops
    /// the task and leaves the group (except a static member, which keeps its slot until its
    /// session times out). Returns the commit's error, if any, after doing the rest.
    pub async fn close(
        mut self,
        positions: Vec<(TopicPartition, u64)>,
        held: Vec<TopicPartition>,
    ) -> Result<(), ClientError> {
        // The callback first, as documented on `RebalanceEvent::Revoked`: it may flush work
        // derived from the partitions before their positions are committed.
        self.emit(RebalanceEvent::Revoked(held));
        self.settle_background().await;
        let result = if self.config.commits_automatically() && self.fatal.is_none() {
            self.commit(&positions, true).await
        } else {
            Ok(())
        };
        if let Err(error) = &result {
            warn!(group = %self.config.group_id, %error, "commit on close failed");
        }
        let identity = self.committer.identity();
        if let Some(member) = self.member.take() {
            member.task.abort();
            let leave = !self.config.is_static() && !identity.member_id.is_empty();
            if leave {
                if let Err(error) = membership::leave_group(
                    &self.cluster,
                    &self.config.group_id,
                    &identity.member_id,
                    None,
                    self.request_timeout,
                )
                .await
                {
                    warn!(group = %self.config.group_id, %error, "LeaveGroup on close failed; the session timeout will remove the member");
                }
            } else {
                info!(group = %self.config.group_id, member_id = %identity.member_id, "closed without leaving (static member)");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::group::fake::{Behavior, FakeCoordinator};

    /// `commit_async` lands after an automatic commit in flight (which the coordinator holds
    /// for a while): it is sent only once that one is answered, so an older commit never
    /// lands after a newer one. What it committed is recorded: the next automatic commit has
    /// nothing to send.
    #[tokio::test]
    async fn commit_async_waits_for_the_automatic_commit_in_flight() {
        let held = Duration::from_millis(300);
        let coordinator = FakeCoordinator::start(Behavior {
            fence_commits: false, // manual assignment: generation -1
            commit_delays: vec![held],
            ..Behavior::default()
        })
        .await;
        let config = GroupConfig {
            auto_commit_interval: Duration::from_millis(1),
            ..GroupConfig::new("g")
        };
        let mut group = GroupHandle::new(
            config,
            &coordinator.addr,
            ConnectionConfig::default(),
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .unwrap();
        let tp = TopicPartition::new("t", 0);
        tokio::time::sleep(Duration::from_millis(5)).await;
        group.maybe_auto_commit(|| vec![(tp.clone(), 5)]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while coordinator.commits().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the automatic commit never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let handle = group.commit_in_background(vec![(tp.clone(), 9)]);
        handle.await.unwrap().unwrap();
        let commits = coordinator.commits();
        assert_eq!(commits.len(), 2);
        assert_eq!(commits[0].offsets, vec![(tp.clone(), 5)]);
        assert_eq!(commits[1].offsets, vec![(tp.clone(), 9)]);
        let first_answered = commits[0].answered.unwrap();
        assert!(
            commits[1].received >= first_answered,
            "commit_async was sent while the automatic commit was still held"
        );

        // The next automatic commit is due, but 9 is known to be committed.
        tokio::time::sleep(Duration::from_millis(5)).await;
        group.maybe_auto_commit(|| vec![(tp.clone(), 9)]);
        assert!(group.background.is_none(), "nothing moved: no commit");
        // A barrier: commits go out in order on one connection, so a commit sent by the call
        // above would arrive before this one.
        let barrier = group.commit_in_background(vec![(tp.clone(), 10)]);
        barrier.await.unwrap().unwrap();
        let commits = coordinator.commits();
        assert_eq!(commits.len(), 3, "{commits:?}");
        assert_eq!(commits[2].offsets, vec![(tp.clone(), 10)]);
    }
}
