//! Follower fetch sessions: how this shard's follower replicas copy their leaders' logs.
//!
//! One session per (leader broker, leader shard) this shard follows, each with one TCP
//! connection to that leader shard's own listener, many partitions multiplexed on it (as
//! Redpanda pairs cores): the shard that owns a partition here talks to the shard that owns it
//! on the leader, and no other core is involved on either side. A session loops: build one
//! `ReplicaFetch` from every partition's next fetch ([`crate::replica::Replica::next_fetch`]),
//! send it, and for each partition of the answer append the batches as received (no
//! re-encoding), or truncate a divergent tail, or learn the high watermark. Errors (a leader
//! that moved, a fenced epoch) wait for the next metadata; a lost connection is retried with a
//! short pause.
//!
//! ```text
//!  follower shard 0 ──conn──▶ leader broker 2, shard 1   (partitions a-0, b-3, ...)
//!  follower shard 0 ──conn──▶ leader broker 3, shard 0   (partitions a-1, ...)
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use replication::{FetchedBatch, FollowerFetch};
use wire::protocol::{
    check_frame, decode_response, encode_request, ApiKey, ErrorCode, ReplicaFetchPartition,
    ReplicaFetchPartitionResponse, ReplicaFetchRequest, ReplicaFetchResponse,
};
use wire::AlignedVec;

use crate::cluster_metadata::{broker_endpoints, broker_shard_count};
use crate::partition::Partition;
use crate::services::ShardServices;
use crate::shard::router::shard_for;

/// How long the leader may hold a fetch with nothing new: short enough that a follower learns
/// a moved high watermark within it, long enough that an idle pair exchanges two frames a
/// second.
pub const FETCH_MAX_WAIT_MS: u32 = 500;
/// Most record bytes one fetch answer carries (all partitions of the session together); the
/// session's receive buffer is at most this plus the frame's small overhead.
pub const FETCH_MAX_BYTES: u32 = 16 << 20;
/// Most record bytes per partition per fetch.
pub const FETCH_PARTITION_MAX_BYTES: u32 = 4 << 20;
/// Pause before reconnecting to a leader that could not be reached.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for a connection or a whole answer (the long poll plus a loaded machine's
/// slack) before the connection is dropped and made again.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The sessions of one shard.
#[derive(Default)]
pub struct FollowerFetchers {
    sessions: RefCell<HashMap<(u32, usize), Rc<Session>>>,
}

/// One (leader broker, leader shard) session.
struct Session {
    leader: u32,
    leader_shard: usize,
    /// Partitions to fetch; pruned of those no longer following this leader.
    partitions: RefCell<Vec<Rc<Partition>>>,
    /// Woken when partitions are added.
    added: storage::Signal,
    /// Set once the session's task has ended (a new one starts on the next follow).
    ended: Cell<bool>,
}

impl FollowerFetchers {
    /// Has `partition` fetch from `leader` (whose shard for it follows from the leader's shard
    /// count), starting that pair's session if it has none.
    pub fn follow(services: &Rc<ShardServices>, partition: Rc<Partition>, leader: u32) {
        let image = services.image.borrow().clone();
        let Some(_) = broker_endpoints(&image, leader) else {
            tracing::warn!(
                leader,
                "following an unregistered broker; waiting for metadata"
            );
            return;
        };
        let leader_shards = broker_shard_count(&image, leader);
        let leader_shard = shard_for(&partition.topic, partition.partition, leader_shards);
        let key = (leader, leader_shard);
        let existing = services.fetchers.sessions.borrow().get(&key).cloned();
        let session = match existing {
            Some(session) if !session.ended.get() => session,
            _ => {
                let session = Rc::new(Session {
                    leader,
                    leader_shard,
                    partitions: RefCell::new(Vec::new()),
                    added: storage::Signal::default(),
                    ended: Cell::new(false),
                });
                services
                    .fetchers
                    .sessions
                    .borrow_mut()
                    .insert(key, session.clone());
                glommio::spawn_local(run(services.clone(), session.clone())).detach();
                session
            }
        };
        let mut partitions = session.partitions.borrow_mut();
        if !partitions.iter().any(|p| Rc::ptr_eq(p, &partition)) {
            partitions.push(partition);
        }
        drop(partitions);
        session.added.notify_all();
    }
}

