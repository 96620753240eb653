//! The consumer: partitions assigned by hand ([`Consumer::assign`]) or by a consumer group
//! ([`Consumer::subscribe`], see [`crate::group`]), seeks, commits, and [`Consumer::poll`], a
//! long-poll fetch loop that returns zero-copy [`Records`].
//!
//! ```text
//!  assign / seek ──▶ positions (Earliest/Latest/Timestamp resolved with ListOffsets)
//!  subscribe ──▶ membership task ──▶ assignment changes, applied at the start of poll (and as
//!       soon as they arrive while poll waits): Revoked → commit → ack, Assigned → OffsetFetch
//!       → positions (or auto_offset_reset), Lost → dropped
//!  poll ──▶ one Fetch per shard endpoint (all partitions it owns), each its own task
//!       ◀── first answer(s) with data: batches validated, records below the position skipped,
//!           positions moved past the last batch; the next fetches start at once (prefetch)
//! ```
//!
//! * Fetches for different endpoints run concurrently and independently: a shard with data
//!   answers at once even while another long-polls. At most one fetch per endpoint is in
//!   flight, so buffered responses are bounded by `endpoints × fetch_max_bytes`.
//! * `OffsetOutOfRange` is returned as [`ClientError::OffsetOutOfRange`] to a consumer without
//!   a group: it never resets a position by itself (seek to recover). A group consumer moves
//!   such a partition to [`GroupConfig::auto_offset_reset`] and logs a warning (Kafka's
//!   `auto.offset.reset`).
//! * Connection errors, `NotLeader`, `UnknownTopicOrPartition`, `FencedLeaderEpoch` and
//!   `UnknownLeaderEpoch` refresh the metadata and the fetch is retried after `retry_backoff`;
//!   a consumer therefore rides out a broker restart or a leader change and continues from its
//!   position. Each partition's fetch names the leader epoch of the consumer's metadata
//!   (KIP-320), so a replica that no longer leads refuses it instead of serving it; the
//!   metadata is also refreshed every `metadata_max_age`.
//! * With a group, positions are committed according to [`GroupConfig::delivery`]: in the
//!   background at the start of a poll (at-least-once) or before records are returned
//!   (at-most-once). A rebalance never blocks poll: partitions that stay assigned keep being
//!   fetched while the membership task rejoins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};
use wire::protocol::{
    ApiKey, ErrorCode, FetchPartition, FetchRequest, FetchResponse, FetchTopic, EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
};

use crate::cluster::{Cluster, TopicPartition};
use crate::connection::{decode_body, ConnectionConfig, Frame};
use crate::error::ClientError;
use crate::group::{Delivery, GroupConfig, GroupHandle, GroupMetadata, RebalanceEvent};
use crate::records::Records;

/// Longest wait in `poll`, before it returns records, for the next fetches' requests to be
/// written (see `Consumer::poll`): a pooled connection writes in microseconds; one still
/// connecting does not hold the records longer than this.
const PREFETCH_WRITE_WAIT: Duration = Duration::from_millis(2);

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The first offset still in the log.
    Earliest,
    /// The log end: only records produced from now on.
    Latest,
    /// This offset.
    At(u64),
    /// The first record with a timestamp at or after this (ms since the epoch); the log end
    /// when every record is older.
    Timestamp(i64),
}

impl Offset {
    /// The `ListOffsets` timestamp that resolves this, or `None` for `At`.
    fn list_offsets_timestamp(self) -> Option<i64> {
        match self {
            Offset::Earliest => Some(EARLIEST_TIMESTAMP),
            Offset::Latest => Some(LATEST_TIMESTAMP),
            Offset::Timestamp(ms) => Some(ms.max(0)),
            Offset::At(_) => None,
        }
    }
}

/// Settings of a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `host:port` of a broker (or several, comma-separated) to learn the cluster from.
    pub bootstrap: String,
    /// Longest time the broker holds a fetch waiting for `fetch_min_bytes`. Default 500 ms.
    pub fetch_max_wait: Duration,
    /// Bytes that end a fetch's wait. Default 1 (answer as soon as anything is there).
    pub fetch_min_bytes: u32,
    /// Most bytes in one fetch response. Default 50 MiB (below the 64 MiB frame limit).
    pub fetch_max_bytes: u32,
    /// Most bytes per partition in one fetch response (at least one batch is returned if
    /// there is one). Default 8 MiB, not Kafka's 1 MiB: a consumer has one fetch per
    /// partition in flight, so one partition is read at most this much per round trip. With
    /// 4 MiB a consumer could not follow a 500k msgs/s (1 KiB) producer on 2 shared cores
    /// (89–108k received); with 8 MiB it kept up (434–500k; `bench/results/2026-12-03-evening.md`).
    /// A consumer of many partitions is still bounded by `fetch_max_bytes` per response.
    pub partition_max_bytes: u32,
    /// Longest wait for a broker's answer beyond `fetch_max_wait`. Default 30 s.
    pub request_timeout: Duration,
    /// Pause after a retriable error before fetching again. Default 100 ms.
    pub retry_backoff: Duration,
    /// Longest time the consumer uses its metadata without refreshing it. Default 30 s
    /// (Kafka's `metadata.max.age.ms`).
    pub metadata_max_age: Duration,
    /// How long a connection's reader polls its socket for the next response before it sleeps.
    /// Default zero. See [`ProducerConfig::spin_before_park`](crate::ProducerConfig::spin_before_park).
    pub spin_before_park: Duration,
    /// Consumer group membership: needed for [`Consumer::subscribe`] and for committing
    /// offsets. Default `None` (manual assignment only).
    pub group: Option<GroupConfig>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            bootstrap: "127.0.0.1:9092".to_owned(),
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            metadata_max_age: crate::producer::DEFAULT_METADATA_MAX_AGE,
            spin_before_park: Duration::ZERO,
            group: None,
        }
    }
}

