//! Cluster administration: create, delete, list and describe topics, add partitions, look
//! offsets up, inspect consumer groups (list, describe, committed offsets and lag, offset
//! resets), and operate the cluster (describe its brokers and controller quorum, reassign
//! partitions, elect leaders).
//!
//! Topic changes, metadata, group listings and cluster operations go to a bootstrap address
//! (a broker's main listener; any broker forwards cluster changes to the controller, and
//! `ControllerNotAvailable` is retried while the quorum elects a leader); offset lookups go to
//! the shard that owns each partition, like every data request; requests about one group go to
//! that group's coordinator shard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;
use wire::protocol::{
    decode_payload, ApiKey, ClusterBroker, ConsumerAssignment, ControllerVoter,
    CreatePartitionsRequest, CreatePartitionsResponse, CreatePartitionsTopic, CreateTopic,
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribedGroup, Durability, ElectLeadersRequest, ElectLeadersResponse, Encode, ErrorCode,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetFetchTopic, PartitionReassignment, PartitionRef,
    ReassignPartitionsRequest, ReassignPartitionsResponse, TopicMetadata, TopicResult,
    CONSUMER_OFFSETS_TOPIC, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};

use crate::cluster::{Cluster, TopicPartition};
use crate::connection::{decode_body, ConnectionConfig, Frame};
use crate::decommission::PartitionPlacement;
use crate::error::ClientError;

/// First pause before retrying a cluster operation the controller could not take yet.
const CONTROLLER_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between those retries (a Raft election takes a few hundred ms).
const CONTROLLER_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Settings of an [`Admin`].
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `host:port` of a broker (or several, comma-separated).
    pub bootstrap: String,
    /// Longest wait for an answer; also given to the broker as the operation timeout.
    /// Default 30 s.
    pub request_timeout: Duration,
}

impl AdminConfig {
    /// Defaults with this bootstrap address.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        AdminConfig {
            bootstrap: bootstrap.into(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A topic to create. Unset settings take the broker's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name: 1 to 200 of `[A-Za-z0-9._-]`, not starting with `__`.
    pub name: String,
    /// Number of partitions (at least 1).
    pub partitions: u32,
    /// Copies of each partition; 0 takes the broker's default (`--default-replication-factor`).
    pub replication_factor: u16,
    /// Delete sealed segments older than this; -1 keeps data forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest sealed segments beyond this size per partition; -1 for no limit.
    pub retention_bytes: Option<i64>,
    /// Segment size before a roll.
    pub segment_bytes: Option<u64>,
    /// Largest batch accepted.
    pub max_batch_bytes: Option<u32>,
    /// fsync policy.
    pub durability: Option<Durability>,
    /// `min.insync.replicas` (broker default when unset).
    pub min_insync_replicas: Option<u16>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the broker's default replication factor and
    /// settings.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 0,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            max_batch_bytes: None,
            durability: None,
            min_insync_replicas: None,
        }
    }

    /// Sets the replication factor.
    pub fn with_replication_factor(mut self, replication_factor: u16) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Sets the retention time.
    pub fn with_retention_ms(mut self, retention_ms: i64) -> Self {
        self.retention_ms = Some(retention_ms);
        self
    }

    /// Sets the retention size.
    pub fn with_retention_bytes(mut self, retention_bytes: i64) -> Self {
        self.retention_bytes = Some(retention_bytes);
        self
    }

    /// Sets the durability policy.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// Sets `min.insync.replicas`.
    pub fn with_min_insync_replicas(mut self, min_insync_replicas: u16) -> Self {
        self.min_insync_replicas = Some(min_insync_replicas);
        self
    }
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    /// Partition number.
    pub partition: u32,
    /// Leader broker, if any.
    pub leader: Option<u32>,
    /// The leader's shard that owns the partition.
    pub leader_shard: u16,
    /// Leader epoch.
    pub leader_epoch: u32,
    /// Brokers holding a replica.
    pub replicas: Vec<u32>,
    /// Replicas in sync with the leader.
    pub isr: Vec<u32>,
    /// First offset in the log (`None` if the lookup failed, e.g. no leader).
    pub log_start_offset: Option<u64>,
    /// Offset the next record will get.
    pub log_end_offset: Option<u64>,
}

