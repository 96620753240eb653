//! Fuzz target: arbitrary bytes into every decode entry point of the protocol codec
//! (`check_frame`, `decode_request_header`, `decode_response_header`, `decode_request`, and
//! `decode_response::<T>` for every response type, consumer-group and cluster APIs included).
//! None of them
//! may panic, and whatever decodes must re-encode consistently: a request to exactly the same
//! bytes, a response body to a frame that decodes to the same body. The consumer protocol
//! payloads inside a decoded `JoinGroup` or `SyncGroup` request go through `decode_payload`
//! too (the `group_payload_decode` target fuzzes that on its own).
//!
//! The input is copied into a 16-aligned buffer first, as a broker's receive buffer is. The
//! first input byte is a mode: if its low bit is set, the length prefix is rewritten to match
//! the input, so the fuzzer spends its time in the body decoders rather than on the prefix.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::protocol::*;
use wire::AlignedVec;

/// `encode_request` for any decoded request.
fn encode_any<'b>(
    buffer: &'b mut Vec<u8>,
    correlation_id: u32,
    request: &'b Request<'_>,
) -> FrameParts<'b> {
    let id = correlation_id;
    match request {
        Request::Handshake(b) => encode_request(buffer, ApiKey::Handshake, id, b),
        Request::Metadata(b) => encode_request(buffer, ApiKey::Metadata, id, b),
        Request::CreateTopics(b) => encode_request(buffer, ApiKey::CreateTopics, id, b),
        Request::DeleteTopics(b) => encode_request(buffer, ApiKey::DeleteTopics, id, b),
        Request::Produce(b) => encode_request(buffer, ApiKey::Produce, id, b),
        Request::Fetch(b) => encode_request(buffer, ApiKey::Fetch, id, b),
        Request::ListOffsets(b) => encode_request(buffer, ApiKey::ListOffsets, id, b),
        Request::InitProducerId(b) => encode_request(buffer, ApiKey::InitProducerId, id, b),
        Request::FindCoordinator(b) => encode_request(buffer, ApiKey::FindCoordinator, id, b),
        Request::JoinGroup(b) => encode_request(buffer, ApiKey::JoinGroup, id, b),
        Request::SyncGroup(b) => encode_request(buffer, ApiKey::SyncGroup, id, b),
        Request::Heartbeat(b) => encode_request(buffer, ApiKey::Heartbeat, id, b),
        Request::LeaveGroup(b) => encode_request(buffer, ApiKey::LeaveGroup, id, b),
        Request::OffsetCommit(b) => encode_request(buffer, ApiKey::OffsetCommit, id, b),
        Request::OffsetFetch(b) => encode_request(buffer, ApiKey::OffsetFetch, id, b),
        Request::ListGroups(b) => encode_request(buffer, ApiKey::ListGroups, id, b),
        Request::DescribeGroups(b) => encode_request(buffer, ApiKey::DescribeGroups, id, b),
        Request::ReplicaFetch(b) => encode_request(buffer, ApiKey::ReplicaFetch, id, b),
        Request::DescribeCluster(b) => encode_request(buffer, ApiKey::DescribeCluster, id, b),
        Request::CreatePartitions(b) => encode_request(buffer, ApiKey::CreatePartitions, id, b),
        Request::ReassignPartitions(b) => {
            encode_request(buffer, ApiKey::ReassignPartitions, id, b)
        }
        Request::ElectLeaders(b) => encode_request(buffer, ApiKey::ElectLeaders, id, b),
    }
}

/// A consumer protocol payload that decodes re-encodes to exactly its own bytes.
fn payload(bytes: &[u8]) {
    if let Ok(subscription) = decode_payload::<ConsumerSubscription>(bytes) {
        assert_eq!(encode_payload(&subscription), bytes);
    }
    if let Ok(assignment) = decode_payload::<ConsumerAssignment>(bytes) {
        assert_eq!(encode_payload(&assignment), bytes);
    }
}

/// Decodes `$frame` as a `$ty` response; a decoded body must survive encode → decode.
macro_rules! response {
    ($frame:expr, $ty:ty) => {{
        let frame: &[u8] = $frame;
        if let Ok((correlation_id, result)) = decode_response::<$ty>(frame) {
            match result {
                Ok(body) => {
                    let ok = WireError::none();
                    let mut buffer = Vec::new();
                    let bytes =
                        encode_response(&mut buffer, correlation_id, &ok, Some(&body)).to_vec();
                    let mut again = AlignedVec::<16>::new();
                    again.extend_from_slice(&bytes);
                    match decode_response::<$ty>(&again) {
                        Ok((id, Ok(again_body))) => {
                            assert_eq!(id, correlation_id);
                            assert_eq!(again_body, body);
                        }
                        other => panic!("re-encoded response does not decode: {other:?}"),
                    }
                }
                Err(error) => assert!(!error.is_ok()),
            }
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut frame = AlignedVec::<16>::new();
    frame.extend_from_slice(rest);
    if mode & 1 == 1 && frame.len() >= LENGTH_PREFIX_SIZE {
        let length = (frame.len() - LENGTH_PREFIX_SIZE) as u32;
        frame[..LENGTH_PREFIX_SIZE].copy_from_slice(&length.to_le_bytes());
    }
    let frame: &[u8] = &frame;

    for limit in [FRAME_SIZE_MAX, 4096, 16, 0] {
        if let Ok(Some(total)) = check_frame(frame, limit) {
            assert!(total <= limit && total % 16 == 0);
        }
    }
    let _ = decode_request_header(frame);
    let _ = decode_response_header(frame);

    if let Ok((header, request)) = decode_request(frame) {
        let mut buffer = Vec::new();
        let again = encode_any(&mut buffer, header.correlation_id, &request).to_vec();
        assert_eq!(
            again, frame,
            "a decoded request re-encodes to its own bytes"
        );
        assert_eq!(check_frame(frame, FRAME_SIZE_MAX), Ok(Some(frame.len())));
        match &request {
            Request::JoinGroup(join) => join.protocols.iter().for_each(|p| payload(&p.metadata)),
            Request::SyncGroup(sync) => {
                sync.assignments.iter().for_each(|a| payload(&a.assignment))
            }
            _ => {}
        }
    }

    response!(frame, HandshakeResponse);
    response!(frame, MetadataResponse);
    response!(frame, CreateTopicsResponse);
    response!(frame, DeleteTopicsResponse);
    response!(frame, ProduceResponse);
    response!(frame, FetchResponse<'_>);
    response!(frame, ListOffsetsResponse);
    response!(frame, InitProducerIdResponse);
    response!(frame, FindCoordinatorResponse);
    response!(frame, JoinGroupResponse);
    response!(frame, SyncGroupResponse);
    response!(frame, HeartbeatResponse);
    response!(frame, LeaveGroupResponse);
    response!(frame, OffsetCommitResponse);
    response!(frame, OffsetFetchResponse);
    response!(frame, ListGroupsResponse);
    response!(frame, DescribeGroupsResponse);
    response!(frame, ReplicaFetchResponse<'_>);
    response!(frame, DescribeClusterResponse);
    response!(frame, CreatePartitionsResponse);
    response!(frame, ReassignPartitionsResponse);
    response!(frame, ElectLeadersResponse);
});
