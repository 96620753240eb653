//! Fetch: reads whole batches from the owner shards' logs, long-polling until `min_bytes` are
//! there or `max_wait` is over. Waits are woken by appends (or syncs, for `always` topics) on the
//! owning shard, never by polling. Local batches go to the socket as slices of the log's
//! buffers; batches from another shard are copied once to cross cores.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::Task;
use wire::protocol::{
    encode_response, ErrorCode, FetchPartitionResponse, FetchRequest, FetchResponse,
    FetchTopicResponse, FrameParts, Records, WireError,
};

use super::{spawn_in_request_span, FetchedRecords, Outgoing};
use crate::probe;
use crate::services::ShardServices;
use crate::shard::bus::reply_channel;
use crate::shard::{InFlight, Route};

/// A partition to read, inside a forwarded fetch.
#[derive(Debug, Clone)]
pub struct FetchTarget {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Most bytes for this partition.
    pub max_bytes: u32,
    /// The leader epoch the consumer believes current, if it said.
    pub leader_epoch: Option<u32>,
}

/// One partition's fetch result with owned bytes (what crosses shards).
#[derive(Debug)]
pub struct FetchedOwned {
    /// Partition.
    pub partition: u32,
    /// Outcome.
    pub error: WireError,
    /// High watermark.
    pub high_watermark: u64,
    /// Log start offset.
    pub log_start_offset: u64,
    /// Whole batches, concatenated.
    pub records: Vec<u8>,
}

/// Longest long poll accepted: bounds how long a request can hold the connection's queue.
pub const MAX_WAIT_MAX: Duration = Duration::from_secs(30);

/// One partition's result.
pub struct FetchedPartition {
    /// Partition number.
    pub partition: u32,
    /// Outcome.
    pub error: WireError,
    /// High watermark.
    pub high_watermark: u64,
    /// Log start offset.
    pub log_start_offset: u64,
    /// The batches.
    pub records: FetchedRecords,
}

impl FetchedPartition {
    fn failed(partition: u32, error: WireError) -> Self {
        FetchedPartition {
            partition,
            error,
            high_watermark: 0,
            log_start_offset: 0,
            records: FetchedRecords::Owned(Vec::new()),
        }
    }

    fn bytes(&self) -> usize {
        match &self.records {
            FetchedRecords::Shared(batches) => batches.iter().map(|b| b.len()).sum(),
            FetchedRecords::Owned(bytes) => bytes.len(),
        }
    }

    /// Copies the batches so the result can cross to another shard.
    pub fn into_owned(self) -> FetchedOwned {
        let records = match self.records {
            FetchedRecords::Owned(bytes) => bytes,
            FetchedRecords::Shared(batches) => {
                let mut bytes = Vec::with_capacity(batches.iter().map(|b| b.len()).sum());
                for batch in &batches {
                    bytes.extend_from_slice(batch);
                }
                bytes
            }
        };
        FetchedOwned {
            partition: self.partition,
            error: self.error,
            high_watermark: self.high_watermark,
            log_start_offset: self.log_start_offset,
            records,
        }
    }

    fn from_owned(owned: FetchedOwned) -> Self {
        FetchedPartition {
            partition: owned.partition,
            error: owned.error,
            high_watermark: owned.high_watermark,
            log_start_offset: owned.log_start_offset,
            records: FetchedRecords::Owned(owned.records),
        }
    }
}

/// A complete fetch response, encoded by the connection's writer right before it is written.
pub struct FetchReply {
    correlation_id: u32,
    topics: Vec<(String, Vec<FetchedPartition>)>,
}

impl FetchReply {
    /// Encodes the response into `head`; the returned parts borrow the batches, not copy them.
    pub fn encode<'b>(
        &'b self,
        head: &'b mut Vec<u8>,
        response: &'b mut FetchResponse<'b>,
        ok: &'b WireError,
    ) -> FrameParts<'b> {
        for (topic, partitions) in &self.topics {
            response.topics.push(FetchTopicResponse {
                topic: topic.clone(),
                partitions: partitions
                    .iter()
                    .map(|p| FetchPartitionResponse {
                        partition: p.partition,
                        error: p.error.clone(),
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                        records: Records {
                            parts: match &p.records {
                                FetchedRecords::Shared(batches) => {
                                    batches.iter().map(|b| &b[..]).collect()
                                }
                                FetchedRecords::Owned(bytes) => vec![&bytes[..]],
                            },
                        },
                    })
                    .collect(),
            });
        }
        encode_response(head, self.correlation_id, ok, Some(&*response))
    }
}

