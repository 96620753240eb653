//! `send_batch` and `send` against the real `sluice` binary: batches built in the caller from
//! borrowed bytes and records sent one by one to the same partition land in call order, each
//! batch's records at consecutive offsets from its acknowledged base, byte-identical (keys,
//! values, headers, tags, timestamps); and a consumer whose fetches are small (so the next
//! fetch is pipelined behind every poll many times over) reads every record once, in offset
//! order, without a gap.
//!
//! The broker is the workspace's `target/debug/sluice` (`cargo build -p sluice-broker --bin
//! sluice`); the test fails with that instruction if it is missing.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use client::{
    Admin, BatchRecord, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig,
    ProducerRecord,
};

/// Rounds of (a few `send` records, then one `send_batch`) per partition.
const ROUNDS: usize = 20;
/// Records per `send_batch` call.
const BATCH_RECORDS: usize = 150;
/// `send` records between two batches.
const SINGLE_RECORDS: usize = 3;
/// Partitions of the topic; both get the same traffic.
const PARTITIONS: u32 = 2;

/// The broker process, killed on drop.
struct Broker {
    child: Child,
    addr: String,
    _data: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let binary: PathBuf = root.join("target/debug/sluice");
        assert!(
            binary.exists(),
            "{} is missing: build it with `cargo build -p sluice --bin sluice`",
            binary.display()
        );
        // On the real disk (O_DIRECT), never tmpfs.
        let base = root.join("target/test-data");
        std::fs::create_dir_all(&base).unwrap();
        let data = tempfile::tempdir_in(&base).unwrap();
        let mut child = Command::new(binary)
            .args(["serve", "--data-dir"])
            .arg(data.path())
            .args(["--listen", "127.0.0.1:0", "--cores", "2", "--log", "warn"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("sluice listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("broker did not start: {line:?}"))
            .to_owned();
        Broker {
            child,
            addr,
            _data: data,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the test expects at one offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    tags: Vec<String>,
    timestamp_ms: i64,
}

const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_records_land_in_order_and_read_back_identical() {
    let broker = Broker::start();
    let admin = Admin::new(&broker.addr).unwrap();
    admin
        .create_topic(NewTopic::new("events", PARTITIONS))
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        linger: Duration::from_millis(1),
        ..ProducerConfig::new(&broker.addr)
    })
    .unwrap();

    // Per partition, in call order: what each send was, and its delivery.
    let mut expected: Vec<Vec<Expected>> = vec![Vec::new(); PARTITIONS as usize];
    let mut singles = Vec::new();
    let mut batches = Vec::new();
    for round in 0..ROUNDS {
        for partition in 0..PARTITIONS {
            let sent = &mut expected[partition as usize];
            for i in 0..SINGLE_RECORDS {
                let value = format!("single p{partition} r{round} i{i}").into_bytes();
                let timestamp_ms = BASE_TIMESTAMP_MS + (round * 10 + i) as i64;
                let record = ProducerRecord::new("events", value.clone())
                    .with_partition(partition)
                    .with_key(format!("k{i}").into_bytes())
                    .with_header("h", vec![i as u8; i])
                    .with_tag("single")
                    .with_timestamp_ms(timestamp_ms);
                singles.push((
                    partition,
                    sent.len(),
                    producer.enqueue(record).await.unwrap(),
                ));
                sent.push(Expected {
                    key: Some(format!("k{i}").into_bytes()),
                    value,
                    headers: vec![("h".to_owned(), vec![i as u8; i])],
                    tags: vec!["single".to_owned()],
                    timestamp_ms,
                });
            }
            // One shared buffer the batch's values are slices of (as `&bytes[..]` would be).
            let mut arena = Vec::new();
            let mut spans = Vec::new();
            for i in 0..BATCH_RECORDS {
                let start = arena.len();
                arena.extend_from_slice(format!("batch p{partition} r{round} i{i} ").as_bytes());
                arena.resize(arena.len() + i % 40, b'x');
                spans.push(start..arena.len());
            }
            let headers: [(&str, &[u8]); 1] = [("round", b"r")];
            let tags = ["batch"];
            let records = spans.iter().enumerate().map(|(i, span)| {
                let record = BatchRecord::new(&arena[span.clone()])
                    .with_headers(&headers)
                    .with_tags(&tags)
                    .with_timestamp_ms(BASE_TIMESTAMP_MS + round as i64 * 10 + 5);
                if i % 2 == 0 {
                    record.with_key(b"even")
                } else {
                    record
                }
            });
            let enqueued = producer.enqueue_batch("events", partition, records);
            batches.push((partition, sent.len(), enqueued.await.unwrap()));
            for (i, span) in spans.iter().enumerate() {
                sent.push(Expected {
                    key: (i % 2 == 0).then(|| b"even".to_vec()),
                    value: arena[span.clone()].to_vec(),
                    headers: vec![("round".to_owned(), b"r".to_vec())],
                    tags: vec!["batch".to_owned()],
                    timestamp_ms: BASE_TIMESTAMP_MS + round as i64 * 10 + 5,
                });
            }
        }
    }
    // Every offset the acknowledgements report is the record's index in call order: the
    // partition's records landed in call order, batches at consecutive offsets.
    for (partition, index, delivery) in singles {
        let metadata = delivery.await.unwrap();
        assert_eq!(metadata.partition, partition);
        assert_eq!(metadata.offset, Some(index as u64));
    }
    for (partition, index, delivery) in batches {
        let metadata = delivery.await.unwrap();
        assert_eq!(metadata.partition, partition);
        assert_eq!(metadata.record_count as usize, BATCH_RECORDS);
        assert_eq!(metadata.base_offset, Some(index as u64));
        assert_eq!(metadata.offset(1), Some(index as u64 + 1));
    }
    producer.close().await.unwrap();

    // Small fetches: about 4 KiB per partition per fetch, so hundreds of pipelined fetches.
    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(50),
        partition_max_bytes: 4096,
        ..ConsumerConfig::new(&broker.addr)
    })
    .unwrap();
    let partitions = consumer.topic_partitions("events").await.unwrap();
    consumer.assign(&partitions);
    for tp in &partitions {
        consumer.seek(tp, Offset::Earliest).unwrap();
    }
    let total: usize = expected.iter().map(Vec::len).sum();
    let mut next_offset: HashMap<u32, u64> = HashMap::new();
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{received} of {total} records read"
        );
        let records = consumer.poll(Duration::from_secs(1)).await.unwrap();
        for record in &records {
            let next = next_offset.entry(record.partition).or_insert(0);
            assert_eq!(
                record.offset, *next,
                "partition {} skipped or reordered",
                record.partition
            );
            *next += 1;
            let want = &expected[record.partition as usize][record.offset as usize];
            let got = Expected {
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.to_vec(),
                headers: record
                    .headers
                    .iter()
                    .map(|(name, value)| (name.to_owned(), value.to_vec()))
                    .collect(),
                tags: record.tags.iter().map(str::to_owned).collect(),
                timestamp_ms: record.timestamp_ms,
            };
            assert_eq!(
                &got, want,
                "partition {} offset {}",
                record.partition, record.offset
            );
            received += 1;
        }
    }
    assert_eq!(received, total);
    let extra = consumer.poll(Duration::from_millis(300)).await.unwrap();
    assert!(
        extra.is_empty(),
        "{} records after the last one",
        extra.len()
    );
}

