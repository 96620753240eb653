//! Long polls: a fetch waiting at the end of a partition is answered when a produce lands
//! (woken by the append, long before its max wait), and an idle one returns empty after its
//! max wait.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, FetchResponse, ProducePartition, ProduceRequest, ProduceResponse,
    ProduceTopic, Records,
};
use wire::BatchBuilder;

/// Max wait of the fetch that must be woken: far longer than any stall of a loaded machine.
const WOKEN_MAX_WAIT_MS: u32 = 60_000;
/// How long the fetch must stay unanswered before the produce: it is waiting, not answered
/// early.
const PARKED_CHECK: Duration = Duration::from_millis(500);

/// A fetch at the end of an empty partition stays unanswered, then returns the new batch once
/// a produce lands, in less than half its 60 s max wait (so the append woke it, not the
/// expiry of its wait), on both the shard that owns the partition and another one. The
/// latency from the produce's acknowledgement is printed (a few ms normally), not asserted:
/// a loaded machine may stretch it.
#[test]
fn long_poll_is_woken_by_a_produce() {
    let broker = Broker::start(&[]);
    let mut admin = Conn::connect(broker.addr);
    admin.create_topic("lp", 2, None);
    for partition in 0..2u32 {
        let mut consumer = Conn::connect(broker.addr);
        let fetch_sent = Instant::now();
        consumer.send(
            ApiKey::Fetch,
            &common::fetch_request("lp", partition, 0, WOKEN_MAX_WAIT_MS),
        );
        // Nothing to read yet: no answer comes within PARKED_CHECK.
        consumer
            .stream
            .set_read_timeout(Some(PARKED_CHECK))
            .unwrap();
        let early = consumer.stream.peek(&mut [0u8; 1]);
        assert!(
            early.as_ref().is_err_and(|e| matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )),
            "the fetch of an empty partition was answered early: {early:?}"
        );
        consumer
            .stream
            .set_read_timeout(Some(Duration::from_millis(u64::from(WOKEN_MAX_WAIT_MS))))
            .unwrap();
        let mut builder = BatchBuilder::new();
        builder.push(1, None, b"wake up", &[], None);
        let batch = builder.build().unwrap();
        let request = ProduceRequest {
            acks: wire::Acks::Leader,
            timeout_ms: 5000,
            topics: vec![ProduceTopic {
                topic: "lp".into(),
                partitions: vec![ProducePartition {
                    partition,
                    records: Records::from_slice(&batch),
                }],
            }],
        };
        let mut producer = Conn::connect(broker.addr);
        let produced: ProduceResponse = producer.call(ApiKey::Produce, &request).unwrap();
        let acknowledged = Instant::now();
        assert!(produced.topics[0].partitions[0].error.is_ok());
        let frame = consumer.read_frame().unwrap();
        let latency = acknowledged.elapsed();
        let waited = fetch_sent.elapsed();
        let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
        let response = response.unwrap();
        assert_eq!(response.topics[0].partitions[0].records.len(), batch.len());
        assert!(
            waited < Duration::from_millis(u64::from(WOKEN_MAX_WAIT_MS / 2)),
            "long poll answered {waited:?} after it was sent: by its max wait, not the append"
        );
        eprintln!("partition {partition}: long poll answered {latency:?} after the produce was acknowledged");
    }
}

/// With nothing to read, the fetch waits its max wait and returns empty.
#[test]
fn idle_long_poll_returns_empty_after_max_wait() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("quiet", 1, None);
    let started = Instant::now();
    conn.send(ApiKey::Fetch, &common::fetch_request("quiet", 0, 0, 300));
    let frame = conn.read_frame().unwrap();
    let waited = started.elapsed();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    assert!(response.unwrap().topics[0].partitions[0].records.is_empty());
    assert!(
        waited >= Duration::from_millis(280),
        "returned after {waited:?}, before max wait"
    );
}