impl ConsumerConfig {
    /// Defaults with this bootstrap address.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ConsumerConfig {
            bootstrap: bootstrap.into(),
            ..ConsumerConfig::default()
        }
    }

    /// This configuration, as a member of a consumer group.
    pub fn with_group(self, group: GroupConfig) -> Self {
        ConsumerConfig {
            group: Some(group),
            ..self
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ClientError> {
        if let Some(group) = &self.group {
            group.validate()?;
        }
        crate::connection::check_spin_before_park(self.spin_before_park)?;
        if self.metadata_max_age.is_zero() {
            return Err(ClientError::Config(
                "metadata_max_age must be positive".into(),
            ));
        }
        let limit = wire::protocol::FRAME_SIZE_MAX - 1024 * 1024;
        if self.fetch_max_bytes == 0 || self.fetch_max_bytes as usize > limit {
            return Err(ClientError::Config(format!(
                "fetch_max_bytes must be between 1 and {limit}"
            )));
        }
        if self.partition_max_bytes == 0 {
            return Err(ClientError::Config(
                "partition_max_bytes must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ClientError::Config(
                "request_timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// One assigned partition.
#[derive(Debug)]
struct Assigned {
    tp: TopicPartition,
    topic: Arc<str>,
    /// Next offset to hand out; `None` until a pending seek is resolved.
    position: Option<u64>,
    /// A seek waiting for `ListOffsets`.
    seek: Option<Offset>,
    /// Fetch offset of the fetch in flight for this partition.
    fetching: Option<u64>,
    /// The position is the group's committed offset, still to be fetched (then
    /// `auto_offset_reset` if there is none).
    fetch_committed: bool,
}

impl Assigned {
    /// A newly assigned partition: waiting for its committed offset (group) or for a seek to
    /// the earliest offset.
    fn new(tp: &TopicPartition, fetch_committed: bool) -> Self {
        Assigned {
            tp: tp.clone(),
            topic: Arc::from(tp.topic.as_str()),
            position: None,
            seek: (!fetch_committed).then_some(Offset::Earliest),
            fetching: None,
            fetch_committed,
        }
    }
}

/// The positions of the partitions that have one (what a commit sends).
fn positions(assignment: &[Assigned]) -> Vec<(TopicPartition, u64)> {
    assignment
        .iter()
        .filter_map(|assigned| Some((assigned.tp.clone(), assigned.position?)))
        .collect()
}

/// The error of group operations on a consumer without a group.
fn no_group(operation: &str) -> ClientError {
    ClientError::Config(format!("{operation} needs a group (ConsumerConfig::group)"))
}

/// Resolves when the membership task publishes a change (never without one).
async fn group_changed(group: &mut Option<GroupHandle>) {
    match group {
        Some(group) => group.changed().await,
        None => futures::future::pending().await,
    }
}

/// What a fetch task reports.
struct FetchOutcome {
    endpoint: Arc<str>,
    /// (topic, partition, fetch offset) of every partition asked for.
    requested: Vec<(Arc<str>, u32, u64)>,
    result: Result<Frame, ClientError>,
}

/// Reads records from assigned partitions. Owned by one task (`poll` takes `&mut self`).
pub struct Consumer {
    config: ConsumerConfig,
    cluster: Arc<Cluster>,
    assignment: Vec<Assigned>,
    /// topic → partition → index in `assignment`.
    index: HashMap<String, HashMap<u32, usize>>,
    in_flight: FuturesUnordered<JoinHandle<FetchOutcome>>,
    busy_endpoints: HashSet<Arc<str>>,
    metadata_stale: bool,
    /// No fetch or lookup before this (backoff after a retriable error).
    retry_at: Option<Instant>,
    /// Group membership, commits and the rebalance callback (with [`ConsumerConfig::group`]).
    group: Option<GroupHandle>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.assignment)
            .field("in_flight", &self.in_flight.len())
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for task in self.in_flight.iter() {
            task.abort();
        }
    }
}

impl Consumer {
    /// A consumer for the cluster at `config.bootstrap`, with nothing assigned. Connects
    /// lazily.
    pub fn new(config: ConsumerConfig) -> Result<Consumer, ClientError> {
        config.validate()?;
        let connection = ConnectionConfig {
            request_timeout: config.request_timeout + config.fetch_max_wait,
            frame_size_max: wire::protocol::FRAME_SIZE_MAX,
            spin_before_park: config.spin_before_park,
            ..ConnectionConfig::default()
        };
        let group = match &config.group {
            Some(group) => Some(GroupHandle::new(
                group.clone(),
                &config.bootstrap,
                connection.clone(),
                config.request_timeout,
                config.retry_backoff,
            )?),
            None => None,
        };
        let cluster = Arc::new(Cluster::new(&config.bootstrap, connection)?);
        debug!(?config, "consumer starting");
        Ok(Consumer {
            config,
            cluster,
            assignment: Vec::new(),
            index: HashMap::new(),
            in_flight: FuturesUnordered::new(),
            busy_endpoints: HashSet::new(),
            metadata_stale: true,
            retry_at: None,
            group,
        })
    }

    /// Every partition of `topic` (from fresh metadata), e.g. to assign them all.
    pub async fn topic_partitions(&self, topic: &str) -> Result<Vec<TopicPartition>, ClientError> {
        let snapshot = self.cluster.refresh(Some(&[topic.to_owned()])).await?;
        let route = snapshot
            .topics
            .get(topic)
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: topic.to_owned(),
            })?;
        Ok(route
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect())
    }

    /// Replaces the assignment (manual assignment). Partitions kept from the previous
    /// assignment keep their position; new ones start at [`Offset::Earliest`] unless
    /// [`Consumer::seek`] says otherwise; with a group they start at the group's committed
    /// offset, else at [`GroupConfig::auto_offset_reset`].
    ///
    /// Manual assignment and [`Consumer::subscribe`] are exclusive: on a subscribed consumer
    /// this does nothing (and logs a warning).
    pub fn assign(&mut self, partitions: &[TopicPartition]) {
        if self.group.as_ref().is_some_and(GroupHandle::is_subscribed) {
            warn!("assign ignored: the consumer is subscribed (the group assigns its partitions)");
            return;
        }
        let fetch_committed = self.group.is_some();
        let mut previous: HashMap<TopicPartition, Assigned> = self
            .assignment
            .drain(..)
            .map(|assigned| (assigned.tp.clone(), assigned))
            .collect();
        self.index.clear();
        for tp in partitions {
            if self.position_index(tp).is_some() {
                continue; // listed twice
            }
            let assigned = previous
                .remove(tp)
                .unwrap_or_else(|| Assigned::new(tp, fetch_committed));
            self.index
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.partition, self.assignment.len());
            self.assignment.push(assigned);
        }
        if let Some(group) = &mut self.group {
            let removed: Vec<TopicPartition> = previous.into_keys().collect();
            group.forget(&removed);
        }
        self.metadata_stale = true;
    }

    /// Adds partitions given by the group; they start at the committed offset.
    fn add_partitions(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            if self.position_index(tp).is_some() {
                continue;
            }
            self.index
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.partition, self.assignment.len());
            self.assignment.push(Assigned::new(tp, true));
        }
        self.metadata_stale = true;
    }

    /// Stops fetching `partitions` (answers of fetches in flight for them are ignored).
    fn remove_partitions(&mut self, partitions: &[TopicPartition]) {
        let removed: HashSet<&TopicPartition> = partitions.iter().collect();
        self.assignment
            .retain(|assigned| !removed.contains(&assigned.tp));
        self.index.clear();
        for (position, assigned) in self.assignment.iter().enumerate() {
            self.index
                .entry(assigned.tp.topic.clone())
                .or_default()
                .insert(assigned.tp.partition, position);
        }
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.iter().map(|a| a.tp.clone()).collect()
    }

    fn position_index(&self, tp: &TopicPartition) -> Option<usize> {
        self.index.get(&tp.topic)?.get(&tp.partition).copied()
    }

    fn assigned_mut(&mut self, tp: &TopicPartition) -> Result<&mut Assigned, ClientError> {
        let index = self
            .position_index(tp)
            .ok_or_else(|| ClientError::NotAssigned {
                topic: tp.topic.clone(),
                partition: tp.partition,
            })?;
        Ok(&mut self.assignment[index])
    }

    /// Moves the position of an assigned partition. `At` applies at once (an offset outside
    /// the log shows up as [`ClientError::OffsetOutOfRange`] at the next poll); the others are
    /// resolved with a `ListOffsets` request at the next poll or [`Consumer::position`].
    pub fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<(), ClientError> {
        let assigned = self.assigned_mut(tp)?;
        assigned.fetch_committed = false;
        match offset {
            Offset::At(at) => {
                assigned.position = Some(at);
                assigned.seek = None;
            }
            other => {
                assigned.position = None;
                assigned.seek = Some(other);
            }
        }
        Ok(())
    }

    /// The next offset `poll` will hand out for `tp`, resolving a pending seek first.
    pub async fn position(&mut self, tp: &TopicPartition) -> Result<u64, ClientError> {
        let index = self
            .position_index(tp)
            .ok_or_else(|| ClientError::NotAssigned {
                topic: tp.topic.clone(),
                partition: tp.partition,
            })?;
        let timeout = self.config.request_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(position) = self.assignment[index].position {
                return Ok(position);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout {
                    addr: self.cluster.bootstrap().join(","),
                    timeout,
                });
            }
            // A retriable failure backs off; wait for it rather than spinning.
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at.min(deadline)).await;
            }
            match tokio::time::timeout_at(deadline, self.prepare()).await {
                Ok(result) => result?,
                Err(_) => continue,
            }
        }
    }

    /// Subscribes to `topics` through the consumer group: the group assigns their partitions
    /// to its members and moves them as members come and go. Replaces any previous
    /// subscription; takes effect at the next [`Consumer::poll`], which starts the membership.
    ///
    /// Fails without a group ([`ConsumerConfig::group`]), with no topic, and when partitions
    /// are assigned by hand (manual assignment and subscription are exclusive: `assign(&[])`
    /// first).
    pub fn subscribe(&mut self, topics: &[impl AsRef<str>]) -> Result<(), ClientError> {
        let topics: std::collections::BTreeSet<String> = topics
            .iter()
            .map(|topic| topic.as_ref().to_owned())
            .collect();
        if topics.is_empty() || topics.contains("") {
            return Err(ClientError::Config(
                "subscribe needs at least one topic, and no empty name".into(),
            ));
        }
        let manual = !self.assignment.is_empty();
        let group = self.group.as_mut().ok_or_else(|| no_group("subscribe"))?;
        if manual && !group.is_subscribed() {
            return Err(ClientError::Config(
                "manual assignment and subscription are exclusive: assign(&[]) before subscribe"
                    .into(),
            ));
        }
        group.subscribe(topics.into_iter().collect());
        Ok(())
    }

    /// Sets the function called from inside [`Consumer::poll`] (and [`Consumer::close`]) when
    /// the group changes this consumer's assignment: `Revoked` before the revoked partitions'
    /// positions are committed, `Assigned` before any record of the new partitions is
    /// returned, `Lost` when the member fell out of the group. Replaces any previous callback;
    /// ignored without a group.
    pub fn on_rebalance(&mut self, callback: impl FnMut(&RebalanceEvent) + Send + 'static) {
        match &mut self.group {
            Some(group) => group.set_callback(Box::new(callback)),
            None => warn!("on_rebalance ignored: the consumer has no group"),
        }
    }

    /// Commits the position of every assigned partition (the next offset poll would return:
    /// everything returned so far counts as processed) and waits for the coordinator to store
    /// them durably.
    ///
    /// Errors: `IllegalGeneration` / `UnknownMemberId` ([`ClientError::Broker`]) when the
    /// group rebalanced without this member (the membership rejoins); without a group,
    /// [`ClientError::Config`].
    pub async fn commit_sync(&mut self) -> Result<(), ClientError> {
        let offsets = positions(&self.assignment);
        let group = self.group.as_mut().ok_or_else(|| no_group("commit_sync"))?;
        group.commit(&offsets, false).await
    }

    /// [`Consumer::commit_sync`] in a background task: the positions are taken now, the
    /// returned handle resolves with the outcome. Lands after the commits already in flight
    /// (automatic or `commit_async`), and before any later one. Must be called within a
    /// tokio runtime.
    pub fn commit_async(&mut self) -> JoinHandle<Result<(), ClientError>> {
        match &mut self.group {
            Some(group) => group.commit_in_background(positions(&self.assignment)),
            None => tokio::spawn(async { Err(no_group("commit_async")) }),
        }
    }

    /// Commits these offsets (each the next offset to consume: one past the last processed
    /// record), whether or not the partitions are assigned.
    pub async fn commit_offsets(
        &mut self,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ClientError> {
        let group = self
            .group
            .as_mut()
            .ok_or_else(|| no_group("commit_offsets"))?;
        group.commit(offsets, false).await
    }

    /// The group's committed offset of each partition, in order (`None`: nothing committed).
    pub async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<u64>>, ClientError> {
        let group = self.group.as_ref().ok_or_else(|| no_group("committed"))?;
        group.committed(partitions).await?.into_iter().collect()
    }

    /// The group, generation and member id this consumer commits with (for offsets committed
    /// inside a producer transaction); `None` without a group.
    pub fn group_metadata(&self) -> Option<GroupMetadata> {
        self.group.as_ref().map(GroupHandle::metadata)
    }

    /// Closes the consumer: stops fetching; with a group, passes every partition to the
    /// callback as `Revoked`, then commits the positions (at-least-once with auto-commit),
    /// and leaves the group at once so that its partitions move without waiting
    /// for the session timeout, except a static member, which just stops (restarted within
    /// the session timeout, it gets its partitions back without a rebalance).
    ///
    /// Dropping a consumer instead stops it like a crash: no commit, no LeaveGroup.
    pub async fn close(mut self) -> Result<(), ClientError> {
        for task in self.in_flight.iter() {
            task.abort();
        }
        self.in_flight.clear();
        self.busy_endpoints.clear();
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        let offsets = positions(&self.assignment);
        let mut held = if group.is_subscribed() {
            self.assignment()
        } else {
            Vec::new()
        };
        held.sort();
        self.assignment.clear();
        self.index.clear();
        group.close(offsets, held).await
    }

    /// Applies what the membership task published: drops lost partitions, revokes (commits
    /// then acknowledges) and adds partitions, calling the rebalance callback for each.
    async fn follow_group(&mut self) -> Result<(), ClientError> {
        let held = self.assignment();
        let Some(group) = self.group.as_mut() else {
            return Ok(());
        };
        let Some(step) = group.next_step(&held)? else {
            return Ok(());
        };
        let plan = step.plan;
        if !plan.lost.is_empty() {
            self.remove_partitions(&plan.lost);
            if let Some(group) = &mut self.group {
                group.forget(&plan.lost);
                group.emit(RebalanceEvent::Lost(plan.lost));
            }
        }
        if !plan.revoked.is_empty() {
            let revoked: HashSet<&TopicPartition> = plan.revoked.iter().collect();
            let offsets: Vec<(TopicPartition, u64)> = positions(&self.assignment)
                .into_iter()
                .filter(|(tp, _)| revoked.contains(tp))
                .collect();
            self.remove_partitions(&plan.revoked);
            if let Some(group) = &mut self.group {
                group.emit(RebalanceEvent::Revoked(plan.revoked.clone()));
                if group.commits_on_revoke() {
                    if let Err(error) = group.commit(&offsets, true).await {
                        warn!(%error, "commit of revoked partitions failed");
                    }
                }
                group.forget(&plan.revoked);
            }
        }
        if !plan.added.is_empty() {
            self.add_partitions(&plan.added);
            if let Some(group) = &mut self.group {
                group.emit(RebalanceEvent::Assigned(plan.added));
            }
        }
        if let (Some(seq), Some(group)) = (step.ack, &mut self.group) {
            group.ack(seq);
        }
        match step.fatal {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// At-most-once: commits the positions `advances` lead to before their records are
    /// returned.
    async fn commit_before_delivery(
        &mut self,
        advances: &[(usize, u64)],
    ) -> Result<(), ClientError> {
        let Some(group) = &mut self.group else {
            return Ok(());
        };
        if group.config().delivery != Delivery::AtMostOnce || advances.is_empty() {
            return Ok(());
        }
        let offsets: Vec<(TopicPartition, u64)> = advances
            .iter()
            .map(|&(index, next)| (self.assignment[index].tp.clone(), next))
            .collect();
        group.commit(&offsets, true).await
    }

    /// Waits up to `timeout` for records from the assigned partitions and returns them
    /// (empty after the timeout). Records are views into the fetched frames: read them from
    /// the returned [`Records`], which owns the bytes.
    ///
    /// Errors: [`ClientError::OffsetOutOfRange`] without a group (seek to recover),
    /// [`ClientError::CorruptBatch`], [`ClientError::UnknownTopic`] /
    /// [`ClientError::UnknownPartition`] for assignments the cluster does not know, and
    /// non-retriable broker errors. When an error is returned no position moved.
    ///
    /// With a group, poll also runs the consumer's side of the membership: it starts it after
    /// [`Consumer::subscribe`], applies assignment changes (calling the rebalance callback),
    /// commits as [`GroupConfig::delivery`] says, and returns a fatal membership error (e.g.
    /// `FencedInstanceId`), then keeps returning it: the consumer is out of the group for good. Not calling poll for [`GroupConfig::max_poll_interval`] makes the
    /// consumer leave its group until the next poll.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Records, ClientError> {
        let deadline = Instant::now() + timeout;
        let _polling = self.group.as_mut().and_then(GroupHandle::begin_poll);
        if let Some(group) = &mut self.group {
            // At-least-once: what earlier polls returned has been processed by now.
            group.maybe_auto_commit(|| positions(&self.assignment));
        }
        loop {
            self.follow_group().await?;
            // Bounded by the deadline: reconnecting to a restarting broker may take a while.
            match tokio::time::timeout_at(deadline, self.prepare()).await {
                Ok(result) => result?,
                Err(_) => return Ok(Records::new()),
            }
            self.issue_fetches();
            if self.in_flight.is_empty() {
                // Nothing can be fetched now (no assignment, or backing off).
                let wake = self.retry_at.map_or(deadline, |at| at.min(deadline));
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    () = group_changed(&mut self.group) => {}
                }
                if Instant::now() >= deadline {
                    self.follow_group().await?;
                    return Ok(Records::new());
                }
                continue;
            }
            let first = tokio::select! {
                joined = self.in_flight.next() => match joined {
                    None => continue,
                    Some(joined) => joined,
                },
                // Revocations are applied at once, even while fetches are pending.
                () = group_changed(&mut self.group) => continue,
                () = tokio::time::sleep_until(deadline) => return Ok(Records::new()),
            };
            let mut outcomes = vec![first];
            while let Some(Some(more)) = self.in_flight.next().now_or_never() {
                outcomes.push(more);
            }
            let (records, advances) = self.process(outcomes)?;
            if !records.is_empty() {
                self.commit_before_delivery(&advances).await?;
            }
            for (index, next) in advances {
                self.assignment[index].position = Some(next);
            }
            if !records.is_empty() {
                // Start the next fetches now, so they overlap with the caller's processing:
                // wait until their requests are on the socket. A task spawned here waits in
                // this worker's LIFO slot, which no other worker steals, until this task
                // yields: without the wait, the requests would only leave once the caller has
                // processed these records and polls again.
                let written = self.issue_fetches();
                if !written.is_empty() {
                    let all = futures::future::join_all(written);
                    // Bounded: a fetch that must first connect does not hold the records.
                    let _ = tokio::time::timeout(PREFETCH_WRITE_WAIT, all).await;
                }
                return Ok(records);
            }
            if Instant::now() >= deadline {
                return Ok(records);
            }
        }
    }

    fn backing_off(&self) -> bool {
        self.retry_at.is_some_and(|at| at > Instant::now())
    }

    fn back_off(&mut self, error: &ClientError) {
        if error.invalidates_metadata() {
            self.metadata_stale = true;
        }
        self.retry_at = Some(Instant::now() + self.config.retry_backoff);
    }

    /// Refreshes stale metadata and resolves pending seeks. Retriable failures only back off;
    /// others are returned.
    async fn prepare(&mut self) -> Result<(), ClientError> {
        if self.backing_off() {
            return Ok(());
        }
        self.retry_at = None;
        if self
            .cluster
            .snapshot()
            .is_older_than(self.config.metadata_max_age, Instant::now())
        {
            self.metadata_stale = true;
        }
        if self.metadata_stale && !self.assignment.is_empty() {
            let mut topics: Vec<String> = self.index.keys().cloned().collect();
            topics.sort();
            match self.cluster.refresh(Some(&topics)).await {
                Ok(snapshot) => {
                    self.metadata_stale = false;
                    for assigned in &self.assignment {
                        let route = snapshot.topics.get(&assigned.tp.topic).ok_or_else(|| {
                            ClientError::UnknownTopic {
                                topic: assigned.tp.topic.clone(),
                            }
                        });
                        let route = match route {
                            Ok(route) => route,
                            Err(e) => {
                                self.metadata_stale = true;
                                return Err(e);
                            }
                        };
                        if route.partition(assigned.tp.partition).is_none() {
                            self.metadata_stale = true;
                            return Err(ClientError::UnknownPartition {
                                topic: assigned.tp.topic.clone(),
                                partition: assigned.tp.partition,
                                partitions: route.partition_count(),
                            });
                        }
                    }
                }
                Err(e) if e.is_retriable() => {
                    debug!(error = %e, "metadata refresh failed; backing off");
                    self.back_off(&e);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        self.resolve_committed().await?;
        let queries: Vec<(TopicPartition, i64)> = self
            .assignment
            .iter()
            .filter_map(|a| {
                let timestamp = a.seek?.list_offsets_timestamp()?;
                Some((a.tp.clone(), timestamp))
            })
            .collect();
        if queries.is_empty() {
            return Ok(());
        }
        let results = self.cluster.list_offsets(&queries).await;
        for ((tp, _), result) in queries.iter().zip(results) {
            match result {
                Ok(offset) => {
                    if let Ok(assigned) = self.assigned_mut(tp) {
                        assigned.position = Some(offset);
                        assigned.seek = None;
                        debug!(%tp, offset, "seek resolved");
                    }
                }
                Err(e) if e.is_retriable() => {
                    debug!(%tp, error = %e, "offset lookup failed; backing off");
                    self.back_off(&e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sets the position of partitions waiting for the group's committed offset: the offset,
    /// or a seek to `auto_offset_reset` when none is committed. Retriable failures only back
    /// off; others are returned.
    async fn resolve_committed(&mut self) -> Result<(), ClientError> {
        let pending: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|a| a.fetch_committed)
            .map(|a| a.tp.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let Some(group) = &self.group else {
            return Ok(());
        };
        let reset = group.config().auto_offset_reset;
        let results = match group.committed(&pending).await {
            Ok(results) => results,
            Err(e) if e.is_retriable() => {
                debug!(error = %e, "committed offsets lookup failed; backing off");
                self.back_off(&e);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut known = Vec::new();
        let mut first_error = None;
        for (tp, result) in pending.iter().zip(results) {
            match result {
                Ok(committed) => {
                    let Ok(assigned) = self.assigned_mut(tp) else {
                        continue;
                    };
                    assigned.fetch_committed = false;
                    match (committed, reset) {
                        (Some(offset), _) | (None, Offset::At(offset)) => {
                            assigned.position = Some(offset);
                            assigned.seek = None;
                        }
                        (None, reset) => {
                            assigned.position = None;
                            assigned.seek = Some(reset);
                        }
                    }
                    debug!(%tp, ?committed, "starting position from the group");
                    if let Some(offset) = committed {
                        known.push((tp.clone(), offset));
                    }
                }
                Err(e) if e.is_retriable() => {
                    debug!(%tp, error = %e, "committed offset lookup failed; backing off");
                    self.back_off(&e);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(group) = &mut self.group {
            group.record_committed(&known);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts a fetch for every endpoint that has fetchable partitions and none in flight.
    /// Returns, per fetch started, a signal fired once its request is written (dropped
    /// unfired if it fails first).
    fn issue_fetches(&mut self) -> Vec<oneshot::Receiver<()>> {
        let mut written_signals = Vec::new();
        if self.backing_off() || self.metadata_stale {
            return written_signals;
        }
        let snapshot = self.cluster.snapshot();
        let mut groups: HashMap<Arc<str>, Vec<(usize, Option<u32>)>> = HashMap::new();
        let mut stale = false;
        for (index, assigned) in self.assignment.iter().enumerate() {
            if assigned.fetching.is_some() || assigned.position.is_none() {
                continue;
            }
            let route = snapshot.topics.get(&assigned.tp.topic);
            let endpoint = match route {
                Some(route) => route.endpoint(assigned.tp.partition),
                None => Err(ClientError::UnknownTopic {
                    topic: assigned.tp.topic.clone(),
                }),
            };
            let leader_epoch = route
                .and_then(|route| route.partition(assigned.tp.partition))
                .map(|partition| partition.leader_epoch);
            match endpoint {
                Ok(endpoint) if !self.busy_endpoints.contains(&endpoint) => {
                    groups
                        .entry(endpoint)
                        .or_default()
                        .push((index, leader_epoch));
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(tp = %assigned.tp, error = %e, "no route; refreshing metadata");
                    stale = true;
                }
            }
        }
        if stale {
            self.metadata_stale = true;
            self.retry_at = Some(Instant::now() + self.config.retry_backoff);
        }
        for (endpoint, indexes) in groups {
            let mut request = FetchRequest {
                max_wait_ms: u32::try_from(self.config.fetch_max_wait.as_millis())
                    .unwrap_or(u32::MAX),
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                topics: Vec::new(),
            };
            let mut requested = Vec::with_capacity(indexes.len());
            for (index, current_leader_epoch) in indexes {
                let assigned = &mut self.assignment[index];
                let Some(offset) = assigned.position else {
                    continue;
                };
                assigned.fetching = Some(offset);
                requested.push((assigned.topic.clone(), assigned.tp.partition, offset));
                let partition = FetchPartition {
                    partition: assigned.tp.partition,
                    fetch_offset: offset,
                    max_bytes: self.config.partition_max_bytes,
                    current_leader_epoch,
                };
                match request
                    .topics
                    .iter_mut()
                    .find(|t| t.topic == assigned.tp.topic)
                {
                    Some(topic) => topic.partitions.push(partition),
                    None => request.topics.push(FetchTopic {
                        topic: assigned.tp.topic.clone(),
                        partitions: vec![partition],
                    }),
                }
            }
            self.busy_endpoints.insert(endpoint.clone());
            let cluster = self.cluster.clone();
            let (written, written_signal) = oneshot::channel();
            written_signals.push(written_signal);
            self.in_flight.push(tokio::spawn(async move {
                let result = async {
                    let connection = cluster.connection(&endpoint).await?;
                    connection
                        .request_ordered(ApiKey::Fetch, &request, Some(written))
                        .await
                }
                .await;
                FetchOutcome {
                    endpoint,
                    requested,
                    result,
                }
            }));
        }
        written_signals
    }

    /// Turns finished fetches into records and the positions they lead to (index in
    /// `assignment`, next offset), which the caller applies. On a non-retriable error the
    /// first such error is returned.
    fn process(
        &mut self,
        outcomes: Vec<Result<FetchOutcome, tokio::task::JoinError>>,
    ) -> Result<(Records, Vec<(usize, u64)>), ClientError> {
        let mut records = Records::new();
        let mut advances: Vec<(usize, u64)> = Vec::new();
        let mut first_error: Option<ClientError> = None;
        let reset: Option<Offset> = self.group.as_ref().map(|g| g.config().auto_offset_reset);
        let mut resets: Vec<usize> = Vec::new();
        for outcome in outcomes {
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(join_error) => {
                    // A fetch task panicked or was aborted: forget every in-flight marker;
                    // answers still to come are ignored since they no longer match.
                    warn!(error = %join_error, "fetch task failed");
                    self.busy_endpoints.clear();
                    for assigned in &mut self.assignment {
                        assigned.fetching = None;
                    }
                    continue;
                }
            };
            self.busy_endpoints.remove(&outcome.endpoint);
            // The partitions of this fetch whose position is still the fetch offset.
            let mut current: HashMap<(&str, u32), (usize, u64)> = HashMap::new();
            for (topic, partition, offset) in &outcome.requested {
                let Some(index) = self
                    .index
                    .get(&**topic)
                    .and_then(|partitions| partitions.get(partition))
                    .copied()
                else {
                    continue;
                };
                let assigned = &mut self.assignment[index];
                if assigned.fetching == Some(*offset) {
                    assigned.fetching = None;
                }
                if assigned.position == Some(*offset) && assigned.seek.is_none() {
                    current.insert((&**topic, *partition), (index, *offset));
                }
            }
            let frame = match outcome.result {
                Ok(frame) => frame,
                Err(e) if e.is_retriable() => {
                    debug!(endpoint = %outcome.endpoint, error = %e, "fetch failed; retrying");
                    self.back_off(&e);
                    continue;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let parts = match partition_parts(&frame) {
                Ok(parts) => parts,
                Err(e) if e.is_retriable() => {
                    self.back_off(&e);
                    continue;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let mut frame_index = None;
            let mut frame = Some(frame);
            for part in parts {
                let Some(&(index, offset)) = current.get(&(part.topic.as_str(), part.partition))
                else {
                    continue; // not asked, or moved since (seek, reassignment)
                };
                let tp = &self.assignment[index].tp;
                match part.error {
                    ErrorCode::None => {}
                    ErrorCode::OffsetOutOfRange if reset.is_some() => {
                        // A group consumer falls back to `auto_offset_reset` (Kafka's
                        // auto.offset.reset), e.g. when retention deleted what the group
                        // committed.
                        warn!(%tp, offset, log_start_offset = part.log_start_offset, "offset out of range; resetting");
                        resets.push(index);
                        continue;
                    }
                    ErrorCode::OffsetOutOfRange => {
                        first_error.get_or_insert(ClientError::OffsetOutOfRange {
                            topic: tp.topic.clone(),
                            partition: tp.partition,
                            offset,
                            log_start_offset: part.log_start_offset,
                            high_watermark: part.high_watermark,
                        });
                        continue;
                    }
                    code => {
                        let error = ClientError::Broker {
                            code,
                            message: part.message,
                        };
                        if error.is_retriable() {
                            debug!(%tp, %error, "partition fetch error; retrying");
                            self.back_off(&error);
                        } else {
                            first_error.get_or_insert(error);
                        }
                        continue;
                    }
                }
                if part.range.is_empty() {
                    continue;
                }
                let index_in_records = match (frame_index, frame.take()) {
                    (Some(i), _) => i,
                    (None, Some(frame)) => {
                        let i = records.add_frame(frame);
                        frame_index = Some(i);
                        i
                    }
                    (None, None) => continue, // unreachable: the frame is taken once
                };
                let topic = self.assignment[index].topic.clone();
                match records.add_partition(
                    index_in_records,
                    part.range,
                    &topic,
                    part.partition,
                    offset,
                ) {
                    Ok(next) if next > offset => advances.push((index, next)),
                    Ok(_) => {}
                    Err(source) => {
                        first_error.get_or_insert(ClientError::CorruptBatch {
                            topic: topic.to_string(),
                            partition: part.partition,
                            offset,
                            source,
                        });
                    }
                }
            }
        }
        for index in resets {
            let assigned = &mut self.assignment[index];
            match reset {
                Some(Offset::At(offset)) => {
                    assigned.position = Some(offset);
                    assigned.seek = None;
                }
                other => {
                    assigned.position = None;
                    assigned.seek = other;
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        Ok((records, advances))
    }
}

/// One partition's answer in a fetch response, detached from the frame: its records are a
/// byte range of the frame.
struct PartitionPart {
    topic: String,
    partition: u32,
    error: ErrorCode,
    message: String,
    high_watermark: u64,
    log_start_offset: u64,
    range: std::ops::Range<usize>,
}

/// Decodes a fetch response frame into per-partition parts.
fn partition_parts(frame: &Frame) -> Result<Vec<PartitionPart>, ClientError> {
    let response: FetchResponse<'_> = decode_body(frame)?;
    let frame_address = frame.as_ptr().addr();
    let mut parts = Vec::new();
    for topic in response.topics {
        for partition in topic.partitions {
            let bytes = partition.records.as_slice();
            let start = if bytes.is_empty() {
                0
            } else {
                bytes.as_ptr().addr() - frame_address
            };
            parts.push(PartitionPart {
                topic: topic.topic.clone(),
                partition: partition.partition,
                error: partition.error.code,
                message: partition.error.message,
                high_watermark: partition.high_watermark,
                log_start_offset: partition.log_start_offset,
                range: start..start + bytes.len(),
            });
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Assignment dedups, seeks to an offset apply at once, reassignment keeps positions and
    /// unassigned partitions are refused.
    #[tokio::test]
    async fn assign_and_seek() {
        let mut consumer = Consumer::new(ConsumerConfig::new("127.0.0.1:1")).unwrap();
        let a = TopicPartition::new("a", 0);
        let b = TopicPartition::new("a", 1);
        consumer.assign(&[a.clone(), b.clone(), a.clone()]);
        assert_eq!(consumer.assignment(), vec![a.clone(), b.clone()]);
        consumer.seek(&a, Offset::At(42)).unwrap();
        assert_eq!(consumer.position(&a).await.unwrap(), 42);
        // Reassigning keeps the position of a retained partition.
        consumer.assign(std::slice::from_ref(&a));
        assert_eq!(consumer.position(&a).await.unwrap(), 42);
        assert!(matches!(
            consumer.seek(&b, Offset::Latest),
            Err(ClientError::NotAssigned { .. })
        ));
    }

    /// A consumer moves between tasks, and `&Consumer` may be held across an await in a
    /// spawned task (`topic_partitions`), whatever its rebalance callback is.
    #[test]
    fn consumer_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Consumer>();
    }

    /// Group operations need a group; subscription and manual assignment exclude each other.
    #[tokio::test]
    async fn subscription_rules() {
        let mut plain = Consumer::new(ConsumerConfig::new("127.0.0.1:1")).unwrap();
        assert!(matches!(
            plain.subscribe(&["t"]),
            Err(ClientError::Config(_))
        ));
        assert!(matches!(
            plain.commit_sync().await,
            Err(ClientError::Config(_))
        ));
        assert!(matches!(
            plain.commit_async().await.unwrap(),
            Err(ClientError::Config(_))
        ));
        assert!(plain.group_metadata().is_none());

        let config = ConsumerConfig::new("127.0.0.1:1").with_group(GroupConfig::new("g"));
        let mut manual = Consumer::new(config.clone()).unwrap();
        manual.assign(&[TopicPartition::new("t", 0)]);
        assert!(matches!(
            manual.subscribe(&["t"]),
            Err(ClientError::Config(_))
        ));
        manual.assign(&[]);
        let empty: [&str; 0] = [];
        assert!(manual.subscribe(&empty).is_err());
        assert!(manual.subscribe(&["t", ""]).is_err());
        manual.subscribe(&["t", "u", "t"]).unwrap();
        // Subscribed: manual assignment is ignored.
        manual.assign(&[TopicPartition::new("t", 0)]);
        assert!(manual.assignment().is_empty());
        let metadata = manual.group_metadata().unwrap();
        assert_eq!((metadata.generation, metadata.member_id.as_str()), (-1, ""));

        let invalid = ConsumerConfig::new("127.0.0.1:1").with_group(GroupConfig::new(""));
        assert!(Consumer::new(invalid).is_err());
    }

    /// Directives from the membership task become assignment changes and callback events in
    /// order: revocations are acknowledged, kept partitions keep their position, a loss drops
    /// everything without an acknowledgement, a fatal error sticks.
    #[tokio::test]
    async fn group_directives_are_applied() {
        let group = GroupConfig {
            auto_commit: false, // no commit on revoke: nothing listens
            ..GroupConfig::new("g")
        };
        let config = ConsumerConfig::new("127.0.0.1:1").with_group(group);
        let mut consumer = Consumer::new(config).unwrap();
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = events.clone();
        consumer.on_rebalance(move |event| seen.lock().unwrap().push(event.clone()));
        consumer.subscribe(&["t"]).unwrap();
        let (directive, app) = consumer.group.as_mut().unwrap().attach_channels();
        let take = || std::mem::take(&mut *events.lock().unwrap());
        let tp = |partition| TopicPartition::new("t", partition);

        directive.send_modify(|d| {
            d.seq = 1;
            d.generation = 3;
            d.member_id = "m".into();
            d.assignment = vec![tp(0), tp(1)];
        });
        consumer.follow_group().await.unwrap();
        assert_eq!(take(), vec![RebalanceEvent::Assigned(vec![tp(0), tp(1)])]);
        assert_eq!(consumer.assignment(), vec![tp(0), tp(1)]);
        assert!(consumer.assignment.iter().all(|a| a.fetch_committed));
        assert_eq!(consumer.group_metadata().unwrap().generation, 3);
        consumer.seek(&tp(1), Offset::At(7)).unwrap();

        // Nothing new: nothing happens.
        consumer.follow_group().await.unwrap();
        assert!(take().is_empty());

        directive.send_modify(|d| {
            d.seq = 2;
            d.assignment = vec![tp(1), tp(2)];
            d.ack_wanted = true;
        });
        consumer.follow_group().await.unwrap();
        assert_eq!(
            take(),
            vec![
                RebalanceEvent::Revoked(vec![tp(0)]),
                RebalanceEvent::Assigned(vec![tp(2)]),
            ]
        );
        assert_eq!(app.borrow().acked, 2);
        assert_eq!(consumer.position(&tp(1)).await.unwrap(), 7);

        directive.send_modify(|d| {
            d.seq = 3;
            d.ack_wanted = false;
            d.lost_epoch = 1;
            d.assignment = vec![tp(2)];
        });
        consumer.follow_group().await.unwrap();
        assert_eq!(
            take(),
            vec![
                RebalanceEvent::Lost(vec![tp(1), tp(2)]),
                RebalanceEvent::Assigned(vec![tp(2)]),
            ]
        );
        assert_eq!(app.borrow().acked, 2);

        directive.send_modify(|d| {
            d.seq = 4;
            d.lost_epoch = 2;
            d.assignment.clear();
            d.fatal = Some(ClientError::Broker {
                code: ErrorCode::FencedInstanceId,
                message: "fenced".into(),
            });
        });
        let error = consumer.follow_group().await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::FencedInstanceId));
        assert_eq!(take(), vec![RebalanceEvent::Lost(vec![tp(2)])]);
        assert!(consumer.assignment().is_empty());
        assert!(consumer.poll(Duration::ZERO).await.is_err());
    }

    /// With nothing listening, poll neither fails nor spins: it returns empty at the timeout.
    #[tokio::test]
    async fn poll_without_broker_times_out_empty() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut consumer = Consumer::new(ConsumerConfig::new(addr)).unwrap();
        consumer.assign(&[TopicPartition::new("t", 0)]);
        let started = std::time::Instant::now();
        let records = consumer.poll(Duration::from_millis(300)).await.unwrap();
        assert!(records.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
}
