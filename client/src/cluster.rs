//! The client's view of the cluster: the metadata cache (topic → partitions → leader broker and
//! leader shard → the shard's endpoint), the connection pool keyed by endpoint, and the few
//! requests every role needs (metadata, list offsets).
//!
//! Routing rule: produce, fetch and list-offsets requests for a partition go straight to the
//! endpoint of the shard that owns it (`BrokerMetadata.shards[leader_shard]`), so the broker
//! serves them with no cross-core hop; metadata and admin requests go to a bootstrap address
//! (the brokers' main listeners). Owned by [`crate::Producer`], [`crate::Consumer`] and
//! [`crate::Admin`], one `Cluster` each, behind an `Arc`.
//!
//! Recovery: a dead connection is replaced on its next use, with a backoff between failed
//! attempts (so a restarting broker is not hammered); callers refresh the metadata when an
//! error says it may be stale ([`ClientError::invalidates_metadata`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::join_all;
use tokio::time::Instant;
use tracing::{debug, warn};
use wire::protocol::{
    ApiKey, BrokerMetadata, Decode, Encode, ErrorCode, FindCoordinatorRequest,
    FindCoordinatorResponse, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopic, MetadataRequest, MetadataResponse, TopicConfig, WireError,
};

/// First pause before retrying a request whose coordinator was not available.
const COORDINATOR_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between coordinator retries.
const COORDINATOR_BACKOFF_MAX: Duration = Duration::from_secs(1);

use crate::connection::{decode_body, Connection, ConnectionConfig, Frame};
use crate::error::ClientError;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Longest pause between two connection attempts to the same endpoint: the backoff doubles
/// from 50 ms at each consecutive failure up to this, so a broker that restarts in a few
/// seconds is found again within a second of coming back.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// First pause after a failed connection attempt.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Where one partition lives.
#[derive(Debug, Clone)]
pub(crate) struct PartitionRoute {
    /// Partition number.
    pub partition: u32,
    /// `host:port` of that shard's listener (the broker's main listener if it advertises no
    /// shard endpoints); `None` without a leader.
    pub endpoint: Option<Arc<str>>,
    /// The leader epoch the metadata named: sent with fetches, so a replica that stopped
    /// leading (or has not learned it leads yet) says so instead of serving stale data.
    pub leader_epoch: u32,
}

/// A topic's settings and partitions, as cached.
#[derive(Debug, Clone)]
pub(crate) struct TopicRoute {
    /// Topic name, shared by every record metadata and record view that names it.
    pub name: Arc<str>,
    /// Settings (partition count, largest batch, ...).
    pub config: TopicConfig,
    /// Partitions sorted by number.
    pub partitions: Vec<PartitionRoute>,
}

impl TopicRoute {
    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        u32::try_from(self.partitions.len()).unwrap_or(u32::MAX)
    }

    /// The route of `partition`.
    pub fn partition(&self, partition: u32) -> Option<&PartitionRoute> {
        match self.partitions.get(partition as usize) {
            Some(route) if route.partition == partition => Some(route),
            _ => self.partitions.iter().find(|p| p.partition == partition),
        }
    }

    /// The endpoint serving `partition`, or why there is none.
    pub fn endpoint(&self, partition: u32) -> Result<Arc<str>, ClientError> {
        let route = self
            .partition(partition)
            .ok_or_else(|| ClientError::UnknownPartition {
                topic: self.name.to_string(),
                partition,
                partitions: self.partition_count(),
            })?;
        route.endpoint.clone().ok_or_else(|| ClientError::NoLeader {
            topic: self.name.to_string(),
            partition,
        })
    }
}

