//! Many clients at once against the real `sluice` binary: four independent producers (each
//! its own client, connections and sender task) write into an 8-partition topic while four
//! consumers, each assigned two partitions, read concurrently on a multi-thread runtime.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use client::partitioner::partition_for_key;
use client::{
    Admin, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use common::{Broker, Received};

const TOPIC: &str = "busy";
const PARTITIONS: u32 = 8;
const PRODUCERS: u32 = 4;
const PER_PRODUCER: u32 = 5_000;
/// Keys per producer: its records spread over every partition.
const KEYS_PER_PRODUCER: u32 = 64;
const CONSUMERS: u32 = 4;

fn key(producer: u32, seq: u32) -> String {
    format!("p{producer}-k{}", seq % KEYS_PER_PRODUCER)
}

fn value(producer: u32, seq: u32) -> Vec<u8> {
    format!("{producer}:{seq}").into_bytes()
}

fn parse(record: &Received) -> (u32, u32) {
    let (producer, seq) = record.text().split_once(':').unwrap();
    (producer.parse().unwrap(), seq.parse().unwrap())
}

/// 4 producers x 5,000 keyed records, sent concurrently with 4 consumers polling 2 partitions
/// each (consumers start before the producers). Checks: every acknowledged record is received
/// exactly once, by the consumer owning its partition, in the partition its key hashes to;
/// offsets of each partition are dense; within a partition each producer's records appear
/// in the order that producer sent them, across at least `2 × PRODUCERS` batches per
/// partition (so several batches of a producer were in flight together); and the producers'
/// batches really interleave in some partition (a producer's records, then another's, then
/// the first's again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_and_consumers() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    Admin::new(&bootstrap)
        .unwrap()
        .create_topic(NewTopic::new(TOPIC, PARTITIONS))
        .await
        .unwrap();

    // How many records each partition will get, from the key hash.
    let mut expected_per_partition = vec![0usize; PARTITIONS as usize];
    for producer in 0..PRODUCERS {
        for seq in 0..PER_PRODUCER {
            expected_per_partition
                [partition_for_key(key(producer, seq).as_bytes(), PARTITIONS) as usize] += 1;
        }
    }

    let mut consumers = Vec::new();
    for c in 0..CONSUMERS {
        let partitions: Vec<u32> = vec![2 * c, 2 * c + 1];
        let expected: usize = partitions
            .iter()
            .map(|p| expected_per_partition[*p as usize])
            .sum();
        let bootstrap = bootstrap.clone();
        consumers.push(tokio::spawn(async move {
            let mut consumer = Consumer::new(ConsumerConfig {
                fetch_max_wait: Duration::from_millis(100),
                ..ConsumerConfig::new(bootstrap)
            })
            .unwrap();
            let assignment: Vec<TopicPartition> = partitions
                .iter()
                .map(|p| TopicPartition::new(TOPIC, *p))
                .collect();
            consumer.assign(&assignment);
            for tp in &assignment {
                consumer.seek(tp, Offset::Earliest).unwrap();
            }
            let records = common::receive(&mut consumer, expected, Duration::from_secs(45)).await;
            // Nothing beyond what was produced.
            let extra = consumer.poll(Duration::from_millis(200)).await.unwrap();
            (partitions, expected, records, extra.len())
        }));
    }

    let mut producers = Vec::new();
    for producer_id in 0..PRODUCERS {
        let bootstrap = bootstrap.clone();
        producers.push(tokio::spawn(async move {
            let producer = Producer::new(ProducerConfig {
                linger: Duration::from_millis(2),
                batch_size_bytes: 16 * 1024,
                ..ProducerConfig::new(bootstrap)
            })
            .unwrap();
            let mut pending = Vec::with_capacity(PER_PRODUCER as usize);
            for seq in 0..PER_PRODUCER {
                let record = ProducerRecord::new(TOPIC, value(producer_id, seq))
                    .with_key(key(producer_id, seq).into_bytes());
                pending.push(producer.enqueue(record).await.unwrap());
            }
            let mut acknowledged = Vec::with_capacity(pending.len());
            for (seq, delivery) in pending.into_iter().enumerate() {
                let metadata = delivery.await.unwrap();
                acknowledged.push((seq as u32, metadata.partition, metadata.offset.unwrap()));
            }
            producer.close().await.unwrap();
            acknowledged
        }));
    }
    // (producer, seq) -> (partition, offset), from the acknowledgements.
    let mut acknowledged: HashMap<(u32, u32), (u32, u64)> = HashMap::new();
    for (producer_id, producer) in producers.into_iter().enumerate() {
        for (seq, partition, offset) in producer.await.unwrap() {
            acknowledged.insert((producer_id as u32, seq), (partition, offset));
        }
    }
    assert_eq!(acknowledged.len(), (PRODUCERS * PER_PRODUCER) as usize);

    let mut seen: HashSet<(u32, u32)> = HashSet::new();
    let mut per_partition: BTreeMap<u32, Vec<Received>> = BTreeMap::new();
    for consumer in consumers {
        let (partitions, expected, records, extra) = consumer.await.unwrap();
        assert_eq!(
            records.len(),
            expected,
            "consumer of {partitions:?} received {} of {expected}",
            records.len()
        );
        assert_eq!(
            extra, 0,
            "consumer of {partitions:?}: records beyond the end"
        );
        for record in records {
            assert!(partitions.contains(&record.partition));
            let (producer, seq) = parse(&record);
            assert!(
                seen.insert((producer, seq)),
                "{producer}:{seq} received twice"
            );
            assert_eq!(
                acknowledged[&(producer, seq)],
                (record.partition, record.offset),
                "{producer}:{seq} is where its acknowledgement said"
            );
            assert_eq!(record.key.as_deref(), Some(key(producer, seq).as_bytes()));
            per_partition
                .entry(record.partition)
                .or_default()
                .push(record);
        }
    }
    assert_eq!(seen.len(), (PRODUCERS * PER_PRODUCER) as usize);

    for partition in 0..PARTITIONS {
        let batches = common::batch_base_offsets(broker.addr, TOPIC, partition).len();
        eprintln!("partition {partition}: {batches} batches");
        assert!(
            batches >= 2 * PRODUCERS as usize,
            "partition {partition}: only {batches} batches, the order check proves little"
        );
    }
    let mut interleaved = false;

    for (partition, records) in &per_partition {
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (0..records.len() as u64).collect::<Vec<_>>(),
            "partition {partition}: dense offsets in read order"
        );
        let mut last: HashMap<u32, u32> = HashMap::new();
        for record in records {
            let (producer, seq) = parse(record);
            if let Some(previous) = last.insert(producer, seq) {
                assert!(
                    previous < seq,
                    "partition {partition}: producer {producer} seq {seq} after {previous}"
                );
            }
        }
        // Every producer wrote into every partition.
        assert_eq!(last.len(), PRODUCERS as usize, "partition {partition}");
        // Runs of one producer's records: more runs than producers means some producer's
        // records came, then another's, then its own again.
        let mut runs = 0;
        let mut previous = None;
        for record in records {
            let (producer, _) = parse(record);
            if previous != Some(producer) {
                runs += 1;
                previous = Some(producer);
            }
        }
        interleaved |= runs > PRODUCERS as usize;
    }
    assert!(
        interleaved,
        "in every partition each producer's records are one run: the producers took turns, \
         nothing ran concurrently"
    );
}
