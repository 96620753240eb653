//! Bad input on the wire gets a clear error (or, where nothing can be framed, an error frame and
//! a closed connection), and the broker keeps serving every other client. One real broker
//! process per test, on an ephemeral loopback port.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, CreateTopic, CreateTopicsRequest, CreateTopicsResponse, ErrorCode,
    FetchResponse, MetadataRequest, MetadataResponse, ProducePartition, ProduceRequest,
    ProduceResponse, ProduceTopic, Records,
};
use wire::BatchBuilder;

fn batch(value: &[u8]) -> wire::AlignedVec<16> {
    let mut builder = BatchBuilder::new();
    builder.push(1_700_000_000_000, Some(b"k"), value, &[], None);
    builder.build().unwrap()
}

fn produce(
    conn: &mut Conn,
    topic: &str,
    partition: u32,
    records: &[u8],
) -> wire::protocol::ProducePartitionResponse {
    let request = ProduceRequest {
        acks: wire::Acks::Leader,
        timeout_ms: 5000,
        topics: vec![ProduceTopic {
            topic: topic.into(),
            partitions: vec![ProducePartition {
                partition,
                records: Records::from_slice(records),
            }],
        }],
    };
    let response: ProduceResponse = conn.call(ApiKey::Produce, &request).unwrap();
    response.topics[0].partitions[0].clone()
}

fn fetch_error(conn: &mut Conn, topic: &str, partition: u32, offset: u64) -> (ErrorCode, usize) {
    let request = common::fetch_request(topic, partition, offset, 0);
    conn.send(ApiKey::Fetch, &request);
    let frame = conn.read_frame().unwrap();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    let partition = &response.unwrap().topics[0].partitions[0];
    (partition.error.code, partition.records.len())
}

/// Another client is still served: a metadata round trip works.
fn still_serving(broker: &Broker) {
    let mut other = Conn::connect(broker.addr);
    let _: MetadataResponse = other
        .call(ApiKey::Metadata, &MetadataRequest { topics: None })
        .unwrap();
}

/// Reads until EOF; true if the broker closed the connection.
fn closed_by_broker(conn: &mut Conn) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match conn.stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
}

/// Bytes that are not a frame (an HTTP request, an absurd length prefix) get an error frame
/// explaining why, then the connection is closed; others are unaffected.
#[test]
fn garbage_and_absurd_lengths_get_an_error_then_close() {
    let broker = Broker::start(&[]);
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        [0xf0, 0xff, 0xff, 0xff, 1, 2, 3, 4].to_vec(),
        vec![7u8; 4],
    ] {
        let mut conn = Conn::connect(broker.addr);
        conn.stream.write_all(&garbage).unwrap();
        let frame = conn.read_frame().unwrap();
        let (correlation_id, response) = decode_response::<MetadataResponse>(&frame).unwrap();
        assert_eq!(correlation_id, 0);
        let error = response.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert!(error.message.contains("cannot frame"), "{}", error.message);
        assert!(closed_by_broker(&mut conn));
        still_serving(&broker);
    }
}

/// A frame cut short by the client closing loses nothing and harms nobody; a client that
/// connects and sends nothing (or half a frame) is closed after the idle timeout.
#[test]
fn truncated_frames_and_silent_clients() {
    let broker = Broker::start(&["--idle-timeout-ms", "300"]);
    let mut conn = Conn::connect(broker.addr);
    conn.stream.write_all(&64u32.to_le_bytes()).unwrap();
    conn.stream.write_all(&[1, 0, 1, 0, 9, 0, 0, 0]).unwrap();
    conn.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_by_broker(&mut conn));
    still_serving(&broker);

    let started = Instant::now();
    let mut silent = Conn::connect(broker.addr);
    let mut half = Conn::connect(broker.addr);
    half.stream.write_all(&64u32.to_le_bytes()).unwrap();
    still_serving(&broker);
    assert!(closed_by_broker(&mut silent));
    assert!(closed_by_broker(&mut half));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the idle timeout"
    );
    still_serving(&broker);
}