/// Partitions owned by one other shard: (owner, their places in the response, targets).
type RemoteGroup = (usize, Vec<(usize, usize)>, Vec<FetchTarget>);

/// Handles a fetch: local partitions here, the others on their owners, all at once.
pub fn dispatch(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: FetchRequest,
) -> Task<Option<Outgoing>> {
    let shard = shard.clone();
    let in_flight = InFlight::new(&shard);
    let started = Instant::now();
    probe::add(&shard.probe.fetch_requests, 1);
    spawn_in_request_span(async move {
        let _in_flight = in_flight;
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_WAIT_MAX);
        // Group partitions by owner, keeping each one's place in the response.
        let mut local = Vec::new();
        let mut remote: Vec<RemoteGroup> = Vec::new();
        let mut slots: Vec<(String, Vec<Option<FetchedPartition>>)> = Vec::new();
        for (t, topic) in request.topics.iter().enumerate() {
            slots.push((
                topic.topic.clone(),
                topic.partitions.iter().map(|_| None).collect(),
            ));
            for (p, wanted) in topic.partitions.iter().enumerate() {
                let target = FetchTarget {
                    topic: topic.topic.clone(),
                    partition: wanted.partition,
                    offset: wanted.fetch_offset,
                    max_bytes: wanted.max_bytes,
                    leader_epoch: wanted.current_leader_epoch,
                };
                match shard.route(&topic.topic, wanted.partition) {
                    Err(error) => {
                        slots[t].1[p] = Some(FetchedPartition::failed(wanted.partition, error))
                    }
                    Ok(Route::Local(_)) => local.push(((t, p), target)),
                    Ok(Route::Remote(owner)) => match remote.iter_mut().find(|r| r.0 == owner) {
                        Some(group) => {
                            group.1.push((t, p));
                            group.2.push(target);
                        }
                        None => remote.push((owner, vec![(t, p)], vec![target])),
                    },
                }
            }
        }
        let mut answers = Vec::new();
        for (owner, places, targets) in remote {
            let (reply, answer) = reply_channel();
            let (min_bytes, max_bytes) = (request.min_bytes, request.max_bytes);
            let forwarded = shard
                .bus
                .run_on(owner, 0, move |owner| async move {
                    let _in_flight = InFlight::new(&owner);
                    let fetched =
                        fetch_local(&owner, &targets, max_wait, min_bytes, max_bytes).await;
                    let owned: Vec<FetchedOwned> = fetched
                        .into_iter()
                        .map(FetchedPartition::into_owned)
                        .collect();
                    let _ = reply.send(owned);
                })
                .await;
            if forwarded.is_ok() {
                answers.push((places, answer));
            } else {
                for (t, p) in places {
                    let partition = request.topics[t].partitions[p].partition;
                    slots[t].1[p] = Some(FetchedPartition::failed(
                        partition,
                        WireError::new(
                            ErrorCode::BrokerShuttingDown,
                            "the owner shard has stopped",
                        ),
                    ));
                }
            }
        }
        let (places, targets): (Vec<_>, Vec<_>) = local.into_iter().unzip();
        let fetched = fetch_local(
            &shard,
            &targets,
            max_wait,
            request.min_bytes,
            request.max_bytes,
        )
        .await;
        for ((t, p), result) in places.into_iter().zip(fetched) {
            slots[t].1[p] = Some(result);
        }
        for (places, answer) in answers {
            let results = answer.recv_async().await.unwrap_or_default();
            for ((t, p), owned) in places.into_iter().zip(results) {
                slots[t].1[p] = Some(FetchedPartition::from_owned(owned));
            }
        }
        let topics: Vec<(String, Vec<FetchedPartition>)> = slots
            .into_iter()
            .enumerate()
            .map(|(t, (topic, partitions))| {
                let partitions = partitions
                    .into_iter()
                    .enumerate()
                    .map(|(p, slot)| {
                        slot.unwrap_or_else(|| {
                            FetchedPartition::failed(
                                request.topics[t].partitions[p].partition,
                                WireError::new(ErrorCode::Unknown, "no result"),
                            )
                        })
                    })
                    .collect();
                (topic, partitions)
            })
            .collect();
        let fetched_bytes: usize = topics
            .iter()
            .flat_map(|(_, partitions)| partitions.iter().map(FetchedPartition::bytes))
            .sum();
        probe::add(&shard.probe.fetch_bytes, fetched_bytes as u64);
        shard.probe.fetch_latency.observe(started.elapsed());
        Some(Outgoing::Fetch(FetchReply {
            correlation_id,
            topics,
        }))
    })
}

