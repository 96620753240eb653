//! The request/response protocol between clients and brokers: framing ([`frame`]), the primitive
//! codec ([`codec`]), stable error codes ([`error_code`]) and the messages of every API
//! ([`messages`]). Pure codec: no I/O, no async. Decoding untrusted bytes never panics; frame
//! sizes are checked before anything is allocated.
//!
//! ```
//! use wire::protocol::*;
//!
//! // Client: encode a request into a reusable buffer.
//! let mut buffer = Vec::new();
//! let request = MetadataRequest { topics: Some(vec!["orders".into()]) };
//! let frame = encode_request(&mut buffer, ApiKey::Metadata, 7, &request).to_vec();
//!
//! // Broker: check the length, then decode.
//! assert_eq!(check_frame(&frame, FRAME_SIZE_MAX)?, Some(frame.len()));
//! let (header, decoded) = decode_request(&frame)?;
//! assert_eq!(header.correlation_id, 7);
//! assert_eq!(decoded, Request::Metadata(request));
//! # Ok::<(), wire::ProtocolError>(())
//! ```

pub mod cluster_messages;
pub mod codec;
pub mod error_code;
pub mod frame;
pub mod group_messages;
pub mod messages;

pub use cluster_messages::*;
pub use codec::{Decode, Encode, FrameParts, FrameWriter, Reader, Records};
pub use error_code::{ErrorCode, WireError};
pub use frame::{
    check_frame, decode_request_header, decode_response_header, RequestHeader, FRAME_SIZE_MAX,
    LENGTH_PREFIX_SIZE, REQUEST_HEADER_SIZE, RESPONSE_HEADER_SIZE,
};
pub use group_messages::*;
pub use messages::*;

use crate::error::ProtocolError;

/// Identifies an API. Values are stable forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    /// Version handshake.
    Handshake = 0,
    /// Brokers, topics, partition leaders.
    Metadata = 1,
    /// Create topics.
    CreateTopics = 2,
    /// Delete topics.
    DeleteTopics = 3,
    /// Append batches.
    Produce = 4,
    /// Read batches (long poll).
    Fetch = 5,
    /// Offsets by position or time.
    ListOffsets = 6,
    /// A producer id and epoch for an idempotent producer.
    InitProducerId = 7,
    /// The shard coordinating a consumer group.
    FindCoordinator = 8,
    /// Join (or rejoin) a consumer group.
    JoinGroup = 9,
    /// Distribute a group's assignment.
    SyncGroup = 10,
    /// Keep a group member alive.
    Heartbeat = 11,
    /// Leave a group.
    LeaveGroup = 12,
    /// Commit a group's offsets.
    OffsetCommit = 13,
    /// Read a group's committed offsets.
    OffsetFetch = 14,
    /// Groups coordinated by the broker.
    ListGroups = 15,
    /// Members and assignments of groups.
    DescribeGroups = 16,
    /// A follower's fetch from its leader (broker to broker).
    ReplicaFetch = 17,
    /// Brokers and controller quorum.
    DescribeCluster = 18,
    /// Add partitions to topics.
    CreatePartitions = 19,
    /// Move partitions to new replica sets.
    ReassignPartitions = 20,
    /// Elect partition leaders (preferred or clean).
    ElectLeaders = 21,
}

impl ApiKey {
    /// Every API, in key order.
    pub const ALL: [ApiKey; 22] = [
        ApiKey::Handshake,
        ApiKey::Metadata,
        ApiKey::CreateTopics,
        ApiKey::DeleteTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::InitProducerId,
        ApiKey::FindCoordinator,
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::ListGroups,
        ApiKey::DescribeGroups,
        ApiKey::ReplicaFetch,
        ApiKey::DescribeCluster,
        ApiKey::CreatePartitions,
        ApiKey::ReassignPartitions,
        ApiKey::ElectLeaders,
    ];

    /// The API for a wire value.
    pub fn from_u16(value: u16) -> Option<ApiKey> {
        ApiKey::ALL.into_iter().find(|k| *k as u16 == value)
    }
}

/// The one protocol version every API speaks today.
pub const PROTOCOL_VERSION: u16 = 1;