/// One immutable snapshot of the metadata cache; replaced whole at each refresh.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterMetadata {
    /// Brokers by id.
    pub brokers: HashMap<u32, BrokerMetadata>,
    /// Topics by name (only those asked about so far).
    pub topics: HashMap<String, Arc<TopicRoute>>,
    /// Bumped at every refresh, to coalesce concurrent refreshes.
    pub generation: u64,
    /// When this snapshot was fetched (`None` before the first refresh): producers and
    /// consumers refresh once it is older than their `metadata_max_age`.
    pub refreshed_at: Option<Instant>,
}

impl ClusterMetadata {
    /// True when the snapshot was never fetched or is at least `max_age` old at `now`.
    pub fn is_older_than(&self, max_age: Duration, now: Instant) -> bool {
        self.refreshed_at
            .is_none_or(|at| now.saturating_duration_since(at) >= max_age)
    }
}

/// `host:port`, bracketing IPv6 hosts.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The endpoint of `shard` on `broker`: its shard listener, else the main listener.
fn shard_endpoint(broker: &BrokerMetadata, shard: u16) -> String {
    broker
        .shards
        .iter()
        .find(|endpoint| endpoint.shard == shard)
        .map(|endpoint| host_port(&endpoint.host, endpoint.port))
        .unwrap_or_else(|| host_port(&broker.host, broker.port))
}

