//! ReplicaFetch on the leader: a follower shard's fetch for every partition it replicates from
//! this shard, on the connection that pair of shards keeps. For each partition the replication
//! state machine checks the follower's epoch and position ([`crate::replica::Replica`]):
//! a valid position records the follower's log end (which may move the high watermark and
//! answer `acks=all` produces) and is answered with the log's batches as stored, written to
//! the socket straight from the log's buffers; a diverging one is told where its epoch ends.
//! A long poll: with nothing new for any partition, the answer waits for an append, up to
//! `max_wait_ms`.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::Task;
use replication::{FollowerFetch, FollowerFetchReply};
use wire::protocol::{encode_response, Records};
use wire::protocol::{
    DivergingEpoch, EpochStart, ErrorCode, FrameParts, ReplicaFetchPartitionResponse,
    ReplicaFetchRequest, ReplicaFetchResponse, WireError,
};

use super::fetch::MAX_WAIT_MAX;
use super::{spawn_in_request_span, FetchedRecords, Outgoing};
use crate::partition::now_ms;
use crate::services::ShardServices;
use crate::shard::{InFlight, Route};

/// Most record bytes one partition's answer carries, whatever the follower asks: bounds the
/// response a follower's long poll can pin (with the request's own `max_bytes` bounding the
/// whole answer).
pub const PARTITION_BYTES_MAX: usize = 8 << 20;

/// One partition's answer.
struct Answer {
    topic: String,
    partition: u32,
    error: WireError,
    high_watermark: u64,
    log_start_offset: u64,
    diverging: Option<DivergingEpoch>,
    epochs: Vec<EpochStart>,
    records: FetchedRecords,
}

impl Answer {
    fn failed(topic: &str, partition: u32, error: WireError) -> Answer {
        Answer {
            topic: topic.to_owned(),
            partition,
            error,
            high_watermark: 0,
            log_start_offset: 0,
            diverging: None,
            epochs: Vec::new(),
            records: FetchedRecords::Owned(Vec::new()),
        }
    }

    fn bytes(&self) -> usize {
        match &self.records {
            FetchedRecords::Shared(batches) => batches.iter().map(|b| b.len()).sum(),
            FetchedRecords::Owned(bytes) => bytes.len(),
        }
    }
}

/// A replica fetch answer, encoded by the connection's writer right before it is written.
pub struct ReplicaFetchReply {
    correlation_id: u32,
    answers: Vec<Answer>,
}

impl ReplicaFetchReply {
    /// Encodes the response into `head`; the returned parts borrow the batches, not copy them.
    pub fn encode<'b>(
        &'b self,
        head: &'b mut Vec<u8>,
        response: &'b mut ReplicaFetchResponse<'b>,
        ok: &'b WireError,
    ) -> FrameParts<'b> {
        for answer in &self.answers {
            response.partitions.push(ReplicaFetchPartitionResponse {
                topic: answer.topic.clone(),
                partition: answer.partition,
                error: answer.error.clone(),
                high_watermark: answer.high_watermark,
                log_start_offset: answer.log_start_offset,
                diverging: answer.diverging.clone(),
                epochs: answer.epochs.clone(),
                records: Records {
                    parts: match &answer.records {
                        FetchedRecords::Shared(batches) => batches.iter().map(|b| &b[..]).collect(),
                        FetchedRecords::Owned(bytes) => vec![&bytes[..]],
                    },
                },
            });
        }
        encode_response(head, self.correlation_id, ok, Some(&*response))
    }
}

/// Handles a replica fetch on this shard (the follower connects to the shard that owns the
/// partitions; a partition owned elsewhere is answered `NotLeader`).
pub fn dispatch(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: ReplicaFetchRequest,
) -> Task<Option<Outgoing>> {
    let shard = shard.clone();
    let in_flight = InFlight::new(&shard);
    spawn_in_request_span(async move {
        let _in_flight = in_flight;
        let max_wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_WAIT_MAX);
        let deadline = Instant::now() + max_wait;
        loop {
            let answers = answer_all(&shard, &request).await;
            let now = Instant::now();
            let any_news = answers
                .iter()
                .any(|a| a.bytes() > 0 || !a.error.is_ok() || a.diverging.is_some());
            if any_news || now >= deadline || shard.shutting_down.get() {
                return Some(Outgoing::ReplicaFetch(ReplicaFetchReply {
                    correlation_id,
                    answers,
                }));
            }
            wait_for_appends(&shard, &request, deadline - now).await;
        }
    })
}

