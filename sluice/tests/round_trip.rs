//! The native client against the real `sluice` binary: records sent by the `Producer` come
//! back from the `Consumer` exactly once, in send order per partition, keyed records in the
//! partition their key hashes to; and every way of positioning a consumer (`Latest`,
//! `Timestamp`, `At`, and an offset outside the log) lands where it says.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use client::partitioner::partition_for_key;
use client::{
    Admin, ClientError, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition, LATEST_TIMESTAMP,
};
use common::{receive, Broker, Received};

const PARTITIONS: u32 = 6;
const KEYS: u32 = 20;
const PER_KEY: u32 = 50;
/// Keyless records sent in each round, next to one record per key.
const KEYLESS_PER_ROUND: u32 = 6;
/// Rounds between two waits for every acknowledgement so far: a wave is 10 × 26 = 260
/// records, about 43 per partition, 9 KB each: several 1 KiB batches per partition, which
/// the producer has in flight together (up to `max_in_flight_per_partition`, 5).
const ROUNDS_PER_WAVE: u32 = 10;
/// Bytes of every value (padded), so that a partition's records of one wave fill several
/// batches of [`BATCH_SIZE_BYTES`].
const VALUE_BYTES: usize = 200;
/// The producer's batch size: the smallest it accepts, about 4 records of [`VALUE_BYTES`].
const BATCH_SIZE_BYTES: usize = 1024;
/// Fewest batches each partition must end with, so that the order checks cover records of
/// batches the producer had in flight at the same time: 5 waves of one batch or more each,
/// and at least two in most.
const BATCHES_PER_PARTITION_MIN: usize = 10;

fn consumer_config(bootstrap: &str) -> ConsumerConfig {
    ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        ..ConsumerConfig::new(bootstrap)
    }
}

/// What the test sent, recovered from a value: `i=<send index> key=<k or -> seq=<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    index: u32,
    key: Option<u32>,
    seq: u32,
}

/// `i=<index> key=<k or -> seq=<n> pad=…`, padded to [`VALUE_BYTES`].
fn encode(sent: Sent) -> Vec<u8> {
    let key = sent.key.map_or_else(|| "-".to_owned(), |k| k.to_string());
    let mut value = format!("i={} key={key} seq={} pad=", sent.index, sent.seq);
    value.extend(std::iter::repeat_n(
        '.',
        VALUE_BYTES.saturating_sub(value.len()),
    ));
    value.into_bytes()
}

fn decode(value: &[u8]) -> Sent {
    let text = std::str::from_utf8(value).unwrap();
    let mut fields = text.split(' ').map(|f| f.split_once('=').unwrap().1);
    let index = fields.next().unwrap().parse().unwrap();
    let key = match fields.next().unwrap() {
        "-" => None,
        k => Some(k.parse().unwrap()),
    };
    let seq = fields.next().unwrap().parse().unwrap();
    Sent { index, key, seq }
}

