//! Request handlers, the API layer: one file per API. [`dispatch`] takes a decoded request on
//! the shard whose connection received it and returns a task that resolves to the response (or
//! to nothing, for produce with acks=0). Work for partitions or groups owned by another shard
//! crosses the [`crate::shard::bus`] as a work item built here: the owner's pump only runs it.
//!
//! Above the per-shard services (group coordinator, topic admin, producer ids) and the
//! partitions' replication seam ([`crate::partition`]); below the network layer.

pub mod fetch;
pub mod group;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod replica_fetch;

use std::rc::Rc;

use glommio::Task;
use storage::SharedBytes;
use tracing::Instrument;
use wire::protocol::{
    encode_error_response, encode_response, Encode, ErrorCode, Request, RequestHeader, WireError,
};

use crate::group::GroupRequest;
use crate::services::ShardServices;
use crate::shard::bus::reply_channel;
use crate::shard::InFlight;

/// A response ready to be written.
pub enum Outgoing {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// A fetch response whose batches are written straight from the log's buffers.
    Fetch(fetch::FetchReply),
    /// A replica fetch response, written the same way.
    ReplicaFetch(replica_fetch::ReplicaFetchReply),
}

/// Records of one fetched partition.
pub enum FetchedRecords {
    /// Zero-copy slices of the local log.
    Shared(Vec<SharedBytes>),
    /// Bytes copied from another shard.
    Owned(Vec<u8>),
}

/// Encodes a successful response frame.
pub fn response_frame<T: Encode>(correlation_id: u32, body: &T) -> Vec<u8> {
    let mut buffer = Vec::new();
    let ok = WireError::none();
    let _ = encode_response(&mut buffer, correlation_id, &ok, Some(body));
    buffer
}

/// Encodes an error-only response frame.
pub fn error_frame(correlation_id: u32, error: &WireError) -> Vec<u8> {
    let mut buffer = Vec::new();
    let _ = encode_error_response(&mut buffer, correlation_id, error);
    buffer
}

fn ready(shard: &Rc<ShardServices>, outgoing: Outgoing) -> Task<Option<Outgoing>> {
    let in_flight = InFlight::new(shard);
    glommio::spawn_local(async move {
        drop(in_flight);
        Some(outgoing)
    })
}