impl PartitionDescription {
    /// Fewer replicas in sync than assigned: a write acknowledged now has fewer copies than
    /// the replication factor promises.
    pub fn is_under_replicated(&self) -> bool {
        self.replicas
            .iter()
            .any(|replica| !self.isr.contains(replica))
    }

    /// No leader: the partition can be neither written nor read.
    pub fn is_offline(&self) -> bool {
        self.leader.is_none()
    }
}

/// The cluster's brokers and controller quorum, as `sluice cluster status` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The cluster id.
    pub cluster_id: String,
    /// The controller quorum's leader, if one is known.
    pub controller_id: Option<u32>,
    /// The quorum's current Raft term.
    pub controller_term: u64,
    /// The voters, sorted by id.
    pub voters: Vec<ControllerVoter>,
    /// Every registered broker (fenced ones too), sorted by id.
    pub brokers: Vec<ClusterBroker>,
    /// Partitions whose ISR is smaller than their replica set.
    pub under_replicated_partitions: u32,
    /// Partitions without a leader.
    pub offline_partitions: u32,
}

/// A partition reassignment to submit: the replica set `partition` should end with,
/// preferred leader first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// The partition.
    pub partition: TopicPartition,
    /// Its target replicas.
    pub replicas: Vec<u32>,
}

/// A topic's metadata with its partitions' offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Name, settings and placement as the broker reports them.
    pub metadata: TopicMetadata,
    /// Each partition with its log start and end offsets.
    pub partitions: Vec<PartitionDescription>,
}

/// One consumer group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    /// `consumer` for consumer groups; empty for a group that only has committed offsets.
    pub protocol_type: String,
    /// Number of current members.
    pub members: u32,
}

/// A consumer group's state and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    /// `consumer` for consumer groups; empty when the group never had members.
    pub protocol_type: String,
    /// The assignment protocol the members chose (`range`, `roundrobin`,
    /// `cooperative-sticky`); empty without members.
    pub protocol: String,
    /// The group's generation: bumped by every completed rebalance.
    pub generation: i32,
    /// Member id of the leader (who computes assignments); empty without members.
    pub leader: String,
    /// Current members, sorted by member id.
    pub members: Vec<MemberDescription>,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id given by the coordinator.
    pub member_id: String,
    /// Static instance id, for static members.
    pub instance_id: Option<String>,
    /// The client's name.
    pub client_id: String,
    /// The client's address as the coordinator saw it at join.
    pub client_host: String,
    /// Its current partitions, sorted: the decoded consumer-protocol assignment; empty while
    /// it has none, and for assignments that are not the consumer protocol's.
    pub assignment: Vec<TopicPartition>,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will consume; `None` when it committed none.
    pub offset: Option<u64>,
    /// The note committed with it.
    pub metadata: String,
    /// When it was committed (ms since the epoch); `None` when never.
    pub commit_timestamp: Option<i64>,
}

/// How far a group is behind on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset; `None` when it committed none.
    pub committed: Option<u64>,
    /// The partition's log end offset; `None` when the lookup failed (no leader, ...).
    pub log_end_offset: Option<u64>,
    /// `log_end_offset - committed` when both are known (0 if the commit is ahead).
    pub lag: Option<u64>,
    /// The member the partition is assigned to, if any.
    pub member_id: Option<String>,
}

/// A group's description together with its per-partition lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    /// State and members.
    pub description: GroupDescription,
    /// Every partition of every topic the group has committed offsets for or its members are
    /// assigned, sorted.
    pub partitions: Vec<PartitionLag>,
}

/// Administers a Sluice cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
    request_timeout: Duration,
}

impl Admin {
    /// An admin client for the cluster at `bootstrap` (`host:port`), with default settings.
    /// Connects lazily.
    pub fn new(bootstrap: impl Into<String>) -> Result<Admin, ClientError> {
        Admin::with_config(AdminConfig::new(bootstrap))
    }

