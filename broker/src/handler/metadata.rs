//! Handshake and Metadata: answered from the shard's own snapshot of the registry and of the
//! shard endpoints, no cross-shard hop.

use std::rc::Rc;

use wire::protocol::{
    ApiKey, ApiVersionRange, BrokerMetadata, ErrorCode, HandshakeRequest, HandshakeResponse,
    MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata, WireError,
    PROTOCOL_VERSION,
};

use super::response_frame;
use crate::services::ShardServices;
use crate::shard::router::shard_for;

/// Answers a handshake with the supported API versions.
pub fn handshake(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: &HandshakeRequest,
) -> Vec<u8> {
    tracing::debug!(
        client = request.client_name,
        version = request.client_version,
        "handshake"
    );
    let response = HandshakeResponse {
        broker_id: shard.config.broker_id,
        cluster_id: cluster_id(shard),
        api_versions: ApiKey::ALL
            .iter()
            .map(|key| ApiVersionRange {
                api_key: *key as u16,
                min_version: PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            })
            .collect(),
    };
    response_frame(correlation_id, &response)
}

fn cluster_id(shard: &ShardServices) -> String {
    format!("sluice-single-node-{}", shard.config.broker_id)
}

/// Brokers, topics, and for every partition the shard endpoint that owns it.
pub fn metadata(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: &MetadataRequest,
) -> Vec<u8> {
    let registry = shard.registry.borrow().clone();
    let broker_id = shard.config.broker_id;
    let describe = |name: &str| -> TopicMetadata {
        let Some(config) = registry.topics.get(name) else {
            return TopicMetadata {
                name: name.to_string(),
                error: WireError::new(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("topic {name:?} does not exist"),
                ),
                ..Default::default()
            };
        };
        TopicMetadata {
            name: name.to_string(),
            error: WireError::none(),
            config: config.clone(),
            partitions: (0..config.partitions)
                .map(|partition| PartitionMetadata {
                    partition,
                    error: WireError::none(),
                    leader: broker_id as i32,
                    leader_shard: shard_for(name, partition, shard.shards()) as u16,
                    leader_epoch: 0,
                    replicas: vec![broker_id],
                    isr: vec![broker_id],
                })
                .collect(),
        }
    };
    let topics = match &request.topics {
        Some(names) => names.iter().map(|n| describe(n)).collect(),
        // "Every topic" means the users' topics; internal ones (`__consumer_offsets`) are
        // described only when asked for by name.
        None => registry
            .topics
            .keys()
            .filter(|name| !crate::topics::is_internal_topic(name))
            .map(|n| describe(n))
            .collect(),
    };
    let response = MetadataResponse {
        cluster_id: cluster_id(shard),
        controller_id: broker_id as i32,
        brokers: vec![BrokerMetadata {
            broker_id,
            host: shard.config.advertised_host.clone(),
            port: shard.main_port.get(),
            shards: shard.endpoints.borrow().as_ref().clone(),
        }],
        topics,
    };
    response_frame(correlation_id, &response)
}