/// 20 keys x 50 records plus 300 keyless ones of 200 bytes on a 6-partition topic, sent in 5
/// waves (every future awaited after each) in 1 KiB batches, so that several batches of a
/// partition are in flight at once; then read by one consumer assigned all 6 partitions from
/// `Earliest`.
///
/// Checks: every partition holds at least 10 batches (the order promise is checked across
/// batches in flight together); every record exactly once (nothing more after the last);
/// offsets per partition are dense from 0 and follow send order; each record is where its acknowledgement said; every
/// key lives in exactly one partition, `partition_for_key(key, 6)`, with its sequence numbers
/// in order; headers survive; keyless records were spread over several partitions (sticky
/// partitioning moves on once a batch is sent); and the consumer's positions and the admin's
/// log end offsets agree with what was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_once_in_order_keys_in_their_partition() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    let admin = Admin::new(&bootstrap).unwrap();
    admin
        .create_topic(NewTopic::new("orders", PARTITIONS))
        .await
        .unwrap();

    let producer = Producer::new(ProducerConfig {
        linger: Duration::from_millis(2),
        batch_size_bytes: BATCH_SIZE_BYTES,
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    let mut sent: Vec<Sent> = Vec::new();
    // Send index -> (partition, offset) from the acknowledgements.
    let mut acknowledged: HashMap<u32, (u32, u64)> = HashMap::new();
    let mut keyless_seq = 0;
    let mut pending = Vec::new();
    for round in 0..PER_KEY {
        for key in 0..KEYS {
            let item = Sent {
                index: sent.len() as u32,
                key: Some(key),
                seq: round,
            };
            let record = ProducerRecord::new("orders", encode(item))
                .with_key(format!("key-{key}").into_bytes())
                .with_header("seq", round.to_le_bytes().to_vec());
            pending.push((item.index, producer.enqueue(record).await.unwrap()));
            sent.push(item);
        }
        for _ in 0..KEYLESS_PER_ROUND {
            let item = Sent {
                index: sent.len() as u32,
                key: None,
                seq: keyless_seq,
            };
            keyless_seq += 1;
            let record = ProducerRecord::new("orders", encode(item));
            pending.push((item.index, producer.enqueue(record).await.unwrap()));
            sent.push(item);
        }
        if round % ROUNDS_PER_WAVE == ROUNDS_PER_WAVE - 1 {
            for (index, delivery) in pending.drain(..) {
                let metadata = delivery.await.unwrap();
                assert_eq!(&*metadata.topic, "orders");
                acknowledged.insert(index, (metadata.partition, metadata.offset.unwrap()));
            }
        }
    }
    assert!(pending.is_empty());
    let total = sent.len();
    assert_eq!(total, ((KEYS + KEYLESS_PER_ROUND) * PER_KEY) as usize);
    producer.close().await.unwrap();
    for partition in 0..PARTITIONS {
        let batches = common::batch_base_offsets(broker.addr, "orders", partition).len();
        eprintln!("partition {partition}: {batches} batches");
        assert!(
            batches >= BATCHES_PER_PARTITION_MIN,
            "partition {partition}: only {batches} batches, the order check proves little"
        );
    }

    let mut consumer = Consumer::new(consumer_config(&bootstrap)).unwrap();
    let partitions = consumer.topic_partitions("orders").await.unwrap();
    assert_eq!(partitions.len(), PARTITIONS as usize);
    consumer.assign(&partitions);
    for tp in &partitions {
        consumer.seek(tp, Offset::Earliest).unwrap();
    }
    let records = receive(&mut consumer, total, Duration::from_secs(60)).await;
    assert_eq!(records.len(), total, "every record, each once");
    let extra = consumer.poll(Duration::from_millis(300)).await.unwrap();
    assert!(
        extra.is_empty(),
        "{} records after the last one",
        extra.len()
    );

    let mut by_partition: BTreeMap<u32, Vec<&Received>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for record in &records {
        let item = decode(&record.value);
        assert!(seen.insert(item.index), "{item:?} read twice");
        assert_eq!(item, sent[item.index as usize], "value intact");
        assert_eq!(
            acknowledged[&item.index],
            (record.partition, record.offset),
            "{item:?} is where its acknowledgement said"
        );
        match item.key {
            Some(key) => {
                let key_bytes = format!("key-{key}").into_bytes();
                assert_eq!(record.key.as_deref(), Some(&key_bytes[..]));
                assert_eq!(
                    record.partition,
                    partition_for_key(&key_bytes, PARTITIONS),
                    "key-{key} in its hash partition"
                );
            }
            None => assert_eq!(record.key, None),
        }
        by_partition
            .entry(record.partition)
            .or_default()
            .push(record);
    }

    let mut key_partitions: HashMap<u32, HashSet<u32>> = HashMap::new();
    let mut keyless_partitions = HashSet::new();
    for (partition, records) in &by_partition {
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..records.len() as u64).collect::<Vec<_>>(),
            "partition {partition}: dense offsets in read order"
        );
        let indexes: Vec<u32> = records.iter().map(|r| decode(&r.value).index).collect();
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}: read order is send order"
        );
        let mut last_seq: HashMap<Option<u32>, u32> = HashMap::new();
        for record in records {
            let item = decode(&record.value);
            if let Some(previous) = last_seq.insert(item.key, item.seq) {
                assert!(
                    previous < item.seq,
                    "partition {partition}: {item:?} after seq {previous}"
                );
            }
            match item.key {
                Some(key) => {
                    key_partitions.entry(key).or_default().insert(*partition);
                }
                None => {
                    keyless_partitions.insert(*partition);
                }
            }
        }
        let position = consumer
            .position(&TopicPartition::new("orders", *partition))
            .await
            .unwrap();
        assert_eq!(position, records.len() as u64, "partition {partition}");
    }
    assert_eq!(key_partitions.len(), KEYS as usize);
    for (key, partitions) in &key_partitions {
        assert_eq!(partitions.len(), 1, "key-{key} in {partitions:?}");
    }
    // 50 rounds of keyless records: a sticky partitioner that never moves would put them all in
    // one partition.
    assert!(
        keyless_partitions.len() > 1,
        "keyless records all went to {keyless_partitions:?}"
    );

    let description = admin.describe_topic("orders").await.unwrap();
    assert_eq!(description.partitions.len(), PARTITIONS as usize);
    for partition in &description.partitions {
        let read = by_partition.get(&partition.partition).map_or(0, Vec::len);
        assert_eq!(partition.log_start_offset, Some(0));
        assert_eq!(partition.log_end_offset, Some(read as u64));
    }
}

