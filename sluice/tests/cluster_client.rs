//! The native client following the cluster, against one real `sluice` process: several
//! bootstrap addresses with a dead first one, a producer that learns a topic's new partitions
//! from its periodic metadata refresh (no error tells it), and `min_insync_replicas` reaching
//! the broker. Multi-broker behaviour (failover, reassignment) is tested elsewhere.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use client::{
    Acks, Admin, AdminConfig, ClientError, Consumer, ConsumerConfig, ErrorCode, NewTopic, Producer,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use common::{receive, Broker};

/// Longest wait for a condition that normally holds within a second (a metadata refresh
/// every 200 ms): generous for a loaded machine.
const CONDITION_DEADLINE: Duration = Duration::from_secs(30);

/// `dead,live` as bootstrap: a port nobody listens on first. Admin, idempotent producer and
/// consumer all work through the second address, request after request (the dead one is
/// refused at once, then skipped while its reconnection backoff runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_skips_a_dead_first_address() {
    let broker = Broker::start(&[]);
    let dead = format!("127.0.0.1:{}", common::free_port());
    let bootstrap = format!("{dead},{}", broker.addr);
    let admin = Admin::with_config(AdminConfig {
        request_timeout: Duration::from_secs(10),
        ..AdminConfig::new(&bootstrap)
    })
    .unwrap();
    admin.create_topic(NewTopic::new("boot", 2)).await.unwrap();
    for _ in 0..5 {
        let names: Vec<String> = admin
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["boot"]);
    }
    let producer = Producer::new(ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    for n in 0..10u32 {
        let record =
            ProducerRecord::new("boot", format!("m{n}").into_bytes()).with_partition(n % 2);
        producer.send(record).await.unwrap();
    }
    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        ..ConsumerConfig::new(&bootstrap)
    })
    .unwrap();
    consumer.assign(&[
        TopicPartition::new("boot", 0),
        TopicPartition::new("boot", 1),
    ]);
    let read = receive(&mut consumer, 10, Duration::from_secs(20)).await;
    assert_eq!(read.len(), 10);
    producer.close().await.unwrap();
}

/// A producer with `metadata_max_age` 200 ms, created while the topic has 2 partitions,
/// learns of partitions 2 and 3 after `create_partitions` with no error to trigger a refresh:
/// sends to partition 3 fail with `UnknownPartition` (which refreshes nothing) until the
/// periodic refresh, then succeed; a consumer reads them there. (Needs the broker's
/// CreatePartitions.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_learns_new_partitions_by_periodic_refresh() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    let admin = Admin::new(&bootstrap).unwrap();
    admin.create_topic(NewTopic::new("grow", 2)).await.unwrap();
    let producer = Producer::new(ProducerConfig {
        metadata_max_age: Duration::from_millis(200),
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    producer
        .send(ProducerRecord::new("grow", b"before".to_vec()).with_partition(1))
        .await
        .unwrap();
    admin.create_partitions("grow", 4).await.unwrap();
    let description = admin.describe_topic("grow").await.unwrap();
    assert_eq!(description.partitions.len(), 4);

    let deadline = Instant::now() + CONDITION_DEADLINE;
    let landed = loop {
        let record = ProducerRecord::new("grow", b"after".to_vec()).with_partition(3);
        match producer.send(record).await {
            Ok(metadata) => break metadata,
            Err(ClientError::UnknownPartition { partitions: 2, .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "the producer never refreshed its metadata"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    };
    assert_eq!((landed.partition, landed.offset), (3, Some(0)));

    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        ..ConsumerConfig::new(&bootstrap)
    })
    .unwrap();
    consumer.assign(&[TopicPartition::new("grow", 3)]);
    let read = receive(&mut consumer, 1, Duration::from_secs(20)).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].text(), "after");
    assert!(
        admin.create_partitions("grow", 3).await.is_err(),
        "partitions are never removed"
    );
    producer.close().await.unwrap();
}

