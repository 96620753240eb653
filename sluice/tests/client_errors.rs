//! Errors the native client reports against the real `sluice` binary: admin refusals carry
//! the broker's error code, unknown topics and partitions are typed errors for the admin, the
//! producer and the consumer alike, and none of them hangs.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use client::{
    Admin, ClientError, Consumer, ConsumerConfig, ErrorCode, NewTopic, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};
use common::Broker;

/// Admin calls: creating an existing topic fails with `TopicAlreadyExists`, invalid names and
/// replication factors with `InvalidConfig`; `list_topics` is sorted; describing or deleting
/// an unknown topic is `UnknownTopic`; a deleted topic disappears, and one recreated under
/// the same name starts empty (its old data is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_errors() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    let admin = Admin::new(&bootstrap).unwrap();
    admin.create_topic(NewTopic::new("b", 3)).await.unwrap();
    admin.create_topic(NewTopic::new("a", 1)).await.unwrap();

    let duplicate = admin.create_topic(NewTopic::new("a", 2)).await.unwrap_err();
    assert_eq!(
        duplicate.code(),
        Some(ErrorCode::TopicAlreadyExists),
        "{duplicate}"
    );
    for bad in [
        NewTopic::new("bad/name", 1),
        NewTopic::new("__internal", 1),
        NewTopic::new("replicated", 1).with_replication_factor(3),
    ] {
        let name = bad.name.clone();
        let error = admin.create_topic(bad).await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(ErrorCode::InvalidConfig),
            "{name}: {error}"
        );
    }
    let names: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["a", "b"], "sorted, refused ones absent");

    assert!(matches!(
        admin.describe_topic("nope").await,
        Err(ClientError::UnknownTopic { .. })
    ));
    assert!(matches!(
        admin.delete_topic("nope").await,
        Err(ClientError::UnknownTopic { .. })
    ));

    // Some data in "a", then delete it: gone from the list, a second delete is an error.
    let producer = Producer::new(ProducerConfig::new(&bootstrap)).unwrap();
    for i in 0..5u8 {
        producer
            .send(ProducerRecord::new("a", vec![i]))
            .await
            .unwrap();
    }
    admin.delete_topic("a").await.unwrap();
    assert!(matches!(
        admin.delete_topic("a").await,
        Err(ClientError::UnknownTopic { .. })
    ));
    let names: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["b"]);

    admin.create_topic(NewTopic::new("a", 1)).await.unwrap();
    let description = admin.describe_topic("a").await.unwrap();
    assert_eq!(description.partitions.len(), 1);
    assert_eq!(description.partitions[0].log_start_offset, Some(0));
    assert_eq!(
        description.partitions[0].log_end_offset,
        Some(0),
        "a recreated topic starts empty"
    );
}

/// Producer and consumer: a record for an unknown topic fails with `UnknownTopic` after the
/// producer's metadata retries; an explicit partition beyond the topic's count fails with
/// `UnknownPartition` naming the count; a record larger than the topic's batch limit is
/// `RecordTooLarge` while smaller ones still go through; a consumer assigned an unknown topic
/// or partition gets the same typed errors from `poll`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_partitions() {
    let broker = Broker::start(&[]);
    let bootstrap = broker.addr.to_string();
    let admin = Admin::new(&bootstrap).unwrap();
    admin.create_topic(NewTopic::new("b", 3)).await.unwrap();
    admin
        .create_topic(NewTopic {
            max_batch_bytes: Some(4096),
            ..NewTopic::new("small", 1)
        })
        .await
        .unwrap();

    let producer = Producer::new(ProducerConfig {
        retries: 2,
        retry_backoff: Duration::from_millis(20),
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    let error = producer
        .send(ProducerRecord::new("nope", b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::UnknownTopic { topic } if topic == "nope"),
        "{error}"
    );
    let error = producer
        .send(ProducerRecord::new("b", b"x".to_vec()).with_partition(7))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::UnknownPartition {
                partition: 7,
                partitions: 3,
                ..
            }
        ),
        "{error}"
    );
    let error = producer
        .send(ProducerRecord::new("small", vec![0u8; 8192]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::RecordTooLarge {
                max_bytes: 4096,
                ..
            }
        ),
        "{error}"
    );
    let fits = producer
        .send(ProducerRecord::new("small", vec![0u8; 1024]))
        .await
        .unwrap();
    assert_eq!(fits.offset, Some(0));

    let mut consumer = Consumer::new(ConsumerConfig::new(&bootstrap)).unwrap();
    assert!(matches!(
        consumer.topic_partitions("nope").await,
        Err(ClientError::UnknownTopic { .. })
    ));
    consumer.assign(&[TopicPartition::new("nope", 0)]);
    let error = consumer.poll(Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(error, ClientError::UnknownTopic { .. }), "{error}");
    consumer.assign(&[TopicPartition::new("b", 9)]);
    let error = consumer.poll(Duration::from_secs(30)).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::UnknownPartition {
                partition: 9,
                partitions: 3,
                ..
            }
        ),
        "{error}"
    );
}
