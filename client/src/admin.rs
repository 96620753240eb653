//! Cluster administration: create, delete, list and describe topics, and look offsets up.
//!
//! Topic changes and metadata go to a bootstrap address (a broker's main listener); offset
//! lookups go to the shard that owns each partition, like every data request.

use std::sync::Arc;
use std::time::Duration;

use wire::protocol::{
    ApiKey, CreateTopic, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DurabilitySetting, ErrorCode, TopicMetadata, TopicResult,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};

use crate::cluster::{Cluster, TopicPartition};
use crate::connection::{decode_body, ConnectionConfig};
use crate::error::ClientError;

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
    /// Copies of each partition.
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
    pub durability: Option<DurabilitySetting>,
}

impl NewTopic {
    /// A topic with `partitions` partitions, replication factor 1 and default settings.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            max_batch_bytes: None,
            durability: None,
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
    pub fn with_durability(mut self, durability: DurabilitySetting) -> Self {
        self.durability = Some(durability);
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

/// A topic's metadata with its partitions' offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// Name, settings and placement as the broker reports them.
    pub metadata: TopicMetadata,
    /// Each partition with its log start and end offsets.
    pub partitions: Vec<PartitionDescription>,
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
    /// is `TopicAlreadyExists`.
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
}
