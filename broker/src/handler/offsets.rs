//! ListOffsets: earliest (log start), latest (high watermark) or by timestamp, on the owner
//! shard of each partition.

use std::rc::Rc;

use glommio::Task;
use wire::protocol::{
    ErrorCode, ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResponse, WireError, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};

use super::{response_frame, Outgoing};
use crate::error_code;
use crate::services::ShardServices;
use crate::shard::bus::reply_channel;
use crate::shard::{InFlight, Route};

/// Answers a ListOffsets request.
pub fn dispatch(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: ListOffsetsRequest,
) -> Task<Option<Outgoing>> {
    let shard = shard.clone();
    let in_flight = InFlight::new(&shard);
    glommio::spawn_local(async move {
        let _in_flight = in_flight;
        let mut response = ListOffsetsResponse { topics: Vec::new() };
        for topic in request.topics {
            let mut partitions = Vec::new();
            for query in topic.partitions {
                let answer = match shard.route(&topic.topic, query.partition) {
                    Ok(Route::Remote(owner)) => {
                        let (reply, answer) = reply_channel();
                        let stopped = || {
                            failed(
                                query.partition,
                                query.timestamp,
                                WireError::new(
                                    ErrorCode::BrokerShuttingDown,
                                    "the owner shard has stopped",
                                ),
                            )
                        };
                        let (topic_name, partition, timestamp) =
                            (topic.topic.clone(), query.partition, query.timestamp);
                        let forwarded = shard
                            .bus
                            .run_on(owner, 0, move |owner| async move {
                                let _in_flight = InFlight::new(&owner);
                                let _ = reply.send(
                                    list_local(&owner, &topic_name, partition, timestamp).await,
                                );
                            })
                            .await;
                        match forwarded {
                            Ok(()) => answer.recv_async().await.unwrap_or_else(|_| stopped()),
                            Err(_) => stopped(),
                        }
                    }
                    _ => list_local(&shard, &topic.topic, query.partition, query.timestamp).await,
                };
                partitions.push(answer);
            }
            response.topics.push(ListOffsetsTopicResponse {
                topic: topic.topic,
                partitions,
            });
        }
        Some(Outgoing::Frame(response_frame(correlation_id, &response)))
    })
}

fn failed(partition: u32, timestamp: i64, error: WireError) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse {
        partition,
        error,
        offset: -1,
        timestamp,
    }
}

/// The owner's answer for one partition.
pub async fn list_local(
    shard: &Rc<ShardServices>,
    topic: &str,
    partition: u32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let local = match shard.route(topic, partition) {
        Ok(Route::Local(local)) => local,
        Ok(Route::Remote(_)) => {
            return failed(
                partition,
                timestamp,
                WireError::new(ErrorCode::NotLeader, "not the owner shard"),
            )
        }
        Err(error) => return failed(partition, timestamp, error),
    };
    let high_watermark = local.high_watermark();
    let offset = match timestamp {
        EARLIEST_TIMESTAMP => Ok(local.log.log_start_offset()),
        LATEST_TIMESTAMP => Ok(high_watermark),
        time if time >= 0 => local
            .log
            .offset_for_timestamp(time)
            .await
            .map(|found| found.map_or(high_watermark, |o| o.min(high_watermark))),
        other => {
            return failed(
                partition,
                timestamp,
                WireError::new(
                    ErrorCode::InvalidRequest,
                    format!("timestamp {other} is neither -1, -2 nor a time"),
                ),
            )
        }
    };
    match offset {
        Ok(offset) => ListOffsetsPartitionResponse {
            partition,
            error: WireError::none(),
            offset: offset as i64,
            timestamp,
        },
        Err(error) => failed(partition, timestamp, error_code::from_storage(&error)),
    }
}