/// Keyed records carry their headers and tags through the broker unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_tags_round_trip() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    Admin::new(&bootstrap)
        .unwrap()
        .create_topic(NewTopic::new("annotated", 2))
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig::new(&bootstrap)).unwrap();
    let record = ProducerRecord::new("annotated", b"payload".to_vec())
        .with_key(b"k".to_vec())
        .with_header("trace", b"abc".to_vec())
        .with_header("empty", Vec::new())
        .with_tag("urgent")
        .with_timestamp_ms(1_234_567);
    let metadata = producer.send(record).await.unwrap();
    let mut consumer = Consumer::new(consumer_config(&bootstrap)).unwrap();
    let tp = TopicPartition::new("annotated", metadata.partition);
    consumer.assign(std::slice::from_ref(&tp));
    // Poll until the record is there (the first polls may come back empty on a loaded
    // machine), for at most a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = consumer.poll(Duration::from_secs(1)).await.unwrap();
        if !records.is_empty() {
            break records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the record never arrived"
        );
    };
    let record = records.iter().next().unwrap();
    assert_eq!(record.value, b"payload");
    assert_eq!(record.key, Some(&b"k"[..]));
    assert_eq!(record.timestamp_ms, 1_234_567);
    assert_eq!(
        record.headers.iter().collect::<Vec<_>>(),
        vec![("trace", &b"abc"[..]), ("empty", &b""[..])]
    );
    assert_eq!(record.tags.iter().collect::<Vec<_>>(), vec!["urgent"]);
    assert_eq!(records.len(), 1);
}