    /// An admin client with explicit settings.
    pub fn with_config(config: AdminConfig) -> Result<Admin, ClientError> {
        let connection = ConnectionConfig {
            request_timeout: config.request_timeout + Duration::from_secs(1),
            ..ConnectionConfig::default()
        };
        Ok(Admin {
            cluster: Arc::new(Cluster::new(&config.bootstrap, connection)?),
            request_timeout: config.request_timeout,
        })
    }

    fn timeout_ms(&self) -> u32 {
        u32::try_from(self.request_timeout.as_millis()).unwrap_or(u32::MAX)
    }

    /// Creates a topic. An existing name fails with a [`ClientError::Broker`] error whose code
    /// is `TopicAlreadyExists`. A replication factor of 0 takes the broker's default
    /// (`--default-replication-factor`).
    pub async fn create_topic(&self, topic: NewTopic) -> Result<(), ClientError> {
        let name = topic.name.clone();
        let request = CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: topic.name,
                partitions: topic.partitions,
                replication_factor: topic.replication_factor,
                retention_ms: topic.retention_ms,
                retention_bytes: topic.retention_bytes,
                segment_bytes: topic.segment_bytes,
                max_batch_bytes: topic.max_batch_bytes,
                durability: topic.durability,
                min_insync_replicas: topic.min_insync_replicas,
            }],
            timeout_ms: self.timeout_ms(),
        };
        let frame = self
            .cluster
            .bootstrap_request(ApiKey::CreateTopics, &request)
            .await?;
        let response: CreateTopicsResponse = decode_body(&frame)?;
        topic_result(&response.topics, &name)
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = DeleteTopicsRequest {
            names: vec![name.to_owned()],
            timeout_ms: self.timeout_ms(),
        };
        let frame = self
            .cluster
            .bootstrap_request(ApiKey::DeleteTopics, &request)
            .await?;
        let response: DeleteTopicsResponse = decode_body(&frame)?;
        topic_result(&response.topics, name)
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicMetadata>, ClientError> {
        let response = self.cluster.fetch_metadata(None).await?;
        let mut topics: Vec<TopicMetadata> = response
            .topics
            .into_iter()
            .filter(|topic| topic.error.is_ok())
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Where every partition of the cluster has its replicas, internal topics
    /// (`__consumer_offsets`) included: what [`crate::plan_decommission`] plans from. Sorted
    /// by topic and partition.
    pub async fn partition_placement(&self) -> Result<Vec<PartitionPlacement>, ClientError> {
        let mut topics = self.cluster.fetch_metadata(None).await?.topics;
        // "Every topic" leaves the internal ones out: ask for them by name.
        let internal = vec![CONSUMER_OFFSETS_TOPIC.to_owned()];
        topics.extend(self.cluster.fetch_metadata(Some(internal)).await?.topics);
        let mut placement: Vec<PartitionPlacement> = topics
            .iter()
            .filter(|topic| topic.error.is_ok())
            .flat_map(|topic| {
                topic.partitions.iter().map(|partition| PartitionPlacement {
                    partition: TopicPartition::new(&topic.name, partition.partition),
                    replicas: partition.replicas.clone(),
                })
            })
            .collect();
        placement.sort_by(|a, b| a.partition.cmp(&b.partition));
        placement.dedup_by(|a, b| a.partition == b.partition);
        Ok(placement)
    }

    /// A topic's settings and placement, with each partition's log start and end offsets.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let asked = [name.to_owned()];
        let response = self.cluster.fetch_metadata(Some(asked.to_vec())).await?;
        // Also feeds the cache, so the offset lookups below route with fresh leaders.
        self.cluster.install(response.clone(), Some(&asked));
        let metadata = response
            .topics
            .into_iter()
            .find(|topic| topic.name == name)
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: name.to_owned(),
            })?;
        if !metadata.error.is_ok() {
            return Err(match metadata.error.code {
                ErrorCode::UnknownTopicOrPartition => ClientError::UnknownTopic {
                    topic: name.to_owned(),
                },
                _ => ClientError::broker(metadata.error),
            });
        }
        let mut queries = Vec::with_capacity(metadata.partitions.len() * 2);
        for partition in &metadata.partitions {
            let tp = TopicPartition::new(name, partition.partition);
            queries.push((tp.clone(), EARLIEST_TIMESTAMP));
            queries.push((tp, LATEST_TIMESTAMP));
        }
        let offsets = self.cluster.list_offsets(&queries).await;
        let mut partitions: Vec<PartitionDescription> = metadata
            .partitions
            .iter()
            .zip(offsets.chunks(2))
            .map(|(partition, offsets)| PartitionDescription {
                partition: partition.partition,
                leader: u32::try_from(partition.leader).ok(),
                leader_shard: partition.leader_shard,
                leader_epoch: partition.leader_epoch,
                replicas: partition.replicas.clone(),
                isr: partition.isr.clone(),
                log_start_offset: offsets.first().and_then(|r| r.as_ref().ok().copied()),
                log_end_offset: offsets.get(1).and_then(|r| r.as_ref().ok().copied()),
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        Ok(TopicDescription {
            metadata,
            partitions,
        })
    }

    /// Grows `topic` to `total_partitions` partitions. No data moves: existing records stay
    /// where they are, and keys hash over the new count from now on, so records with a given
    /// key may go to another partition than before. Fewer partitions than the topic has
    /// fails with `InvalidConfig` (partitions are never removed).
    pub async fn create_partitions(
        &self,
        topic: &str,
        total_partitions: u32,
    ) -> Result<(), ClientError> {
        let request = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic {
                name: topic.to_owned(),
                total_partitions,
            }],
            timeout_ms: self.timeout_ms(),
        };
        let frame = self
            .controller_request(ApiKey::CreatePartitions, &request)
            .await?;
        let response: CreatePartitionsResponse = decode_body(&frame)?;
        topic_result(&response.topics, topic)
    }

    /// The cluster's brokers (fenced ones too), its controller quorum and the count of
    /// under-replicated and offline partitions.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let request = DescribeClusterRequest {
            include_fenced: true,
        };
        let frame = self
            .cluster
            .bootstrap_request(ApiKey::DescribeCluster, &request)
            .await?;
        let response: DescribeClusterResponse = decode_body(&frame)?;
        Ok(cluster_description(response))
    }

    /// Starts moving partitions to new replica sets. The controller adds the new replicas
    /// first and drops the old ones only once every new one is in sync, so this returns when
    /// the moves are accepted, not done (`sluice topic describe` shows the progress). One
    /// outcome per reassignment, in order; a request the broker refused as a whole is the
    /// error.
    pub async fn reassign_partitions(
        &self,
        reassignments: &[Reassignment],
    ) -> Result<Vec<(TopicPartition, Result<(), ClientError>)>, ClientError> {
        let request = ReassignPartitionsRequest {
            partitions: reassignments
                .iter()
                .map(|r| PartitionReassignment {
                    topic: r.partition.topic.clone(),
                    partition: r.partition.partition,
                    replicas: r.replicas.clone(),
                })
                .collect(),
            timeout_ms: self.timeout_ms(),
        };
        let frame = self
            .controller_request(ApiKey::ReassignPartitions, &request)
            .await?;
        let response: ReassignPartitionsResponse = decode_body(&frame)?;
        Ok(reassignments
            .iter()
            .map(|r| {
                let tp = &r.partition;
                let outcome = match response
                    .partitions
                    .iter()
                    .find(|p| p.topic == tp.topic && p.partition == tp.partition)
                {
                    None => Err(ClientError::Broker {
                        code: ErrorCode::Unknown,
                        message: format!("the answer does not mention {tp}"),
                    }),
                    Some(result) if result.error.is_ok() => Ok(()),
                    Some(result) => Err(partition_error(tp, result.error.clone())),
                };
                (tp.clone(), outcome)
            })
            .collect())
    }

    /// Elects partition leaders: with `preferred`, moves leadership back to each partition's
    /// first replica where it is in sync (rebalancing leaders after a broker came back);
    /// otherwise gives a leader, from the ISR, to partitions that have none. `None` means
    /// every partition of the cluster. Returns the partitions whose leader changed, sorted.
    pub async fn elect_leaders(
        &self,
        preferred: bool,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<Vec<TopicPartition>, ClientError> {
        let request = ElectLeadersRequest {
            preferred,
            partitions: partitions.map(|partitions| {
                partitions
                    .iter()
                    .map(|tp| PartitionRef {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                    })
                    .collect()
            }),
            timeout_ms: self.timeout_ms(),
        };
        let frame = self
            .controller_request(ApiKey::ElectLeaders, &request)
            .await?;
        let response: ElectLeadersResponse = decode_body(&frame)?;
        let mut changed: Vec<TopicPartition> = response
            .changed
            .into_iter()
            .map(|p| TopicPartition::new(p.topic, p.partition))
            .collect();
        changed.sort();
        Ok(changed)
    }

    /// The offset of `tp` for `timestamp`: [`EARLIEST_TIMESTAMP`] (log start),
    /// [`LATEST_TIMESTAMP`] (log end) or a time in ms since the epoch (the first record at or
    /// after it; the log end if every record is older).
    pub async fn list_offsets(
        &self,
        tp: &TopicPartition,
        timestamp: i64,
    ) -> Result<u64, ClientError> {
        let mut results = self.cluster.list_offsets(&[(tp.clone(), timestamp)]).await;
        results.pop().unwrap_or(Err(ClientError::Closed))
    }

    /// Every consumer group the cluster knows, sorted by id; groups that only have committed
    /// offsets are listed as `Empty`.
    ///
    /// Asks one broker, which answers for all its shards: complete for today's single-node
    /// clusters. A multi-broker cluster will have to ask every broker and merge the answers.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let frame = self
            .cluster
            .bootstrap_request(ApiKey::ListGroups, &ListGroupsRequest {})
            .await?;
        let response: ListGroupsResponse = decode_body(&frame)?;
        let mut groups: Vec<GroupListing> = response
            .groups
            .into_iter()
            .map(|group| GroupListing {
                group_id: group.group_id,
                state: group.state,
                protocol_type: group.protocol_type,
                members: group.members,
            })
            .collect();
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(groups)
    }

    /// A group's state, protocol, generation, leader and members with their assignments.
    /// An unknown group fails with a [`ClientError::Broker`] error whose code is
    /// `GroupIdNotFound`.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let request = DescribeGroupsRequest {
            groups: vec![group.to_owned()],
        };
        let frame = self
            .coordinator_request(group, ApiKey::DescribeGroups, &request)
            .await?;
        let response: DescribeGroupsResponse = decode_body(&frame)?;
        let described = response
            .groups
            .into_iter()
            .find(|described| described.group_id == group)
            .ok_or_else(|| ClientError::Broker {
                code: ErrorCode::Unknown,
                message: format!("the answer does not mention group {group:?}"),
            })?;
        group_description(described)
    }

    /// The offsets `group` committed: for every partition of `topics` (partitions without a
    /// commit have `offset: None`), or with `None` for every partition the group committed.
    /// Sorted by partition.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topics: Option<&[String]>,
    ) -> Result<Vec<(TopicPartition, CommittedOffset)>, ClientError> {
        let topics = match topics {
            None => None,
            Some(topics) => {
                let mut asked = Vec::with_capacity(topics.len());
                for topic in topics {
                    let route = self.cluster.route(topic).await?;
                    asked.push(OffsetFetchTopic {
                        topic: topic.clone(),
                        partitions: route.partitions.iter().map(|p| p.partition).collect(),
                    });
                }
                Some(asked)
            }
        };
        let request = OffsetFetchRequest {
            group_id: group.to_owned(),
            topics,
        };
        let frame = self
            .coordinator_request(group, ApiKey::OffsetFetch, &request)
            .await?;
        let response: OffsetFetchResponse = decode_body(&frame)?;
        let mut offsets = Vec::new();
        for topic in response.topics {
            for partition in topic.partitions {
                let tp = TopicPartition::new(&topic.topic, partition.partition);
                if !partition.error.is_ok() {
                    return Err(partition_error(&tp, partition.error));
                }
                let committed = CommittedOffset {
                    offset: u64::try_from(partition.offset).ok(),
                    metadata: partition.metadata,
                    commit_timestamp: Some(partition.commit_timestamp).filter(|ms| *ms >= 0),
                };
                offsets.push((tp, committed));
            }
        }
        offsets.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(offsets)
    }

    /// Sets `group`'s committed offsets (each the next offset the group will consume), as
    /// `sluice group reset-offsets` does. Only for a group without members: a group with
    /// members fails with a `NonEmptyGroup` [`ClientError::Broker`] error (stop its consumers
    /// first; they would overwrite the offsets with their own at their next commit). The
    /// offsets are not checked against the logs here. The first partition the broker refused
    /// is returned as the error; the other partitions may have been committed.
    pub async fn reset_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, u64)],
    ) -> Result<(), ClientError> {
        // Generation -1 with no member id: the commit of a group that has no members.
        let outside = crate::group::commit::Identity {
            generation: -1,
            member_id: String::new(),
            instance_id: None,
        };
        let request = crate::group::commit::commit_request(group, &outside, offsets);
        let frame = match self
            .coordinator_request(group, ApiKey::OffsetCommit, &request)
            .await
        {
            Err(ClientError::Broker {
                code: ErrorCode::NonEmptyGroup,
                message,
            }) => {
                return Err(ClientError::Broker {
                    code: ErrorCode::NonEmptyGroup,
                    message: format!(
                        "group {group} has active members; stop them first ({message})"
                    ),
                })
            }
            other => other?,
        };
        let response: OffsetCommitResponse = decode_body(&frame)?;
        for topic in response.topics {
            for partition in topic.partitions {
                if !partition.error.is_ok() {
                    let tp = TopicPartition::new(&topic.topic, partition.partition);
                    return Err(partition_error(&tp, partition.error));
                }
            }
        }
        Ok(())
    }

    /// How far `group` is behind: its description and, for every partition of every topic it
    /// has committed offsets for or its members are assigned, the committed offset, the log
    /// end offset, the lag and the owning member. A group the coordinator does not know but
    /// that has committed offsets is described as `Empty` with generation -1; a group with
    /// neither fails with `GroupIdNotFound`.
    pub async fn group_lag(&self, group: &str) -> Result<GroupLag, ClientError> {
        let description = match self.describe_group(group).await {
            Ok(description) => Some(description),
            Err(e) if e.code() == Some(ErrorCode::GroupIdNotFound) => None,
            Err(e) => return Err(e),
        };
        let committed = self.committed_offsets(group, None).await?;
        let description = match description {
            Some(description) => description,
            None if committed.is_empty() => {
                return Err(group_not_found(group));
            }
            None => GroupDescription {
                group_id: group.to_owned(),
                state: "Empty".to_owned(),
                protocol_type: String::new(),
                protocol: String::new(),
                generation: -1,
                leader: String::new(),
                members: Vec::new(),
            },
        };
        let mut owners: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
        for member in &description.members {
            for tp in &member.assignment {
                owners.insert(tp, &member.member_id);
            }
        }
        let topics: BTreeSet<&str> = committed
            .iter()
            .map(|(tp, _)| tp.topic.as_str())
            .chain(owners.keys().map(|tp| tp.topic.as_str()))
            .collect();
        // Every partition of those topics, so that partitions nobody consumed yet show too.
        // A topic deleted since keeps only the partitions the group knows about.
        let mut partitions: BTreeSet<TopicPartition> = committed
            .iter()
            .map(|(tp, _)| tp.clone())
            .chain(owners.keys().map(|tp| (*tp).clone()))
            .collect();
        for topic in topics {
            if let Ok(route) = self.cluster.route(topic).await {
                for partition in &route.partitions {
                    partitions.insert(TopicPartition::new(topic, partition.partition));
                }
            }
        }
        let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
        let queries: Vec<(TopicPartition, i64)> = partitions
            .iter()
            .map(|tp| (tp.clone(), LATEST_TIMESTAMP))
            .collect();
        let log_ends = self.cluster.list_offsets(&queries).await;
        let committed: BTreeMap<&TopicPartition, Option<u64>> = committed
            .iter()
            .map(|(tp, offset)| (tp, offset.offset))
            .collect();
        let lags = partitions
            .iter()
            .zip(log_ends)
            .map(|(tp, log_end)| {
                let committed = committed.get(tp).copied().flatten();
                let log_end_offset = log_end.ok();
                PartitionLag {
                    partition: tp.clone(),
                    committed,
                    log_end_offset,
                    lag: committed
                        .zip(log_end_offset)
                        .map(|(committed, end)| end.saturating_sub(committed)),
                    member_id: owners.get(tp).map(|member| (*member).to_owned()),
                }
            })
            .collect();
        Ok(GroupLag {
            description,
            partitions: lags,
        })
    }

    /// A cluster change (sent to any broker, which proposes it to the controller), retried
    /// while the answer is `ControllerNotAvailable` (the quorum is electing a leader), within
    /// the request timeout. Other errors, top-level or not, are returned as they are.
    async fn controller_request<T: Encode + Sync>(
        &self,
        api: ApiKey,
        body: &T,
    ) -> Result<Frame, ClientError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut backoff = CONTROLLER_BACKOFF_MIN;
        loop {
            let frame = self.cluster.bootstrap_request(api, body).await?;
            let (_, mut reader) = wire::protocol::decode_response_header(&frame)?;
            let error = <wire::protocol::WireError as wire::protocol::Decode>::decode(&mut reader)?;
            if error.code != ErrorCode::ControllerNotAvailable
                || Instant::now() + backoff >= deadline
            {
                return Ok(frame);
            }
            debug!(?api, %error, "controller not available; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(CONTROLLER_BACKOFF_MAX);
        }
    }

    /// A group request to the group's coordinator, retried while the coordinator moves or
    /// is loading, within the request timeout.
    async fn coordinator_request<T: wire::protocol::Encode + Sync>(
        &self,
        group: &str,
        api: ApiKey,
        body: &T,
    ) -> Result<crate::connection::Frame, ClientError> {
        let deadline = Instant::now() + self.request_timeout;
        self.cluster
            .coordinator_request(group, api, body, self.request_timeout, deadline)
            .await
    }
}

