//! Property tests of the request/response protocol codec (`wire::protocol`).
//!
//! Like `batch_props.rs` for the record batch, these are the main guard against panics on
//! untrusted frames (they run in `cargo test`; the `protocol_decode` fuzz target in `wire/fuzz`
//! explores further). Arbitrary bytes, arbitrary bodies behind a valid request or response
//! header (so that the body decoders really run) and mutated valid frames go through every
//! decode entry point; whatever decodes must re-encode consistently. Lying collection counts
//! must be refused before anything is allocated. Every request and response type round-trips
//! exactly, with real record batches that land 16-aligned in the receive buffer, and every
//! strict prefix of a valid frame is refused.
//!
//! The consumer-group APIs get the same treatment, plus their consumer protocol payloads
//! (`ConsumerSubscription`, `ConsumerAssignment`): these travel as opaque bytes inside
//! `JoinGroup` and `SyncGroup` and are decoded by the group leader and by each member, so
//! `decode_payload` is held to the same standard as the frame decoders (round trip, strict
//! prefixes refused, lying counts refused before allocating, arbitrary bytes never panic).

#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use wire::limits::BATCH_SIZE_MAX;
use wire::protocol::*;
use wire::{stamp_base_offset, AlignedVec, BatchBuilder, BatchIter, BatchView, ProtocolError};

// ---------------------------------------------------------------------------------------------
// Allocation tracking: the largest single allocation made by the current thread while armed.
// ---------------------------------------------------------------------------------------------

struct TrackingAllocator;

