//! Produce, in two stages (as in Redpanda): stage 1 validates and appends on the owner shard,
//! in request order; stage 2 waits for what the acks and the topic's durability require
//! (fsync for `always`) and answers. Stage 2 of one request overlaps stage 1 of the next, so a
//! pipelining connection gets group commit. Both stages end in
//! [`Partition::wait_acknowledgeable`], local or forwarded, bounded by the request's own
//! timeout (a forwarded produce carries its deadline to the owner shard).

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::Task;
use wire::batch::{peek_header, BatchView};
use wire::protocol::{
    ErrorCode, ProducePartitionResponse, ProduceRequest, ProduceResponse, ProduceTopicResponse,
    WireError,
};
use wire::{Acks, AlignedVec};

use super::{response_frame, spawn_in_request_span, Outgoing};
use crate::error_code;
use crate::partition::Partition;
use crate::probe;
use crate::producer_state::Verdict;
use crate::services::ShardServices;
use crate::shard::bus::reply_channel;
use crate::shard::{InFlight, Route, Shard};

/// What stage 2 still has to do for one partition.
enum Pending {
    /// Answered already.
    Done(ProducePartitionResponse),
    /// Appended here; wait until `last_offset` is acknowledgeable.
    Appended {
        partition: Rc<Partition>,
        base_offset: u64,
        last_offset: u64,
    },
    /// Forwarded to the owner shard.
    Remote(u32, flume::Receiver<ProducePartitionResponse>),
}

fn failed(partition: u32, error: WireError) -> ProducePartitionResponse {
    ProducePartitionResponse {
        partition,
        error,
        base_offset: -1,
        log_start_offset: -1,
    }
}

/// Stage 1 of a produce request; returns stage 2 as a task.
pub async fn dispatch(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: ProduceRequest<'_>,
) -> Task<Option<Outgoing>> {
    let in_flight = InFlight::new(shard);
    let started = Instant::now();
    probe::add(&shard.probe.produce_requests, 1);
    let acks = request.acks;
    let deadline = Instant::now() + Duration::from_millis(u64::from(request.timeout_ms.max(1)));
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for data in &topic.partitions {
            let records = data.records.as_slice();
            probe::add(&shard.probe.produce_bytes, records.len() as u64);
            let route = if crate::topics::is_internal_topic(&topic.topic) {
                Err(WireError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "{:?} is an internal topic: only the broker writes it",
                        topic.topic
                    ),
                ))
            } else {
                shard.route(&topic.topic, data.partition)
            };
            let pending = match route {
                Err(error) => Pending::Done(failed(data.partition, error)),
                Ok(Route::Local(partition)) => {
                    match append_all(shard, &partition, records, acks).await {
                        Err(error) => Pending::Done(failed(data.partition, error)),
                        Ok((base_offset, last_offset)) => Pending::Appended {
                            partition,
                            base_offset,
                            last_offset,
                        },
                    }
                }
                Ok(Route::Remote(owner)) => {
                    // The one copy of a forwarded batch: it crosses to the owner's core.
                    let mut copy = AlignedVec::<16>::with_capacity(records.len());
                    copy.extend_from_slice(records);
                    let (reply, answer) = reply_channel();
                    let topic_name = topic.topic.clone();
                    let partition = data.partition;
                    let forwarded = shard
                        .bus
                        .run_on(owner, copy.len(), move |owner| async move {
                            let _in_flight = InFlight::new(&owner);
                            let response = produce_owned(
                                &owner,
                                &topic_name,
                                partition,
                                &copy,
                                acks,
                                deadline,
                            )
                            .await;
                            let _ = reply.send(response);
                        })
                        .await;
                    match forwarded {
                        Ok(()) => Pending::Remote(data.partition, answer),
                        Err(_) => Pending::Done(failed(
                            data.partition,
                            WireError::new(
                                ErrorCode::BrokerShuttingDown,
                                "the owner shard has stopped",
                            ),
                        )),
                    }
                }
            };
            partitions.push(pending);
        }
        topics.push((topic.topic.clone(), partitions));
    }
    let shard = shard.clone();
    spawn_in_request_span(async move {
        let _in_flight = in_flight;
        let mut response = ProduceResponse { topics: Vec::new() };
        for (topic, partitions) in topics {
            let mut answers = Vec::with_capacity(partitions.len());
            for pending in partitions {
                answers.push(complete(pending, acks, deadline).await);
            }
            response.topics.push(ProduceTopicResponse {
                topic,
                partitions: answers,
            });
        }
        let frame = (acks != Acks::None)
            .then(|| Outgoing::Frame(response_frame(correlation_id, &response)));
        shard.probe.produce_latency.observe(started.elapsed());
        frame
    })
}

