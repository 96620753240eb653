//! Consumer groups: the coordinator of group G is the shard owning partition
//! `topic_hash(G) % N` of the internal topic `__consumer_offsets`, so a group's membership and
//! its committed offsets live on one core, next to the log that makes the offsets durable. With
//! the cluster, "shard" becomes "leader of that partition" and nothing else changes.
//!
//! ```text
//!  any connection ──▶ handler::group ──(bus, if another shard coordinates G)──▶ Coordinator
//!                                                                    │ membership: state.rs
//!                                                                    │ offsets:    offsets.rs
//!                                                                    ▼
//!                                         __consumer_offsets/<p>  (durability always)
//! ```
//!
//! Each shard runs one [`Coordinator`] for the groups it coordinates and a reaper task
//! ([`Coordinator::reap_loop`]) that expires silent members and completes join phases whose
//! timeout passed.

pub mod offsets;
pub mod state;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use wire::protocol::{
    DescribedGroup, ErrorCode, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, ListedGroup, OffsetCommitPartitionResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetCommitTopicResponse, OffsetFetchPartitionResponse,
    OffsetFetchRequest, OffsetFetchResponse, OffsetFetchTopicResponse, SyncGroupRequest,
    SyncGroupResponse, TopicConfig, WireError, CONSUMER_OFFSETS_TOPIC, GROUP_ID_MAX_LEN,
};

use self::offsets::{CommitEntry, OffsetStore};
use self::state::{Group, GroupLimits, JoinOutcome, SyncOutcome};
use crate::shard::router::{shard_for, topic_hash};
use crate::shard::Shard;

/// How often the reaper looks for expired members and overdue join phases.
const REAP_PERIOD: Duration = Duration::from_millis(50);

/// Longest metadata string stored with a committed offset.
pub const COMMIT_METADATA_MAX: usize = 4096;

/// The settings of the internal `__consumer_offsets` topic.
pub fn offsets_topic_config(partitions: u32, segment_bytes: u64) -> TopicConfig {
    TopicConfig {
        partitions: partitions.max(1),
        replication_factor: 1,
        retention_ms: -1,
        retention_bytes: -1,
        segment_bytes,
        max_batch_bytes: 1 << 20,
        durability: wire::Durability::Always,
    }
}

/// The `__consumer_offsets` partition of `group`.
pub fn offsets_partition_for(group: &str, partitions: u32) -> u32 {
    (topic_hash(group) % u64::from(partitions.max(1))) as u32
}

/// The shard coordinating `group`.
pub fn coordinator_shard(group: &str, partitions: u32, shards: usize) -> usize {
    shard_for(
        CONSUMER_OFFSETS_TOPIC,
        offsets_partition_for(group, partitions),
        shards,
    )
}

/// Checks a group id: 1 to 255 bytes.
pub fn validate_group_id(group: &str) -> Result<(), WireError> {
    if group.is_empty() || group.len() > GROUP_ID_MAX_LEN {
        return Err(WireError::new(
            ErrorCode::InvalidGroupId,
            format!(
                "group id must be 1 to {GROUP_ID_MAX_LEN} bytes, got {}",
                group.len()
            ),
        ));
    }
    Ok(())
}

/// A group request, owned so that it can cross shards.
#[derive(Debug)]
pub enum GroupRequest {
    /// JoinGroup, with the client's address for describe.
    Join {
        /// The request.
        request: JoinGroupRequest,
        /// Where the client connects from.
        client_host: String,
    },
    /// SyncGroup.
    Sync(SyncGroupRequest),
    /// Heartbeat.
    Heartbeat(HeartbeatRequest),
    /// LeaveGroup.
    Leave(LeaveGroupRequest),
    /// OffsetCommit.
    OffsetCommit(OffsetCommitRequest),
    /// OffsetFetch.
    OffsetFetch(OffsetFetchRequest),
    /// DescribeGroups, for one group.
    Describe(String),
    /// ListGroups, for the groups of one shard.
    List,
}