/// Reads partitions owned by this shard; waits (up to `max_wait`) until `min_bytes` are there.
pub async fn fetch_local(
    shard: &Rc<ShardServices>,
    targets: &[FetchTarget],
    max_wait: Duration,
    min_bytes: u32,
    max_bytes: u32,
) -> Vec<FetchedPartition> {
    let deadline = Instant::now() + max_wait;
    loop {
        let mut results = Vec::with_capacity(targets.len());
        let mut budget = max_bytes as usize;
        let mut total = 0usize;
        let mut failed = false;
        for target in targets {
            let result = read_one(shard, target, budget).await;
            failed |= !result.error.is_ok();
            let bytes = result.bytes();
            total += bytes;
            budget = budget.saturating_sub(bytes);
            results.push(result);
        }
        let now = Instant::now();
        if total >= min_bytes as usize
            || failed
            || now >= deadline
            || shard.shutting_down.get()
            || targets.is_empty()
        {
            return results;
        }
        // Wait for any partition to grow, the deadline, or shutdown.
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
        for target in targets {
            if let Ok(Route::Local(partition)) = shard.route(&target.topic, target.partition) {
                let offset = target.offset;
                waits.push(Box::pin(async move {
                    partition.wait_for_high_watermark(offset).await
                }));
            }
        }
        let shard_for_stop = shard.clone();
        let stop = shard
            .changed
            .wait_until(move || shard_for_stop.shutting_down.get());
        waits.push(Box::pin(stop));
        waits.push(Box::pin(glommio::timer::sleep(deadline - now)));
        super::first_ready(waits).await;
    }
}

async fn read_one(
    shard: &Rc<ShardServices>,
    target: &FetchTarget,
    budget: usize,
) -> FetchedPartition {
    let partition = match shard.route(&target.topic, target.partition) {
        Ok(Route::Local(partition)) => partition,
        Ok(Route::Remote(_)) => {
            return FetchedPartition::failed(
                target.partition,
                WireError::new(ErrorCode::NotLeader, "not the owner shard"),
            )
        }
        Err(error) => return FetchedPartition::failed(target.partition, error),
    };
    if let Err(error) = partition
        .replica
        .check_consumer_fetch(target.offset, target.leader_epoch)
    {
        return FetchedPartition::failed(target.partition, error);
    }
    let high_watermark = partition.high_watermark();
    let log_start_offset = partition.log.log_start_offset();
    let max_bytes = (target.max_bytes as usize).min(budget);
    let caught_up =
        target.offset >= high_watermark && target.offset <= partition.log.log_end_offset();
    let records = if caught_up || max_bytes == 0 {
        Ok(Vec::new())
    } else {
        partition
            .log
            .read_bounded(target.offset, max_bytes, high_watermark)
            .await
            .map(|read| read.batches.into_iter().map(|b| b.bytes).collect())
    };
    match records {
        Ok(batches) => FetchedPartition {
            partition: target.partition,
            error: WireError::none(),
            high_watermark,
            log_start_offset,
            records: FetchedRecords::Shared(batches),
        },
        Err(error) => FetchedPartition {
            error: partition.storage_error(&error),
            high_watermark,
            log_start_offset,
            ..FetchedPartition::failed(target.partition, WireError::none())
        },
    }
}
