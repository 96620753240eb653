//! Handshake and Metadata: answered from the shard's own copy of the controller's metadata
//! image (brokers and their endpoints, topics, leaders, ISR), no cross-shard hop.

use std::rc::Rc;

use wire::protocol::{
    ApiKey, ApiVersionRange, BrokerMetadata, ErrorCode, HandshakeRequest, HandshakeResponse,
    MetadataRequest, MetadataResponse, PartitionMetadata, ShardEndpoint, TopicMetadata, WireError,
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
    if shard.config.cluster.is_multi_node() {
        let voters: Vec<String> = shard
            .config
            .cluster
            .controller_voters
            .iter()
            .map(|v| v.id.to_string())
            .collect();
        format!("sluice-cluster-{}", voters.join("-"))
    } else {
        format!("sluice-single-node-{}", shard.config.broker_id)
    }
}

/// A broker's metadata from its registration: `endpoints` is the main listener then one
/// `host:port` per shard.
fn broker_metadata(broker_id: u32, endpoints: &[String]) -> Option<BrokerMetadata> {
    let split = crate::cluster_metadata::split_endpoint;
    let (host, port) = split(endpoints.first()?)?;
    let shards = endpoints[1..]
        .iter()
        .enumerate()
        .filter_map(|(shard, endpoint)| {
            let (host, port) = split(endpoint)?;
            Some(ShardEndpoint {
                shard: shard as u16,
                host,
                port,
            })
        })
        .collect();
    Some(BrokerMetadata {
        broker_id,
        host,
        port,
        shards,
    })
}

/// Brokers, topics, and for every partition its leader, the leader's shard that owns it,
/// the epochs, replicas and ISR: from the shard's copy of the controller's image.
pub fn metadata(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: &MetadataRequest,
) -> Vec<u8> {
    let registry = shard.registry.borrow().clone();
    let image = shard.image.borrow().clone();
    let brokers: Vec<BrokerMetadata> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| broker_metadata(b.id.0, &b.endpoints))
        .collect();
    let shard_count = |broker: u32| crate::cluster_metadata::broker_shard_count(&image, broker);
    let describe = |name: &str| -> TopicMetadata {
        let (Some(config), Some(topic)) = (registry.topics.get(name), image.topics.get(name))
        else {
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
            partitions: topic
                .partitions
                .iter()
                .enumerate()
                .map(|(index, state)| {
                    let partition = index as u32;
                    let leader = state.leader.map(|id| id.0);
                    PartitionMetadata {
                        partition,
                        error: match leader {
                            Some(_) => WireError::none(),
                            None => WireError::new(
                                ErrorCode::NotLeader,
                                "no leader: no in-sync replica is live",
                            ),
                        },
                        leader: leader.map_or(-1, |id| id as i32),
                        leader_shard: leader
                            .map_or(0, |id| shard_for(name, partition, shard_count(id)) as u16),
                        leader_epoch: state.leader_epoch,
                        replicas: state.replicas.iter().map(|id| id.0).collect(),
                        isr: state.isr.iter().map(|id| id.0).collect(),
                    }
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
        controller_id: shard.controller.leader().map_or(-1, |id| id as i32),
        brokers,
        topics,
    };
    response_frame(correlation_id, &response)
}