/// One pass over every partition of the request.
async fn answer_all(shard: &Rc<ShardServices>, request: &ReplicaFetchRequest) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(request.partitions.len());
    let mut budget = request.max_bytes as usize;
    for wanted in &request.partitions {
        let partition = match shard.route(&wanted.topic, wanted.partition) {
            Ok(Route::Local(partition)) => partition,
            Ok(Route::Remote(_)) => {
                answers.push(Answer::failed(
                    &wanted.topic,
                    wanted.partition,
                    WireError::new(
                        ErrorCode::NotLeader,
                        "not the shard that owns the partition",
                    ),
                ));
                continue;
            }
            Err(error) => {
                answers.push(Answer::failed(&wanted.topic, wanted.partition, error));
                continue;
            }
        };
        let fetch = FollowerFetch {
            fetch_offset: wanted.fetch_offset,
            last_fetched_epoch: wanted.last_fetched_epoch,
            current_leader_epoch: wanted.current_leader_epoch,
        };
        let reply = partition
            .replica
            .on_follower_fetch(request.replica_id, fetch, now_ms());
        if let Some(proposal) = partition.replica.take_isr_proposal() {
            shard.send_isr_proposal(partition.clone(), proposal);
        }
        let log_start_offset = partition.log.log_start_offset();
        let answer = match reply {
            Err(error) => Answer::failed(&wanted.topic, wanted.partition, error),
            Ok(FollowerFetchReply::Diverging {
                epoch,
                end_offset,
                high_watermark,
            }) => Answer {
                high_watermark,
                log_start_offset,
                diverging: Some(DivergingEpoch { epoch, end_offset }),
                ..Answer::failed(&wanted.topic, wanted.partition, WireError::none())
            },
            Ok(FollowerFetchReply::Records {
                log_end_offset,
                high_watermark,
            }) => {
                let max_bytes = (wanted.max_bytes as usize)
                    .min(PARTITION_BYTES_MAX)
                    .min(budget);
                let read = if wanted.fetch_offset < log_end_offset && max_bytes > 0 {
                    partition
                        .log
                        .read_bounded(wanted.fetch_offset, max_bytes, log_end_offset)
                        .await
                        .map(|read| read.batches.into_iter().map(|b| b.bytes).collect())
                } else {
                    Ok(Vec::new())
                };
                match read {
                    Ok(batches) => Answer {
                        topic: wanted.topic.clone(),
                        partition: wanted.partition,
                        error: WireError::none(),
                        high_watermark,
                        log_start_offset,
                        diverging: None,
                        epochs: partition
                            .replica
                            .epochs_from(wanted.fetch_offset)
                            .into_iter()
                            .map(|(epoch, start_offset)| EpochStart {
                                epoch,
                                start_offset,
                            })
                            .collect(),
                        records: FetchedRecords::Shared(batches),
                    },
                    Err(error) => Answer::failed(
                        &wanted.topic,
                        wanted.partition,
                        partition.storage_error(&error),
                    ),
                }
            }
        };
        budget = budget.saturating_sub(answer.bytes());
        answers.push(answer);
    }
    answers
}

/// Waits until any partition of the request has a record past the follower's fetch offset, the
/// wait is over, or the shard shuts down.
async fn wait_for_appends(
    shard: &Rc<ShardServices>,
    request: &ReplicaFetchRequest,
    wait: Duration,
) {
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    for wanted in &request.partitions {
        if let Ok(Route::Local(partition)) = shard.route(&wanted.topic, wanted.partition) {
            let offset = wanted.fetch_offset;
            waits.push(Box::pin(async move {
                partition.log.wait_for_offset(offset).await
            }));
        }
    }
    let stopping = shard.clone();
    waits.push(Box::pin(async move {
        stopping
            .changed
            .wait_until(|| stopping.shutting_down.get())
            .await
    }));
    waits.push(Box::pin(glommio::timer::sleep(wait)));
    super::first_ready(waits).await;
}