/// A session's life: until the shard shuts down.
async fn run(services: Rc<ShardServices>, session: Rc<Session>) {
    let mut buffer = AlignedVec::<16>::new();
    let mut request_bytes = Vec::new();
    'connect: while !services.shutting_down.get() {
        let Some(addr) = endpoint(&services, &session) else {
            pause(&services).await;
            continue;
        };
        let stream = match with_timeout(TcpStream::connect(addr.as_str())).await {
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                tracing::debug!(leader = session.leader, %addr, %error, "cannot reach the leader; retrying");
                pause(&services).await;
                continue;
            }
            None => continue,
        };
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        let mut correlation_id = 0u32;
        loop {
            if services.shutting_down.get() {
                break 'connect;
            }
            let fetches = prune(&session);
            if fetches.is_empty() {
                let waiting = session.clone();
                let stopping = services.clone();
                let added = async {
                    waiting
                        .added
                        .wait_until(|| !prune(&waiting).is_empty())
                        .await
                };
                let stop = async {
                    stopping
                        .changed
                        .wait_until(|| stopping.shutting_down.get())
                        .await
                };
                futures_lite::future::or(added, stop).await;
                continue;
            }
            correlation_id = correlation_id.wrapping_add(1);
            let request = ReplicaFetchRequest {
                replica_id: services.broker_id(),
                max_wait_ms: FETCH_MAX_WAIT_MS,
                max_bytes: FETCH_MAX_BYTES,
                partitions: fetches
                    .iter()
                    .map(|(partition, fetch)| ReplicaFetchPartition {
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                        current_leader_epoch: fetch.current_leader_epoch,
                        fetch_offset: fetch.fetch_offset,
                        last_fetched_epoch: fetch.last_fetched_epoch,
                        max_bytes: FETCH_PARTITION_MAX_BYTES,
                    })
                    .collect(),
            };
            request_bytes.clear();
            let frame = encode_request(
                &mut request_bytes,
                ApiKey::ReplicaFetch,
                correlation_id,
                &request,
            );
            let frame = frame.to_vec();
            match with_timeout(exchange(&mut stream, &frame, &mut buffer)).await {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    tracing::debug!(leader = session.leader, %error, "replica fetch failed; reconnecting");
                    pause(&services).await;
                    continue 'connect;
                }
                None => {
                    tracing::debug!(
                        leader = session.leader,
                        "replica fetch timed out; reconnecting"
                    );
                    continue 'connect;
                }
            }
            let response = match decode_response::<ReplicaFetchResponse<'_>>(&buffer) {
                Ok((_, Ok(response))) => response,
                Ok((_, Err(error))) => {
                    tracing::warn!(leader = session.leader, %error, "the leader refused the replica fetch");
                    pause(&services).await;
                    continue;
                }
                Err(error) => {
                    tracing::warn!(leader = session.leader, %error, "undecodable replica fetch answer; reconnecting");
                    pause(&services).await;
                    continue 'connect;
                }
            };
            for (answer, (partition, fetch)) in response.partitions.iter().zip(&fetches) {
                if answer.topic != partition.topic || answer.partition != partition.partition {
                    tracing::warn!(leader = session.leader, "replica fetch answer out of order");
                    continue 'connect;
                }
                take_answer(partition, fetch, answer).await;
            }
        }
    }
    session.ended.set(true);
}

/// The partitions of the session that still follow its leader, with their next fetch.
fn prune(session: &Session) -> Vec<(Rc<Partition>, FollowerFetch)> {
    let mut partitions = session.partitions.borrow_mut();
    partitions.retain(|p| p.replica.following() == Some(session.leader) && !p.is_deleted());
    partitions
        .iter()
        .filter_map(|p| p.replica.next_fetch().map(|fetch| (p.clone(), fetch)))
        .collect()
}