/// The cluster description `sluice cluster status` shows: brokers and voters sorted by id.
fn cluster_description(response: DescribeClusterResponse) -> ClusterDescription {
    let mut brokers = response.brokers;
    brokers.sort_by_key(|broker| broker.broker_id);
    let mut voters = response.voters;
    voters.sort_by_key(|voter| voter.id);
    ClusterDescription {
        cluster_id: response.cluster_id,
        controller_id: u32::try_from(response.controller_id).ok(),
        controller_term: response.controller_term,
        voters,
        brokers,
        under_replicated_partitions: response.under_replicated_partitions,
        offline_partitions: response.offline_partitions,
    }
}

/// The error for an unknown group.
fn group_not_found(group: &str) -> ClientError {
    ClientError::Broker {
        code: ErrorCode::GroupIdNotFound,
        message: format!("group {group:?} does not exist"),
    }
}

/// A per-partition error of a commit or offset fetch, naming the partition.
fn partition_error(tp: &TopicPartition, error: wire::protocol::WireError) -> ClientError {
    if error.code == ErrorCode::UnknownTopicOrPartition {
        return ClientError::Broker {
            code: error.code,
            message: format!("unknown topic or partition {tp}"),
        };
    }
    ClientError::Broker {
        code: error.code,
        message: format!("{tp}: {}", error.message),
    }
}