/// Waits until the first of `waits` is done (a long poll's wake-ups: data, shutdown, its
/// deadline); the others are dropped.
pub async fn first_ready<'a>(
    mut waits: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>>,
) {
    std::future::poll_fn(|cx| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Spawns a request's task inside the caller's current span (the request's, see
/// `crate::net::connection`), so what the task logs is attributed to that request.
pub fn spawn_in_request_span<F>(future: F) -> Task<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(future.instrument(tracing::Span::current()))
}

/// Runs `work` (which encodes the response frame) as the request's task, counted as in flight
/// until it finishes.
pub fn spawn_frame<F, Fut>(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    work: F,
) -> Task<Option<Outgoing>>
where
    F: FnOnce(Rc<ShardServices>, u32) -> Fut + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + 'static,
{
    let shard = shard.clone();
    let in_flight = InFlight::new(&shard);
    spawn_in_request_span(async move {
        let _in_flight = in_flight;
        Some(Outgoing::Frame(work(shard, correlation_id).await))
    })
}

/// Starts handling one request. Produce is appended before this returns (so the appends of
/// one connection keep their order); everything that waits (durability, long polls, other
/// shards) happens in the returned task.
pub async fn dispatch(
    shard: &Rc<ShardServices>,
    header: RequestHeader,
    request: Request<'_>,
    client_host: &str,
) -> Task<Option<Outgoing>> {
    let correlation_id = header.correlation_id;
    if shard.shutting_down.get() {
        let error = WireError::new(ErrorCode::BrokerShuttingDown, "the broker is shutting down");
        return ready(shard, Outgoing::Frame(error_frame(correlation_id, &error)));
    }
    match request {
        Request::Handshake(request) => ready(
            shard,
            Outgoing::Frame(metadata::handshake(shard, correlation_id, &request)),
        ),
        Request::Metadata(request) => ready(
            shard,
            Outgoing::Frame(metadata::metadata(shard, correlation_id, &request)),
        ),
        Request::CreateTopics(request) => {
            spawn_frame(shard, correlation_id, |shard, correlation_id| async move {
                let topics = on_shard_zero(&shard, move |admin| async move {
                    admin.create_topics(request).await
                })
                .await;
                match topics {
                    Ok(topics) => response_frame(
                        correlation_id,
                        &wire::protocol::CreateTopicsResponse { topics },
                    ),
                    Err(error) => error_frame(correlation_id, &error),
                }
            })
        }
        Request::DeleteTopics(request) => {
            spawn_frame(shard, correlation_id, |shard, correlation_id| async move {
                let topics = on_shard_zero(&shard, move |admin| async move {
                    admin.delete_topics(request).await
                })
                .await;
                match topics {
                    Ok(topics) => response_frame(
                        correlation_id,
                        &wire::protocol::DeleteTopicsResponse { topics },
                    ),
                    Err(error) => error_frame(correlation_id, &error),
                }
            })
        }
        Request::Produce(request) => produce::dispatch(shard, correlation_id, request).await,
        Request::Fetch(request) => fetch::dispatch(shard, correlation_id, request),
        Request::ListOffsets(request) => offsets::dispatch(shard, correlation_id, request),
        Request::InitProducerId(request) => {
            spawn_frame(shard, correlation_id, |shard, correlation_id| async move {
                init_producer_id(&shard, correlation_id, request).await
            })
        }
        Request::FindCoordinator(request) => ready(
            shard,
            Outgoing::Frame(group::find_coordinator(shard, correlation_id, &request)),
        ),
        Request::ListGroups(_) => spawn_frame(shard, correlation_id, group::list_groups),
        Request::DescribeGroups(request) => {
            spawn_frame(shard, correlation_id, move |shard, correlation_id| {
                group::describe_groups(shard, correlation_id, request)
            })
        }
        Request::JoinGroup(request) => group::forward(
            shard,
            correlation_id,
            GroupRequest::Join {
                request,
                client_host: client_host.to_owned(),
            },
        ),
        Request::SyncGroup(request) => {
            group::forward(shard, correlation_id, GroupRequest::Sync(request))
        }
        Request::Heartbeat(request) => {
            group::forward(shard, correlation_id, GroupRequest::Heartbeat(request))
        }
        Request::LeaveGroup(request) => {
            group::forward(shard, correlation_id, GroupRequest::Leave(request))
        }
        Request::OffsetCommit(request) => {
            group::forward(shard, correlation_id, GroupRequest::OffsetCommit(request))
        }
        Request::OffsetFetch(request) => {
            group::forward(shard, correlation_id, GroupRequest::OffsetFetch(request))
        }
        Request::ReplicaFetch(request) => replica_fetch::dispatch(shard, correlation_id, request),
        Request::DescribeCluster(_) => ready(
            shard,
            Outgoing::Frame(response_frame(correlation_id, &shard.describe_cluster())),
        ),
        Request::CreatePartitions(request) => {
            spawn_frame(shard, correlation_id, |shard, correlation_id| async move {
                let topics = shard.create_partitions(request).await;
                response_frame(
                    correlation_id,
                    &wire::protocol::CreatePartitionsResponse { topics },
                )
            })
        }
        Request::ReassignPartitions(request) => {
            spawn_frame(shard, correlation_id, |shard, correlation_id| async move {
                let partitions = shard.reassign_partitions(request).await;
                response_frame(
                    correlation_id,
                    &wire::protocol::ReassignPartitionsResponse { partitions },
                )
            })
        }
        Request::ElectLeaders(request) => {
            spawn_frame(shard, correlation_id, |shard, correlation_id| async move {
                match shard.elect_leaders(request).await {
                    Ok(changed) => response_frame(
                        correlation_id,
                        &wire::protocol::ElectLeadersResponse { changed },
                    ),
                    Err(error) => error_frame(correlation_id, &error),
                }
            })
        }
    }
}

/// Hands out a producer id (allocated on shard 0).
async fn init_producer_id(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: wire::protocol::InitProducerIdRequest,
) -> Vec<u8> {
    if request.transactional_id.is_some() {
        let error = WireError::new(
            ErrorCode::InvalidRequest,
            "transactions are not supported yet",
        );
        return error_frame(correlation_id, &error);
    }
    let allocated = on_shard_zero(
        shard,
        |zero| async move { zero.allocate_producer_id().await },
    )
    .await
    .and_then(|allocated| allocated);
    match allocated {
        Ok(producer_id) => response_frame(
            correlation_id,
            &wire::protocol::InitProducerIdResponse {
                producer_id,
                producer_epoch: 0,
            },
        ),
        Err(error) => error_frame(correlation_id, &error),
    }
}

/// Runs `work` on shard 0 (the controller of this node: topic admin, producer ids), here or
/// over the bus, and returns its answer.
async fn on_shard_zero<F, Fut, T>(shard: &Rc<ShardServices>, work: F) -> Result<T, WireError>
where
    F: FnOnce(Rc<ShardServices>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let stopped = || WireError::new(ErrorCode::BrokerShuttingDown, "shard 0 has stopped");
    if shard.id == 0 {
        return Ok(work(shard.clone()).await);
    }
    let (reply, answer) = reply_channel();
    shard
        .bus
        .run_on(0, 0, move |zero| async move {
            let _in_flight = InFlight::new(&zero);
            let _ = reply.send(work(zero).await);
        })
        .await
        .map_err(|_| stopped())?;
    answer.recv_async().await.map_err(|_| stopped())
}
