//! `acks = 0` against the real `sluice` binary: the broker appends the records but sends no
//! response, and the client resolves each record once it is written, without an offset.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use client::{
    Acks, Admin, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, MetadataRequest, MetadataResponse, ProducePartition, ProduceRequest,
    ProduceTopic, Records,
};
use wire::BatchBuilder;

/// Bytes of every value (padded), about 4 records to a batch of [`BATCH_SIZE_BYTES`].
const VALUE_BYTES: usize = 200;
/// The producer's batch size: the smallest it accepts, so that the records of a partition
/// fill many batches, several of them sent before the first is written.
const BATCH_SIZE_BYTES: usize = 1024;
/// Records enqueued between two flushes: 20 of 200 bytes are about 4 KB, 4 batches of 1 KiB
/// sent together (the window is 5), not one batch grown while the window was full.
const RECORDS_PER_WAVE: u32 = 20;
/// Fewest batches each partition with records must end with: 300 records in 15 waves; a
/// partition with records gets some in at least a few waves, and at least two batches in
/// most of them.
const BATCHES_PER_PARTITION_MIN: usize = 10;

/// 300 keyed records of 200 bytes with `Acks::None`, in 1 KiB batches, flushed every 20
/// records (so that each flush sends several batches of a partition together; all 300 at
/// once would pile into one batch while the window is full): every future resolves
/// with no offset, `flush` returns, every partition with records holds at least 10 batches,
/// and a consumer then reads all 300 exactly once, each key's records in send order (the
/// records did arrive, in order across batches, although nobody waited for an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_records_arrive_in_order() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    Admin::new(&bootstrap)
        .unwrap()
        .create_topic(NewTopic::new("fire", 2))
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        acks: Acks::None,
        linger: Duration::from_millis(1),
        batch_size_bytes: BATCH_SIZE_BYTES,
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    let mut pending = Vec::new();
    for i in 0..300u32 {
        let mut value = format!("{}:{i}:", i % 5);
        value.extend(std::iter::repeat_n('.', VALUE_BYTES - value.len()));
        let record = ProducerRecord::new("fire", value.into_bytes())
            .with_key(format!("k{}", i % 5).into_bytes());
        pending.push(producer.enqueue(record).await.unwrap());
        if i % RECORDS_PER_WAVE == RECORDS_PER_WAVE - 1 {
            producer.flush().await.unwrap();
        }
    }
    for delivery in pending {
        let metadata = delivery.await.unwrap();
        assert_eq!(metadata.offset, None, "acks=0 has no offset");
    }
    producer.flush().await.unwrap();
    let mut with_records = 0;
    for partition in 0..2 {
        let batches = common::batch_base_offsets(broker.addr, "fire", partition).len();
        eprintln!("partition {partition}: {batches} batches");
        if batches > 0 {
            with_records += 1;
            assert!(
                batches >= BATCHES_PER_PARTITION_MIN,
                "partition {partition}: only {batches} batches, the order check proves little"
            );
        }
    }
    assert!(with_records > 0, "no batch written");

    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        ..ConsumerConfig::new(&bootstrap)
    })
    .unwrap();
    let partitions = consumer.topic_partitions("fire").await.unwrap();
    consumer.assign(&partitions);
    let records = common::receive(&mut consumer, 300, Duration::from_secs(20)).await;
    assert_eq!(records.len(), 300);
    assert!(consumer
        .poll(Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for record in &records {
        let mut fields = record.text().split(':');
        let (key, i) = (fields.next().unwrap(), fields.next().unwrap());
        let i: u32 = i.parse().unwrap();
        assert!(seen.insert(i), "{i} read twice");
        per_key.entry(key.to_owned()).or_default().push(i);
    }
    for (key, sequence) in &per_key {
        assert!(
            sequence.windows(2).all(|w| w[0] < w[1]),
            "key {key} out of order: {sequence:?}"
        );
    }
    producer.close().await.unwrap();
}

/// On the wire: after a produce with acks=0 the next frame on the connection is the answer
/// to the following request, so pipelining clients stay in step.
#[test]
fn no_response_frame_for_acks_zero() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("silent", 1, None);
    let mut builder = BatchBuilder::new();
    builder.push(1, None, b"unanswered", &[], None);
    let batch = builder.build().unwrap();
    conn.send(
        ApiKey::Produce,
        &ProduceRequest {
            acks: wire::Acks::None,
            timeout_ms: 5000,
            topics: vec![ProduceTopic {
                topic: "silent".into(),
                partitions: vec![ProducePartition {
                    partition: 0,
                    records: Records::from_slice(&batch),
                }],
            }],
        },
    );
    let id = conn.send(ApiKey::Metadata, &MetadataRequest { topics: None });
    let frame = conn.read_frame().unwrap();
    let (correlation_id, response) = decode_response::<MetadataResponse>(&frame).unwrap();
    assert_eq!(
        correlation_id, id,
        "the first frame answers the metadata request"
    );
    assert_eq!(response.unwrap().topics[0].name, "silent");
}
