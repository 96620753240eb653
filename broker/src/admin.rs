//! Topic creation and deletion, a service of shard 0 (the controller of this node): validate,
//! update and persist the registry, then have every shard open or drop its partitions (a work
//! item on each shard's bus) before answering. The Raft controller will take this role when the
//! cluster lands; the flow stays the same.

use std::rc::Rc;
use std::sync::Arc;

use wire::protocol::{
    CreateTopic, CreateTopicsRequest, DeleteTopicsRequest, ErrorCode, TopicConfig, TopicResult,
    WireError,
};

use crate::services::ShardServices;
use crate::shard::bus::reply_channel;
use crate::topics::{is_internal_topic, validate_topic_name, TopicRegistry};

/// Most partitions per topic: bounds the files and memory one request can create.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

impl ShardServices {
    /// Creates topics (shard 0 only).
    pub async fn create_topics(self: &Rc<Self>, request: CreateTopicsRequest) -> Vec<TopicResult> {
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return shutting_down(request.topics.iter().map(|t| t.name.clone()));
        };
        let mut registry = (**self.registry.borrow()).clone();
        let mut results = Vec::new();
        for topic in &request.topics {
            let error = match self.new_topic_config(topic, &registry) {
                Ok(config) => {
                    registry.topics.insert(topic.name.clone(), config);
                    WireError::none()
                }
                Err(error) => error,
            };
            results.push(TopicResult {
                name: topic.name.clone(),
                error,
            });
        }
        self.publish_results(registry, &mut results).await;
        for result in results.iter().filter(|r| r.error.is_ok()) {
            tracing::info!(topic = result.name, "topic created");
        }
        results
    }

    /// Deletes topics and their data (shard 0 only).
    pub async fn delete_topics(self: &Rc<Self>, request: DeleteTopicsRequest) -> Vec<TopicResult> {
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return shutting_down(request.names.iter().cloned());
        };
        let mut registry = (**self.registry.borrow()).clone();
        let mut results = Vec::new();
        for name in &request.names {
            let error = if is_internal_topic(name) {
                WireError::new(
                    ErrorCode::InvalidConfig,
                    format!("{name:?} is an internal topic and cannot be deleted"),
                )
            } else if registry.topics.remove(name).is_some() {
                WireError::none()
            } else {
                WireError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {name:?} does not exist"),
                )
            };
            results.push(TopicResult {
                name: name.clone(),
                error,
            });
        }
        self.publish_results(registry, &mut results).await;
        for result in results.iter().filter(|r| r.error.is_ok()) {
            let dir = self.config.data_dir.join("topics").join(&result.name);
            let _ = std::fs::remove_dir_all(&dir);
            tracing::info!(topic = result.name, "topic deleted");
        }
        results
    }

    /// Publishes `registry` when any topic succeeded; if that fails, those topics fail too.
    async fn publish_results(
        self: &Rc<Self>,
        registry: TopicRegistry,
        results: &mut [TopicResult],
    ) {
        if !results.iter().any(|r| r.error.is_ok()) {
            return;
        }
        if let Err(error) = self.publish(registry).await {
            for result in results.iter_mut().filter(|r| r.error.is_ok()) {
                result.error = WireError::new(
                    ErrorCode::StorageError,
                    format!("saving topics failed: {error}"),
                );
            }
        }
    }

    /// Persists `registry`, then has every shard (this one included) apply it.
    async fn publish(self: &Rc<Self>, registry: TopicRegistry) -> Result<(), String> {
        registry
            .save(&self.config.data_dir)
            .await
            .map_err(|e| e.to_string())?;
        let registry = Arc::new(registry);
        let mut acks = Vec::new();
        for shard in 0..self.shards() {
            if shard == self.id {
                continue;
            }
            let (reply, ack) = reply_channel();
            let registry = registry.clone();
            self.bus
                .run_on(shard, 0, move |services| async move {
                    if let Err(error) = services.apply_registry(registry).await {
                        tracing::error!(shard = services.id, %error, "applying topic changes failed");
                    }
                    let _ = reply.send(());
                })
                .await
                .map_err(|e| e.to_string())?;
            acks.push(ack);
        }
        self.apply_registry(registry)
            .await
            .map_err(|e| e.to_string())?;
        for ack in acks {
            ack.recv_async()
                .await
                .map_err(|_| "a shard stopped while applying topic changes".to_string())?;
        }
        Ok(())
    }

    fn new_topic_config(
        &self,
        topic: &CreateTopic,
        registry: &TopicRegistry,
    ) -> Result<TopicConfig, WireError> {
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
        let replication_factor = topic.replication_factor.max(1);
        if replication_factor > 1 {
            return Err(invalid(format!(
                "replication factor {replication_factor} needs {replication_factor} brokers; this cluster has 1"
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
        Ok(config)
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