impl GroupRequest {
    /// The group the request is about (`None` for List).
    pub fn group_id(&self) -> Option<&str> {
        Some(match self {
            GroupRequest::Join { request, .. } => &request.group_id,
            GroupRequest::Sync(request) => &request.group_id,
            GroupRequest::Heartbeat(request) => &request.group_id,
            GroupRequest::Leave(request) => &request.group_id,
            GroupRequest::OffsetCommit(request) => &request.group_id,
            GroupRequest::OffsetFetch(request) => &request.group_id,
            GroupRequest::Describe(group) => group,
            GroupRequest::List => return None,
        })
    }
}

/// The answer to a [`GroupRequest`].
#[derive(Debug)]
pub enum GroupResponse {
    /// JoinGroup.
    Join(JoinGroupResponse),
    /// SyncGroup.
    Sync(SyncGroupResponse),
    /// Heartbeat.
    Heartbeat,
    /// LeaveGroup.
    Leave,
    /// OffsetCommit.
    OffsetCommit(OffsetCommitResponse),
    /// OffsetFetch.
    OffsetFetch(OffsetFetchResponse),
    /// DescribeGroups, one group.
    Describe(DescribedGroup),
    /// ListGroups, this shard's groups.
    List(Vec<ListedGroup>),
}

/// The group coordinator of one shard.
pub struct Coordinator {
    shard_id: usize,
    limits: GroupLimits,
    offsets_partitions: u32,
    snapshot_records: u64,
    groups: RefCell<HashMap<String, Group>>,
    /// Offset stores of the `__consumer_offsets` partitions this shard owns.
    stores: RefCell<HashMap<u32, Rc<OffsetStore>>>,
    member_counter: Cell<u64>,
    /// Distinguishes member ids handed out by different runs of the broker.
    run_id: u64,
}

impl Coordinator {
    /// A coordinator with no groups; [`Coordinator::load`] reads the committed offsets.
    pub fn new(
        shard_id: usize,
        limits: GroupLimits,
        offsets_partitions: u32,
        snapshot_records: u64,
    ) -> Coordinator {
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Coordinator {
            shard_id,
            limits,
            offsets_partitions: offsets_partitions.max(1),
            snapshot_records,
            groups: RefCell::new(HashMap::new()),
            stores: RefCell::new(HashMap::new()),
            member_counter: Cell::new(0),
            run_id,
        }
    }

    /// Number of `__consumer_offsets` partitions.
    pub fn offsets_partitions(&self) -> u32 {
        self.offsets_partitions
    }

    /// Loads the committed offsets of every `__consumer_offsets` partition this shard owns.
    pub async fn load(&self, shard: &Shard) -> anyhow::Result<()> {
        self.follow_leadership(shard).await
    }