/// One partition of 40 records with timestamps `base + 10 * i`, written as four batches of ten
/// (checked: batches start at offsets 0, 10, 20, 30). Checks every seek: `Latest` reads only what is produced afterwards; `Timestamp(t)` starts at
/// the first record at or after `t`, also in the middle of a batch, at 0 before everything and
/// at the log end after everything; `At(n)` starts at `n`; an offset beyond the log end is an
/// `OffsetOutOfRange` error naming the log's bounds, leaves the position alone, and a seek to
/// `Earliest` recovers. The admin's offset lookups agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeks_land_where_they_say() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    let admin = Admin::new(&bootstrap).unwrap();
    admin.create_topic(NewTopic::new("seek", 1)).await.unwrap();
    // Each group of ten is enqueued at once and cut by the linger: far longer than enqueueing
    // ten records takes, even on a loaded machine.
    let producer = Producer::new(ProducerConfig {
        linger: Duration::from_millis(200),
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    let base = common::now_ms() - 60_000;
    for batch in 0..4i64 {
        let mut pending = Vec::new();
        for j in 0..10i64 {
            let i = batch * 10 + j;
            let record = ProducerRecord::new("seek", format!("r{i}").into_bytes())
                .with_partition(0)
                .with_timestamp_ms(base + 10 * i);
            pending.push(producer.enqueue(record).await.unwrap());
        }
        for (j, delivery) in pending.into_iter().enumerate() {
            let offset = delivery.await.unwrap().offset.unwrap();
            assert_eq!(offset, (batch * 10) as u64 + j as u64);
        }
    }
    assert_eq!(
        common::batch_base_offsets(broker.addr, "seek", 0),
        [0, 10, 20, 30],
        "four batches of ten"
    );

    let tp = TopicPartition::new("seek", 0);
    let mut consumer = Consumer::new(consumer_config(&bootstrap)).unwrap();
    consumer.assign(std::slice::from_ref(&tp));
    assert_eq!(
        consumer.position(&tp).await.unwrap(),
        0,
        "Earliest by default"
    );

    // Latest: only what comes after the seek.
    consumer.seek(&tp, Offset::Latest).unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 40);
    assert!(consumer
        .poll(Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    let new = producer
        .send(ProducerRecord::new("seek", b"new".to_vec()).with_partition(0))
        .await
        .unwrap();
    assert_eq!(new.offset, Some(40));
    let records = receive(&mut consumer, 1, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].offset, records[0].text()), (40, "new"));
    assert!(consumer
        .poll(Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());

    // Timestamp: the first record at or after the time, inside a batch or at its start.
    for (time, expected) in [
        (base + 125, 13),
        (base + 130, 13),
        (base + 200, 20),
        (base - 1, 0),
        (common::now_ms() + 3_600_000, 41),
    ] {
        consumer.seek(&tp, Offset::Timestamp(time)).unwrap();
        assert_eq!(
            consumer.position(&tp).await.unwrap(),
            expected,
            "Timestamp(base{:+})",
            time - base
        );
        assert_eq!(
            admin.list_offsets(&tp, time).await.unwrap(),
            expected,
            "admin lookup of base{:+}",
            time - base
        );
    }
    consumer.seek(&tp, Offset::Timestamp(base + 125)).unwrap();
    let records = receive(&mut consumer, 41 - 13, Duration::from_secs(60)).await;
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (13..41).collect::<Vec<_>>());
    assert_eq!(records[0].timestamp_ms, base + 130);
    assert_eq!(records[0].text(), "r13");

    // At: exactly there, also in the middle of a batch.
    consumer.seek(&tp, Offset::At(17)).unwrap();
    let records = receive(&mut consumer, 41 - 17, Duration::from_secs(60)).await;
    let values: Vec<&str> = records.iter().map(Received::text).collect();
    let mut expected: Vec<String> = (17..40).map(|i| format!("r{i}")).collect();
    expected.push("new".into());
    assert_eq!(values, expected);

    // Beyond the log end: a clear error, no silent reset.
    consumer.seek(&tp, Offset::At(1_000)).unwrap();
    let error = consumer.poll(Duration::from_secs(30)).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::OffsetOutOfRange {
                offset: 1_000,
                log_start_offset: 0,
                high_watermark: 41,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        consumer.position(&tp).await.unwrap(),
        1_000,
        "no silent reset"
    );
    consumer.seek(&tp, Offset::Earliest).unwrap();
    let records = receive(&mut consumer, 41, Duration::from_secs(60)).await;
    assert_eq!(records.len(), 41);
    assert_eq!(records[0].offset, 0);
    assert_eq!(records[0].text(), "r0");

    assert_eq!(admin.list_offsets(&tp, LATEST_TIMESTAMP).await.unwrap(), 41);
    let description = admin.describe_topic("seek").await.unwrap();
    assert_eq!(description.partitions[0].log_start_offset, Some(0));
    assert_eq!(description.partitions[0].log_end_offset, Some(41));
}
