//! Topic and cluster administration: validate here, propose to the controller (openraft), and
//! answer once this node's shards have applied the change (each follows the controller's
//! metadata, see `ShardServices::metadata_loop`). Topic creation and deletion run on shard 0,
//! one at a time; growing topics, reassignments, leader elections and the cluster description
//! run on any shard.

use std::rc::Rc;
use std::time::Duration;

use controller::{
    BrokerId, Command, ControllerError, ElectionKind, MetadataImage, Outcome, TopicPartition,
};
use wire::protocol::{
    ClusterBroker, ControllerVoter, CreatePartitionsRequest, CreateTopic, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeClusterResponse, ElectLeadersRequest, ErrorCode, PartitionRef,
    PartitionResult, ReassignPartitionsRequest, TopicConfig, TopicResult, WireError,
};

use crate::cluster_metadata::config_strings;
use crate::services::ShardServices;
use crate::shard::bus::reply_channel;
use crate::topics::{is_internal_topic, validate_topic_name, TopicRegistry};

/// How often a topic change's answer looks for the change in this node's metadata: every
/// 5 ms costs nothing next to the Raft commit it waits for.
const APPLY_POLL: Duration = Duration::from_millis(5);

/// What a client is told about a controller refusal or failure.
pub fn controller_error(error: &ControllerError) -> WireError {
    let code = match error {
        ControllerError::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
        ControllerError::UnknownTopic { .. } | ControllerError::UnknownPartition { .. } => {
            ErrorCode::UnknownTopicOrPartition
        }
        ControllerError::InvalidTopic { .. } | ControllerError::NotEnoughBrokers { .. } => {
            ErrorCode::InvalidConfig
        }
        ControllerError::InvalidReplicas { .. } | ControllerError::UnknownBroker { .. } => {
            ErrorCode::InvalidReplicaAssignment
        }
        ControllerError::FencedLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
        ControllerError::NotLeader { .. }
        | ControllerError::Timeout { .. }
        | ControllerError::Network { .. }
        | ControllerError::Raft { .. } => ErrorCode::ControllerNotAvailable,
        ControllerError::ShutDown => ErrorCode::BrokerShuttingDown,
        _ => ErrorCode::InvalidRequest,
    };
    WireError::new(code, error.to_string())
}

/// Most partitions per topic: bounds the files and memory one request can create.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

impl ShardServices {
    /// Creates topics (shard 0 only): each is validated here, then proposed to the controller,
    /// which places its replicas; answered once this node's shards have opened them.
    pub async fn create_topics(self: &Rc<Self>, request: CreateTopicsRequest) -> Vec<TopicResult> {
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return shutting_down(request.topics.iter().map(|t| t.name.clone()));
        };
        let registry = (**self.registry.borrow()).clone();
        let mut results = Vec::new();
        for topic in &request.topics {
            let proposed = match self.new_topic_config(topic, &registry) {
                Ok((config, min_insync)) => self
                    .controller
                    .propose_async(Command::CreateTopic {
                        name: topic.name.clone(),
                        partitions: config.partitions,
                        replication_factor: config.replication_factor,
                        min_insync,
                        config: config_strings(&config),
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| controller_error(&e)),
                Err(error) => Err(error),
            };
            results.push(TopicResult {
                name: topic.name.clone(),
                error: proposed.err().unwrap_or_else(WireError::none),
            });
        }
        let created: Vec<&str> = results
            .iter()
            .filter(|r| r.error.is_ok())
            .map(|r| r.name.as_str())
            .collect();
        let timeout = Duration::from_millis(u64::from(request.timeout_ms.max(1000)));
        if let Err(error) = self
            .wait_applied(timeout, |image| {
                created.iter().all(|name| image.topics.contains_key(*name))
            })
            .await
        {
            for result in results.iter_mut().filter(|r| r.error.is_ok()) {
                result.error = error.clone();
            }
        }
        for result in results.iter().filter(|r| r.error.is_ok()) {
            tracing::info!(topic = result.name, "topic created");
        }
        results
    }