/// Carries out one partition's answer: append, truncate, or note the error.
async fn take_answer(
    partition: &Partition,
    fetch: &FollowerFetch,
    answer: &ReplicaFetchPartitionResponse<'_>,
) {
    if !answer.error.is_ok() {
        if !matches!(
            answer.error.code,
            ErrorCode::NotLeader | ErrorCode::FencedLeaderEpoch | ErrorCode::UnknownLeaderEpoch
        ) {
            tracing::warn!(topic = partition.topic, partition = partition.partition, error = %answer.error, "replica fetch error");
        }
        return;
    }
    if let Some(diverging) = &answer.diverging {
        let truncation = match partition.replica.on_diverging(
            fetch,
            diverging.epoch,
            diverging.end_offset,
        ) {
            Ok(truncation) => truncation,
            Err(error) => {
                tracing::warn!(topic = partition.topic, partition = partition.partition, %error, "cannot take the divergence answer");
                return;
            }
        };
        match partition.truncate_to(truncation.truncate_to).await {
            Ok(end) if end == truncation.truncate_to => {}
            Ok(end) => partition.replica.reset_follower(end),
            Err(error) => {
                tracing::error!(topic = partition.topic, partition = partition.partition, %error, "truncation failed");
                partition
                    .replica
                    .reset_follower(partition.log.log_end_offset());
            }
        }
        partition.checkpoint_epochs().await;
        return;
    }
    let bytes = answer.records.as_slice();
    let mut batches = Vec::new();
    let mut views = Vec::new();
    for view in wire::batch::BatchIter::new(bytes, wire::limits::BATCH_SIZE_MAX) {
        let Ok(view) = view else {
            tracing::warn!(
                topic = partition.topic,
                partition = partition.partition,
                "malformed batch from the leader"
            );
            return;
        };
        let header = view.header();
        let epoch = answer
            .epochs
            .iter()
            .rev()
            .find(|e| e.start_offset <= header.base_offset)
            .map_or(0, |e| e.epoch);
        batches.push(FetchedBatch {
            base_offset: header.base_offset,
            end_offset: header.next_offset(),
            leader_epoch: epoch,
        });
        views.push(view.as_bytes());
    }
    let epoch_before = partition.replica.leader_epoch_cache_latest();
    match partition
        .replica
        .on_fetched(fetch, &batches, answer.high_watermark)
    {
        Ok(_) => {}
        Err(error) => {
            tracing::debug!(topic = partition.topic, partition = partition.partition, %error, "stale or invalid replica fetch answer");
            return;
        }
    }
    for bytes in views {
        if let Err(error) = partition.append_replicated(bytes).await {
            tracing::error!(topic = partition.topic, partition = partition.partition, %error, "appending fetched batch failed");
            partition
                .replica
                .reset_follower(partition.log.log_end_offset());
            return;
        }
    }
    // The next fetch reports this log's end to the leader as replicated here: make it true
    // for a kill -9 (written) or, with `always`, for a power loss (synced) first.
    if let Some(last) = batches.last() {
        if let Err(error) = partition.store_locally(last.end_offset - 1).await {
            tracing::error!(topic = partition.topic, partition = partition.partition, %error, "storing fetched batches failed");
        }
    }
    if partition.replica.leader_epoch_cache_latest() != epoch_before {
        partition.checkpoint_epochs().await;
    }
}

/// Where the session's leader shard listens, from the metadata (`None` while unknown).
fn endpoint(services: &ShardServices, session: &Session) -> Option<String> {
    let image = services.image.borrow();
    let endpoints = broker_endpoints(&image, session.leader)?;
    endpoints.get(1 + session.leader_shard).cloned()
}

/// Sends `frame`, then reads one whole answer frame into `buffer`.
async fn exchange(
    stream: &mut TcpStream,
    frame: &[u8],
    buffer: &mut AlignedVec<16>,
) -> std::io::Result<()> {
    stream.write_all(frame).await?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await?;
    let total = check_frame(&prefix, FETCH_MAX_BYTES as usize + (1 << 20))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "short prefix"))?;
    buffer.clear();
    buffer.extend_from_slice(&prefix);
    buffer.resize(total, 0);
    stream.read_exact(&mut buffer[4..]).await?;
    Ok(())
}

/// `future`, or `None` after [`ANSWER_TIMEOUT`].
async fn with_timeout<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    let timer = async {
        glommio::timer::sleep(ANSWER_TIMEOUT).await;
        None
    };
    futures_lite::future::or(async { Some(future.await) }, timer).await
}

/// The reconnect pause, cut short by shutdown.
async fn pause(services: &Rc<ShardServices>) {
    let stopping = services.clone();
    let stop = async move {
        stopping
            .changed
            .wait_until(|| stopping.shutting_down.get())
            .await
    };
    futures_lite::future::or(glommio::timer::sleep(RECONNECT_PAUSE), stop).await;
}