/// Unknown APIs and versions are answered with UnsupportedVersion and the connection goes on.
#[test]
fn unknown_api_and_version() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.addr);
    for (api, version) in [(99u16, 1u16), (1, 7)] {
        let mut frame = Vec::new();
        frame.extend_from_slice(&12u32.to_le_bytes());
        frame.extend_from_slice(&api.to_le_bytes());
        frame.extend_from_slice(&version.to_le_bytes());
        frame.extend_from_slice(&42u32.to_le_bytes());
        frame.extend_from_slice(&[0u8; 4]);
        conn.stream.write_all(&frame).unwrap();
        let response = conn.read_frame().unwrap();
        let (correlation_id, response) = decode_response::<MetadataResponse>(&response).unwrap();
        assert_eq!(correlation_id, 42);
        assert_eq!(response.unwrap_err().code, ErrorCode::UnsupportedVersion);
    }
    // A malformed body of a known API is InvalidRequest, and the connection still works.
    let mut frame = Vec::new();
    frame.extend_from_slice(&12u32.to_le_bytes());
    frame.extend_from_slice(&(ApiKey::Metadata as u16).to_le_bytes());
    frame.extend_from_slice(&1u16.to_le_bytes());
    frame.extend_from_slice(&43u32.to_le_bytes());
    frame.extend_from_slice(&[9u8, 0, 0, 0]);
    conn.stream.write_all(&frame).unwrap();
    let response = conn.read_frame().unwrap();
    let (_, response) = decode_response::<MetadataResponse>(&response).unwrap();
    assert_eq!(response.unwrap_err().code, ErrorCode::InvalidRequest);
    let _: MetadataResponse = conn
        .call(ApiKey::Metadata, &MetadataRequest { topics: None })
        .unwrap();
}

/// A batch with a wrong CRC is refused with CorruptMessage and nothing of it is stored; unknown
/// topics and partitions, offsets out of range and oversized batches get their own codes.
#[test]
fn bad_batches_and_unknown_targets() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("t", 2, None);
    let request = CreateTopicsRequest {
        topics: vec![CreateTopic {
            name: "small".into(),
            partitions: 1,
            replication_factor: 1,
            max_batch_bytes: Some(1024),
            ..Default::default()
        }],
        timeout_ms: 5000,
    };
    let created: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, &request).unwrap();
    assert!(created.topics[0].error.is_ok());

    let good = batch(b"good");
    let mut bad = batch(b"bad!");
    let last = bad.len() - 20;
    bad[last] ^= 0x55;
    let answer = produce(&mut conn, "t", 0, &bad);
    assert_eq!(
        answer.error.code,
        ErrorCode::CorruptMessage,
        "{:?}",
        answer.error
    );
    assert!(
        answer.error.message.contains("CRC"),
        "{}",
        answer.error.message
    );
    let answer = produce(&mut conn, "t", 0, &good);
    assert!(answer.error.is_ok());
    assert_eq!(
        answer.base_offset, 0,
        "the corrupt batch must not have taken an offset"
    );
    let (code, bytes) = fetch_error(&mut conn, "t", 0, 0);
    assert_eq!((code, bytes), (ErrorCode::None, good.len()));

    assert_eq!(
        produce(&mut conn, "nope", 0, &good).error.code,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        produce(&mut conn, "t", 7, &good).error.code,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        fetch_error(&mut conn, "nope", 0, 0).0,
        ErrorCode::UnknownTopicOrPartition
    );
    assert_eq!(
        fetch_error(&mut conn, "t", 0, 1000).0,
        ErrorCode::OffsetOutOfRange
    );

    let big = batch(&[b'x'; 4000]);
    let answer = produce(&mut conn, "small", 0, &big);
    assert_eq!(
        answer.error.code,
        ErrorCode::MessageTooLarge,
        "{:?}",
        answer.error
    );
    assert_eq!(
        produce(&mut conn, "t", 1, &[0u8; 16]).error.code,
        ErrorCode::CorruptMessage
    );
    still_serving(&broker);
}
