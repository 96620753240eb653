//! Long polls: a fetch waiting at the end of a partition is answered as soon as a produce lands
//! (woken by the append, no polling loop), and an idle one returns empty after its max wait.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, FetchResponse, ProducePartition, ProduceRequest, ProduceResponse,
    ProduceTopic, Records,
};
use wire::BatchBuilder;

/// The waiting fetch returns the new batch well before its 10 s max wait: measured from the
/// produce's acknowledgement, it must come within 250 ms (a few ms normally; the bound is loose
/// because the machine is shared), on both the shard that owns the partition and another one.
#[test]
fn long_poll_is_woken_by_a_produce() {
    let broker = Broker::start(&[]);
    let mut admin = Conn::connect(broker.addr);
    admin.create_topic("lp", 2, None);
    for partition in 0..2u32 {
        let mut consumer = Conn::connect(broker.addr);
        consumer.send(
            ApiKey::Fetch,
            &common::fetch_request("lp", partition, 0, 10_000),
        );
        std::thread::sleep(Duration::from_millis(100)); // let the fetch start waiting
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
        let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
        let response = response.unwrap();
        assert_eq!(response.topics[0].partitions[0].records.len(), batch.len());
        assert!(
            latency < Duration::from_millis(250),
            "long poll answered after {latency:?}"
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