/// A described group as the client reports it; a group-level error becomes the error.
fn group_description(described: DescribedGroup) -> Result<GroupDescription, ClientError> {
    if !described.error.is_ok() {
        return Err(match described.error.code {
            ErrorCode::GroupIdNotFound => group_not_found(&described.group_id),
            _ => ClientError::broker(described.error),
        });
    }
    let mut members: Vec<MemberDescription> = described
        .members
        .into_iter()
        .map(|member| MemberDescription {
            assignment: decode_assignment(&member.assignment),
            member_id: member.member_id,
            instance_id: member.group_instance_id,
            client_id: member.client_id,
            client_host: member.client_host,
        })
        .collect();
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    Ok(GroupDescription {
        group_id: described.group_id,
        state: described.state,
        protocol_type: described.protocol_type,
        protocol: described.protocol,
        generation: described.generation,
        leader: described.leader,
        members,
    })
}

/// The partitions of a consumer-protocol assignment, sorted; empty if `bytes` is empty or not
/// a `ConsumerAssignment` (another protocol type).
fn decode_assignment(bytes: &[u8]) -> Vec<TopicPartition> {
    let Ok(assignment) = decode_payload::<ConsumerAssignment>(bytes) else {
        return Vec::new();
    };
    let mut partitions: Vec<TopicPartition> = assignment
        .partitions
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|&partition| TopicPartition::new(&topic.topic, partition))
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    partitions
}

