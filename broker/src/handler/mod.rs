//! Request handlers: one file per API. [`dispatch`] takes a decoded request on the shard whose
//! connection received it and returns a task that resolves to the response (or to nothing, for
//! produce with acks=0). Work for partitions owned by another shard crosses the [`crate::bus`];
//! [`handle_forwarded`] is the owner's side of that.

pub mod fetch;
pub mod group;
pub mod metadata;
pub mod offsets;
pub mod produce;

use std::rc::Rc;

use glommio::Task;
use storage::SharedBytes;
use wire::protocol::{
    encode_error_response, encode_response, Encode, ErrorCode, Request, RequestHeader, WireError,
};

use crate::bus::{reply_channel, ShardMessage};
use crate::group::GroupRequest;
use crate::shard::{InFlight, Shard};

/// A response ready to be written.
pub enum Outgoing {
    /// An encoded frame.
    Frame(Vec<u8>),
    /// A fetch response whose batches are written straight from the log's buffers.
    Fetch(fetch::FetchReply),
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

fn ready(shard: &Rc<Shard>, outgoing: Outgoing) -> Task<Option<Outgoing>> {
    let in_flight = InFlight::new(shard);
    glommio::spawn_local(async move {
        drop(in_flight);
        Some(outgoing)
    })
}

/// Runs `work` (which encodes the response frame) as the request's task, counted as in flight
/// until it finishes.
pub fn spawn_frame<F, Fut>(
    shard: &Rc<Shard>,
    correlation_id: u32,
    work: F,
) -> Task<Option<Outgoing>>
where
    F: FnOnce(Rc<Shard>, u32) -> Fut + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + 'static,
{
    let shard = shard.clone();
    let in_flight = InFlight::new(&shard);
    glommio::spawn_local(async move {
        let _in_flight = in_flight;
        Some(Outgoing::Frame(work(shard, correlation_id).await))
    })
}

/// Starts handling one request. Produce is appended before this returns (so the appends of
/// one connection keep their order); everything that waits (durability, long polls, other
/// shards) happens in the returned task.
pub async fn dispatch(
    shard: &Rc<Shard>,
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
                let (reply, results) = reply_channel();
                let message = ShardMessage::CreateTopics { request, reply };
                admin_reply(&shard, correlation_id, message, results, |topics| {
                    response_frame(
                        correlation_id,
                        &wire::protocol::CreateTopicsResponse { topics },
                    )
                })
                .await
            })
        }
        Request::DeleteTopics(request) => {
            spawn_frame(shard, correlation_id, |shard, correlation_id| async move {
                let (reply, results) = reply_channel();
                let message = ShardMessage::DeleteTopics { request, reply };
                admin_reply(&shard, correlation_id, message, results, |topics| {
                    response_frame(
                        correlation_id,
                        &wire::protocol::DeleteTopicsResponse { topics },
                    )
                })
                .await
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
    }
}

/// Hands out a producer id (allocated on shard 0).
async fn init_producer_id(
    shard: &Rc<Shard>,
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
    let allocated = if shard.id == 0 {
        shard.allocate_producer_id()
    } else {
        let (reply, answer) = reply_channel();
        match shard
            .bus
            .send(0, ShardMessage::InitProducerId { reply })
            .await
        {
            Ok(()) => answer.recv_async().await.unwrap_or_else(|_| {
                Err(WireError::new(
                    ErrorCode::BrokerShuttingDown,
                    "shard 0 has stopped",
                ))
            }),
            Err(_) => Err(WireError::new(
                ErrorCode::BrokerShuttingDown,
                "shard 0 has stopped",
            )),
        }
    };
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

/// Sends an admin request to shard 0 and encodes its answer.
async fn admin_reply(
    shard: &Rc<Shard>,
    correlation_id: u32,
    message: ShardMessage,
    results: flume::Receiver<Vec<wire::protocol::TopicResult>>,
    encode: impl FnOnce(Vec<wire::protocol::TopicResult>) -> Vec<u8>,
) -> Vec<u8> {
    if shard.id == 0 {
        handle_forwarded(shard, message).await;
    } else if shard.bus.send(0, message).await.is_err() {
        return error_frame(
            correlation_id,
            &WireError::new(ErrorCode::BrokerShuttingDown, "shard 0 has stopped"),
        );
    }
    match results.recv_async().await {
        Ok(topics) => encode(topics),
        Err(_) => error_frame(
            correlation_id,
            &WireError::new(ErrorCode::BrokerShuttingDown, "shard 0 has stopped"),
        ),
    }
}

/// The owner shard's side of forwarded work.
pub async fn handle_forwarded(shard: &Rc<Shard>, message: ShardMessage) {
    let _in_flight = InFlight::new(shard);
    match message {
        ShardMessage::Produce {
            topic,
            partition,
            records,
            acks,
            reply,
        } => {
            let response = produce::produce_owned(shard, &topic, partition, &records, acks).await;
            let _ = reply.send(response);
        }
        ShardMessage::Fetch {
            targets,
            max_wait,
            min_bytes,
            max_bytes,
            reply,
        } => {
            let fetched = fetch::fetch_local(shard, &targets, max_wait, min_bytes, max_bytes).await;
            let owned = fetched
                .into_iter()
                .map(|partition| partition.into_owned())
                .collect();
            let _ = reply.send(owned);
        }
        ShardMessage::ListOffsets {
            topic,
            partition,
            timestamp,
            reply,
        } => {
            let _ = reply.send(offsets::list_local(shard, &topic, partition, timestamp).await);
        }
        ShardMessage::CreateTopics { request, reply } => {
            let _ = reply.send(shard.create_topics(request).await);
        }
        ShardMessage::DeleteTopics { request, reply } => {
            let _ = reply.send(shard.delete_topics(request).await);
        }
        ShardMessage::InitProducerId { reply } => {
            let _ = reply.send(shard.allocate_producer_id());
        }
        ShardMessage::Group { request, reply } => {
            let _ = reply.send(shard.coordinator.handle(shard, request).await);
        }
        ShardMessage::TopicsChanged { .. }
        | ShardMessage::Endpoints { .. }
        | ShardMessage::Shutdown => {
            tracing::error!("pump message reached the request handler");
        }
    }
}