/// The periodic refresh without cluster APIs: the topic is deleted and created again with 4
/// partitions instead of 2 behind the back of a producer with `metadata_max_age` 200 ms;
/// sends to partition 3 fail with `UnknownPartition` (no refresh) until the periodic refresh
/// brings the new partition count, then land at offset 0 of the new topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_learns_a_recreated_topic_by_periodic_refresh() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    let admin = Admin::new(&bootstrap).unwrap();
    admin.create_topic(NewTopic::new("again", 2)).await.unwrap();
    let producer = Producer::new(ProducerConfig {
        metadata_max_age: Duration::from_millis(200),
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    producer
        .send(ProducerRecord::new("again", b"first".to_vec()).with_partition(1))
        .await
        .unwrap();
    let refused = producer
        .send(ProducerRecord::new("again", b"early".to_vec()).with_partition(3))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::UnknownPartition { partitions: 2, .. }),
        "{refused}"
    );
    admin.delete_topic("again").await.unwrap();
    admin.create_topic(NewTopic::new("again", 4)).await.unwrap();
    let deadline = Instant::now() + CONDITION_DEADLINE;
    let landed = loop {
        let record = ProducerRecord::new("again", b"after".to_vec()).with_partition(3);
        match producer.send(record).await {
            Ok(metadata) => break metadata,
            Err(ClientError::UnknownPartition { partitions: 2, .. }) => {
                assert!(
                    Instant::now() < deadline,
                    "the producer never refreshed its metadata"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    };
    assert_eq!((landed.partition, landed.offset), (3, Some(0)));
    producer.close().await.unwrap();
}

/// `partition_placement` (what `cluster decommission` plans from) lists every partition of
/// every topic with its replicas, `__consumer_offsets` included though "every topic" listings
/// leave it out, sorted, each on the one broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_covers_user_and_internal_topics() {
    let broker = Broker::start(&[]);
    let admin = Admin::new(broker.addr.to_string()).unwrap();
    admin.create_topic(NewTopic::new("b", 2)).await.unwrap();
    admin.create_topic(NewTopic::new("a", 1)).await.unwrap();
    let leader = admin.describe_topic("a").await.unwrap().partitions[0]
        .leader
        .unwrap();
    let placement = admin.partition_placement().await.unwrap();
    let names: Vec<String> = placement.iter().map(|p| p.partition.to_string()).collect();
    let offsets = admin
        .describe_topic(client::CONSUMER_OFFSETS_TOPIC)
        .await
        .unwrap()
        .partitions
        .len();
    assert!(offsets > 0);
    let mut expected: Vec<String> = (0..offsets)
        .map(|p| format!("{}/{p}", client::CONSUMER_OFFSETS_TOPIC))
        .collect();
    expected.sort();
    expected.extend(["a/0".to_owned(), "b/0".to_owned(), "b/1".to_owned()]);
    let mut sorted_names = names.clone();
    sorted_names.sort();
    assert_eq!(names, sorted_names, "sorted");
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(names, expected_sorted);
    assert!(
        placement.iter().all(|p| p.replicas == [leader]),
        "{placement:?}"
    );
}

/// `min_insync_replicas` 2 on a one-broker cluster reaches the broker: either the topic is
/// refused (`InvalidConfig`), or it is created and an acks=all write is refused with
/// `NotEnoughReplicas` (only one replica can ever be in sync), as Kafka does. Either way the
/// setting was not dropped on the way. (Needs the broker's min.insync.replicas.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_insync_replicas_reaches_the_broker() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    let admin = Admin::new(&bootstrap).unwrap();
    let created = admin
        .create_topic(NewTopic::new("strict", 1).with_min_insync_replicas(2))
        .await;
    match created {
        Err(error) => assert_eq!(error.code(), Some(ErrorCode::InvalidConfig), "{error}"),
        Ok(()) => {
            let producer = Producer::new(ProducerConfig {
                acks: Acks::All,
                retries: 1,
                retry_backoff: Duration::from_millis(10),
                ..ProducerConfig::new(&bootstrap)
            })
            .unwrap();
            let error = producer
                .send(ProducerRecord::new("strict", b"x".to_vec()))
                .await
                .unwrap_err();
            assert_eq!(error.code(), Some(ErrorCode::NotEnoughReplicas), "{error}");
            producer.close().await.unwrap();
        }
    }
    // The same topic without the setting takes acks=all writes.
    admin
        .create_topic(NewTopic::new("lenient", 1))
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    producer
        .send(ProducerRecord::new("lenient", b"x".to_vec()))
        .await
        .unwrap();
    producer.close().await.unwrap();
}