/// A decoded request; produce data borrows from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// See [`HandshakeRequest`].
    Handshake(HandshakeRequest),
    /// See [`MetadataRequest`].
    Metadata(MetadataRequest),
    /// See [`CreateTopicsRequest`].
    CreateTopics(CreateTopicsRequest),
    /// See [`DeleteTopicsRequest`].
    DeleteTopics(DeleteTopicsRequest),
    /// See [`ProduceRequest`].
    Produce(ProduceRequest<'a>),
    /// See [`FetchRequest`].
    Fetch(FetchRequest),
    /// See [`ListOffsetsRequest`].
    ListOffsets(ListOffsetsRequest),
    /// See [`InitProducerIdRequest`].
    InitProducerId(InitProducerIdRequest),
    /// See [`FindCoordinatorRequest`].
    FindCoordinator(FindCoordinatorRequest),
    /// See [`JoinGroupRequest`].
    JoinGroup(JoinGroupRequest),
    /// See [`SyncGroupRequest`].
    SyncGroup(SyncGroupRequest),
    /// See [`HeartbeatRequest`].
    Heartbeat(HeartbeatRequest),
    /// See [`LeaveGroupRequest`].
    LeaveGroup(LeaveGroupRequest),
    /// See [`OffsetCommitRequest`].
    OffsetCommit(OffsetCommitRequest),
    /// See [`OffsetFetchRequest`].
    OffsetFetch(OffsetFetchRequest),
    /// See [`ListGroupsRequest`].
    ListGroups(ListGroupsRequest),
    /// See [`DescribeGroupsRequest`].
    DescribeGroups(DescribeGroupsRequest),
    /// See [`ReplicaFetchRequest`].
    ReplicaFetch(ReplicaFetchRequest),
    /// See [`DescribeClusterRequest`].
    DescribeCluster(DescribeClusterRequest),
    /// See [`CreatePartitionsRequest`].
    CreatePartitions(CreatePartitionsRequest),
    /// See [`ReassignPartitionsRequest`].
    ReassignPartitions(ReassignPartitionsRequest),
    /// See [`ElectLeadersRequest`].
    ElectLeaders(ElectLeadersRequest),
}

/// Encodes a request frame into `buffer`; borrowed records are referenced, not copied.
pub fn encode_request<'b, T: Encode>(
    buffer: &'b mut Vec<u8>,
    api_key: ApiKey,
    correlation_id: u32,
    body: &'b T,
) -> FrameParts<'b> {
    let mut writer = FrameWriter::new(buffer);
    writer.put_u16(api_key as u16);
    writer.put_u16(PROTOCOL_VERSION);
    writer.put_u32(correlation_id);
    body.encode(&mut writer);
    writer.finish()
}

/// Encodes a response frame: the top-level error, then the body when there is one.
pub fn encode_response<'b, T: Encode>(
    buffer: &'b mut Vec<u8>,
    correlation_id: u32,
    error: &'b WireError,
    body: Option<&'b T>,
) -> FrameParts<'b> {
    let mut writer = FrameWriter::new(buffer);
    writer.put_u32(correlation_id);
    error.encode(&mut writer);
    if let Some(body) = body {
        body.encode(&mut writer);
    }
    writer.finish()
}

/// Encodes a response that is only an error.
pub fn encode_error_response<'b>(
    buffer: &'b mut Vec<u8>,
    correlation_id: u32,
    error: &'b WireError,
) -> FrameParts<'b> {
    encode_response::<u8>(buffer, correlation_id, error, None)
}

/// Decodes a whole request frame (exactly one: the length prefix must count the bytes after it,
/// as `check_frame`'s total does). A header that cannot be read, an unknown API or an
/// unsupported version is an error; the header is returned with it when it could be read, so
/// the broker can still answer.
pub fn decode_request(frame: &[u8]) -> Result<(RequestHeader, Request<'_>), ProtocolError> {
    let (header, mut reader) = decode_request_header(frame)?;
    frame::check_length_prefix(frame)?;
    let api_key = ApiKey::from_u16(header.api_key).ok_or(ProtocolError::UnknownApi {
        api_key: header.api_key,
    })?;
    if header.api_version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            api_key: header.api_key,
            version: header.api_version,
        });
    }
    let reader = &mut reader;
    let request = match api_key {
        ApiKey::Handshake => Request::Handshake(Decode::decode(reader)?),
        ApiKey::Metadata => Request::Metadata(Decode::decode(reader)?),
        ApiKey::CreateTopics => Request::CreateTopics(Decode::decode(reader)?),
        ApiKey::DeleteTopics => Request::DeleteTopics(Decode::decode(reader)?),
        ApiKey::Produce => Request::Produce(Decode::decode(reader)?),
        ApiKey::Fetch => Request::Fetch(Decode::decode(reader)?),
        ApiKey::ListOffsets => Request::ListOffsets(Decode::decode(reader)?),
        ApiKey::InitProducerId => Request::InitProducerId(Decode::decode(reader)?),
        ApiKey::FindCoordinator => Request::FindCoordinator(Decode::decode(reader)?),
        ApiKey::JoinGroup => Request::JoinGroup(Decode::decode(reader)?),
        ApiKey::SyncGroup => Request::SyncGroup(Decode::decode(reader)?),
        ApiKey::Heartbeat => Request::Heartbeat(Decode::decode(reader)?),
        ApiKey::LeaveGroup => Request::LeaveGroup(Decode::decode(reader)?),
        ApiKey::OffsetCommit => Request::OffsetCommit(Decode::decode(reader)?),
        ApiKey::OffsetFetch => Request::OffsetFetch(Decode::decode(reader)?),
        ApiKey::ListGroups => Request::ListGroups(Decode::decode(reader)?),
        ApiKey::DescribeGroups => Request::DescribeGroups(Decode::decode(reader)?),
        ApiKey::ReplicaFetch => Request::ReplicaFetch(Decode::decode(reader)?),
        ApiKey::DescribeCluster => Request::DescribeCluster(Decode::decode(reader)?),
        ApiKey::CreatePartitions => Request::CreatePartitions(Decode::decode(reader)?),
        ApiKey::ReassignPartitions => Request::ReassignPartitions(Decode::decode(reader)?),
        ApiKey::ElectLeaders => Request::ElectLeaders(Decode::decode(reader)?),
    };
    reader.finish()?;
    Ok((header, request))
}