    /// Coordinates the groups of exactly the offsets partitions this shard owns and leads:
    /// loads the committed offsets of a partition it now leads (replaying its replicated
    /// log), drops those of one it no longer leads (their groups find the new coordinator
    /// through `NotCoordinator`). Called at start and after every metadata change.
    pub async fn follow_leadership(&self, shard: &Shard) -> anyhow::Result<()> {
        for partition in 0..self.offsets_partitions {
            if shard_for(CONSUMER_OFFSETS_TOPIC, partition, shard.shards()) != self.shard_id {
                continue;
            }
            let owned = shard
                .partitions
                .borrow()
                .get(CONSUMER_OFFSETS_TOPIC, partition);
            let leads = owned.as_ref().is_some_and(|p| p.replica.is_leader());
            let loaded = self.stores.borrow().contains_key(&partition);
            match (leads, loaded, owned) {
                (true, false, Some(owned)) => {
                    let store = OffsetStore::load(owned, self.snapshot_records).await?;
                    self.stores.borrow_mut().insert(partition, Rc::new(store));
                    tracing::info!(
                        shard = self.shard_id,
                        partition,
                        "coordinating the groups of an offsets partition"
                    );
                }
                (false, true, _) => {
                    self.stores.borrow_mut().remove(&partition);
                    tracing::info!(
                        shard = self.shard_id,
                        partition,
                        "no longer coordinating an offsets partition's groups"
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn store_for(&self, group: &str) -> Result<Rc<OffsetStore>, WireError> {
        let partition = offsets_partition_for(group, self.offsets_partitions);
        self.stores
            .borrow()
            .get(&partition)
            .cloned()
            .ok_or_else(|| {
                WireError::new(
                    ErrorCode::NotCoordinator,
                    format!(
                        "shard {} does not coordinate group {group:?}",
                        self.shard_id
                    ),
                )
            })
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.member_counter.get() + 1;
        self.member_counter.set(n);
        let client: String = client_id.chars().take(64).collect();
        let client = if client.is_empty() {
            "member".to_owned()
        } else {
            client
        };
        format!("{client}-{:x}-{}-{n}", self.run_id, self.shard_id)
    }

    /// Handles a group request for a group this shard coordinates.
    pub async fn handle(
        &self,
        shard: &Shard,
        request: GroupRequest,
    ) -> Result<GroupResponse, WireError> {
        if let Some(group) = request.group_id() {
            validate_group_id(group)?;
            self.store_for(group)?;
        }
        let now = Instant::now();
        match request {
            GroupRequest::Join {
                request,
                client_host,
            } => {
                let outcome = {
                    let mut groups = self.groups.borrow_mut();
                    let group = groups
                        .entry(request.group_id.clone())
                        .or_insert_with(|| Group::new(&request.group_id));
                    group.join(
                        &request,
                        || self.new_member_id(&request.client_id),
                        &client_host,
                        &self.limits,
                        now,
                    )
                };
                let reply = match outcome {
                    JoinOutcome::Now(reply) => reply,
                    JoinOutcome::Wait(answer) => answer.recv_async().await.unwrap_or_else(|_| {
                        Err(WireError::new(
                            ErrorCode::CoordinatorNotAvailable,
                            "the coordinator dropped the join",
                        ))
                    }),
                };
                reply.map(GroupResponse::Join)
            }
            GroupRequest::Sync(request) => {
                let outcome = match self.groups.borrow_mut().get_mut(&request.group_id) {
                    Some(group) => group.sync(&request, now),
                    None => SyncOutcome::Now(Err(unknown_member(&request.member_id))),
                };
                let reply = match outcome {
                    SyncOutcome::Now(reply) => reply,
                    SyncOutcome::Wait(answer) => answer.recv_async().await.unwrap_or_else(|_| {
                        Err(WireError::new(
                            ErrorCode::CoordinatorNotAvailable,
                            "the coordinator dropped the sync",
                        ))
                    }),
                };
                reply.map(GroupResponse::Sync)
            }
            GroupRequest::Heartbeat(request) => {
                match self.groups.borrow_mut().get_mut(&request.group_id) {
                    Some(group) => group.heartbeat(
                        &request.member_id,
                        request.group_instance_id.as_deref(),
                        request.generation,
                        now,
                    ),
                    None => Err(unknown_member(&request.member_id)),
                }
                .map(|()| GroupResponse::Heartbeat)
            }
            GroupRequest::Leave(request) => {
                match self.groups.borrow_mut().get_mut(&request.group_id) {
                    Some(group) => group.leave(
                        &request.member_id,
                        request.group_instance_id.as_deref(),
                        now,
                    ),
                    None => Err(unknown_member(&request.member_id)),
                }
                .map(|()| GroupResponse::Leave)
            }
            GroupRequest::OffsetCommit(request) => self.commit(shard, request, now).await,
            GroupRequest::OffsetFetch(request) => self.fetch_offsets(request),
            GroupRequest::Describe(group_id) => {
                Ok(GroupResponse::Describe(self.describe(&group_id)))
            }
            GroupRequest::List => Ok(GroupResponse::List(self.list())),
        }
    }

    /// Validates and writes a commit; answers once it is on disk.
    async fn commit(
        &self,
        shard: &Shard,
        request: OffsetCommitRequest,
        now: Instant,
    ) -> Result<GroupResponse, WireError> {
        {
            let mut groups = self.groups.borrow_mut();
            match groups.get_mut(&request.group_id) {
                Some(group) => group.check_commit(
                    &request.member_id,
                    request.group_instance_id.as_deref(),
                    request.generation,
                    now,
                )?,
                None if request.generation < 0 && request.member_id.is_empty() => {}
                None => return Err(unknown_member(&request.member_id)),
            }
        }
        let store = self.store_for(&request.group_id)?;
        let registry = shard.registry.borrow().clone();
        let mut entries = Vec::new();
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in &request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for partition in &topic.partitions {
                let known = registry
                    .topics
                    .get(&topic.topic)
                    .is_some_and(|config| partition.partition < config.partitions);
                let error = if !known {
                    crate::error_code::unknown_partition(&topic.topic, partition.partition)
                } else if partition.metadata.len() > COMMIT_METADATA_MAX {
                    WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("commit metadata is longer than {COMMIT_METADATA_MAX} bytes"),
                    )
                } else {
                    entries.push(CommitEntry {
                        group: request.group_id.clone(),
                        topic: topic.topic.clone(),
                        partition: partition.partition,
                        offset: partition.offset,
                        metadata: partition.metadata.clone(),
                    });
                    WireError::none()
                };
                partitions.push(OffsetCommitPartitionResponse {
                    partition: partition.partition,
                    error,
                });
            }
            topics.push(OffsetCommitTopicResponse {
                topic: topic.topic.clone(),
                partitions,
            });
        }
        if !entries.is_empty() {
            if let Err(error) = store.commit(entries).await {
                for partition in topics
                    .iter_mut()
                    .flat_map(|t| t.partitions.iter_mut())
                    .filter(|p| p.error.is_ok())
                {
                    partition.error = error.clone();
                }
            }
            if store.wants_snapshot() {
                let store = store.clone();
                glommio::spawn_local(async move {
                    if let Err(error) = store.snapshot().await {
                        tracing::error!(%error, "writing the offsets snapshot failed");
                    }
                })
                .detach();
            }
        }
        Ok(GroupResponse::OffsetCommit(OffsetCommitResponse { topics }))
    }

    fn fetch_offsets(&self, request: OffsetFetchRequest) -> Result<GroupResponse, WireError> {
        let store = self.store_for(&request.group_id)?;
        let committed = store.group_offsets(&request.group_id);
        let topics = match request.topics {
            Some(topics) => topics
                .into_iter()
                .map(|topic| OffsetFetchTopicResponse {
                    partitions: topic
                        .partitions
                        .iter()
                        .map(|p| fetched(*p, committed.get(&(topic.topic.clone(), *p))))
                        .collect(),
                    topic: topic.topic,
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<&str, Vec<OffsetFetchPartitionResponse>> =
                    BTreeMap::new();
                for ((topic, partition), value) in &committed {
                    by_topic
                        .entry(topic)
                        .or_default()
                        .push(fetched(*partition, Some(value)));
                }
                by_topic
                    .into_iter()
                    .map(|(topic, partitions)| OffsetFetchTopicResponse {
                        topic: topic.to_owned(),
                        partitions,
                    })
                    .collect()
            }
        };
        Ok(GroupResponse::OffsetFetch(OffsetFetchResponse { topics }))
    }

    fn describe(&self, group_id: &str) -> DescribedGroup {
        if let Some(group) = self.groups.borrow().get(group_id) {
            return group.describe();
        }
        let has_offsets = self
            .store_for(group_id)
            .is_ok_and(|store| !store.group_offsets(group_id).is_empty());
        if has_offsets {
            return Group::new(group_id).describe();
        }
        DescribedGroup {
            group_id: group_id.to_owned(),
            error: WireError::new(
                ErrorCode::GroupIdNotFound,
                format!("group {group_id:?} does not exist"),
            ),
            ..DescribedGroup::default()
        }
    }

    fn list(&self) -> Vec<ListedGroup> {
        let mut listed: BTreeMap<String, ListedGroup> = self
            .groups
            .borrow()
            .iter()
            .map(|(id, group)| (id.clone(), group.listing()))
            .collect();
        for store in self.stores.borrow().values() {
            for group in store.groups() {
                listed
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group).listing());
            }
        }
        listed.into_values().collect()
    }

    /// Expires silent members and completes overdue join phases, every [`REAP_PERIOD`], until
    /// the shard shuts down.
    pub async fn reap_loop(self: Rc<Self>, shard: Rc<Shard>) {
        while !shard.shutting_down.get() {
            glommio::timer::sleep(REAP_PERIOD).await;
            let now = Instant::now();
            let mut groups = self.groups.borrow_mut();
            for group in groups.values_mut() {
                group.expire(now);
            }
            // Empty groups are forgotten; their committed offsets stay in the stores.
            groups.retain(|_, group| !group.is_empty());
        }
    }

    /// Deletes the committed offsets of deleted topics from every store of this shard.
    pub async fn forget_topics(&self, topics: &std::collections::HashSet<String>) {
        let stores: Vec<Rc<OffsetStore>> = self.stores.borrow().values().cloned().collect();
        for store in stores {
            match store.forget_topics(topics).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(
                    count,
                    ?topics,
                    "committed offsets of deleted topics removed"
                ),
                Err(error) => {
                    tracing::error!(%error, "removing committed offsets of deleted topics failed")
                }
            }
        }
    }

    /// Every offset committed to the groups this shard coordinates, as
    /// `(group, topic, partition, offset)`; read at scrape time by the metrics endpoint.
    pub fn committed_offsets(&self) -> Vec<(String, String, u32, u64)> {
        let mut committed = Vec::new();
        for store in self.stores.borrow().values() {
            store.for_each_committed(|group, topic, partition, offset| {
                committed.push((group.to_owned(), topic.to_owned(), partition, offset));
            });
        }
        committed
    }

    /// Answers every held join and sync (the broker is stopping), so draining does not wait
    /// for rebalances.
    pub fn release_waiters(&self) {
        for group in self.groups.borrow_mut().values_mut() {
            group.release_waiters();
        }
    }

    /// Writes a snapshot of every offset store that changed since its last one (at shutdown:
    /// the next start replays nothing).
    pub async fn snapshot_all(&self) {
        let stores: Vec<Rc<OffsetStore>> = self
            .stores
            .borrow()
            .values()
            .filter(|store| store.has_unsnapshotted_records())
            .cloned()
            .collect();
        for store in stores {
            if let Err(error) = store.snapshot().await {
                tracing::error!(%error, "writing the offsets snapshot failed");
            }
        }
    }
}

fn unknown_member(member_id: &str) -> WireError {
    WireError::new(
        ErrorCode::UnknownMemberId,
        format!("member {member_id:?} is not in the group: rejoin"),
    )
}

fn fetched(partition: u32, committed: Option<&offsets::Committed>) -> OffsetFetchPartitionResponse {
    match committed {
        Some(c) => OffsetFetchPartitionResponse {
            partition,
            error: WireError::none(),
            offset: i64::try_from(c.offset).unwrap_or(i64::MAX),
            metadata: c.metadata.clone(),
            commit_timestamp: c.commit_timestamp,
        },
        None => OffsetFetchPartitionResponse {
            partition,
            error: WireError::none(),
            offset: -1,
            metadata: String::new(),
            commit_timestamp: -1,
        },
    }
}