    /// Deletes topics and their data (shard 0 only), through the controller.
    pub async fn delete_topics(self: &Rc<Self>, request: DeleteTopicsRequest) -> Vec<TopicResult> {
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return shutting_down(request.names.iter().cloned());
        };
        let mut results = Vec::new();
        for name in &request.names {
            let error = if is_internal_topic(name) {
                WireError::new(
                    ErrorCode::InvalidConfig,
                    format!("{name:?} is an internal topic and cannot be deleted"),
                )
            } else {
                match self
                    .controller
                    .propose_async(Command::DeleteTopic { name: name.clone() })
                    .await
                {
                    Ok(_) => WireError::none(),
                    Err(error) => controller_error(&error),
                }
            };
            results.push(TopicResult {
                name: name.clone(),
                error,
            });
        }
        let deleted: Vec<&str> = results
            .iter()
            .filter(|r| r.error.is_ok())
            .map(|r| r.name.as_str())
            .collect();
        let timeout = Duration::from_millis(u64::from(request.timeout_ms.max(1000)));
        if let Err(error) = self
            .wait_applied(timeout, |image| {
                deleted.iter().all(|name| !image.topics.contains_key(*name))
            })
            .await
        {
            for result in results.iter_mut().filter(|r| r.error.is_ok()) {
                result.error = error.clone();
            }
        }
        for result in results.iter().filter(|r| r.error.is_ok()) {
            let dir = self.config.data_dir.join("topics").join(&result.name);
            let _ = std::fs::remove_dir_all(&dir);
            tracing::info!(topic = result.name, "topic deleted");
        }
        results
    }

    /// Grows topics (any shard), through the controller; no data moves, so keys route to
    /// other partitions from then on.
    pub async fn create_partitions(
        self: &Rc<Self>,
        request: CreatePartitionsRequest,
    ) -> Vec<TopicResult> {
        let mut results = Vec::new();
        for topic in &request.topics {
            let error = if is_internal_topic(&topic.name) {
                WireError::new(
                    ErrorCode::InvalidConfig,
                    format!("{:?} is an internal topic", topic.name),
                )
            } else {
                match self
                    .controller
                    .propose_async(Command::AddPartitions {
                        name: topic.name.clone(),
                        total_partitions: topic.total_partitions,
                    })
                    .await
                {
                    Ok(_) => WireError::none(),
                    Err(error) => controller_error(&error),
                }
            };
            results.push(TopicResult {
                name: topic.name.clone(),
                error,
            });
        }
        let grown: Vec<(&str, u32)> = request
            .topics
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.error.is_ok())
            .map(|(t, _)| (t.name.as_str(), t.total_partitions))
            .collect();
        let timeout = Duration::from_millis(u64::from(request.timeout_ms.max(1000)));
        if let Err(error) = self
            .wait_applied(timeout, |image| {
                grown.iter().all(|(name, total)| {
                    image
                        .topics
                        .get(*name)
                        .is_some_and(|t| t.partitions.len() as u32 >= *total)
                })
            })
            .await
        {
            for result in results.iter_mut().filter(|r| r.error.is_ok()) {
                result.error = error.clone();
            }
        }
        results
    }

    /// Starts reassignments (any shard): each is proposed to the controller, which adds the
    /// new replicas first and drops the old ones once the new ones are in the ISR.
    pub async fn reassign_partitions(
        self: &Rc<Self>,
        request: ReassignPartitionsRequest,
    ) -> Vec<PartitionResult> {
        let mut results = Vec::new();
        for wanted in request.partitions {
            let error = match self
                .controller
                .propose_async(Command::Reassign {
                    topic: wanted.topic.clone(),
                    partition: wanted.partition,
                    target_replicas: wanted.replicas.iter().map(|&id| BrokerId(id)).collect(),
                })
                .await
            {
                Ok(_) => WireError::none(),
                Err(error) => controller_error(&error),
            };
            tracing::info!(topic = wanted.topic, partition = wanted.partition, replicas = ?wanted.replicas, %error, "reassignment");
            results.push(PartitionResult {
                topic: wanted.topic,
                partition: wanted.partition,
                error,
            });
        }
        results
    }

    /// Elects leaders (any shard): preferred-leader rebalancing or clean election of leaderless
    /// partitions, through the controller. Returns the partitions whose leader changed.
    pub async fn elect_leaders(
        self: &Rc<Self>,
        request: ElectLeadersRequest,
    ) -> Result<Vec<PartitionRef>, WireError> {
        let partitions = match request.partitions {
            Some(partitions) => partitions
                .into_iter()
                .map(|p| TopicPartition {
                    topic: p.topic,
                    partition: p.partition,
                })
                .collect(),
            None => {
                let image = self.image.borrow().clone();
                image
                    .topics
                    .iter()
                    .flat_map(|(name, topic)| {
                        (0..topic.partitions.len() as u32).map(move |partition| TopicPartition {
                            topic: name.clone(),
                            partition,
                        })
                    })
                    .collect()
            }
        };
        let kind = if request.preferred {
            ElectionKind::Preferred
        } else {
            ElectionKind::Clean
        };
        match self
            .controller
            .propose_async(Command::ElectLeaders { partitions, kind })
            .await
        {
            Ok(Outcome::PartitionsChanged { partitions }) => Ok(partitions
                .into_iter()
                .map(|tp| PartitionRef {
                    topic: tp.topic,
                    partition: tp.partition,
                })
                .collect()),
            Ok(_) => Ok(Vec::new()),
            Err(error) => Err(controller_error(&error)),
        }
    }

    /// The cluster as the controller knows it: brokers (fenced ones too), the quorum, and
    /// counts of under-replicated and leaderless partitions.
    pub fn describe_cluster(&self) -> DescribeClusterResponse {
        let image = self.image.borrow().clone();
        let (mut under_replicated, mut offline) = (0u32, 0u32);
        for topic in image.topics.values() {
            for state in &topic.partitions {
                under_replicated += u32::from(state.isr.len() < state.replicas.len());
                offline += u32::from(state.leader.is_none());
            }
        }
        let voters = if self.config.cluster.controller_voters.is_empty() {
            vec![ControllerVoter {
                id: self.config.broker_id,
                address: self.controller.listen_addr().to_string(),
            }]
        } else {
            self.config
                .cluster
                .controller_voters
                .iter()
                .map(|v| ControllerVoter {
                    id: v.id as u32,
                    address: v.addr.to_string(),
                })
                .collect()
        };
        DescribeClusterResponse {
            cluster_id: String::new(),
            controller_id: self.controller.leader().map_or(-1, |id| id as i32),
            controller_term: self.controller.current_term(),
            voters,
            brokers: image
                .brokers
                .values()
                .map(|b| ClusterBroker {
                    broker_id: b.id.0,
                    endpoints: b.endpoints.clone(),
                    rack: b.rack.clone(),
                    fenced: b.fenced,
                    incarnation: b.incarnation,
                })
                .collect(),
            under_replicated_partitions: under_replicated,
            offline_partitions: offline,
        }
    }

    /// Waits (at most `timeout`) until this node's controller image satisfies `done`, then
    /// until every shard of this node has applied that image.
    async fn wait_applied(
        self: &Rc<Self>,
        timeout: Duration,
        done: impl Fn(&MetadataImage) -> bool,
    ) -> Result<(), WireError> {
        let deadline = std::time::Instant::now() + timeout;
        let timed_out = || {
            WireError::new(
                ErrorCode::RequestTimedOut,
                "the change was accepted but this broker did not apply it in time",
            )
        };
        let target = loop {
            let image = self.controller.metadata();
            if done(&image) {
                break image.applied_commands;
            }
            if std::time::Instant::now() >= deadline {
                return Err(timed_out());
            }
            glommio::timer::sleep(APPLY_POLL).await;
        };
        for shard in 0..self.shards() {
            let (reply, ack) = reply_channel();
            self.bus
                .run_on(shard, 0, move |services| async move {
                    let waiting = services.clone();
                    let applied = waiting
                        .changed
                        .wait_until(|| services.applied_commands() >= target);
                    let timer = glommio::timer::sleep(
                        deadline.saturating_duration_since(std::time::Instant::now()),
                    );
                    futures_lite::future::or(applied, timer).await;
                    let _ = reply.send(waiting.applied_commands() >= target);
                })
                .await
                .map_err(|_| timed_out())?;
            if !ack.recv_async().await.unwrap_or(false) {
                return Err(timed_out());
            }
        }
        Ok(())
    }

    fn new_topic_config(
        &self,
        topic: &CreateTopic,
        registry: &TopicRegistry,
    ) -> Result<(TopicConfig, u16), WireError> {
        let invalid = |message: String| WireError::new(ErrorCode::InvalidConfig, message);
        validate_topic_name(&topic.name).map_err(invalid)?;
        if is_internal_topic(&topic.name) {
            return Err(invalid(format!(
                "topic names starting with __ are internal: {:?}",
                topic.name
            )));
        }
        if registry.topics.contains_key(&topic.name) {
            return Err(WireError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {:?} already exists", topic.name),
            ));
        }
        let defaults = &self.config.topic_defaults;
        let partitions = if topic.partitions == 0 {
            defaults.partitions
        } else {
            topic.partitions
        };
        if partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(invalid(format!(
                "{partitions} partitions is more than {PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        let replication_factor = match topic.replication_factor {
            0 => self.config.cluster.default_replication_factor.max(1),
            factor => factor,
        };
        let live = self
            .image
            .borrow()
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .count();
        if usize::from(replication_factor) > live {
            return Err(invalid(format!(
                "replication factor {replication_factor} needs {replication_factor} live brokers; this cluster has {live}"
            )));
        }
        let min_insync = topic
            .min_insync_replicas
            .unwrap_or(self.config.cluster.min_insync_replicas)
            .max(1);
        if min_insync > replication_factor {
            return Err(invalid(format!(
                "min.insync.replicas {min_insync} is more than the replication factor {replication_factor}: acks=all writes could never succeed"
            )));
        }
        let config = TopicConfig {
            partitions,
            replication_factor,
            retention_ms: topic.retention_ms.unwrap_or(defaults.retention_ms),
            retention_bytes: topic.retention_bytes.unwrap_or(-1),
            segment_bytes: topic.segment_bytes.unwrap_or(defaults.segment_bytes),
            max_batch_bytes: topic.max_batch_bytes.unwrap_or(defaults.max_batch_bytes),
            durability: topic.durability.unwrap_or(defaults.durability),
        };
        crate::config::log_config(&config, None)
            .validate()
            .map_err(|e| invalid(e.to_string()))?;
        Ok((config, min_insync))
    }
}

fn shutting_down(names: impl Iterator<Item = String>) -> Vec<TopicResult> {
    names
        .map(|name| TopicResult {
            name,
            error: WireError::new(ErrorCode::BrokerShuttingDown, "the broker is shutting down"),
        })
        .collect()
}