/// The outcome for `name` in a create/delete answer.
fn topic_result(results: &[TopicResult], name: &str) -> Result<(), ClientError> {
    let result = results
        .iter()
        .find(|result| result.name == name)
        .ok_or_else(|| ClientError::Broker {
            code: ErrorCode::Unknown,
            message: format!("the answer does not mention topic {name:?}"),
        })?;
    if result.error.is_ok() {
        Ok(())
    } else if result.error.code == ErrorCode::UnknownTopicOrPartition {
        Err(ClientError::UnknownTopic {
            topic: name.to_owned(),
        })
    } else {
        Err(ClientError::broker(result.error.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::protocol::WireError;

    /// Per-topic results become typed errors; a missing answer is an error too.
    #[test]
    fn topic_results_map_to_errors() {
        let results = vec![
            TopicResult {
                name: "ok".into(),
                error: WireError::none(),
            },
            TopicResult {
                name: "dup".into(),
                error: WireError::new(ErrorCode::TopicAlreadyExists, "exists"),
            },
            TopicResult {
                name: "gone".into(),
                error: WireError::new(ErrorCode::UnknownTopicOrPartition, "no"),
            },
        ];
        assert!(topic_result(&results, "ok").is_ok());
        assert_eq!(
            topic_result(&results, "dup").err().and_then(|e| e.code()),
            Some(ErrorCode::TopicAlreadyExists)
        );
        assert!(matches!(
            topic_result(&results, "gone"),
            Err(ClientError::UnknownTopic { .. })
        ));
        assert!(topic_result(&results, "missing").is_err());
    }

    /// A described group keeps its fields, its members sorted with decoded assignments (empty
    /// for bytes that are not a consumer assignment); an unknown group is a clear error.
    #[test]
    fn described_groups_map_to_descriptions() {
        use wire::protocol::{encode_payload, DescribedMember, TopicPartitions};
        let assignment = encode_payload(&ConsumerAssignment {
            version: 1,
            partitions: vec![
                TopicPartitions {
                    topic: "b".into(),
                    partitions: vec![1, 0],
                },
                TopicPartitions {
                    topic: "a".into(),
                    partitions: vec![3],
                },
            ],
        });
        let member = |id: &str, assignment: Vec<u8>| DescribedMember {
            member_id: id.into(),
            group_instance_id: None,
            client_id: "cli".into(),
            client_host: "127.0.0.1".into(),
            metadata: Vec::new(),
            assignment,
        };
        let described = DescribedGroup {
            group_id: "g".into(),
            error: WireError::none(),
            state: "Stable".into(),
            protocol_type: "consumer".into(),
            protocol: "range".into(),
            generation: 4,
            leader: "m2".into(),
            members: vec![member("m2", assignment), member("m1", vec![1, 2, 3])],
        };
        let description = group_description(described.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(description.generation, 4);
        assert_eq!(description.members[0].member_id, "m1");
        assert!(description.members[0].assignment.is_empty());
        assert_eq!(
            description.members[1].assignment,
            vec![
                TopicPartition::new("a", 3),
                TopicPartition::new("b", 0),
                TopicPartition::new("b", 1)
            ]
        );
        let unknown = DescribedGroup {
            error: WireError::new(ErrorCode::GroupIdNotFound, "no"),
            ..described
        };
        let error = group_description(unknown).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("group \"g\" does not exist")),
            "{error:?}"
        );
        assert!(decode_assignment(&[]).is_empty());
    }
}