/// Stage 2 for one partition.
async fn complete(pending: Pending, acks: Acks, deadline: Instant) -> ProducePartitionResponse {
    match pending {
        Pending::Done(response) => response,
        Pending::Appended {
            partition,
            base_offset,
            last_offset,
        } => {
            let id = partition.partition;
            if let Err(error) = partition
                .wait_acknowledgeable(last_offset, acks, deadline)
                .await
            {
                return failed(id, error);
            }
            ProducePartitionResponse {
                partition: id,
                error: WireError::none(),
                base_offset: base_offset as i64,
                log_start_offset: partition.log.log_start_offset() as i64,
            }
        }
        Pending::Remote(id, answer) => answer.recv_async().await.unwrap_or_else(|_| {
            failed(
                id,
                WireError::new(ErrorCode::BrokerShuttingDown, "the owner shard has stopped"),
            )
        }),
    }
}

/// The owner's side of a forwarded produce: both stages, bounded by the request's deadline.
pub async fn produce_owned(
    shard: &ShardServices,
    topic: &str,
    partition: u32,
    records: &[u8],
    acks: Acks,
    deadline: Instant,
) -> ProducePartitionResponse {
    let pending = match shard.route(topic, partition) {
        Err(error) => Pending::Done(failed(partition, error)),
        Ok(Route::Remote(_)) => Pending::Done(failed(
            partition,
            WireError::new(ErrorCode::NotLeader, "partition moved to another shard"),
        )),
        Ok(Route::Local(local)) => match append_all(shard, &local, records, acks).await {
            Err(error) => Pending::Done(failed(partition, error)),
            Ok((base_offset, last_offset)) => Pending::Appended {
                partition: local,
                base_offset,
                last_offset,
            },
        },
    };
    complete(pending, acks, deadline).await
}

/// Checks that this replica leads and may take `acks` (the ISR against
/// `min.insync.replicas`), validates every batch (deeply: the bytes come from the network),
/// then appends them all (counted in the owner `shard`'s probe), telling the replication state
/// each new log end. Either all batches are appended or none.
pub async fn append_all(
    shard: &Shard,
    partition: &Partition,
    records: &[u8],
    acks: Acks,
) -> Result<(u64, u64), WireError> {
    if partition.replica.replica_count() > 1 && shard.session.is_lost() {
        return Err(WireError::new(
            ErrorCode::NotLeader,
            format!(
                "broker {} lost its controller session: it may have been fenced and replaced as leader",
                shard.config.broker_id
            ),
        ));
    }
    partition.replica.check_produce(acks)?;
    let max = partition.config.max_batch_bytes as usize;
    if records.is_empty() {
        return Err(WireError::new(
            ErrorCode::InvalidRequest,
            "produce without record batches",
        ));
    }
    let mut views = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let rest = &records[position..];
        let header = peek_header(rest, usize::MAX).map_err(|e| error_code::from_batch(&e))?;
        if header.batch_length as usize > max {
            return Err(WireError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "batch of {} bytes exceeds the topic's limit of {max} bytes",
                    header.batch_length
                ),
            ));
        }
        let view = BatchView::validate_deep(rest, max).map_err(|e| error_code::from_batch(&e))?;
        position += view.len();
        views.push(view);
    }
    let mut first = None;
    let mut last = 0;
    for view in views {
        let header = view.header();
        let view_bytes = view.len();
        let verdict = partition.producers.borrow_mut().check(&header)?;
        let (base_offset, last_offset) = match verdict {
            Verdict::Duplicate {
                base_offset,
                last_offset,
            } => (base_offset, last_offset),
            Verdict::Append => match partition.log.append(view).await {
                Ok(info) => {
                    probe::add(&shard.probe.appended_batches, 1);
                    probe::add(&shard.probe.appended_bytes, view_bytes as u64);
                    partition.producers.borrow_mut().appended(
                        &header,
                        info.base_offset,
                        info.last_offset,
                    );
                    partition.replica.on_appended(info.last_offset + 1);
                    (info.base_offset, info.last_offset)
                }
                Err(error) => {
                    partition.producers.borrow_mut().abandoned(&header);
                    return Err(partition.storage_error(&error));
                }
            },
        };
        first.get_or_insert(base_offset);
        last = last_offset;
    }
    shard.checkpoint_in_background(partition);
    Ok((first.unwrap_or(last), last))
}