thread_local! {
    /// `Some(largest so far)` while a measurement is running on this thread.
    static LARGEST_ALLOCATION: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note_allocation(size: usize) {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = LARGEST_ALLOCATION.try_with(|largest| {
        if let Some(max) = largest.get() {
            largest.set(Some(max.max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the bookkeeping touches
// only a const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

/// Runs `f`, returning its result and the largest single allocation it made on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST_ALLOCATION.with(|largest| largest.set(Some(0)));
    let result = f();
    let largest = LARGEST_ALLOCATION.with(|largest| largest.replace(None));
    (result, largest.unwrap_or(0))
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Copies bytes into a 16-aligned buffer, as a broker's receive buffer is.
fn aligned(bytes: &[u8]) -> AlignedVec<16> {
    let mut out = AlignedVec::<16>::new();
    out.extend_from_slice(bytes);
    out
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Makes the length prefix count exactly the bytes after it.
fn fix_prefix(frame: &mut [u8]) {
    if frame.len() >= LENGTH_PREFIX_SIZE {
        let length = (frame.len() - LENGTH_PREFIX_SIZE) as u32;
        frame[..4].copy_from_slice(&length.to_le_bytes());
    }
}

fn api_key_of(request: &Request<'_>) -> ApiKey {
    match request {
        Request::Handshake(_) => ApiKey::Handshake,
        Request::Metadata(_) => ApiKey::Metadata,
        Request::CreateTopics(_) => ApiKey::CreateTopics,
        Request::DeleteTopics(_) => ApiKey::DeleteTopics,
        Request::Produce(_) => ApiKey::Produce,
        Request::Fetch(_) => ApiKey::Fetch,
        Request::ListOffsets(_) => ApiKey::ListOffsets,
        Request::InitProducerId(_) => ApiKey::InitProducerId,
        Request::FindCoordinator(_) => ApiKey::FindCoordinator,
        Request::JoinGroup(_) => ApiKey::JoinGroup,
        Request::SyncGroup(_) => ApiKey::SyncGroup,
        Request::Heartbeat(_) => ApiKey::Heartbeat,
        Request::LeaveGroup(_) => ApiKey::LeaveGroup,
        Request::OffsetCommit(_) => ApiKey::OffsetCommit,
        Request::OffsetFetch(_) => ApiKey::OffsetFetch,
        Request::ListGroups(_) => ApiKey::ListGroups,
        Request::DescribeGroups(_) => ApiKey::DescribeGroups,
        Request::ReplicaFetch(_) => ApiKey::ReplicaFetch,
        Request::DescribeCluster(_) => ApiKey::DescribeCluster,
        Request::CreatePartitions(_) => ApiKey::CreatePartitions,
        Request::ReassignPartitions(_) => ApiKey::ReassignPartitions,
        Request::ElectLeaders(_) => ApiKey::ElectLeaders,
    }
}

/// `encode_request` for any decoded or generated request.
fn encode_any<'b>(
    buffer: &'b mut Vec<u8>,
    correlation_id: u32,
    request: &'b Request<'_>,
) -> FrameParts<'b> {
    let key = api_key_of(request);
    match request {
        Request::Handshake(body) => encode_request(buffer, key, correlation_id, body),
        Request::Metadata(body) => encode_request(buffer, key, correlation_id, body),
        Request::CreateTopics(body) => encode_request(buffer, key, correlation_id, body),
        Request::DeleteTopics(body) => encode_request(buffer, key, correlation_id, body),
        Request::Produce(body) => encode_request(buffer, key, correlation_id, body),
        Request::Fetch(body) => encode_request(buffer, key, correlation_id, body),
        Request::ListOffsets(body) => encode_request(buffer, key, correlation_id, body),
        Request::InitProducerId(body) => encode_request(buffer, key, correlation_id, body),
        Request::FindCoordinator(body) => encode_request(buffer, key, correlation_id, body),
        Request::JoinGroup(body) => encode_request(buffer, key, correlation_id, body),
        Request::SyncGroup(body) => encode_request(buffer, key, correlation_id, body),
        Request::Heartbeat(body) => encode_request(buffer, key, correlation_id, body),
        Request::LeaveGroup(body) => encode_request(buffer, key, correlation_id, body),
        Request::OffsetCommit(body) => encode_request(buffer, key, correlation_id, body),
        Request::OffsetFetch(body) => encode_request(buffer, key, correlation_id, body),
        Request::ListGroups(body) => encode_request(buffer, key, correlation_id, body),
        Request::DescribeGroups(body) => encode_request(buffer, key, correlation_id, body),
        Request::ReplicaFetch(body) => encode_request(buffer, key, correlation_id, body),
        Request::DescribeCluster(body) => encode_request(buffer, key, correlation_id, body),
        Request::CreatePartitions(body) => encode_request(buffer, key, correlation_id, body),
        Request::ReassignPartitions(body) => encode_request(buffer, key, correlation_id, body),
        Request::ElectLeaders(body) => encode_request(buffer, key, correlation_id, body),
    }
}

/// Runs `decode_payload` for both consumer protocol payloads over `bytes`. Must not panic; a
/// payload that decodes is the canonical encoding of what it decoded to (no padding, no
/// trailing bytes, strings, tags and bools read back as written).
fn exercise_payload(bytes: &[u8]) {
    if let Ok(subscription) = decode_payload::<ConsumerSubscription>(bytes) {
        assert_eq!(encode_payload(&subscription), bytes, "{subscription:?}");
    }
    if let Ok(assignment) = decode_payload::<ConsumerAssignment>(bytes) {
        assert_eq!(encode_payload(&assignment), bytes, "{assignment:?}");
    }
}

/// Decodes `frame` as a response of type `$ty`; when that succeeds, checks that the correlation
/// id is the one in the frame, that a top-level error is a real error, and that encoding the
/// body again decodes to the same body (not necessarily the same bytes: error codes unknown to
/// this side read back as `Unknown`).
macro_rules! exercise_response {
    ($frame:expr, $ty:ty) => {{
        let frame: &[u8] = $frame;
        if let Ok((correlation_id, result)) = decode_response::<$ty>(frame) {
            assert_eq!(correlation_id, u32_at(frame, 4));
            match result {
                Ok(body) => {
                    let ok = WireError::none();
                    let mut buffer = Vec::new();
                    let again = aligned(
                        &encode_response(&mut buffer, correlation_id, &ok, Some(&body)).to_vec(),
                    );
                    let (again_id, again_body) = decode_response::<$ty>(&again).unwrap();
                    assert_eq!(again_id, correlation_id);
                    assert_eq!(again_body.unwrap(), body);
                }
                Err(error) => assert!(!error.is_ok(), "an Ok code must decode the body"),
            }
        }
    }};
}

/// Runs every decode entry point over `bytes` (copied into a 16-aligned buffer). Must not panic;
/// checks whatever can be checked of each outcome.
fn exercise(bytes: &[u8]) {
    let frame = aligned(bytes);
    let frame: &[u8] = &frame;
    let prefix = (frame.len() >= 4).then(|| u32_at(frame, 0) as usize);

    for limit in [FRAME_SIZE_MAX, 4096, 16, 3, 0] {
        let max = limit.min(FRAME_SIZE_MAX);
        match (check_frame(frame, limit), prefix) {
            (Ok(None), None) => {}
            (Ok(Some(total)), Some(length)) => {
                assert_eq!(total, length + 4);
                assert!(total <= max && total % 16 == 0);
            }
            (Err(ProtocolError::FrameTooLarge { length, max: m }), Some(l)) => {
                assert_eq!((length, m), (l, max));
                assert!(l + 4 > max);
            }
            (Err(ProtocolError::Malformed { .. }), Some(l)) => {
                assert!(l + 4 <= max && (l + 4) % 16 != 0);
            }
            (other, _) => panic!("check_frame(limit {limit}) on {frame:02x?}: {other:?}"),
        }
    }

    match decode_request_header(frame) {
        Ok((header, reader)) => {
            assert!(frame.len() >= REQUEST_HEADER_SIZE);
            assert_eq!(header.api_key, u16_at(frame, 4));
            assert_eq!(header.api_version, u16_at(frame, 6));
            assert_eq!(header.correlation_id, u32_at(frame, 8));
            assert_eq!(reader.position(), REQUEST_HEADER_SIZE);
        }
        Err(error) => {
            assert!(frame.len() < REQUEST_HEADER_SIZE, "{error:?}");
            assert!(matches!(error, ProtocolError::UnexpectedEof { .. }));
        }
    }
    match decode_response_header(frame) {
        Ok((correlation_id, reader)) => {
            assert_eq!(correlation_id, u32_at(frame, 4));
            assert_eq!(reader.position(), RESPONSE_HEADER_SIZE);
        }
        Err(error) => {
            assert!(frame.len() < RESPONSE_HEADER_SIZE, "{error:?}");
            assert!(matches!(error, ProtocolError::UnexpectedEof { .. }));
        }
    }

    if let Ok((header, request)) = decode_request(frame) {
        // Whatever decodes is the canonical encoding of what it decoded to.
        let mut buffer = Vec::new();
        let again = encode_any(&mut buffer, header.correlation_id, &request).to_vec();
        assert_eq!(again, frame, "{request:?}");
        assert_eq!(check_frame(frame, FRAME_SIZE_MAX), Ok(Some(frame.len())));
        // The group leader decodes every member's metadata, each member its assignment: bytes
        // that came in a request, so just as untrusted.
        match &request {
            Request::JoinGroup(join) => join
                .protocols
                .iter()
                .for_each(|p| exercise_payload(&p.metadata)),
            Request::SyncGroup(sync) => sync
                .assignments
                .iter()
                .for_each(|a| exercise_payload(&a.assignment)),
            _ => {}
        }
    }

    exercise_response!(frame, HandshakeResponse);
    exercise_response!(frame, MetadataResponse);
    exercise_response!(frame, CreateTopicsResponse);
    exercise_response!(frame, DeleteTopicsResponse);
    exercise_response!(frame, ProduceResponse);
    exercise_response!(frame, FetchResponse<'_>);
    exercise_response!(frame, ListOffsetsResponse);
    exercise_response!(frame, InitProducerIdResponse);
    exercise_response!(frame, FindCoordinatorResponse);
    exercise_response!(frame, JoinGroupResponse);
    exercise_response!(frame, SyncGroupResponse);
    exercise_response!(frame, HeartbeatResponse);
    exercise_response!(frame, LeaveGroupResponse);
    exercise_response!(frame, OffsetCommitResponse);
    exercise_response!(frame, OffsetFetchResponse);
    exercise_response!(frame, ListGroupsResponse);
    exercise_response!(frame, DescribeGroupsResponse);
    exercise_response!(frame, ReplicaFetchResponse<'_>);
    exercise_response!(frame, DescribeClusterResponse);
    exercise_response!(frame, CreatePartitionsResponse);
    exercise_response!(frame, ReassignPartitionsResponse);
    exercise_response!(frame, ElectLeadersResponse);
}

/// Runs `decode_response::<T>` for every response type: per type, the correlation id and whether
/// the body (rather than a top-level error) was decoded, or the protocol error.
fn decode_every_response(frame: &[u8]) -> Vec<Result<(u32, bool), ProtocolError>> {
    fn one<'a, T: Decode<'a>>(frame: &'a [u8]) -> Result<(u32, bool), ProtocolError> {
        decode_response::<T>(frame).map(|(id, body)| (id, body.is_ok()))
    }
    vec![
        one::<HandshakeResponse>(frame),
        one::<MetadataResponse>(frame),
        one::<CreateTopicsResponse>(frame),
        one::<DeleteTopicsResponse>(frame),
        one::<ProduceResponse>(frame),
        one::<FetchResponse<'_>>(frame),
        one::<ListOffsetsResponse>(frame),
        one::<InitProducerIdResponse>(frame),
        one::<FindCoordinatorResponse>(frame),
        one::<JoinGroupResponse>(frame),
        one::<SyncGroupResponse>(frame),
        one::<HeartbeatResponse>(frame),
        one::<LeaveGroupResponse>(frame),
        one::<OffsetCommitResponse>(frame),
        one::<OffsetFetchResponse>(frame),
        one::<ListGroupsResponse>(frame),
        one::<DescribeGroupsResponse>(frame),
        one::<ReplicaFetchResponse<'_>>(frame),
        one::<DescribeClusterResponse>(frame),
        one::<CreatePartitionsResponse>(frame),
        one::<ReassignPartitionsResponse>(frame),
        one::<ElectLeadersResponse>(frame),
    ]
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// A real batch built by `BatchBuilder`, with the values it holds.
#[derive(Clone)]
struct Batch {
    bytes: AlignedVec<16>,
    values: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Batch({} bytes, {} records)",
            self.bytes.len(),
            self.values.len()
        )
    }
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        vec(
            (option::of(vec(any::<u8>(), 0..8)), vec(any::<u8>(), 0..48)),
            1..4,
        ),
        0i64..(1 << 40),
        0u64..(1 << 40),
    )
        .prop_map(|(records, timestamp_ms, base_offset)| {
            let mut builder = BatchBuilder::new();
            for (i, (key, value)) in records.iter().enumerate() {
                builder.push(timestamp_ms + i as i64, key.as_deref(), value, &[], None);
            }
            let mut bytes = builder.build().unwrap();
            stamp_base_offset(&mut bytes, base_offset).unwrap();
            Batch {
                bytes,
                values: records.into_iter().map(|(_, value)| value).collect(),
            }
        })
}

/// Short strings of any printable characters, multi-byte ones included.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn few<S: Strategy>(element: S) -> impl Strategy<Value = Vec<S::Value>> {
    vec(element, 0..3)
}

/// The highest error code this side knows.
const ERROR_CODE_MAX: u16 = ErrorCode::InvalidReplicaAssignment as u16;

fn error_code() -> impl Strategy<Value = ErrorCode> {
    (0u16..=ERROR_CODE_MAX).prop_map(ErrorCode::from_u16)
}

fn wire_error() -> impl Strategy<Value = WireError> {
    (error_code(), text()).prop_map(|(code, message)| WireError { code, message })
}

/// A top-level error: `None` for success, else a real error (an `Ok` code with a message would
/// not survive, by design: the body is what a success carries).
fn top_level_error() -> impl Strategy<Value = Option<WireError>> {
    option::of(
        (1u16..=ERROR_CODE_MAX, text())
            .prop_map(|(code, message)| WireError::new(ErrorCode::from_u16(code), message)),
    )
}

/// Every durability the wire can carry (an interval's fields are at least 1 once decoded).
fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![
        Just(Durability::Always),
        Just(Durability::Never),
        (1u32.., 1u64..)
            .prop_map(|(interval_ms, bytes)| Durability::Interval { interval_ms, bytes }),
    ]
}

fn handshake_request() -> impl Strategy<Value = HandshakeRequest> {
    (text(), text()).prop_map(|(client_name, client_version)| HandshakeRequest {
        client_name,
        client_version,
    })
}

fn metadata_request() -> impl Strategy<Value = MetadataRequest> {
    option::of(few(text())).prop_map(|topics| MetadataRequest { topics })
}

fn create_topics_request() -> impl Strategy<Value = CreateTopicsRequest> {
    let topic = (
        text(),
        any::<u32>(),
        any::<u16>(),
        option::of(any::<i64>()),
        option::of(any::<i64>()),
        option::of(any::<u64>()),
        option::of(any::<u32>()),
        option::of(durability()),
    )
        .prop_map(
            |(
                name,
                partitions,
                replication_factor,
                retention_ms,
                retention_bytes,
                segment_bytes,
                max_batch_bytes,
                durability,
            )| {
                CreateTopic {
                    name,
                    partitions,
                    replication_factor,
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                    max_batch_bytes,
                    durability,
                    min_insync_replicas: None,
                }
            },
        );
    (few(topic), any::<u32>())
        .prop_map(|(topics, timeout_ms)| CreateTopicsRequest { topics, timeout_ms })
}

fn delete_topics_request() -> impl Strategy<Value = DeleteTopicsRequest> {
    (few(text()), any::<u32>())
        .prop_map(|(names, timeout_ms)| DeleteTopicsRequest { names, timeout_ms })
}

fn fetch_request() -> impl Strategy<Value = FetchRequest> {
    let partition = (
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<Option<u32>>(),
    )
        .prop_map(
            |(partition, fetch_offset, max_bytes, current_leader_epoch)| FetchPartition {
                partition,
                fetch_offset,
                max_bytes,
                current_leader_epoch,
            },
        );
    let topic =
        (text(), few(partition)).prop_map(|(topic, partitions)| FetchTopic { topic, partitions });
    (any::<u32>(), any::<u32>(), any::<u32>(), few(topic)).prop_map(
        |(max_wait_ms, min_bytes, max_bytes, topics)| FetchRequest {
            max_wait_ms,
            min_bytes,
            max_bytes,
            topics,
        },
    )
}

fn list_offsets_request() -> impl Strategy<Value = ListOffsetsRequest> {
    let timestamp = prop_oneof![
        Just(EARLIEST_TIMESTAMP),
        Just(LATEST_TIMESTAMP),
        any::<i64>()
    ];
    let partition =
        (any::<u32>(), timestamp).prop_map(|(partition, timestamp)| ListOffsetsPartition {
            partition,
            timestamp,
        });
    let topic = (text(), few(partition))
        .prop_map(|(topic, partitions)| ListOffsetsTopic { topic, partitions });
    few(topic).prop_map(|topics| ListOffsetsRequest { topics })
}

/// A produce request's data: per partition, 1 or 2 real batches laid end to end in one
/// (unaligned) buffer, the way a producer sends them.
#[derive(Debug, Clone)]
struct ProduceSpec {
    acks: Acks,
    timeout_ms: u32,
    topics: Vec<(String, Vec<ProducePartitionSpec>)>,
}

#[derive(Debug, Clone)]
struct ProducePartitionSpec {
    partition: u32,
    batches: Vec<Batch>,
    contiguous: Vec<u8>,
}

impl ProduceSpec {
    fn request(&self) -> ProduceRequest<'_> {
        ProduceRequest {
            acks: self.acks,
            timeout_ms: self.timeout_ms,
            topics: self
                .topics
                .iter()
                .map(|(topic, partitions)| ProduceTopic {
                    topic: topic.clone(),
                    partitions: partitions
                        .iter()
                        .map(|p| ProducePartition {
                            partition: p.partition,
                            records: Records::from_slice(&p.contiguous),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn produce_spec() -> impl Strategy<Value = ProduceSpec> {
    let partition = (any::<u32>(), vec(batch(), 1..3)).prop_map(|(partition, batches)| {
        let contiguous = batches
            .iter()
            .flat_map(|b| b.bytes.iter().copied())
            .collect();
        ProducePartitionSpec {
            partition,
            batches,
            contiguous,
        }
    });
    (
        prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)],
        any::<u32>(),
        few((text(), vec(partition, 1..3))),
    )
        .prop_map(|(acks, timeout_ms, topics)| ProduceSpec {
            acks,
            timeout_ms,
            topics,
        })
}

/// Any request; produce data borrows from the spec.
#[derive(Debug, Clone)]
enum RequestSpec {
    Handshake(HandshakeRequest),
    Metadata(MetadataRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    Produce(ProduceSpec),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    ReplicaFetch(ReplicaFetchRequest),
    DescribeCluster(DescribeClusterRequest),
    CreatePartitions(CreatePartitionsRequest),
    ReassignPartitions(ReassignPartitionsRequest),
    ElectLeaders(ElectLeadersRequest),
}

impl RequestSpec {
    fn request(&self) -> Request<'_> {
        match self {
            RequestSpec::Handshake(r) => Request::Handshake(r.clone()),
            RequestSpec::Metadata(r) => Request::Metadata(r.clone()),
            RequestSpec::CreateTopics(r) => Request::CreateTopics(r.clone()),
            RequestSpec::DeleteTopics(r) => Request::DeleteTopics(r.clone()),
            RequestSpec::Produce(p) => Request::Produce(p.request()),
            RequestSpec::Fetch(r) => Request::Fetch(r.clone()),
            RequestSpec::ListOffsets(r) => Request::ListOffsets(r.clone()),
            RequestSpec::InitProducerId(r) => Request::InitProducerId(r.clone()),
            RequestSpec::FindCoordinator(r) => Request::FindCoordinator(r.clone()),
            RequestSpec::JoinGroup(r) => Request::JoinGroup(r.clone()),
            RequestSpec::SyncGroup(r) => Request::SyncGroup(r.clone()),
            RequestSpec::Heartbeat(r) => Request::Heartbeat(r.clone()),
            RequestSpec::LeaveGroup(r) => Request::LeaveGroup(r.clone()),
            RequestSpec::OffsetCommit(r) => Request::OffsetCommit(r.clone()),
            RequestSpec::OffsetFetch(r) => Request::OffsetFetch(r.clone()),
            RequestSpec::ListGroups(r) => Request::ListGroups(r.clone()),
            RequestSpec::DescribeGroups(r) => Request::DescribeGroups(r.clone()),
            RequestSpec::ReplicaFetch(r) => Request::ReplicaFetch(r.clone()),
            RequestSpec::DescribeCluster(r) => Request::DescribeCluster(r.clone()),
            RequestSpec::CreatePartitions(r) => Request::CreatePartitions(r.clone()),
            RequestSpec::ReassignPartitions(r) => Request::ReassignPartitions(r.clone()),
            RequestSpec::ElectLeaders(r) => Request::ElectLeaders(r.clone()),
        }
    }
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    prop_oneof![
        handshake_request().prop_map(RequestSpec::Handshake),
        metadata_request().prop_map(RequestSpec::Metadata),
        create_topics_request().prop_map(RequestSpec::CreateTopics),
        delete_topics_request().prop_map(RequestSpec::DeleteTopics),
        produce_spec().prop_map(RequestSpec::Produce),
        fetch_request().prop_map(RequestSpec::Fetch),
        list_offsets_request().prop_map(RequestSpec::ListOffsets),
        proptest::option::of("[a-z]{0,12}").prop_map(|transactional_id| {
            RequestSpec::InitProducerId(InitProducerIdRequest { transactional_id })
        }),
        find_coordinator_request().prop_map(RequestSpec::FindCoordinator),
        join_group_request().prop_map(RequestSpec::JoinGroup),
        sync_group_request().prop_map(RequestSpec::SyncGroup),
        heartbeat_request().prop_map(RequestSpec::Heartbeat),
        leave_group_request().prop_map(RequestSpec::LeaveGroup),
        offset_commit_request().prop_map(RequestSpec::OffsetCommit),
        offset_fetch_request().prop_map(RequestSpec::OffsetFetch),
        Just(RequestSpec::ListGroups(ListGroupsRequest {})),
        describe_groups_request().prop_map(RequestSpec::DescribeGroups),
        replica_fetch_request().prop_map(RequestSpec::ReplicaFetch),
        any::<bool>().prop_map(|include_fenced| {
            RequestSpec::DescribeCluster(DescribeClusterRequest { include_fenced })
        }),
        create_partitions_request().prop_map(RequestSpec::CreatePartitions),
        reassign_partitions_request().prop_map(RequestSpec::ReassignPartitions),
        elect_leaders_request().prop_map(RequestSpec::ElectLeaders),
    ]
}

/// Only the cluster requests (replication and cluster operations).
fn cluster_request_spec() -> impl Strategy<Value = RequestSpec> {
    prop_oneof![
        replica_fetch_request().prop_map(RequestSpec::ReplicaFetch),
        any::<bool>().prop_map(|include_fenced| {
            RequestSpec::DescribeCluster(DescribeClusterRequest { include_fenced })
        }),
        create_partitions_request().prop_map(RequestSpec::CreatePartitions),
        reassign_partitions_request().prop_map(RequestSpec::ReassignPartitions),
        elect_leaders_request().prop_map(RequestSpec::ElectLeaders),
    ]
}

/// Only the consumer-group requests (for the tests that must see each of them every run).
fn group_request_spec() -> impl Strategy<Value = RequestSpec> {
    prop_oneof![
        find_coordinator_request().prop_map(RequestSpec::FindCoordinator),
        join_group_request().prop_map(RequestSpec::JoinGroup),
        sync_group_request().prop_map(RequestSpec::SyncGroup),
        heartbeat_request().prop_map(RequestSpec::Heartbeat),
        leave_group_request().prop_map(RequestSpec::LeaveGroup),
        offset_commit_request().prop_map(RequestSpec::OffsetCommit),
        offset_fetch_request().prop_map(RequestSpec::OffsetFetch),
        Just(RequestSpec::ListGroups(ListGroupsRequest {})),
        describe_groups_request().prop_map(RequestSpec::DescribeGroups),
    ]
}

fn handshake_response() -> impl Strategy<Value = HandshakeResponse> {
    let range = (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(
        |(api_key, min_version, max_version)| ApiVersionRange {
            api_key,
            min_version,
            max_version,
        },
    );
    (any::<u32>(), text(), vec(range, 0..8)).prop_map(|(broker_id, cluster_id, api_versions)| {
        HandshakeResponse {
            broker_id,
            cluster_id,
            api_versions,
        }
    })
}

fn metadata_response() -> impl Strategy<Value = MetadataResponse> {
    let shard = (any::<u16>(), text(), any::<u16>())
        .prop_map(|(shard, host, port)| ShardEndpoint { shard, host, port });
    let broker = (any::<u32>(), text(), any::<u16>(), few(shard)).prop_map(
        |(broker_id, host, port, shards)| BrokerMetadata {
            broker_id,
            host,
            port,
            shards,
        },
    );
    let config = (
        any::<u32>(),
        any::<u16>(),
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
        any::<u32>(),
        durability(),
    )
        .prop_map(
            |(
                partitions,
                replication_factor,
                retention_ms,
                retention_bytes,
                segment_bytes,
                max_batch_bytes,
                durability,
            )| {
                TopicConfig {
                    partitions,
                    replication_factor,
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                    max_batch_bytes,
                    durability,
                }
            },
        );
    let partition = (
        any::<u32>(),
        wire_error(),
        any::<i32>(),
        any::<u16>(),
        any::<u32>(),
        vec(any::<u32>(), 0..4),
        vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |(partition, error, leader, leader_shard, leader_epoch, replicas, isr)| {
                PartitionMetadata {
                    partition,
                    error,
                    leader,
                    leader_shard,
                    leader_epoch,
                    replicas,
                    isr,
                }
            },
        );
    let topic = (text(), wire_error(), config, few(partition)).prop_map(
        |(name, error, config, partitions)| TopicMetadata {
            name,
            error,
            config,
            partitions,
        },
    );
    (text(), any::<i32>(), few(broker), few(topic)).prop_map(
        |(cluster_id, controller_id, brokers, topics)| MetadataResponse {
            cluster_id,
            controller_id,
            brokers,
            topics,
        },
    )
}

fn topic_results() -> impl Strategy<Value = Vec<TopicResult>> {
    few((text(), wire_error()).prop_map(|(name, error)| TopicResult { name, error }))
}

fn produce_response() -> impl Strategy<Value = ProduceResponse> {
    let partition = (any::<u32>(), wire_error(), any::<i64>(), any::<i64>()).prop_map(
        |(partition, error, base_offset, log_start_offset)| ProducePartitionResponse {
            partition,
            error,
            base_offset,
            log_start_offset,
        },
    );
    few((text(), few(partition))
        .prop_map(|(topic, partitions)| ProduceTopicResponse { topic, partitions }))
    .prop_map(|topics| ProduceResponse { topics })
}

fn list_offsets_response() -> impl Strategy<Value = ListOffsetsResponse> {
    let partition = (any::<u32>(), wire_error(), any::<i64>(), any::<i64>()).prop_map(
        |(partition, error, offset, timestamp)| ListOffsetsPartitionResponse {
            partition,
            error,
            offset,
            timestamp,
        },
    );
    few((text(), few(partition))
        .prop_map(|(topic, partitions)| ListOffsetsTopicResponse { topic, partitions }))
    .prop_map(|topics| ListOffsetsResponse { topics })
}

/// A fetch response's data: several partitions, each with 0 to 3 real batches served as
/// separate borrowed slices (the way the log hands them out).
#[derive(Debug, Clone)]
struct FetchSpec {
    topics: Vec<(String, Vec<FetchPartitionSpec>)>,
}

#[derive(Debug, Clone)]
struct FetchPartitionSpec {
    partition: u32,
    error: WireError,
    high_watermark: u64,
    log_start_offset: u64,
    batches: Vec<Batch>,
}

impl FetchSpec {
    fn response(&self) -> FetchResponse<'_> {
        FetchResponse {
            topics: self
                .topics
                .iter()
                .map(|(topic, partitions)| FetchTopicResponse {
                    topic: topic.clone(),
                    partitions: partitions
                        .iter()
                        .map(|p| FetchPartitionResponse {
                            partition: p.partition,
                            error: p.error.clone(),
                            high_watermark: p.high_watermark,
                            log_start_offset: p.log_start_offset,
                            records: Records {
                                parts: p.batches.iter().map(|b| &b.bytes[..]).collect(),
                            },
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn batches(&self) -> impl Iterator<Item = &[Batch]> {
        self.topics
            .iter()
            .flat_map(|(_, partitions)| partitions.iter().map(|p| p.batches.as_slice()))
    }
}

fn fetch_spec() -> impl Strategy<Value = FetchSpec> {
    let partition = (
        any::<u32>(),
        wire_error(),
        any::<u64>(),
        any::<u64>(),
        vec(batch(), 0..4),
    )
        .prop_map(
            |(partition, error, high_watermark, log_start_offset, batches)| FetchPartitionSpec {
                partition,
                error,
                high_watermark,
                log_start_offset,
                batches,
            },
        );
    few((text(), vec(partition, 1..4))).prop_map(|topics| FetchSpec { topics })
}

// ---------------------------------------------------------------------------------------------
// Strategies: the cluster APIs (replication between brokers, cluster operations)
// ---------------------------------------------------------------------------------------------

fn replica_fetch_request() -> impl Strategy<Value = ReplicaFetchRequest> {
    let partition = (
        text(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<Option<u32>>(),
        any::<u32>(),
    )
        .prop_map(
            |(
                topic,
                partition,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
                max_bytes,
            )| {
                ReplicaFetchPartition {
                    topic,
                    partition,
                    current_leader_epoch,
                    fetch_offset,
                    last_fetched_epoch,
                    max_bytes,
                }
            },
        );
    (any::<u32>(), any::<u32>(), any::<u32>(), few(partition)).prop_map(
        |(replica_id, max_wait_ms, max_bytes, partitions)| ReplicaFetchRequest {
            replica_id,
            max_wait_ms,
            max_bytes,
            partitions,
        },
    )
}

fn create_partitions_request() -> impl Strategy<Value = CreatePartitionsRequest> {
    let topic = (text(), any::<u32>()).prop_map(|(name, total_partitions)| CreatePartitionsTopic {
        name,
        total_partitions,
    });
    (few(topic), any::<u32>())
        .prop_map(|(topics, timeout_ms)| CreatePartitionsRequest { topics, timeout_ms })
}

fn reassign_partitions_request() -> impl Strategy<Value = ReassignPartitionsRequest> {
    let reassignment =
        (text(), any::<u32>(), vec(any::<u32>(), 0..5)).prop_map(|(topic, partition, replicas)| {
            PartitionReassignment {
                topic,
                partition,
                replicas,
            }
        });
    (few(reassignment), any::<u32>()).prop_map(|(partitions, timeout_ms)| {
        ReassignPartitionsRequest {
            partitions,
            timeout_ms,
        }
    })
}

fn partition_ref() -> impl Strategy<Value = PartitionRef> {
    (text(), any::<u32>()).prop_map(|(topic, partition)| PartitionRef { topic, partition })
}

fn elect_leaders_request() -> impl Strategy<Value = ElectLeadersRequest> {
    (
        any::<bool>(),
        option::of(few(partition_ref())),
        any::<u32>(),
    )
        .prop_map(|(preferred, partitions, timeout_ms)| ElectLeadersRequest {
            preferred,
            partitions,
            timeout_ms,
        })
}

fn partition_result() -> impl Strategy<Value = PartitionResult> {
    (text(), any::<u32>(), wire_error()).prop_map(|(topic, partition, error)| PartitionResult {
        topic,
        partition,
        error,
    })
}

fn describe_cluster_response() -> impl Strategy<Value = DescribeClusterResponse> {
    let broker = (
        any::<u32>(),
        few("[a-z0-9.]{1,12}:[0-9]{1,5}"),
        option::of("[a-z0-9-]{0,8}"),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(broker_id, endpoints, rack, fenced, incarnation)| ClusterBroker {
                broker_id,
                endpoints,
                rack,
                fenced,
                incarnation,
            },
        );
    let voter = (any::<u32>(), "[a-z0-9.]{1,12}:[0-9]{1,5}")
        .prop_map(|(id, address)| ControllerVoter { id, address });
    (
        text(),
        any::<i32>(),
        any::<u64>(),
        few(voter),
        few(broker),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(
                cluster_id,
                controller_id,
                controller_term,
                voters,
                brokers,
                under_replicated_partitions,
                offline_partitions,
            )| DescribeClusterResponse {
                cluster_id,
                controller_id,
                controller_term,
                voters,
                brokers,
                under_replicated_partitions,
                offline_partitions,
            },
        )
}

/// A replica fetch answer whose records are real batches, one contiguous run per partition.
#[derive(Debug, Clone)]
struct ReplicaFetchSpec {
    partitions: Vec<ReplicaFetchPartitionSpec>,
}

#[derive(Debug, Clone)]
struct ReplicaFetchPartitionSpec {
    topic: String,
    partition: u32,
    error: WireError,
    high_watermark: u64,
    log_start_offset: u64,
    diverging: Option<DivergingEpoch>,
    epochs: Vec<EpochStart>,
    batches: Vec<Batch>,
    contiguous: Vec<u8>,
}

impl ReplicaFetchSpec {
    fn response(&self) -> ReplicaFetchResponse<'_> {
        ReplicaFetchResponse {
            partitions: self
                .partitions
                .iter()
                .map(|p| ReplicaFetchPartitionResponse {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    error: p.error.clone(),
                    high_watermark: p.high_watermark,
                    log_start_offset: p.log_start_offset,
                    diverging: p.diverging.clone(),
                    epochs: p.epochs.clone(),
                    // Empty records decode to no part at all.
                    records: if p.contiguous.is_empty() {
                        Records::default()
                    } else {
                        Records::from_slice(&p.contiguous)
                    },
                })
                .collect(),
        }
    }
}

fn replica_fetch_spec() -> impl Strategy<Value = ReplicaFetchSpec> {
    let epoch_start = (any::<u32>(), any::<u64>()).prop_map(|(epoch, start_offset)| EpochStart {
        epoch,
        start_offset,
    });
    let diverging = option::of(
        (any::<u32>(), any::<u64>())
            .prop_map(|(epoch, end_offset)| DivergingEpoch { epoch, end_offset }),
    );
    let partition = (
        (text(), any::<u32>(), wire_error()),
        (any::<u64>(), any::<u64>(), diverging, few(epoch_start)),
        vec(batch(), 0..3),
    )
        .prop_map(
            |(
                (topic, partition, error),
                (high_watermark, log_start_offset, diverging, epochs),
                batches,
            )| {
                let contiguous = batches
                    .iter()
                    .flat_map(|b| b.bytes.iter().copied())
                    .collect();
                ReplicaFetchPartitionSpec {
                    topic,
                    partition,
                    error,
                    high_watermark,
                    log_start_offset,
                    diverging,
                    epochs,
                    batches,
                    contiguous,
                }
            },
        );
    vec(partition, 0..4).prop_map(|partitions| ReplicaFetchSpec { partitions })
}

// ---------------------------------------------------------------------------------------------
// Strategies: consumer groups and the consumer protocol payloads
// ---------------------------------------------------------------------------------------------

fn topic_partitions() -> impl Strategy<Value = TopicPartitions> {
    (text(), vec(any::<u32>(), 0..4))
        .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions })
}

fn consumer_subscription() -> impl Strategy<Value = ConsumerSubscription> {
    (
        any::<u16>(),
        few(text()),
        few(topic_partitions()),
        generation(),
    )
        .prop_map(
            |(version, topics, owned, generation)| ConsumerSubscription {
                version,
                topics,
                owned,
                generation,
            },
        )
}

fn consumer_assignment() -> impl Strategy<Value = ConsumerAssignment> {
    (any::<u16>(), few(topic_partitions())).prop_map(|(version, partitions)| ConsumerAssignment {
        version,
        partitions,
    })
}

/// The bytes of an opaque metadata or assignment field: arbitrary, or a real encoded payload as
/// consumers send them.
fn opaque(payload: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..24), payload]
}

fn subscription_bytes() -> impl Strategy<Value = Vec<u8>> {
    opaque(consumer_subscription().prop_map(|s| encode_payload(&s)))
}

fn assignment_bytes() -> impl Strategy<Value = Vec<u8>> {
    opaque(consumer_assignment().prop_map(|a| encode_payload(&a)))
}

/// A generation: -1 (none, or a commit from outside the group) or any.
fn generation() -> impl Strategy<Value = i32> {
    prop_oneof![Just(-1), any::<i32>()]
}

fn find_coordinator_request() -> impl Strategy<Value = FindCoordinatorRequest> {
    text().prop_map(|group_id| FindCoordinatorRequest { group_id })
}

fn join_group_request() -> impl Strategy<Value = JoinGroupRequest> {
    let protocol = (text(), subscription_bytes())
        .prop_map(|(name, metadata)| JoinGroupProtocol { name, metadata });
    (
        text(),
        text(),
        option::of(text()),
        text(),
        any::<u32>(),
        any::<u32>(),
        text(),
        few(protocol),
    )
        .prop_map(
            |(
                group_id,
                member_id,
                group_instance_id,
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocol_type,
                protocols,
            )| JoinGroupRequest {
                group_id,
                member_id,
                group_instance_id,
                client_id,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocol_type,
                protocols,
            },
        )
}

fn sync_group_request() -> impl Strategy<Value = SyncGroupRequest> {
    let assignment =
        (text(), assignment_bytes()).prop_map(|(member_id, assignment)| SyncGroupAssignment {
            member_id,
            assignment,
        });
    (
        text(),
        generation(),
        text(),
        option::of(text()),
        few(assignment),
    )
        .prop_map(
            |(group_id, generation, member_id, group_instance_id, assignments)| SyncGroupRequest {
                group_id,
                generation,
                member_id,
                group_instance_id,
                assignments,
            },
        )
}

fn heartbeat_request() -> impl Strategy<Value = HeartbeatRequest> {
    (text(), generation(), text(), option::of(text())).prop_map(
        |(group_id, generation, member_id, group_instance_id)| HeartbeatRequest {
            group_id,
            generation,
            member_id,
            group_instance_id,
        },
    )
}

fn leave_group_request() -> impl Strategy<Value = LeaveGroupRequest> {
    (text(), text(), option::of(text())).prop_map(|(group_id, member_id, group_instance_id)| {
        LeaveGroupRequest {
            group_id,
            member_id,
            group_instance_id,
        }
    })
}

fn offset_commit_request() -> impl Strategy<Value = OffsetCommitRequest> {
    let partition =
        (any::<u32>(), any::<u64>(), text()).prop_map(|(partition, offset, metadata)| {
            OffsetCommitPartition {
                partition,
                offset,
                metadata,
            }
        });
    let topic = (text(), few(partition))
        .prop_map(|(topic, partitions)| OffsetCommitTopic { topic, partitions });
    (text(), generation(), text(), option::of(text()), few(topic)).prop_map(
        |(group_id, generation, member_id, group_instance_id, topics)| OffsetCommitRequest {
            group_id,
            generation,
            member_id,
            group_instance_id,
            topics,
        },
    )
}

fn offset_fetch_request() -> impl Strategy<Value = OffsetFetchRequest> {
    let topic = (text(), vec(any::<u32>(), 0..4))
        .prop_map(|(topic, partitions)| OffsetFetchTopic { topic, partitions });
    (text(), option::of(few(topic)))
        .prop_map(|(group_id, topics)| OffsetFetchRequest { group_id, topics })
}

fn describe_groups_request() -> impl Strategy<Value = DescribeGroupsRequest> {
    few(text()).prop_map(|groups| DescribeGroupsRequest { groups })
}

fn find_coordinator_response() -> impl Strategy<Value = FindCoordinatorResponse> {
    (
        any::<u32>(),
        text(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
    )
        .prop_map(|(broker_id, host, port, shard, offsets_partition)| {
            FindCoordinatorResponse {
                broker_id,
                host,
                port,
                shard,
                offsets_partition,
            }
        })
}

fn join_group_response() -> impl Strategy<Value = JoinGroupResponse> {
    let member = (text(), option::of(text()), subscription_bytes()).prop_map(
        |(member_id, group_instance_id, metadata)| JoinGroupMember {
            member_id,
            group_instance_id,
            metadata,
        },
    );
    (
        generation(),
        text(),
        text(),
        text(),
        any::<bool>(),
        few(member),
    )
        .prop_map(
            |(generation, protocol_name, leader, member_id, skip_assignment, members)| {
                JoinGroupResponse {
                    generation,
                    protocol_name,
                    leader,
                    member_id,
                    skip_assignment,
                    members,
                }
            },
        )
}

fn offset_commit_response() -> impl Strategy<Value = OffsetCommitResponse> {
    let partition = (any::<u32>(), wire_error())
        .prop_map(|(partition, error)| OffsetCommitPartitionResponse { partition, error });
    few((text(), few(partition))
        .prop_map(|(topic, partitions)| OffsetCommitTopicResponse { topic, partitions }))
    .prop_map(|topics| OffsetCommitResponse { topics })
}

fn offset_fetch_response() -> impl Strategy<Value = OffsetFetchResponse> {
    let partition = (
        any::<u32>(),
        wire_error(),
        any::<i64>(),
        text(),
        any::<i64>(),
    )
        .prop_map(|(partition, error, offset, metadata, commit_timestamp)| {
            OffsetFetchPartitionResponse {
                partition,
                error,
                offset,
                metadata,
                commit_timestamp,
            }
        });
    few((text(), few(partition))
        .prop_map(|(topic, partitions)| OffsetFetchTopicResponse { topic, partitions }))
    .prop_map(|topics| OffsetFetchResponse { topics })
}

fn list_groups_response() -> impl Strategy<Value = ListGroupsResponse> {
    let group = (text(), text(), text(), any::<u32>()).prop_map(
        |(group_id, state, protocol_type, members)| ListedGroup {
            group_id,
            state,
            protocol_type,
            members,
        },
    );
    few(group).prop_map(|groups| ListGroupsResponse { groups })
}

fn describe_groups_response() -> impl Strategy<Value = DescribeGroupsResponse> {
    let member = (
        text(),
        option::of(text()),
        text(),
        text(),
        subscription_bytes(),
        assignment_bytes(),
    )
        .prop_map(
            |(member_id, group_instance_id, client_id, client_host, metadata, assignment)| {
                DescribedMember {
                    member_id,
                    group_instance_id,
                    client_id,
                    client_host,
                    metadata,
                    assignment,
                }
            },
        );
    let group = (
        text(),
        wire_error(),
        text(),
        text(),
        text(),
        generation(),
        text(),
        few(member),
    )
        .prop_map(
            |(group_id, error, state, protocol_type, protocol, generation, leader, members)| {
                DescribedGroup {
                    group_id,
                    error,
                    state,
                    protocol_type,
                    protocol,
                    generation,
                    leader,
                    members,
                }
            },
        );
    few(group).prop_map(|groups| DescribeGroupsResponse { groups })
}

/// Only the consumer-group responses (see `group_request_spec`).
fn group_response_spec() -> impl Strategy<Value = ResponseSpec> {
    prop_oneof![
        find_coordinator_response().prop_map(ResponseSpec::FindCoordinator),
        join_group_response().prop_map(ResponseSpec::JoinGroup),
        assignment_bytes()
            .prop_map(|assignment| ResponseSpec::SyncGroup(SyncGroupResponse { assignment })),
        Just(ResponseSpec::Heartbeat(HeartbeatResponse {})),
        Just(ResponseSpec::LeaveGroup(LeaveGroupResponse {})),
        offset_commit_response().prop_map(ResponseSpec::OffsetCommit),
        offset_fetch_response().prop_map(ResponseSpec::OffsetFetch),
        list_groups_response().prop_map(ResponseSpec::ListGroups),
        describe_groups_response().prop_map(ResponseSpec::DescribeGroups),
    ]
}

/// Any response body.
#[derive(Debug, Clone)]
enum ResponseSpec {
    Handshake(HandshakeResponse),
    Metadata(MetadataResponse),
    CreateTopics(CreateTopicsResponse),
    DeleteTopics(DeleteTopicsResponse),
    Produce(ProduceResponse),
    Fetch(FetchSpec),
    ListOffsets(ListOffsetsResponse),
    InitProducerId(InitProducerIdResponse),
    FindCoordinator(FindCoordinatorResponse),
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    ListGroups(ListGroupsResponse),
    DescribeGroups(DescribeGroupsResponse),
    ReplicaFetch(ReplicaFetchSpec),
    DescribeCluster(DescribeClusterResponse),
    CreatePartitions(CreatePartitionsResponse),
    ReassignPartitions(ReassignPartitionsResponse),
    ElectLeaders(ElectLeadersResponse),
}

impl ResponseSpec {
    /// The API this is the response of.
    fn api_key(&self) -> ApiKey {
        match self {
            ResponseSpec::Handshake(_) => ApiKey::Handshake,
            ResponseSpec::Metadata(_) => ApiKey::Metadata,
            ResponseSpec::CreateTopics(_) => ApiKey::CreateTopics,
            ResponseSpec::DeleteTopics(_) => ApiKey::DeleteTopics,
            ResponseSpec::Produce(_) => ApiKey::Produce,
            ResponseSpec::Fetch(_) => ApiKey::Fetch,
            ResponseSpec::ListOffsets(_) => ApiKey::ListOffsets,
            ResponseSpec::InitProducerId(_) => ApiKey::InitProducerId,
            ResponseSpec::FindCoordinator(_) => ApiKey::FindCoordinator,
            ResponseSpec::JoinGroup(_) => ApiKey::JoinGroup,
            ResponseSpec::SyncGroup(_) => ApiKey::SyncGroup,
            ResponseSpec::Heartbeat(_) => ApiKey::Heartbeat,
            ResponseSpec::LeaveGroup(_) => ApiKey::LeaveGroup,
            ResponseSpec::OffsetCommit(_) => ApiKey::OffsetCommit,
            ResponseSpec::OffsetFetch(_) => ApiKey::OffsetFetch,
            ResponseSpec::ListGroups(_) => ApiKey::ListGroups,
            ResponseSpec::DescribeGroups(_) => ApiKey::DescribeGroups,
            ResponseSpec::ReplicaFetch(_) => ApiKey::ReplicaFetch,
            ResponseSpec::DescribeCluster(_) => ApiKey::DescribeCluster,
            ResponseSpec::CreatePartitions(_) => ApiKey::CreatePartitions,
            ResponseSpec::ReassignPartitions(_) => ApiKey::ReassignPartitions,
            ResponseSpec::ElectLeaders(_) => ApiKey::ElectLeaders,
        }
    }
}

fn response_spec() -> impl Strategy<Value = ResponseSpec> {
    prop_oneof![
        handshake_response().prop_map(ResponseSpec::Handshake),
        metadata_response().prop_map(ResponseSpec::Metadata),
        topic_results()
            .prop_map(|topics| ResponseSpec::CreateTopics(CreateTopicsResponse { topics })),
        topic_results()
            .prop_map(|topics| ResponseSpec::DeleteTopics(DeleteTopicsResponse { topics })),
        produce_response().prop_map(ResponseSpec::Produce),
        fetch_spec().prop_map(ResponseSpec::Fetch),
        list_offsets_response().prop_map(ResponseSpec::ListOffsets),
        (any::<i64>(), any::<i16>()).prop_map(|(producer_id, producer_epoch)| {
            ResponseSpec::InitProducerId(InitProducerIdResponse {
                producer_id,
                producer_epoch,
            })
        }),
        find_coordinator_response().prop_map(ResponseSpec::FindCoordinator),
        join_group_response().prop_map(ResponseSpec::JoinGroup),
        assignment_bytes()
            .prop_map(|assignment| ResponseSpec::SyncGroup(SyncGroupResponse { assignment })),
        Just(ResponseSpec::Heartbeat(HeartbeatResponse {})),
        Just(ResponseSpec::LeaveGroup(LeaveGroupResponse {})),
        offset_commit_response().prop_map(ResponseSpec::OffsetCommit),
        offset_fetch_response().prop_map(ResponseSpec::OffsetFetch),
        list_groups_response().prop_map(ResponseSpec::ListGroups),
        describe_groups_response().prop_map(ResponseSpec::DescribeGroups),
        replica_fetch_spec().prop_map(ResponseSpec::ReplicaFetch),
        describe_cluster_response().prop_map(ResponseSpec::DescribeCluster),
        topic_results().prop_map(|topics| {
            ResponseSpec::CreatePartitions(CreatePartitionsResponse { topics })
        }),
        few(partition_result()).prop_map(|partitions| {
            ResponseSpec::ReassignPartitions(ReassignPartitionsResponse { partitions })
        }),
        few(partition_ref())
            .prop_map(|changed| ResponseSpec::ElectLeaders(ElectLeadersResponse { changed })),
    ]
}

/// Only the cluster responses (see `cluster_request_spec`).
fn cluster_response_spec() -> impl Strategy<Value = ResponseSpec> {
    prop_oneof![
        replica_fetch_spec().prop_map(ResponseSpec::ReplicaFetch),
        describe_cluster_response().prop_map(ResponseSpec::DescribeCluster),
        topic_results().prop_map(|topics| {
            ResponseSpec::CreatePartitions(CreatePartitionsResponse { topics })
        }),
        few(partition_result()).prop_map(|partitions| {
            ResponseSpec::ReassignPartitions(ReassignPartitionsResponse { partitions })
        }),
        few(partition_ref())
            .prop_map(|changed| ResponseSpec::ElectLeaders(ElectLeadersResponse { changed })),
    ]
}

/// Encodes a response (the body, or only `error` when it is a real error) and hands the frame
/// bytes to `f`.
fn with_response_frame<R>(
    spec: &ResponseSpec,
    correlation_id: u32,
    error: &WireError,
    f: impl FnOnce(&FrameParts<'_>) -> R,
) -> R {
    fn encoded<T: Encode, R>(
        body: &T,
        correlation_id: u32,
        error: &WireError,
        f: impl FnOnce(&FrameParts<'_>) -> R,
    ) -> R {
        let mut buffer = Vec::new();
        f(&encode_response(
            &mut buffer,
            correlation_id,
            error,
            Some(body),
        ))
    }
    match spec {
        ResponseSpec::Handshake(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::Metadata(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::CreateTopics(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::DeleteTopics(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::Produce(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::Fetch(spec) => encoded(&spec.response(), correlation_id, error, f),
        ResponseSpec::ListOffsets(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::InitProducerId(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::FindCoordinator(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::JoinGroup(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::SyncGroup(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::Heartbeat(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::LeaveGroup(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::OffsetCommit(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::OffsetFetch(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::ListGroups(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::DescribeGroups(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::ReplicaFetch(spec) => encoded(&spec.response(), correlation_id, error, f),
        ResponseSpec::DescribeCluster(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::CreatePartitions(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::ReassignPartitions(b) => encoded(b, correlation_id, error, f),
        ResponseSpec::ElectLeaders(b) => encoded(b, correlation_id, error, f),
    }
}

fn response_bytes(spec: &ResponseSpec, correlation_id: u32, error: &WireError) -> Vec<u8> {
    with_response_frame(spec, correlation_id, error, |parts| parts.to_vec())
}

/// Decodes `frame` as the response type of `spec`, only reporting whether that worked.
fn decode_own(spec: &ResponseSpec, frame: &[u8]) -> Result<(), ProtocolError> {
    match spec {
        ResponseSpec::Handshake(_) => decode_resp::<HandshakeResponse>(frame),
        ResponseSpec::Metadata(_) => decode_resp::<MetadataResponse>(frame),
        ResponseSpec::CreateTopics(_) => decode_resp::<CreateTopicsResponse>(frame),
        ResponseSpec::DeleteTopics(_) => decode_resp::<DeleteTopicsResponse>(frame),
        ResponseSpec::Produce(_) => decode_resp::<ProduceResponse>(frame),
        ResponseSpec::Fetch(_) => decode_fetch(frame),
        ResponseSpec::ListOffsets(_) => decode_resp::<ListOffsetsResponse>(frame),
        ResponseSpec::InitProducerId(_) => decode_resp::<InitProducerIdResponse>(frame),
        ResponseSpec::FindCoordinator(_) => decode_resp::<FindCoordinatorResponse>(frame),
        ResponseSpec::JoinGroup(_) => decode_resp::<JoinGroupResponse>(frame),
        ResponseSpec::SyncGroup(_) => decode_resp::<SyncGroupResponse>(frame),
        ResponseSpec::Heartbeat(_) => decode_resp::<HeartbeatResponse>(frame),
        ResponseSpec::LeaveGroup(_) => decode_resp::<LeaveGroupResponse>(frame),
        ResponseSpec::OffsetCommit(_) => decode_resp::<OffsetCommitResponse>(frame),
        ResponseSpec::OffsetFetch(_) => decode_resp::<OffsetFetchResponse>(frame),
        ResponseSpec::ListGroups(_) => decode_resp::<ListGroupsResponse>(frame),
        ResponseSpec::DescribeGroups(_) => decode_resp::<DescribeGroupsResponse>(frame),
        ResponseSpec::ReplicaFetch(_) => {
            decode_response::<ReplicaFetchResponse<'_>>(frame).map(drop)
        }
        ResponseSpec::DescribeCluster(_) => decode_resp::<DescribeClusterResponse>(frame),
        ResponseSpec::CreatePartitions(_) => decode_resp::<CreatePartitionsResponse>(frame),
        ResponseSpec::ReassignPartitions(_) => decode_resp::<ReassignPartitionsResponse>(frame),
        ResponseSpec::ElectLeaders(_) => decode_resp::<ElectLeadersResponse>(frame),
    }
}

/// Decodes `frame` as the response type of `spec`: `Ok(Ok(()))` when it decodes to a success
/// equal to the spec, `Ok(Err(error))` for a top-level error. Asserts everything else.
fn decode_as(
    spec: &ResponseSpec,
    frame: &[u8],
    correlation_id: u32,
) -> Result<Result<(), WireError>, TestCaseError> {
    fn owned<T>(
        frame: &[u8],
        correlation_id: u32,
        expected: &T,
    ) -> Result<Result<(), WireError>, TestCaseError>
    where
        T: for<'a> Decode<'a> + PartialEq + std::fmt::Debug,
    {
        let (id, result) = decode_response::<T>(frame).unwrap();
        prop_assert_eq!(id, correlation_id);
        Ok(match result {
            Ok(body) => {
                prop_assert_eq!(&body, expected);
                Ok(())
            }
            Err(error) => Err(error),
        })
    }
    match spec {
        ResponseSpec::Handshake(b) => owned(frame, correlation_id, b),
        ResponseSpec::Metadata(b) => owned(frame, correlation_id, b),
        ResponseSpec::CreateTopics(b) => owned(frame, correlation_id, b),
        ResponseSpec::DeleteTopics(b) => owned(frame, correlation_id, b),
        ResponseSpec::Produce(b) => owned(frame, correlation_id, b),
        ResponseSpec::ListOffsets(b) => owned(frame, correlation_id, b),
        ResponseSpec::InitProducerId(b) => owned(frame, correlation_id, b),
        ResponseSpec::FindCoordinator(b) => owned(frame, correlation_id, b),
        ResponseSpec::JoinGroup(b) => owned(frame, correlation_id, b),
        ResponseSpec::SyncGroup(b) => owned(frame, correlation_id, b),
        ResponseSpec::Heartbeat(b) => owned(frame, correlation_id, b),
        ResponseSpec::LeaveGroup(b) => owned(frame, correlation_id, b),
        ResponseSpec::OffsetCommit(b) => owned(frame, correlation_id, b),
        ResponseSpec::OffsetFetch(b) => owned(frame, correlation_id, b),
        ResponseSpec::ListGroups(b) => owned(frame, correlation_id, b),
        ResponseSpec::DescribeGroups(b) => owned(frame, correlation_id, b),
        ResponseSpec::DescribeCluster(b) => owned(frame, correlation_id, b),
        ResponseSpec::CreatePartitions(b) => owned(frame, correlation_id, b),
        ResponseSpec::ReassignPartitions(b) => owned(frame, correlation_id, b),
        ResponseSpec::ElectLeaders(b) => owned(frame, correlation_id, b),
        ResponseSpec::ReplicaFetch(spec) => {
            let (id, result) = decode_response::<ReplicaFetchResponse<'_>>(frame).unwrap();
            prop_assert_eq!(id, correlation_id);
            let decoded = match result {
                Ok(body) => body,
                Err(error) => return Ok(Err(error)),
            };
            // One contiguous part per partition on both sides: equal as values.
            prop_assert_eq!(&decoded, &spec.response());
            for (partition, expected) in decoded.partitions.iter().zip(&spec.partitions) {
                check_records(&partition.records, &expected.batches)?;
            }
            Ok(Ok(()))
        }
        ResponseSpec::Fetch(spec) => {
            let (id, result) = decode_response::<FetchResponse<'_>>(frame).unwrap();
            prop_assert_eq!(id, correlation_id);
            let decoded = match result {
                Ok(body) => body,
                Err(error) => return Ok(Err(error)),
            };
            // Compare with the records flattened: decoding yields one part per partition.
            prop_assert_eq!(fetch_shape(&decoded), fetch_shape(&spec.response()));
            let decoded_records = decoded
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| &p.records));
            for (records, batches) in decoded_records.zip(spec.batches()) {
                check_records(records, batches)?;
            }
            Ok(Ok(()))
        }
    }
}

type FetchShape = Vec<(String, Vec<(u32, WireError, u64, u64, Vec<u8>)>)>;

fn fetch_shape(response: &FetchResponse<'_>) -> FetchShape {
    response
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition,
                        p.error.clone(),
                        p.high_watermark,
                        p.log_start_offset,
                        p.records.parts.concat(),
                    )
                })
                .collect();
            (t.topic.clone(), partitions)
        })
        .collect()
}

/// Decoded records are one slice (none when empty), 16-aligned in memory, and iterate back to
/// exactly the batches that were sent, each passing deep validation with its values intact.
fn check_records(records: &Records<'_>, batches: &[Batch]) -> Result<(), TestCaseError> {
    if batches.is_empty() {
        prop_assert!(records.parts.is_empty(), "{:?}", records);
        return Ok(());
    }
    prop_assert_eq!(records.parts.len(), 1);
    let bytes = records.as_slice();
    prop_assert_eq!(
        bytes.as_ptr().addr() % 16,
        0,
        "records not 16-aligned in the frame"
    );
    let mut iter = BatchIter::new(bytes, BATCH_SIZE_MAX);
    let views: Vec<BatchView<'_>> = iter.by_ref().map(Result::unwrap).collect();
    prop_assert_eq!(iter.position(), bytes.len());
    prop_assert_eq!(views.len(), batches.len());
    for (view, batch) in views.iter().zip(batches) {
        prop_assert_eq!(view.as_bytes(), &batch.bytes[..]);
        let deep = BatchView::validate_deep(view.as_bytes(), BATCH_SIZE_MAX).unwrap();
        let archived = deep.records().unwrap();
        prop_assert_eq!(archived.len(), batch.values.len());
        for (record, value) in archived.iter().zip(&batch.values) {
            prop_assert_eq!(record.value_bytes(), value.as_slice());
        }
    }
    Ok(())
}

/// A random body made of the codec's own pieces: small little-endian counts and lengths,
/// option tags, and runs of arbitrary bytes. Uniform random bytes almost always fail at the
/// first collection count (a random u32 is huge); these often look plausible for a while, so
/// decoding goes deep into nested messages, strings, options and records.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        4 => (0u32..4).prop_map(|n| n.to_le_bytes().to_vec()),
        2 => (0u16..6).prop_map(|n| n.to_le_bytes().to_vec()),
        2 => (0u8..2).prop_map(|n| vec![n]),
        1 => vec(any::<u8>(), 0..12),
    ];
    vec(token, 0..48).prop_map(|tokens| tokens.concat())
}

/// `header + body`, the length prefix consistent, optionally zero-padded to 16 bytes.
fn frame_of(header: &[u8], body: &[u8], pad: bool) -> Vec<u8> {
    let mut frame = vec![0u8; 4];
    frame.extend_from_slice(header);
    frame.extend_from_slice(body);
    if pad {
        frame.resize(frame.len().next_multiple_of(16), 0);
    }
    fix_prefix(&mut frame);
    frame
}

// ---------------------------------------------------------------------------------------------
// Collection counts at known positions (for the huge-count test).
// ---------------------------------------------------------------------------------------------

/// A valid frame with an empty collection whose count sits at `at`, and how to decode it.
struct CountSite {
    name: &'static str,
    frame: Vec<u8>,
    at: usize,
    decode: fn(&[u8]) -> Result<(), ProtocolError>,
}

/// Encodes a request like `encode_request`; also returns where the body ends (padding excluded).
fn request_and_end<T: Encode>(key: ApiKey, body: &T) -> (Vec<u8>, usize) {
    let mut buffer = Vec::new();
    let mut writer = FrameWriter::new(&mut buffer);
    writer.put_u16(key as u16);
    writer.put_u16(PROTOCOL_VERSION);
    writer.put_u32(7);
    body.encode(&mut writer);
    let end = writer.position();
    let frame = writer.finish().to_vec();
    let mut check = Vec::new();
    assert_eq!(frame, encode_request(&mut check, key, 7, body).to_vec());
    (frame, end)
}

/// Encodes a success response like `encode_response`; also returns where the body ends.
fn response_and_end<T: Encode>(body: &T) -> (Vec<u8>, usize) {
    let mut buffer = Vec::new();
    let mut writer = FrameWriter::new(&mut buffer);
    writer.put_u32(7);
    let ok = WireError::none();
    ok.encode(&mut writer);
    body.encode(&mut writer);
    let end = writer.position();
    let frame = writer.finish().to_vec();
    let mut check = Vec::new();
    assert_eq!(
        frame,
        encode_response(&mut check, 7, &ok, Some(body)).to_vec()
    );
    (frame, end)
}

fn decode_req(frame: &[u8]) -> Result<(), ProtocolError> {
    decode_request(frame).map(drop)
}

fn decode_resp<T: for<'a> Decode<'a>>(frame: &[u8]) -> Result<(), ProtocolError> {
    decode_response::<T>(frame).map(drop)
}

fn decode_fetch(frame: &[u8]) -> Result<(), ProtocolError> {
    decode_response::<FetchResponse<'_>>(frame).map(drop)
}

/// Every collection count a decoder meets first or last in some message, nested ones included.
fn count_sites() -> Vec<CountSite> {
    let mut sites = Vec::new();
    type Decoder = fn(&[u8]) -> Result<(), ProtocolError>;
    let mut last = |name: &'static str, (frame, end): (Vec<u8>, usize), decode: Decoder| {
        sites.push(CountSite {
            name,
            frame,
            at: end - 4,
            decode,
        })
    };
    let topic = || "orders".to_string();
    let req: Decoder = decode_req;

    // Requests.
    last(
        "MetadataRequest.topics",
        request_and_end(
            ApiKey::Metadata,
            &MetadataRequest {
                topics: Some(vec![]),
            },
        ),
        req,
    );
    last(
        "ProduceRequest.topics",
        request_and_end(ApiKey::Produce, &ProduceRequest::default()),
        req,
    );
    last(
        "ProduceTopic.partitions",
        request_and_end(
            ApiKey::Produce,
            &ProduceRequest {
                topics: vec![ProduceTopic {
                    topic: topic(),
                    partitions: vec![],
                }],
                ..Default::default()
            },
        ),
        req,
    );
    last(
        "FetchRequest.topics",
        request_and_end(ApiKey::Fetch, &FetchRequest::default()),
        req,
    );
    last(
        "FetchTopic.partitions",
        request_and_end(
            ApiKey::Fetch,
            &FetchRequest {
                topics: vec![FetchTopic {
                    topic: topic(),
                    partitions: vec![],
                }],
                ..Default::default()
            },
        ),
        req,
    );
    last(
        "ListOffsetsRequest.topics",
        request_and_end(ApiKey::ListOffsets, &ListOffsetsRequest::default()),
        req,
    );
    last(
        "ListOffsetsTopic.partitions",
        request_and_end(
            ApiKey::ListOffsets,
            &ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    topic: topic(),
                    partitions: vec![],
                }],
            },
        ),
        req,
    );

    // Responses.
    last(
        "HandshakeResponse.api_versions",
        response_and_end(&HandshakeResponse::default()),
        decode_resp::<HandshakeResponse>,
    );
    last(
        "MetadataResponse.topics",
        response_and_end(&MetadataResponse::default()),
        decode_resp::<MetadataResponse>,
    );
    last(
        "TopicMetadata.partitions",
        response_and_end(&MetadataResponse {
            topics: vec![TopicMetadata::default()],
            ..Default::default()
        }),
        decode_resp::<MetadataResponse>,
    );
    last(
        "PartitionMetadata.isr",
        response_and_end(&MetadataResponse {
            topics: vec![TopicMetadata {
                partitions: vec![PartitionMetadata::default()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        decode_resp::<MetadataResponse>,
    );
    last(
        "CreateTopicsResponse.topics",
        response_and_end(&CreateTopicsResponse::default()),
        decode_resp::<CreateTopicsResponse>,
    );
    last(
        "DeleteTopicsResponse.topics",
        response_and_end(&DeleteTopicsResponse::default()),
        decode_resp::<DeleteTopicsResponse>,
    );
    last(
        "ProduceResponse.topics",
        response_and_end(&ProduceResponse::default()),
        decode_resp::<ProduceResponse>,
    );
    last(
        "ProduceTopicResponse.partitions",
        response_and_end(&ProduceResponse {
            topics: vec![ProduceTopicResponse::default()],
        }),
        decode_resp::<ProduceResponse>,
    );
    last(
        "FetchResponse.topics",
        response_and_end(&FetchResponse::default()),
        decode_fetch,
    );
    last(
        "FetchTopicResponse.partitions",
        response_and_end(&FetchResponse {
            topics: vec![FetchTopicResponse::default()],
        }),
        decode_fetch,
    );
    last(
        "ListOffsetsResponse.topics",
        response_and_end(&ListOffsetsResponse::default()),
        decode_resp::<ListOffsetsResponse>,
    );
    last(
        "ListOffsetsTopicResponse.partitions",
        response_and_end(&ListOffsetsResponse {
            topics: vec![ListOffsetsTopicResponse::default()],
        }),
        decode_resp::<ListOffsetsResponse>,
    );

    // Consumer-group requests.
    let group = || "group-1".to_string();
    last(
        "JoinGroupRequest.protocols",
        request_and_end(ApiKey::JoinGroup, &JoinGroupRequest::default()),
        req,
    );
    last(
        "JoinGroupProtocol.metadata",
        request_and_end(
            ApiKey::JoinGroup,
            &JoinGroupRequest {
                group_id: group(),
                protocols: vec![JoinGroupProtocol {
                    name: "range".into(),
                    metadata: vec![],
                }],
                ..Default::default()
            },
        ),
        req,
    );
    last(
        "SyncGroupRequest.assignments",
        request_and_end(ApiKey::SyncGroup, &SyncGroupRequest::default()),
        req,
    );
    last(
        "SyncGroupAssignment.assignment",
        request_and_end(
            ApiKey::SyncGroup,
            &SyncGroupRequest {
                assignments: vec![SyncGroupAssignment {
                    member_id: "member-1".into(),
                    assignment: vec![],
                }],
                ..Default::default()
            },
        ),
        req,
    );
    last(
        "OffsetCommitRequest.topics",
        request_and_end(ApiKey::OffsetCommit, &OffsetCommitRequest::default()),
        req,
    );
    last(
        "OffsetCommitTopic.partitions",
        request_and_end(
            ApiKey::OffsetCommit,
            &OffsetCommitRequest {
                topics: vec![OffsetCommitTopic {
                    topic: topic(),
                    partitions: vec![],
                }],
                ..Default::default()
            },
        ),
        req,
    );
    last(
        "OffsetFetchRequest.topics",
        request_and_end(
            ApiKey::OffsetFetch,
            &OffsetFetchRequest {
                group_id: group(),
                topics: Some(vec![]),
            },
        ),
        req,
    );
    last(
        "OffsetFetchTopic.partitions",
        request_and_end(
            ApiKey::OffsetFetch,
            &OffsetFetchRequest {
                group_id: group(),
                topics: Some(vec![OffsetFetchTopic {
                    topic: topic(),
                    partitions: vec![],
                }]),
            },
        ),
        req,
    );
    last(
        "DescribeGroupsRequest.groups",
        request_and_end(ApiKey::DescribeGroups, &DescribeGroupsRequest::default()),
        req,
    );

    // Consumer-group responses.
    last(
        "JoinGroupResponse.members",
        response_and_end(&JoinGroupResponse::default()),
        decode_resp::<JoinGroupResponse>,
    );
    last(
        "JoinGroupMember.metadata",
        response_and_end(&JoinGroupResponse {
            members: vec![JoinGroupMember::default()],
            ..Default::default()
        }),
        decode_resp::<JoinGroupResponse>,
    );
    last(
        "SyncGroupResponse.assignment",
        response_and_end(&SyncGroupResponse::default()),
        decode_resp::<SyncGroupResponse>,
    );
    last(
        "OffsetCommitResponse.topics",
        response_and_end(&OffsetCommitResponse::default()),
        decode_resp::<OffsetCommitResponse>,
    );
    last(
        "OffsetCommitTopicResponse.partitions",
        response_and_end(&OffsetCommitResponse {
            topics: vec![OffsetCommitTopicResponse::default()],
        }),
        decode_resp::<OffsetCommitResponse>,
    );
    last(
        "OffsetFetchResponse.topics",
        response_and_end(&OffsetFetchResponse::default()),
        decode_resp::<OffsetFetchResponse>,
    );
    last(
        "OffsetFetchTopicResponse.partitions",
        response_and_end(&OffsetFetchResponse {
            topics: vec![OffsetFetchTopicResponse::default()],
        }),
        decode_resp::<OffsetFetchResponse>,
    );
    last(
        "ListGroupsResponse.groups",
        response_and_end(&ListGroupsResponse::default()),
        decode_resp::<ListGroupsResponse>,
    );
    last(
        "DescribeGroupsResponse.groups",
        response_and_end(&DescribeGroupsResponse::default()),
        decode_resp::<DescribeGroupsResponse>,
    );
    last(
        "DescribedGroup.members",
        response_and_end(&DescribeGroupsResponse {
            groups: vec![DescribedGroup::default()],
        }),
        decode_resp::<DescribeGroupsResponse>,
    );
    last(
        "DescribedMember.assignment",
        response_and_end(&DescribeGroupsResponse {
            groups: vec![DescribedGroup {
                members: vec![DescribedMember::default()],
                ..Default::default()
            }],
        }),
        decode_resp::<DescribeGroupsResponse>,
    );

    // Cluster APIs: collections that end their message.
    last(
        "ReplicaFetchRequest.partitions",
        request_and_end(ApiKey::ReplicaFetch, &ReplicaFetchRequest::default()),
        req,
    );
    last(
        "ReplicaFetchResponse.partitions",
        response_and_end(&ReplicaFetchResponse::default()),
        |frame| decode_response::<ReplicaFetchResponse<'_>>(frame).map(drop),
    );
    last(
        "CreatePartitionsResponse.topics",
        response_and_end(&CreatePartitionsResponse::default()),
        decode_resp::<CreatePartitionsResponse>,
    );
    last(
        "ReassignPartitionsResponse.partitions",
        response_and_end(&ReassignPartitionsResponse::default()),
        decode_resp::<ReassignPartitionsResponse>,
    );
    last(
        "ElectLeadersResponse.changed",
        response_and_end(&ElectLeadersResponse::default()),
        decode_resp::<ElectLeadersResponse>,
    );
    // Counts followed by other fields: at a fixed position.
    let (frame, _) = request_and_end(ApiKey::CreateTopics, &CreateTopicsRequest::default());
    sites.push(CountSite {
        name: "CreateTopicsRequest.topics",
        frame,
        at: REQUEST_HEADER_SIZE,
        decode: req,
    });
    let (frame, _) = request_and_end(ApiKey::DeleteTopics, &DeleteTopicsRequest::default());
    sites.push(CountSite {
        name: "DeleteTopicsRequest.names",
        frame,
        at: REQUEST_HEADER_SIZE,
        decode: req,
    });
    let (frame, end) = request_and_end(
        ApiKey::ReassignPartitions,
        &ReassignPartitionsRequest {
            partitions: vec![PartitionReassignment::default()],
            timeout_ms: 0,
        },
    );
    sites.push(CountSite {
        name: "PartitionReassignment.replicas",
        frame,
        // followed only by the request's timeout
        at: end - 8,
        decode: req,
    });
    let cluster_id = "cluster-1".to_string();
    let (frame, _) = response_and_end(&MetadataResponse {
        cluster_id: cluster_id.clone(),
        ..Default::default()
    });
    sites.push(CountSite {
        name: "MetadataResponse.brokers",
        frame,
        // header, Ok error (code + empty message), cluster_id, controller_id
        at: RESPONSE_HEADER_SIZE + 4 + 2 + cluster_id.len() + 4,
        decode: decode_resp::<MetadataResponse>,
    });
    let (frame, end) = response_and_end(&DescribeGroupsResponse {
        groups: vec![DescribedGroup {
            members: vec![DescribedMember::default()],
            ..Default::default()
        }],
    });
    sites.push(CountSite {
        name: "DescribedMember.metadata",
        frame,
        // followed only by the (empty) assignment's count
        at: end - 8,
        decode: decode_resp::<DescribeGroupsResponse>,
    });
    sites
}

/// Every collection count of the consumer protocol payloads. Here `frame` is a bare payload
/// (no length prefix, header or padding) and positions are payload offsets.
fn payload_count_sites() -> Vec<CountSite> {
    fn subscription(bytes: &[u8]) -> Result<(), ProtocolError> {
        decode_payload::<ConsumerSubscription>(bytes).map(drop)
    }
    fn assignment(bytes: &[u8]) -> Result<(), ProtocolError> {
        decode_payload::<ConsumerAssignment>(bytes).map(drop)
    }
    let owned = |partitions: Vec<TopicPartitions>| {
        encode_payload(&ConsumerSubscription {
            version: CONSUMER_PROTOCOL_VERSION,
            topics: vec![],
            owned: partitions,
            generation: -1,
        })
    };
    let assigned = |partitions: Vec<TopicPartitions>| {
        encode_payload(&ConsumerAssignment {
            version: CONSUMER_PROTOCOL_VERSION,
            partitions,
        })
    };
    let orders = || TopicPartitions {
        topic: "orders".into(),
        partitions: vec![],
    };
    type Decoder = fn(&[u8]) -> Result<(), ProtocolError>;
    let site = |name, frame: Vec<u8>, from_end: usize, decode: Decoder| CountSite {
        name,
        at: frame.len() - from_end,
        frame,
        decode,
    };
    // version (2), topics count (4), owned count (4), generation (4)
    vec![
        site(
            "ConsumerSubscription.topics",
            owned(vec![]),
            12,
            subscription,
        ),
        site("ConsumerSubscription.owned", owned(vec![]), 8, subscription),
        site(
            "ConsumerSubscription.owned[].partitions",
            owned(vec![orders()]),
            8,
            subscription,
        ),
        site(
            "ConsumerAssignment.partitions",
            assigned(vec![]),
            4,
            assignment,
        ),
        site(
            "ConsumerAssignment.partitions[].partitions",
            assigned(vec![orders()]),
            4,
            assignment,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes through every decode entry point (`check_frame` at several limits, both
    /// header decoders, `decode_request`, `decode_response` for every response type): frames
    /// come from the network, so no input may panic, and whatever is accepted must be
    /// consistent (see `exercise`).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
    }

    /// Random bodies behind a valid request header (consistent length, every API key, version
    /// 1): random bytes alone almost never get past the header, this reaches every request body
    /// decoder. The header must always be read back, and the error, if any, must be about the
    /// body, never the API or version.
    #[test]
    fn random_request_bodies_never_panic(
        api_key in 0..ApiKey::ALL.len() as u16,
        correlation_id in any::<u32>(),
        body in body_bytes(),
        pad in any::<bool>(),
    ) {
        let mut header = Vec::new();
        header.extend_from_slice(&api_key.to_le_bytes());
        header.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        header.extend_from_slice(&correlation_id.to_le_bytes());
        let frame = frame_of(&header, &body, pad);
        let (read, _) = decode_request_header(&frame).unwrap();
        prop_assert_eq!(read, RequestHeader { api_key, api_version: PROTOCOL_VERSION, correlation_id });
        match decode_request(&frame) {
            Ok((read, request)) => {
                prop_assert_eq!(read.correlation_id, correlation_id);
                prop_assert_eq!(api_key_of(&request) as u16, api_key);
            }
            Err(error) => prop_assert!(
                matches!(error, ProtocolError::UnexpectedEof { .. } | ProtocolError::Malformed { .. }),
                "{:?}", error
            ),
        }
        exercise(&frame);
    }

    /// Random bodies behind a valid success response header (correlation id, `None` error code,
    /// empty message): otherwise the random error code almost always ends decoding before the
    /// body. Every response decoder runs; none may report a top-level error, since there is
    /// none.
    #[test]
    fn random_response_bodies_never_panic(
        correlation_id in any::<u32>(),
        body in body_bytes(),
        pad in any::<bool>(),
    ) {
        let mut header = Vec::new();
        header.extend_from_slice(&correlation_id.to_le_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        let frame = aligned(&frame_of(&header, &body, pad));
        for result in decode_every_response(&frame) {
            match result {
                Ok((id, is_ok)) => prop_assert_eq!((id, is_ok), (correlation_id, true)),
                Err(error) => prop_assert!(
                    matches!(error, ProtocolError::UnexpectedEof { .. } | ProtocolError::Malformed { .. }),
                    "{:?}", error
                ),
            }
        }
        exercise(&frame);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Valid request and response frames with a few bytes overwritten (and the length prefix
    /// fixed up half the time): the deepest-reaching malformed inputs, past every count and
    /// tag, into strings, options, records and padding. Nothing may panic.
    #[test]
    fn mutated_valid_frames_never_panic(
        request in request_spec(),
        response in response_spec(),
        edits in vec((any::<Index>(), any::<u8>()), 1..8),
        fix in any::<bool>(),
    ) {
        exercise_mutated(&request, &response, &edits, fix);
    }

    /// A collection count far beyond what the frame could hold (u32::MAX, or any count from
    /// 2^20 up) with only a few bytes after it, at every collection of every message, nested
    /// ones included: a peer must not make the decoder reserve gigabytes or loop over a lying
    /// count. Decoding fails with `Malformed` at exactly that count, and no allocation during
    /// the call comes anywhere near what the count asks for.
    #[test]
    fn huge_counts_fail_fast_without_allocating(
        count in prop_oneof![Just(u32::MAX), (1u32 << 20)..=u32::MAX],
        tail in vec(any::<u8>(), 0..64),
    ) {
        for site in count_sites() {
            prop_assert_eq!((site.decode)(&site.frame), Ok(()), "{} frame is valid", site.name);
            prop_assert_eq!(u32_at(&site.frame, site.at), 0, "{} count is at {}", site.name, site.at);
            let mut frame = site.frame.clone();
            frame[site.at..site.at + 4].copy_from_slice(&count.to_le_bytes());
            frame.extend_from_slice(&tail);
            fix_prefix(&mut frame);
            let frame = aligned(&frame);
            let (result, largest) = largest_allocation(|| (site.decode)(&frame));
            let refused_at = match result {
                Err(ProtocolError::Malformed { position, .. }) => Some(position),
                _ => None,
            };
            prop_assert_eq!(refused_at, Some(site.at), "{}: {:?}", site.name, result);
            prop_assert!(largest < 4096, "{}: allocated {} bytes", site.name, largest);
        }
        // The consumer protocol payloads, decoded by the group leader and by every member from
        // bytes another client wrote: the same guarantee, on the bare payload.
        for site in payload_count_sites() {
            prop_assert_eq!((site.decode)(&site.frame), Ok(()), "{} payload is valid", site.name);
            prop_assert_eq!(u32_at(&site.frame, site.at), 0, "{} count is at {}", site.name, site.at);
            let mut payload = site.frame.clone();
            payload[site.at..site.at + 4].copy_from_slice(&count.to_le_bytes());
            payload.extend_from_slice(&tail);
            let (result, largest) = largest_allocation(|| (site.decode)(&payload));
            let refused_at = match result {
                Err(ProtocolError::Malformed { position, .. }) => Some(position),
                _ => None,
            };
            prop_assert_eq!(refused_at, Some(site.at), "{}: {:?}", site.name, result);
            prop_assert!(largest < 4096, "{}: allocated {} bytes", site.name, largest);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every request type, produce data made of real batches: encode → `FrameParts::to_vec` →
    /// 16-aligned buffer → `decode_request` gives back the header and exactly the request, and
    /// produce batches sit 16-aligned in the frame and iterate back validated, as the broker
    /// will read them in place. The frame length is a multiple of 16 and what `len()` says.
    #[test]
    fn requests_round_trip(spec in request_spec(), correlation_id in any::<u32>()) {
        check_request_round_trip(&spec, correlation_id)?;
    }

    /// Every response type, fetch responses with several partitions of 0 to 3 real batches each
    /// given as separate parts: encode → 16-aligned buffer → `decode_response` gives back the
    /// correlation id and the body (records compared as concatenated bytes, since decoding
    /// yields one part), with the batches 16-aligned and iterating back validated. With a
    /// top-level error, both `encode_response` (body present) and `encode_error_response` decode
    /// to exactly that error.
    #[test]
    fn responses_round_trip(
        spec in response_spec(),
        correlation_id in any::<u32>(),
        error in top_level_error(),
    ) {
        check_response_round_trip(&spec, correlation_id, error.as_ref())?;
    }

    /// Every strict prefix of a valid request frame and of a valid success response frame is
    /// refused — a frame that has not fully arrived must never decode as something shorter.
    /// Checked twice: as received (the length prefix then disagrees with the slice), and with
    /// the prefix rewritten to match the cut, so that the body decoders themselves must notice
    /// the missing bytes (or padding).
    #[test]
    fn truncated_frames_are_refused(
        request in request_spec(),
        response in response_spec(),
        correlation_id in any::<u32>(),
    ) {
        check_truncations(&request, &response, correlation_id)?;
    }

    /// `check_frame` on valid encoded frames: `None` until the 4-byte prefix is in, then the
    /// exact encoded length however much of the frame has arrived (that is how a receive loop
    /// knows how much to wait for); a limit equal to the frame length accepts it, one byte less
    /// refuses it.
    #[test]
    fn check_frame_agrees_with_encoded_length(spec in request_spec(), response in response_spec()) {
        let mut buffer = Vec::new();
        let request_frame = encode_any(&mut buffer, 3, &spec.request()).to_vec();
        let response_frame = response_bytes(&response, 4, &WireError::none());
        for frame in [request_frame, response_frame] {
            let len = frame.len();
            for n in 0..=len {
                let expected = if n < LENGTH_PREFIX_SIZE { None } else { Some(len) };
                prop_assert_eq!(check_frame(&frame[..n], FRAME_SIZE_MAX), Ok(expected));
            }
            prop_assert_eq!(check_frame(&frame, len), Ok(Some(len)));
            prop_assert_eq!(check_frame(&frame, usize::MAX), Ok(Some(len)));
            prop_assert_eq!(
                check_frame(&frame, len - 1),
                Err(ProtocolError::FrameTooLarge { length: len - 4, max: len - 1 })
            );
        }
    }

    /// `check_frame` on any length prefix and any limit (tiny ones included): accepted exactly
    /// when the total frame (prefix included) fits within the smaller of the limit and
    /// `FRAME_SIZE_MAX` and is a multiple of 16; a too-large length is `FrameTooLarge` with the
    /// effective limit. This is the only thing between a peer's 4 bytes and a buffer allocation.
    #[test]
    fn check_frame_refuses_lengths_above_the_limit(
        length in prop_oneof![any::<u32>(), 0u32..4096, Just(u32::MAX)],
        limit in prop_oneof![0usize..64, 0usize..=2 * FRAME_SIZE_MAX, Just(usize::MAX)],
        rest in vec(any::<u8>(), 0..8),
    ) {
        let mut buffer = length.to_le_bytes().to_vec();
        buffer.extend_from_slice(&rest);
        let length = length as usize;
        let max = limit.min(FRAME_SIZE_MAX);
        let total = length + LENGTH_PREFIX_SIZE;
        match check_frame(&buffer, limit) {
            Ok(Some(accepted)) => {
                prop_assert_eq!(accepted, total);
                prop_assert!(total <= max && total % 16 == 0);
            }
            Err(ProtocolError::FrameTooLarge { length: l, max: m }) => {
                prop_assert_eq!((l, m), (length, max));
                prop_assert!(total > max);
            }
            Err(ProtocolError::Malformed { position: 0, .. }) => {
                prop_assert!(total <= max && total % 16 != 0);
            }
            other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
        }
    }

    /// `FrameParts` as a vectored write sees it: the parts, concatenated, are the frame
    /// (`to_vec`, `len`, a multiple of 16, decodable); no part is empty; and the record batches
    /// are the caller's slices themselves (same address and length, in order), not copies —
    /// the zero-copy path from the log to the socket — while the owned head holds exactly the
    /// rest.
    #[test]
    fn frame_parts_borrow_the_batches(produce in produce_spec(), fetch in fetch_spec()) {
        let request = produce.request();
        let mut buffer = Vec::new();
        let parts = encode_request(&mut buffer, ApiKey::Produce, 5, &request);
        let sources: Vec<&[u8]> = produce
            .topics
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|p| p.contiguous.as_slice()))
            .collect();
        check_parts(&parts, &sources)?;
        let frame = aligned(&parts.concat_parts());
        prop_assert_eq!(decode_request(&frame).unwrap().1, Request::Produce(request.clone()));

        let response = fetch.response();
        let ok = WireError::none();
        let mut buffer = Vec::new();
        let parts = encode_response(&mut buffer, 6, &ok, Some(&response));
        let sources: Vec<&[u8]> = fetch.batches().flatten().map(|b| &b.bytes[..]).collect();
        check_parts(&parts, &sources)?;
        let frame = aligned(&parts.concat_parts());
        prop_assert_eq!(decode_as(&ResponseSpec::Fetch(fetch.clone()), &frame, 6)?, Ok(()));
    }

    /// Strings longer than the u16 length field are cut to fit, and on a character boundary:
    /// cutting inside a multi-byte character would produce a frame the decoder (rightly)
    /// refuses as invalid UTF-8. The cut keeps the longest prefix that fits, and the fields
    /// after the string are intact.
    #[test]
    fn overlong_strings_are_cut_on_a_char_boundary(
        unit in prop_oneof![Just("a"), Just("é"), Just("€"), Just("𝄞")],
        extra in 0usize..8,
        lead in "[a-z]{0,3}",
    ) {
        let name = format!("{lead}{}", unit.repeat(u16::MAX as usize / unit.len() + extra));
        let request = HandshakeRequest { client_name: name.clone(), client_version: "1.0".into() };
        let mut buffer = Vec::new();
        let frame = aligned(&encode_request(&mut buffer, ApiKey::Handshake, 1, &request).to_vec());
        let (_, decoded) = decode_request(&frame).unwrap();
        let Request::Handshake(decoded) = decoded else { panic!("not a handshake") };
        let fits = (0..=u16::MAX as usize).rev().find(|&n| name.is_char_boundary(n)).unwrap();
        prop_assert_eq!(decoded.client_name.len(), fits.min(name.len()));
        prop_assert!(name.starts_with(&decoded.client_name));
        prop_assert_eq!(decoded.client_version, "1.0");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The consumer-group APIs on their own (the tests above draw them among every API, this
    /// makes sure each of them gets many cases every run): requests and responses round-trip
    /// exactly (with a top-level error too), every strict prefix of either frame is refused,
    /// and mutated frames never panic.
    #[test]
    fn group_messages_round_trip_and_refuse_truncation(
        request in group_request_spec(),
        response in group_response_spec(),
        correlation_id in any::<u32>(),
        error in top_level_error(),
        edits in vec((any::<Index>(), any::<u8>()), 1..8),
        fix in any::<bool>(),
    ) {
        check_request_round_trip(&request, correlation_id)?;
        check_response_round_trip(&response, correlation_id, error.as_ref())?;
        check_truncations(&request, &response, correlation_id)?;
        exercise_mutated(&request, &response, &edits, fix);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The cluster APIs on their own (replication between brokers and the cluster operations),
    /// like the group APIs above: exact round trips (with a top-level error too), every strict
    /// prefix refused, mutated frames never panic.
    #[test]
    fn cluster_messages_round_trip_and_refuse_truncation(
        request in cluster_request_spec(),
        response in cluster_response_spec(),
        correlation_id in any::<u32>(),
        error in top_level_error(),
        edits in vec((any::<Index>(), any::<u8>()), 1..8),
        fix in any::<bool>(),
    ) {
        check_request_round_trip(&request, correlation_id)?;
        check_response_round_trip(&response, correlation_id, error.as_ref())?;
        check_truncations(&request, &response, correlation_id)?;
        exercise_mutated(&request, &response, &edits, fix);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `ConsumerSubscription` and `ConsumerAssignment` through `encode_payload` and
    /// `decode_payload`: exact round trip, strict prefixes and a trailing byte refused.
    #[test]
    fn consumer_payloads_round_trip(
        subscription in consumer_subscription(),
        assignment in consumer_assignment(),
        extra in any::<u8>(),
    ) {
        check_payload(&subscription, extra)?;
        check_payload(&assignment, extra)?;
    }

    /// Arbitrary bytes into `decode_payload` for both payloads (uniform bytes, and codec-shaped
    /// tokens that get past the counts): a member's metadata or assignment comes from another
    /// client, so nothing may panic, and whatever decodes re-encodes to the same bytes.
    #[test]
    fn arbitrary_payload_bytes_never_panic(
        bytes in prop_oneof![vec(any::<u8>(), 0..256), body_bytes()],
    ) {
        exercise_payload(&bytes);
    }

    /// Valid payloads with a few bytes overwritten, then possibly cut short: nothing panics.
    #[test]
    fn mutated_payloads_never_panic(
        subscription in consumer_subscription(),
        assignment in consumer_assignment(),
        edits in vec((any::<Index>(), any::<u8>()), 1..6),
        cut in any::<Index>(),
    ) {
        for mut payload in [encode_payload(&subscription), encode_payload(&assignment)] {
            for (at, value) in &edits {
                let i = at.index(payload.len());
                payload[i] = *value;
            }
            exercise_payload(&payload);
            exercise_payload(&payload[..cut.index(payload.len() + 1)]);
        }
    }
}

/// Every error code this side knows survives `from_u16`/`as_u16` and a trip through a response
/// frame (as a top-level error, and per partition); codes from a newer peer read as `Unknown`.
#[test]
fn error_codes_round_trip() {
    let mut seen = std::collections::HashSet::new();
    for value in 0..=ERROR_CODE_MAX {
        let code = ErrorCode::from_u16(value);
        assert_eq!(code.as_u16(), value, "{code:?}");
        assert!(seen.insert(code), "{code:?} twice");
        assert!(code.to_string().contains(&value.to_string()), "{code}");

        let error = WireError::new(code, format!("code {value}"));
        let mut buffer = Vec::new();
        let frame = aligned(&encode_error_response(&mut buffer, 9, &error).to_vec());
        let (id, decoded) = decode_response::<HeartbeatResponse>(&frame).unwrap();
        assert_eq!(id, 9);
        if value == 0 {
            assert_eq!(decoded, Ok(HeartbeatResponse {}));
        } else {
            assert_eq!(decoded, Err(error.clone()));
        }

        let body = OffsetCommitResponse {
            topics: vec![OffsetCommitTopicResponse {
                topic: "orders".into(),
                partitions: vec![OffsetCommitPartitionResponse {
                    partition: 0,
                    error: error.clone(),
                }],
            }],
        };
        let ok = WireError::none();
        let frame = aligned(&encode_response(&mut buffer, 10, &ok, Some(&body)).to_vec());
        assert_eq!(
            decode_response::<OffsetCommitResponse>(&frame).unwrap(),
            (10, Ok(body))
        );
    }
    for value in [ERROR_CODE_MAX + 1, 100, u16::MAX] {
        assert_eq!(
            ErrorCode::from_u16(value),
            ErrorCode::Unknown,
            "code {value} is known: raise ERROR_CODE_MAX so the tests cover it"
        );
    }
}

/// Every API key is its index in `ApiKey::ALL`, `from_u16` finds each and nothing past them.
#[test]
fn api_keys_round_trip() {
    for (value, key) in ApiKey::ALL.into_iter().enumerate() {
        assert_eq!(key as u16 as usize, value);
        assert_eq!(ApiKey::from_u16(value as u16), Some(key));
    }
    for value in [ApiKey::ALL.len() as u16, 100, u16::MAX] {
        assert_eq!(ApiKey::from_u16(value), None);
    }
}

/// The request and response strategies reach every API (so a new API cannot be left out of
/// the property tests above unnoticed), and the group-only strategies every group API.
#[test]
fn strategies_cover_every_api() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeSet;

    fn keys<S: Strategy>(strategy: S, key: impl Fn(&S::Value) -> ApiKey) -> BTreeSet<u16> {
        let mut runner = TestRunner::deterministic();
        (0..600)
            .map(|_| key(&strategy.new_tree(&mut runner).unwrap().current()) as u16)
            .collect()
    }
    let every: BTreeSet<u16> = ApiKey::ALL.iter().map(|k| *k as u16).collect();
    let groups: BTreeSet<u16> =
        (ApiKey::FindCoordinator as u16..=ApiKey::DescribeGroups as u16).collect();
    assert_eq!(keys(request_spec(), |r| api_key_of(&r.request())), every);
    assert_eq!(keys(response_spec(), ResponseSpec::api_key), every);
    assert_eq!(
        keys(group_request_spec(), |r| api_key_of(&r.request())),
        groups
    );
    assert_eq!(keys(group_response_spec(), ResponseSpec::api_key), groups);
    let cluster: BTreeSet<u16> =
        (ApiKey::ReplicaFetch as u16..=ApiKey::ElectLeaders as u16).collect();
    assert_eq!(
        keys(cluster_request_spec(), |r| api_key_of(&r.request())),
        cluster
    );
    assert_eq!(
        keys(cluster_response_spec(), ResponseSpec::api_key),
        cluster
    );
}

/// See `mutated_valid_frames_never_panic`.
fn exercise_mutated(
    request: &RequestSpec,
    response: &ResponseSpec,
    edits: &[(Index, u8)],
    fix: bool,
) {
    let mut buffer = Vec::new();
    let mut frames = vec![encode_any(&mut buffer, 1, &request.request()).to_vec()];
    frames.push(response_bytes(response, 2, &WireError::none()));
    for mut frame in frames {
        for (at, value) in edits {
            let i = at.index(frame.len());
            frame[i] = *value;
        }
        if fix {
            fix_prefix(&mut frame);
        }
        exercise(&frame);
    }
}

/// See `requests_round_trip`.
fn check_request_round_trip(spec: &RequestSpec, correlation_id: u32) -> Result<(), TestCaseError> {
    let request = spec.request();
    let mut buffer = Vec::new();
    let parts = encode_any(&mut buffer, correlation_id, &request);
    let bytes = parts.to_vec();
    prop_assert_eq!(bytes.len(), parts.len());
    prop_assert_eq!(bytes.len() % 16, 0);
    let frame = aligned(&bytes);

    let (header, decoded) = decode_request(&frame).unwrap();
    prop_assert_eq!(
        header,
        RequestHeader {
            api_key: api_key_of(&request) as u16,
            api_version: PROTOCOL_VERSION,
            correlation_id,
        }
    );
    prop_assert_eq!(&decoded, &request);
    if let (RequestSpec::Produce(spec), Request::Produce(decoded)) = (spec, &decoded) {
        let decoded_records = decoded
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| &p.records));
        let sent = spec
            .topics
            .iter()
            .flat_map(|(_, ps)| ps.iter().map(|p| p.batches.as_slice()));
        for (records, batches) in decoded_records.zip(sent) {
            check_records(records, batches)?;
        }
    }
    exercise(&frame);
    Ok(())
}

/// See `responses_round_trip`.
fn check_response_round_trip(
    spec: &ResponseSpec,
    correlation_id: u32,
    error: Option<&WireError>,
) -> Result<(), TestCaseError> {
    let ok = WireError::none();
    let frame = aligned(&response_bytes(spec, correlation_id, error.unwrap_or(&ok)));
    prop_assert_eq!(frame.len() % 16, 0);
    let decoded = decode_as(spec, &frame, correlation_id)?;
    match error {
        None => prop_assert_eq!(decoded, Ok(())),
        Some(error) => {
            prop_assert_eq!(decoded, Err(error.clone()));
            let mut buffer = Vec::new();
            let only_error =
                aligned(&encode_error_response(&mut buffer, correlation_id, error).to_vec());
            prop_assert_eq!(
                decode_as(spec, &only_error, correlation_id)?,
                Err(error.clone())
            );
        }
    }
    exercise(&frame);
    Ok(())
}

/// See `truncated_frames_are_refused`.
fn check_truncations(
    request: &RequestSpec,
    response: &ResponseSpec,
    correlation_id: u32,
) -> Result<(), TestCaseError> {
    let mut buffer = Vec::new();
    let request_frame =
        aligned(&encode_any(&mut buffer, correlation_id, &request.request()).to_vec());
    let response_frame = aligned(&response_bytes(
        response,
        correlation_id,
        &WireError::none(),
    ));
    prop_assert!(decode_request(&request_frame).is_ok());
    prop_assert_eq!(
        decode_as(response, &response_frame, correlation_id)?,
        Ok(())
    );

    for n in 0..request_frame.len() {
        let error = decode_request(&request_frame[..n]).unwrap_err();
        if n < REQUEST_HEADER_SIZE {
            prop_assert!(
                matches!(error, ProtocolError::UnexpectedEof { .. }),
                "{}: {:?}",
                n,
                error
            );
        } else {
            prop_assert!(
                matches!(error, ProtocolError::Malformed { position: 0, .. }),
                "{}: {:?}",
                n,
                error
            );
        }
    }
    let mut patched = request_frame.clone();
    for n in 0..patched.len() {
        fix_prefix(&mut patched[..n]);
        let error = decode_request(&patched[..n]).unwrap_err();
        prop_assert!(
            matches!(
                error,
                ProtocolError::UnexpectedEof { .. } | ProtocolError::Malformed { .. }
            ),
            "{}: {:?}",
            n,
            error
        );
    }

    let mut patched = response_frame.clone();
    for n in 0..patched.len() {
        let result = decode_own(response, &response_frame[..n]);
        prop_assert!(result.is_err(), "prefix of {} bytes: {:?}", n, result);
        fix_prefix(&mut patched[..n]);
        let result = decode_own(response, &patched[..n]);
        prop_assert!(
            result.is_err(),
            "prefix of {} bytes, prefix fixed: {:?}",
            n,
            result
        );
    }
    Ok(())
}

/// A consumer protocol payload: `decode_payload` gives back exactly the value, every strict
/// prefix is refused (a cut payload must not read as a shorter one), and so is the payload with
/// a trailing byte.
fn check_payload<T>(value: &T, extra: u8) -> Result<(), TestCaseError>
where
    T: Encode + for<'a> Decode<'a> + PartialEq + std::fmt::Debug,
{
    let bytes = encode_payload(value);
    prop_assert_eq!(&decode_payload::<T>(&bytes).unwrap(), value);
    for n in 0..bytes.len() {
        let result = decode_payload::<T>(&bytes[..n]);
        prop_assert!(
            matches!(
                result,
                Err(ProtocolError::UnexpectedEof { .. } | ProtocolError::Malformed { .. })
            ),
            "prefix of {} bytes: {:?}",
            n,
            result
        );
    }
    let mut longer = bytes.clone();
    longer.push(extra);
    let result = decode_payload::<T>(&longer);
    prop_assert!(
        matches!(result, Err(ProtocolError::Malformed { .. })),
        "trailing byte: {:?}",
        result
    );
    exercise_payload(&bytes);
    exercise_payload(&longer);
    Ok(())
}

/// The concatenated parts of a frame, built independently of `FrameParts::to_vec`.
trait ConcatParts {
    fn concat_parts(&self) -> Vec<u8>;
}

impl ConcatParts for FrameParts<'_> {
    fn concat_parts(&self) -> Vec<u8> {
        self.parts().collect::<Vec<_>>().concat()
    }
}

fn overlaps(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (a.as_ptr_range(), b.as_ptr_range());
    a.start < b.end && b.start < a.end
}

/// See `frame_parts_borrow_the_batches`.
fn check_parts(frame: &FrameParts<'_>, sources: &[&[u8]]) -> Result<(), TestCaseError> {
    let parts: Vec<&[u8]> = frame.parts().collect();
    let concatenated = parts.concat();
    prop_assert_eq!(&concatenated, &frame.to_vec());
    prop_assert_eq!(concatenated.len(), frame.len());
    prop_assert!(!frame.is_empty());
    prop_assert_eq!(frame.len() % 16, 0);
    prop_assert!(parts.iter().all(|p| !p.is_empty()), "empty part");

    let borrowed: Vec<&[u8]> = parts
        .iter()
        .copied()
        .filter(|p| sources.iter().any(|s| overlaps(p, s)))
        .collect();
    let expected: Vec<&[u8]> = sources.iter().copied().filter(|s| !s.is_empty()).collect();
    prop_assert_eq!(borrowed.len(), expected.len());
    for (part, source) in borrowed.iter().zip(&expected) {
        prop_assert!(
            part.as_ptr() == source.as_ptr() && part.len() == source.len(),
            "part {:p}+{} is not the source slice {:p}+{}",
            part.as_ptr(),
            part.len(),
            source.as_ptr(),
            source.len()
        );
    }
    let owned: usize = parts
        .iter()
        .filter(|p| !sources.iter().any(|s| overlaps(p, s)))
        .map(|p| p.len())
        .sum();
    let source_bytes: usize = sources.iter().map(|s| s.len()).sum();
    prop_assert_eq!(owned + source_bytes, frame.len());
    Ok(())
}
