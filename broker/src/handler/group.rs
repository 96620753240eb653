//! Group APIs: FindCoordinator is answered by any shard; requests about one group go to the
//! shard coordinating it (over the bus when the connection landed elsewhere); ListGroups asks
//! every shard.

use std::rc::Rc;

use glommio::Task;
use wire::protocol::{
    DescribeGroupsRequest, DescribeGroupsResponse, DescribedGroup, ErrorCode,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatResponse, LeaveGroupResponse,
    ListGroupsResponse, WireError,
};

use super::{error_frame, response_frame, spawn_frame, Outgoing};
use crate::group::{
    coordinator_shard, offsets_partition_for, validate_group_id, GroupRequest, GroupResponse,
};
use crate::services::ShardServices;
use crate::shard::bus::reply_channel;
use crate::shard::router::shard_for;
use crate::shard::InFlight;

/// Sends a one-group request to its coordinator and encodes the answer.
pub fn forward(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: GroupRequest,
) -> Task<Option<Outgoing>> {
    spawn_frame(
        shard,
        correlation_id,
        move |shard, correlation_id| async move {
            match route(&shard, request).await {
                Ok(response) => encode(correlation_id, response),
                Err(error) => error_frame(correlation_id, &error),
            }
        },
    )
}

/// Runs `request` on the shard coordinating its group.
async fn route(
    shard: &Rc<ShardServices>,
    request: GroupRequest,
) -> Result<GroupResponse, WireError> {
    let owner = match request.group_id() {
        Some(group) => {
            validate_group_id(group)?;
            coordinator_shard(
                group,
                shard.coordinator.offsets_partitions(),
                shard.shards(),
            )
        }
        None => shard.id,
    };
    ask(shard, owner, request).await
}

/// Runs `request` on shard `owner`.
async fn ask(
    shard: &Rc<ShardServices>,
    owner: usize,
    request: GroupRequest,
) -> Result<GroupResponse, WireError> {
    if owner == shard.id {
        return shard.coordinator.handle(shard, request).await;
    }
    let stopped = || {
        WireError::new(
            ErrorCode::CoordinatorNotAvailable,
            format!("shard {owner} has stopped"),
        )
    };
    let (reply, answer) = reply_channel();
    shard
        .bus
        .run_on(owner, 0, move |coordinator| async move {
            let _in_flight = InFlight::new(&coordinator);
            let answer = coordinator.coordinator.handle(&coordinator, request).await;
            let _ = reply.send(answer);
        })
        .await
        .map_err(|_| stopped())?;
    answer.recv_async().await.map_err(|_| stopped())?
}

fn encode(correlation_id: u32, response: GroupResponse) -> Vec<u8> {
    match response {
        GroupResponse::Join(body) => response_frame(correlation_id, &body),
        GroupResponse::Sync(body) => response_frame(correlation_id, &body),
        GroupResponse::Heartbeat => response_frame(correlation_id, &HeartbeatResponse {}),
        GroupResponse::Leave => response_frame(correlation_id, &LeaveGroupResponse {}),
        GroupResponse::OffsetCommit(body) => response_frame(correlation_id, &body),
        GroupResponse::OffsetFetch(body) => response_frame(correlation_id, &body),
        GroupResponse::Describe(group) => response_frame(
            correlation_id,
            &DescribeGroupsResponse {
                groups: vec![group],
            },
        ),
        GroupResponse::List(groups) => {
            response_frame(correlation_id, &ListGroupsResponse { groups })
        }
    }
}

/// The shard endpoint coordinating a group.
pub fn find_coordinator(
    shard: &Rc<ShardServices>,
    correlation_id: u32,
    request: &FindCoordinatorRequest,
) -> Vec<u8> {
    if let Err(error) = validate_group_id(&request.group_id) {
        return error_frame(correlation_id, &error);
    }
    let partitions = shard.coordinator.offsets_partitions();
    let offsets_partition = offsets_partition_for(&request.group_id, partitions);
    // The coordinator is the leader of the group's offsets partition (its writes replicate
    // like any topic's); another broker's leader is found in the metadata.
    let leader = crate::cluster_metadata::assignment(
        &shard.image.borrow(),
        wire::protocol::CONSUMER_OFFSETS_TOPIC,
        offsets_partition,
    )
    .and_then(|a| a.leader);
    match leader {
        Some(leader) if leader == shard.config.broker_id => {}
        Some(leader) => {
            let image = shard.image.borrow().clone();
            let endpoints =
                crate::cluster_metadata::broker_endpoints(&image, leader).unwrap_or(&[]);
            let owner = shard_for(
                wire::protocol::CONSUMER_OFFSETS_TOPIC,
                offsets_partition,
                crate::cluster_metadata::broker_shard_count(&image, leader),
            );
            let endpoint = endpoints
                .get(1 + owner)
                .and_then(|e| crate::cluster_metadata::split_endpoint(e));
            return match endpoint {
                Some((host, port)) => response_frame(
                    correlation_id,
                    &FindCoordinatorResponse {
                        broker_id: leader,
                        host,
                        port,
                        shard: owner as u16,
                        offsets_partition,
                    },
                ),
                None => error_frame(
                    correlation_id,
                    &WireError::new(
                        ErrorCode::CoordinatorNotAvailable,
                        format!(
                            "broker {leader} coordinates the group but its endpoints are unknown"
                        ),
                    ),
                ),
            };
        }
        None => {
            return error_frame(
                correlation_id,
                &WireError::new(
                    ErrorCode::CoordinatorNotAvailable,
                    "the group's offsets partition has no leader yet",
                ),
            )
        }
    }
    let owner = shard_for(
        wire::protocol::CONSUMER_OFFSETS_TOPIC,
        offsets_partition,
        shard.shards(),
    );
    let endpoints = shard.endpoints.borrow().clone();
    match endpoints.get(owner) {
        Some(endpoint) => response_frame(
            correlation_id,
            &FindCoordinatorResponse {
                broker_id: shard.config.broker_id,
                host: endpoint.host.clone(),
                port: endpoint.port,
                shard: endpoint.shard,
                offsets_partition,
            },
        ),
        None => error_frame(
            correlation_id,
            &WireError::new(
                ErrorCode::CoordinatorNotAvailable,
                "the broker is still starting its listeners",
            ),
        ),
    }
}

/// Every group of every shard.
pub async fn list_groups(shard: Rc<ShardServices>, correlation_id: u32) -> Vec<u8> {
    let mut groups = Vec::new();
    for owner in 0..shard.shards() {
        match ask(&shard, owner, GroupRequest::List).await {
            Ok(GroupResponse::List(mut listed)) => groups.append(&mut listed),
            Ok(_) => {}
            Err(error) => return error_frame(correlation_id, &error),
        }
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    response_frame(correlation_id, &ListGroupsResponse { groups })
}

/// Describes each group asked for, each by its coordinator.
pub async fn describe_groups(
    shard: Rc<ShardServices>,
    correlation_id: u32,
    request: DescribeGroupsRequest,
) -> Vec<u8> {
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let described = match route(&shard, GroupRequest::Describe(group_id.clone())).await {
            Ok(GroupResponse::Describe(group)) => group,
            Ok(_) => DescribedGroup {
                group_id,
                error: WireError::new(ErrorCode::Unknown, "unexpected coordinator answer"),
                ..DescribedGroup::default()
            },
            Err(error) => DescribedGroup {
                group_id,
                error,
                ..DescribedGroup::default()
            },
        };
        groups.push(described);
    }
    response_frame(correlation_id, &DescribeGroupsResponse { groups })
}
