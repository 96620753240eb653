//! The consumer: manual partition assignment, seeks, and [`Consumer::poll`], a long-poll fetch
//! loop that returns zero-copy [`Records`].
//!
//! ```text
//!  assign / seek ──▶ positions (Earliest/Latest/Timestamp resolved with ListOffsets)
//!  poll ──▶ one Fetch per shard endpoint (all partitions it owns), each its own task
//!       ◀── first answer(s) with data: batches validated, records below the position skipped,
//!           positions moved past the last batch; the next fetches start at once (prefetch)
//! ```
//!
//! * Fetches for different endpoints run concurrently and independently: a shard with data
//!   answers at once even while another long-polls. At most one fetch per endpoint is in
//!   flight, so buffered responses are bounded by `endpoints × fetch_max_bytes`.
//! * `OffsetOutOfRange` is returned as [`ClientError::OffsetOutOfRange`]: the consumer never
//!   resets a position by itself. Seek to recover.
//! * Connection errors, `NotLeader` and `UnknownTopicOrPartition` refresh the metadata and the
//!   fetch is retried after `retry_backoff`; a consumer therefore rides out a broker restart
//!   and continues from its position.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
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
use crate::records::Records;

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
    /// there is one). Default 1 MiB.
    pub partition_max_bytes: u32,
    /// Longest wait for a broker's answer beyond `fetch_max_wait`. Default 30 s.
    pub request_timeout: Duration,
    /// Pause after a retriable error before fetching again. Default 100 ms.
    pub retry_backoff: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            bootstrap: "127.0.0.1:9092".to_owned(),
            fetch_max_wait: Duration::from_millis(500),
            fetch_min_bytes: 1,
            fetch_max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
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

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ClientError> {
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
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assignment", &self.assignment)
            .field("in_flight", &self.in_flight.len())
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
            ..ConnectionConfig::default()
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

    /// Replaces the assignment. Partitions kept from the previous assignment keep their
    /// position; new ones start at [`Offset::Earliest`] unless [`Consumer::seek`] says
    /// otherwise.
    pub fn assign(&mut self, partitions: &[TopicPartition]) {
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
            let assigned = previous.remove(tp).unwrap_or_else(|| Assigned {
                tp: tp.clone(),
                topic: Arc::from(tp.topic.as_str()),
                position: None,
                seek: Some(Offset::Earliest),
                fetching: None,
            });
            self.index
                .entry(tp.topic.clone())
                .or_default()
                .insert(tp.partition, self.assignment.len());
            self.assignment.push(assigned);
        }
        self.metadata_stale = true;
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

    /// Waits up to `timeout` for records from the assigned partitions and returns them
    /// (empty after the timeout). Records are views into the fetched frames: read them from
    /// the returned [`Records`], which owns the bytes.
    ///
    /// Errors: [`ClientError::OffsetOutOfRange`] (seek to recover),
    /// [`ClientError::CorruptBatch`], [`ClientError::UnknownTopic`] /
    /// [`ClientError::UnknownPartition`] for assignments the cluster does not know, and
    /// non-retriable broker errors. When an error is returned no position moved.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Records, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Bounded by the deadline: reconnecting to a restarting broker may take a while.
            match tokio::time::timeout_at(deadline, self.prepare()).await {
                Ok(result) => result?,
                Err(_) => return Ok(Records::new()),
            }
            self.issue_fetches();
            if self.in_flight.is_empty() {
                // Nothing can be fetched now (no assignment, or backing off).
                let wake = self.retry_at.map_or(deadline, |at| at.min(deadline));
                tokio::time::sleep_until(wake).await;
                if Instant::now() >= deadline {
                    return Ok(Records::new());
                }
                continue;
            }
            let first = match tokio::time::timeout_at(deadline, self.in_flight.next()).await {
                Err(_) => return Ok(Records::new()),
                Ok(None) => continue,
                Ok(Some(joined)) => joined,
            };
            let mut outcomes = vec![first];
            while let Some(Some(more)) = self.in_flight.next().now_or_never() {
                outcomes.push(more);
            }
            let records = self.process(outcomes)?;
            if !records.is_empty() {
                // Start the next fetches now, so they overlap with the caller's processing.
                self.issue_fetches();
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

    /// Starts a fetch for every endpoint that has fetchable partitions and none in flight.
    fn issue_fetches(&mut self) {
        if self.backing_off() || self.metadata_stale {
            return;
        }
        let snapshot = self.cluster.snapshot();
        let mut groups: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        let mut stale = false;
        for (index, assigned) in self.assignment.iter().enumerate() {
            if assigned.fetching.is_some() || assigned.position.is_none() {
                continue;
            }
            let endpoint = match snapshot.topics.get(&assigned.tp.topic) {
                Some(route) => route.endpoint(assigned.tp.partition),
                None => Err(ClientError::UnknownTopic {
                    topic: assigned.tp.topic.clone(),
                }),
            };
            match endpoint {
                Ok(endpoint) if !self.busy_endpoints.contains(&endpoint) => {
                    groups.entry(endpoint).or_default().push(index);
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
            for index in indexes {
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
            self.in_flight.push(tokio::spawn(async move {
                let result = async {
                    let connection = cluster.connection(&endpoint).await?;
                    connection.request(ApiKey::Fetch, &request).await
                }
                .await;
                FetchOutcome {
                    endpoint,
                    requested,
                    result,
                }
            }));
        }
    }

    /// Turns finished fetches into records. On a non-retriable error nothing is applied (no
    /// position moves) and the first such error is returned.
    fn process(
        &mut self,
        outcomes: Vec<Result<FetchOutcome, tokio::task::JoinError>>,
    ) -> Result<Records, ClientError> {
        let mut records = Records::new();
        let mut advances: Vec<(usize, u64)> = Vec::new();
        let mut first_error: Option<ClientError> = None;
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
        if let Some(error) = first_error {
            return Err(error);
        }
        for (index, next) in advances {
            self.assignment[index].position = Some(next);
        }
        Ok(records)
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