/// With a producer buffer of about three batches, `enqueue_batch` waits for room; every batch
/// still lands, in call order, at consecutive offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_batch_waits_for_buffer_room_and_keeps_order() {
    const BATCHES: u64 = 40;
    const RECORDS: u64 = 20;
    const VALUE_BYTES: usize = 1000;
    let broker = Broker::start();
    let admin = Admin::new(&broker.addr).unwrap();
    admin.create_topic(NewTopic::new("small", 1)).await.unwrap();
    let producer = Producer::new(ProducerConfig {
        // About three batches of 20 x 1 KB.
        max_buffered_bytes: 64 * 1024,
        ..ProducerConfig::new(&broker.addr)
    })
    .unwrap();
    let mut deliveries = Vec::new();
    for batch in 0..BATCHES {
        let values: Vec<Vec<u8>> = (0..RECORDS)
            .map(|i| {
                let mut value = format!("{batch}/{i}").into_bytes();
                value.resize(VALUE_BYTES, b'.');
                value
            })
            .collect();
        let records = values.iter().map(|value| BatchRecord::new(value));
        deliveries.push(producer.enqueue_batch("small", 0, records).await.unwrap());
    }
    for (batch, delivery) in deliveries.into_iter().enumerate() {
        let metadata = delivery.await.unwrap();
        assert_eq!(metadata.base_offset, Some(batch as u64 * RECORDS));
    }
    producer.close().await.unwrap();

    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(50),
        ..ConsumerConfig::new(&broker.addr)
    })
    .unwrap();
    let partitions = consumer.topic_partitions("small").await.unwrap();
    consumer.assign(&partitions);
    consumer.seek(&partitions[0], Offset::Earliest).unwrap();
    let total = BATCHES * RECORDS;
    let mut next = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while next < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{next} of {total} records read"
        );
        for record in &consumer.poll(Duration::from_secs(1)).await.unwrap() {
            assert_eq!(record.offset, next);
            let prefix = format!("{}/{}.", next / RECORDS, next % RECORDS);
            assert!(record.value.starts_with(prefix.as_bytes()), "offset {next}");
            next += 1;
        }
    }
}