impl ClusterMetadata {
    /// The next snapshot: brokers from `response`, the topics of `response` replacing those
    /// asked for (`asked == None`: all topics), the other cached topics kept.
    fn merged(&self, response: MetadataResponse, asked: Option<&[String]>) -> ClusterMetadata {
        let brokers: HashMap<u32, BrokerMetadata> = response
            .brokers
            .into_iter()
            .map(|broker| (broker.broker_id, broker))
            .collect();
        let mut topics = match asked {
            None => HashMap::new(),
            Some(asked) => {
                let mut topics = self.topics.clone();
                for name in asked {
                    topics.remove(name);
                }
                topics
            }
        };
        for topic in response.topics {
            if !topic.error.is_ok() {
                if topic.error.code != ErrorCode::UnknownTopicOrPartition {
                    warn!(topic = %topic.name, error = %topic.error, "metadata error for topic");
                }
                continue;
            }
            let mut partitions: Vec<PartitionRoute> = topic
                .partitions
                .iter()
                .map(|partition| {
                    let leader = u32::try_from(partition.leader)
                        .ok()
                        .filter(|_| partition.error.is_ok());
                    let endpoint = leader
                        .and_then(|id| brokers.get(&id))
                        .map(|broker| Arc::from(shard_endpoint(broker, partition.leader_shard)));
                    PartitionRoute {
                        partition: partition.partition,
                        endpoint,
                        leader_epoch: partition.leader_epoch,
                    }
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let route = TopicRoute {
                name: Arc::from(topic.name.as_str()),
                config: topic.config,
                partitions,
            };
            topics.insert(topic.name, Arc::new(route));
        }
        ClusterMetadata {
            brokers,
            topics,
            generation: self.generation + 1,
            refreshed_at: Some(Instant::now()),
        }
    }
}

/// Reconnection state of one endpoint.
#[derive(Default)]
struct Slot {
    connection: Option<Connection>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Metadata cache plus connection pool, shared by one producer, consumer or admin.
pub(crate) struct Cluster {
    bootstrap: Vec<String>,
    config: ConnectionConfig,
    /// Endpoint → its slot. The outer lock is held only to find or insert a slot; the slot's
    /// own async lock serialises (re)connection attempts to that endpoint.
    pool: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
    metadata: RwLock<Arc<ClusterMetadata>>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Group id → `host:port` of its coordinator's shard endpoint, as last found.
    coordinators: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster reached through `bootstrap`: one `host:port`, or several separated by commas
    /// (tried in order). Connects lazily.
    pub fn new(bootstrap: &str, config: ConnectionConfig) -> Result<Self, ClientError> {
        config.validate()?;
        let bootstrap: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|addr| !addr.is_empty())
            .map(str::to_owned)
            .collect();
        if bootstrap.is_empty() {
            return Err(ClientError::Config(
                "bootstrap must name at least one host:port".into(),
            ));
        }
        Ok(Cluster {
            bootstrap,
            config,
            pool: Mutex::new(HashMap::new()),
            metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            refresh_lock: tokio::sync::Mutex::new(()),
            coordinators: Mutex::new(HashMap::new()),
        })
    }

    /// The bootstrap addresses.
    pub fn bootstrap(&self) -> &[String] {
        &self.bootstrap
    }

    /// The current metadata snapshot (cheap: an `Arc` clone).
    pub fn snapshot(&self) -> Arc<ClusterMetadata> {
        self.metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The cached route of `topic`, if any.
    pub fn cached_route(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        self.snapshot().topics.get(topic).cloned()
    }

    /// A live connection to `addr`: the pooled one, or a new one. After a failed attempt the
    /// next one waits for a backoff (50 ms doubling to 1 s), so callers retrying in a loop
    /// reconnect at a bounded rate while a broker restarts.
    pub async fn connection(&self, addr: &str) -> Result<Connection, ClientError> {
        let slot = {
            let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
            // Looked up first so the usual case (a pooled endpoint) allocates nothing.
            match pool.get(addr) {
                Some(slot) => slot.clone(),
                None => pool.entry(addr.to_owned()).or_default().clone(),
            }
        };
        let mut slot = slot.lock().await;
        if let Some(connection) = &slot.connection {
            if connection.is_alive() {
                return Ok(connection.clone());
            }
            debug!(addr, "replacing dead connection");
            slot.connection = None;
        }
        if let Some(retry_at) = slot.retry_at {
            tokio::time::sleep_until(retry_at).await;
        }
        match Connection::connect(addr, self.config.clone()).await {
            Ok(connection) => {
                slot.failures = 0;
                slot.retry_at = None;
                slot.connection = Some(connection.clone());
                Ok(connection)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = RECONNECT_BACKOFF_MIN
                    .saturating_mul(1 << slot.failures.min(8).saturating_sub(1))
                    .min(RECONNECT_BACKOFF_MAX);
                slot.retry_at = Some(Instant::now() + backoff);
                debug!(addr, failures = slot.failures, error = %e, "connection attempt failed");
                Err(e)
            }
        }
    }

    /// True when the last connection attempt to `addr` failed and its backoff has not ended:
    /// a new attempt would first wait for it.
    fn in_backoff(&self, addr: &str) -> bool {
        let slot = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .cloned();
        let Some(slot) = slot else {
            return false;
        };
        // A slot locked right now is being (re)connected by another caller: not known dead.
        let Ok(slot) = slot.try_lock() else {
            return false;
        };
        slot.connection.is_none() && slot.retry_at.is_some_and(|at| at > Instant::now())
    }

    /// Sends a request to the first bootstrap address (then any known broker's main listener)
    /// that answers. Used for metadata and admin requests. Addresses whose last connection
    /// attempt failed recently go last, so a dead first bootstrap address costs one refused
    /// connection, not a reconnection backoff at every request.
    pub async fn bootstrap_request<T: Encode + Sync>(
        &self,
        api: ApiKey,
        body: &T,
    ) -> Result<Frame, ClientError> {
        let mut addresses = self.bootstrap.clone();
        for broker in self.snapshot().brokers.values() {
            let addr = host_port(&broker.host, broker.port);
            if !addresses.contains(&addr) {
                addresses.push(addr);
            }
        }
        // Stable: the bootstrap order is kept among the live and among the backing-off ones.
        addresses.sort_by_key(|addr| self.in_backoff(addr));
        let mut last_error = ClientError::Closed;
        for addr in &addresses {
            let result = match self.connection(addr).await {
                Ok(connection) => connection.request(api, body).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(frame) => return Ok(frame),
                Err(e) if e.is_retriable() && e.code().is_none() => {
                    debug!(addr, error = %e, "bootstrap address unavailable, trying the next");
                    last_error = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error)
    }

    /// The `host:port` of the shard endpoint coordinating `group` (cached until forgotten).
    pub async fn coordinator(&self, group: &str) -> Result<String, ClientError> {
        if let Some(addr) = self
            .coordinators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
        {
            return Ok(addr.clone());
        }
        let request = FindCoordinatorRequest {
            group_id: group.to_owned(),
        };
        let frame = self
            .bootstrap_request(ApiKey::FindCoordinator, &request)
            .await?;
        let found: FindCoordinatorResponse = decode_body(&frame)?;
        let addr = host_port(&found.host, found.port);
        debug!(group, addr, shard = found.shard, "coordinator found");
        self.coordinators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.to_owned(), addr.clone());
        Ok(addr)
    }

    /// Forgets the cached coordinator of `group` (after `NotCoordinator` or a lost connection).
    pub fn forget_coordinator(&self, group: &str) {
        self.coordinators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group);
    }

    /// Sends a group request to the group's coordinator and returns the answer frame (decode it
    /// with [`decode_body`]). Retriable failures (connection errors, `NotCoordinator`,
    /// `CoordinatorNotAvailable`, timeouts) forget the coordinator and retry after a backoff
    /// until `deadline`; other errors, including every top-level group error, are returned.
    /// `timeout` bounds each attempt (a held `JoinGroup` needs the rebalance timeout).
    pub async fn coordinator_request<T: Encode + Sync>(
        &self,
        group: &str,
        api: ApiKey,
        body: &T,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<Frame, ClientError> {
        let mut backoff = COORDINATOR_BACKOFF_MIN;
        loop {
            let attempt = async {
                let addr = self.coordinator(group).await?;
                let connection = self.connection(&addr).await?;
                let frame = connection.request_with_timeout(api, body, timeout).await?;
                // Surface a top-level error now, so that retriable ones are retried here.
                let (_, mut reader) = wire::protocol::decode_response_header(&frame)?;
                let error = WireError::decode(&mut reader)?;
                if error.is_ok() {
                    Ok(frame)
                } else {
                    Err(ClientError::broker(error))
                }
            }
            .await;
            match attempt {
                Ok(frame) => return Ok(frame),
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    debug!(group, error = %e, "coordinator request failed; retrying");
                    self.forget_coordinator(group);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(COORDINATOR_BACKOFF_MAX);
                }
                Err(e) => {
                    if e.is_retriable() {
                        self.forget_coordinator(group);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Asks for metadata (`None`: every topic) without touching the cache.
    pub async fn fetch_metadata(
        &self,
        topics: Option<Vec<String>>,
    ) -> Result<MetadataResponse, ClientError> {
        let request = MetadataRequest { topics };
        let frame = self.bootstrap_request(ApiKey::Metadata, &request).await?;
        decode_body(&frame)
    }

    /// Refreshes the cache for `topics` (`None`: all topics, dropping any others) and returns
    /// the new snapshot. Concurrent refreshes are coalesced: a caller that waited for another
    /// caller's refresh uses its result if it covers the topics asked for.
    pub async fn refresh(
        &self,
        topics: Option<&[String]>,
    ) -> Result<Arc<ClusterMetadata>, ClientError> {
        let generation = self.snapshot().generation;
        let _refreshing = self.refresh_lock.lock().await;
        let current = self.snapshot();
        if current.generation != generation {
            if let Some(topics) = topics {
                if topics.iter().all(|t| current.topics.contains_key(t)) {
                    return Ok(current);
                }
            }
        }
        let response = self.fetch_metadata(topics.map(<[String]>::to_vec)).await?;
        Ok(self.install(response, topics))
    }

    /// Merges a metadata answer for `topics` (`None`: all topics) into the cache and returns
    /// the new snapshot.
    pub fn install(
        &self,
        response: MetadataResponse,
        topics: Option<&[String]>,
    ) -> Arc<ClusterMetadata> {
        let mut cache = self.metadata.write().unwrap_or_else(|e| e.into_inner());
        let next = Arc::new(cache.merged(response, topics));
        debug!(
            generation = next.generation,
            brokers = next.brokers.len(),
            topics = next.topics.len(),
            "metadata refreshed"
        );
        *cache = next.clone();
        next
    }

    /// The route of `topic`, refreshing the cache once if it is not cached; fails with
    /// [`ClientError::UnknownTopic`] if the fresh metadata does not know it either.
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        if let Some(route) = self.cached_route(topic) {
            return Ok(route);
        }
        let snapshot = self.refresh(Some(&[topic.to_owned()])).await?;
        snapshot
            .topics
            .get(topic)
            .cloned()
            .ok_or_else(|| ClientError::UnknownTopic {
                topic: topic.to_owned(),
            })
    }

    /// Looks up offsets (`timestamp` as in `ListOffsets`: earliest, latest or a time) for many
    /// partitions: one request per owning shard endpoint, all in flight at once. Returns one
    /// result per query, in order.
    pub async fn list_offsets(
        &self,
        queries: &[(TopicPartition, i64)],
    ) -> Vec<Result<u64, ClientError>> {
        let mut results: Vec<Option<Result<u64, ClientError>>> = vec![None; queries.len()];
        // (endpoint, round) → indexes of the queries it answers. A partition asked about n
        // times goes into n requests (rounds), since answers are matched by partition.
        let mut groups: HashMap<(Arc<str>, usize), Vec<usize>> = HashMap::new();
        let mut rounds: HashMap<&TopicPartition, usize> = HashMap::new();
        for (index, (tp, _)) in queries.iter().enumerate() {
            match self
                .route(&tp.topic)
                .await
                .and_then(|r| r.endpoint(tp.partition))
            {
                Ok(endpoint) => {
                    let round = rounds.entry(tp).or_insert(0);
                    groups.entry((endpoint, *round)).or_default().push(index);
                    *round += 1;
                }
                Err(e) => results[index] = Some(Err(e)),
            }
        }
        let requests = groups
            .into_iter()
            .map(|((endpoint, _), indexes)| async move {
                let mut request = ListOffsetsRequest::default();
                for &index in &indexes {
                    let (tp, timestamp) = &queries[index];
                    let partition = ListOffsetsPartition {
                        partition: tp.partition,
                        timestamp: *timestamp,
                    };
                    match request.topics.iter_mut().find(|t| t.topic == tp.topic) {
                        Some(topic) => topic.partitions.push(partition),
                        None => request.topics.push(ListOffsetsTopic {
                            topic: tp.topic.clone(),
                            partitions: vec![partition],
                        }),
                    }
                }
                let response = async {
                    let connection = self.connection(&endpoint).await?;
                    let frame = connection.request(ApiKey::ListOffsets, &request).await?;
                    decode_body::<ListOffsetsResponse>(&frame)
                }
                .await;
                (indexes, response)
            });
        for (indexes, response) in join_all(requests).await {
            for index in indexes {
                let (tp, _) = &queries[index];
                let result = match &response {
                    Err(e) => Err(e.clone()),
                    Ok(response) => offset_in(response, tp),
                };
                results[index] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(ClientError::Closed)))
            .collect()
    }
}

/// The answer for `tp` in a list-offsets response.
fn offset_in(response: &ListOffsetsResponse, tp: &TopicPartition) -> Result<u64, ClientError> {
    let partition = response
        .topics
        .iter()
        .filter(|t| t.topic == tp.topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition == tp.partition)
        .ok_or_else(|| ClientError::Broker {
            code: ErrorCode::Unknown,
            message: format!("list offsets response has no answer for {tp}"),
        })?;
    if !partition.error.is_ok() {
        return Err(ClientError::broker(partition.error.clone()));
    }
    u64::try_from(partition.offset).map_err(|_| ClientError::Broker {
        code: ErrorCode::Unknown,
        message: format!("negative offset {} for {tp}", partition.offset),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wire::protocol::{PartitionMetadata, ShardEndpoint, TopicMetadata, WireError};

    fn broker(id: u32, shards: u16) -> BrokerMetadata {
        BrokerMetadata {
            broker_id: id,
            host: "127.0.0.1".into(),
            port: 9092,
            shards: (0..shards)
                .map(|shard| ShardEndpoint {
                    shard,
                    host: "127.0.0.1".into(),
                    port: 9100 + shard,
                })
                .collect(),
        }
    }

    fn topic(name: &str, leaders: &[(i32, u16)]) -> TopicMetadata {
        TopicMetadata {
            name: name.into(),
            error: WireError::none(),
            config: TopicConfig {
                partitions: leaders.len() as u32,
                ..TopicConfig::default()
            },
            partitions: leaders
                .iter()
                .enumerate()
                .rev() // out of order on purpose
                .map(|(i, &(leader, shard))| PartitionMetadata {
                    partition: i as u32,
                    error: WireError::none(),
                    leader,
                    leader_shard: shard,
                    ..PartitionMetadata::default()
                })
                .collect(),
        }
    }

    /// Partitions route to their leader shard's endpoint; no leader means no endpoint; a
    /// broker advertising no shard endpoints is reached on its main listener.
    #[test]
    fn routes_to_shard_endpoints() {
        let response = MetadataResponse {
            brokers: vec![broker(1, 2), broker(2, 0)],
            topics: vec![topic("t", &[(1, 1), (1, 0), (-1, 0), (2, 3)])],
            ..MetadataResponse::default()
        };
        let metadata = ClusterMetadata::default().merged(response, None);
        let route = &metadata.topics["t"];
        assert_eq!(route.partition_count(), 4);
        assert_eq!(&*route.endpoint(0).unwrap(), "127.0.0.1:9101");
        assert_eq!(&*route.endpoint(1).unwrap(), "127.0.0.1:9100");
        assert!(matches!(
            route.endpoint(2),
            Err(ClientError::NoLeader { partition: 2, .. })
        ));
        assert_eq!(&*route.endpoint(3).unwrap(), "127.0.0.1:9092");
        assert!(matches!(
            route.endpoint(4),
            Err(ClientError::UnknownPartition { partitions: 4, .. })
        ));
        assert_eq!(host_port("::1", 5), "[::1]:5");
    }

    /// A refresh for some topics replaces those (dropping unknown ones) and keeps the rest.
    #[test]
    fn merge_replaces_only_asked_topics() {
        let first = ClusterMetadata::default().merged(
            MetadataResponse {
                brokers: vec![broker(1, 1)],
                topics: vec![topic("a", &[(1, 0)]), topic("b", &[(1, 0)])],
                ..MetadataResponse::default()
            },
            None,
        );
        let mut gone = topic("b", &[]);
        gone.error = WireError::new(ErrorCode::UnknownTopicOrPartition, "no such topic");
        let second = first.merged(
            MetadataResponse {
                brokers: vec![broker(1, 1)],
                topics: vec![gone],
                ..MetadataResponse::default()
            },
            Some(&["b".to_owned()]),
        );
        assert!(second.topics.contains_key("a"));
        assert!(!second.topics.contains_key("b"));
        assert_eq!(second.generation, first.generation + 1);
    }

    /// Comma-separated bootstrap lists are trimmed; an empty one is refused.
    #[test]
    fn bootstrap_list_is_parsed() {
        let cluster = Cluster::new(" a:1, b:2 ,", ConnectionConfig::default()).unwrap();
        assert_eq!(cluster.bootstrap, vec!["a:1", "b:2"]);
        assert!(Cluster::new(" , ", ConnectionConfig::default()).is_err());
    }
}
