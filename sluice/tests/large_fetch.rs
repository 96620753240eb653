//! A fetch response larger than the socket buffers, to a client that starts reading late: the
//! broker's vectored sends fill the socket, fall back to waiting writes, and the client still
//! receives every batch intact and in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, FetchResponse, ProducePartition, ProduceRequest, ProduceResponse,
    ProduceTopic, Records,
};
use wire::{BatchBuilder, BatchIter};

/// Bytes waiting in the receive queue of `stream`.
fn received_bytes(stream: &std::net::TcpStream) -> usize {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to a live c_int;
    // the descriptor is the open socket `stream` borrows.
    let result = unsafe {
        libc::ioctl(
            stream.as_raw_fd(),
            libc::FIONREAD,
            &mut bytes as *mut libc::c_int,
        )
    };
    assert_eq!(result, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(bytes).unwrap()
}

/// 12 MB in 48 batches of about 256 KB, fetched in one response that the reader starts
/// reading only once the broker is blocked on the full socket (its receive queue holds part
/// of the response and stopped growing).
#[test]
fn large_fetch_to_a_slow_reader_arrives_whole() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("big", 1, None);
    for i in 0..48u32 {
        let mut builder = BatchBuilder::new();
        for j in 0..64u32 {
            let mut value = format!("{i}-{j}-").into_bytes();
            value.resize(4000, (i % 251) as u8);
            builder.push(1, None, &value, &[], None);
        }
        let batch = builder.build().unwrap();
        let request = ProduceRequest {
            acks: wire::Acks::Leader,
            timeout_ms: 5000,
            topics: vec![ProduceTopic {
                topic: "big".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: Records::from_slice(&batch),
                }],
            }],
        };
        let produced: ProduceResponse = conn.call(ApiKey::Produce, &request).unwrap();
        assert!(produced.topics[0].partitions[0].error.is_ok());
    }
    let mut request = common::fetch_request("big", 0, 0, 0);
    request.max_bytes = 16 << 20;
    request.topics[0].partitions[0].max_bytes = 16 << 20;
    let mut reader = Conn::connect(broker.addr);
    reader.send(ApiKey::Fetch, &request);
    // The broker has filled the socket and waits for it to drain: the bytes queued at the
    // reader are there and have not changed for 10 readings 10 ms apart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut queued, mut unchanged) = (0, 0);
    while queued == 0 || unchanged < 10 {
        assert!(
            Instant::now() < deadline,
            "the response never filled the socket"
        );
        std::thread::sleep(Duration::from_millis(10));
        let now = received_bytes(&reader.stream);
        unchanged = if now == queued { unchanged + 1 } else { 0 };
        queued = now;
    }
    assert!(
        queued < 12_000_000,
        "the whole response ({queued} bytes) fit in the socket buffers: no waiting write"
    );
    eprintln!("{queued} bytes queued at the reader while the broker waited");
    let frame = reader.read_frame().unwrap();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    let response = response.unwrap();
    let records = response.topics[0].partitions[0].records.as_slice();
    assert!(records.len() > 12_000_000, "only {} bytes", records.len());
    let mut expected_offset = 0;
    for (i, batch) in BatchIter::new(records, wire::limits::BATCH_SIZE_MAX).enumerate() {
        let batch = batch.unwrap();
        assert_eq!(batch.base_offset(), expected_offset);
        let first = batch.records().unwrap()[0].value_bytes();
        assert!(first.starts_with(format!("{i}-0-").as_bytes()));
        expected_offset = batch.last_offset() + 1;
    }
    assert_eq!(expected_offset, 48 * 64);
    // The connection is still in sync: another request works.
    let _: wire::protocol::MetadataResponse = reader
        .call(
            ApiKey::Metadata,
            &wire::protocol::MetadataRequest { topics: None },
        )
        .unwrap();
}