/// Decodes a whole response frame (length prefix checked as for [`decode_request`]):
/// `Ok((correlation_id, Ok(body)))` on success,
/// `Ok((correlation_id, Err(error)))` when the broker answered with a top-level error.
pub fn decode_response<'a, T: Decode<'a>>(
    frame: &'a [u8],
) -> Result<(u32, Result<T, WireError>), ProtocolError> {
    let (correlation_id, mut reader) = decode_response_header(frame)?;
    frame::check_length_prefix(frame)?;
    let error = WireError::decode(&mut reader)?;
    if !error.is_ok() {
        return Ok((correlation_id, Err(error)));
    }
    let body = T::decode(&mut reader)?;
    reader.finish()?;
    Ok((correlation_id, Ok(body)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Records land 16-aligned in the frame, wherever the header fields leave the writer.
    #[test]
    fn produce_round_trip_keeps_batches_aligned() {
        let mut builder = crate::BatchBuilder::new();
        builder.push(1, Some(b"k"), b"value", &[], None);
        let batch = builder.build().unwrap();
        let request = ProduceRequest {
            acks: crate::Acks::All,
            timeout_ms: 500,
            topics: vec![ProduceTopic {
                topic: "odd-name".into(),
                partitions: vec![ProducePartition {
                    partition: 3,
                    records: Records::from_slice(&batch),
                }],
            }],
        };
        let mut buffer = Vec::new();
        let frame = encode_request(&mut buffer, ApiKey::Produce, 9, &request);
        let mut aligned = crate::AlignedVec::<16>::new();
        aligned.extend_from_slice(&frame.to_vec());
        let (header, decoded) = decode_request(&aligned).unwrap();
        assert_eq!(header.api_key, ApiKey::Produce as u16);
        let Request::Produce(decoded) = decoded else {
            panic!("not a produce")
        };
        let records = decoded.topics[0].partitions[0].records.as_slice();
        assert_eq!(records, &batch[..]);
        assert_eq!(records.as_ptr() as usize % 16, 0);
        let view = crate::BatchView::validate_deep(records, crate::limits::BATCH_SIZE_MAX).unwrap();
        assert_eq!(view.records().unwrap()[0].value_bytes(), b"value");
    }

    /// A response carries either the body or a top-level error.
    #[test]
    fn responses_carry_body_or_error() {
        let body = ListOffsetsResponse {
            topics: vec![ListOffsetsTopicResponse {
                topic: "t".into(),
                partitions: vec![ListOffsetsPartitionResponse {
                    partition: 0,
                    error: WireError::none(),
                    offset: 42,
                    timestamp: -1,
                }],
            }],
        };
        let ok = WireError::none();
        let mut buffer = Vec::new();
        let frame = encode_response(&mut buffer, 5, &ok, Some(&body)).to_vec();
        let (corr, decoded) = decode_response::<ListOffsetsResponse>(&frame).unwrap();
        assert_eq!((corr, decoded.unwrap()), (5, body));

        let error = WireError::new(ErrorCode::InvalidRequest, "bad");
        let frame = encode_error_response(&mut buffer, 6, &error).to_vec();
        let (corr, decoded) = decode_response::<ListOffsetsResponse>(&frame).unwrap();
        assert_eq!((corr, decoded.unwrap_err()), (6, error));
    }

    /// Absurd lengths are refused from the 4-byte prefix alone.
    #[test]
    fn absurd_lengths_are_refused_before_allocation() {
        assert_eq!(check_frame(&[1, 2], FRAME_SIZE_MAX).unwrap(), None);
        assert!(check_frame(&u32::MAX.to_le_bytes(), FRAME_SIZE_MAX).is_err());
        assert!(check_frame(&2000u32.to_le_bytes(), 1024).is_err());
        assert_eq!(check_frame(&12u32.to_le_bytes(), 1024).unwrap(), Some(16));
        assert!(
            check_frame(&8u32.to_le_bytes(), 1024).is_err(),
            "not a multiple of 16"
        );
    }

    /// Unknown APIs and versions are errors that still expose the header.
    #[test]
    fn unknown_api_and_version() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&8u32.to_le_bytes());
        frame.extend_from_slice(&99u16.to_le_bytes());
        frame.extend_from_slice(&1u16.to_le_bytes());
        frame.extend_from_slice(&3u32.to_le_bytes());
        assert!(matches!(
            decode_request(&frame),
            Err(ProtocolError::UnknownApi { api_key: 99 })
        ));
        frame[4..6].copy_from_slice(&1u16.to_le_bytes());
        frame[6..8].copy_from_slice(&7u16.to_le_bytes());
        assert!(matches!(
            decode_request(&frame),
            Err(ProtocolError::UnsupportedVersion { version: 7, .. })
        ));
        assert_eq!(decode_request_header(&frame).unwrap().0.correlation_id, 3);
    }
}
