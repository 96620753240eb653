//! Deleting a topic under load (real broker process, 2 shards): a consumer long-polling the
//! topic and a producer producing to it get clear "unknown topic or partition" errors, never a
//! false success, a storage error or "shutting down"; the broker keeps serving other topics;
//! the topic's directory is gone once the deletion is answered; a topic recreated under the
//! same name starts empty and works.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, Durability, ErrorCode,
    FetchResponse, ProduceRequest, ProduceResponse, WireError,
};
use wire::{BatchBuilder, BatchIter};

/// Produces one record `value` to `topic`/`partition` with acks=all; the partition's answer.
fn produce(conn: &mut Conn, topic: &str, partition: u32, value: &[u8]) -> Result<u64, WireError> {
    let mut builder = BatchBuilder::new();
    builder.push(common::now_ms(), None, value, &[], None);
    let batch = builder.build().unwrap();
    let request = ProduceRequest::to_partition(topic, partition, wire::Acks::All, 10_000, &batch);
    let response: ProduceResponse = conn.call(ApiKey::Produce, &request)?;
    let answer = response.topics[0].partitions[0].clone();
    if answer.error.is_ok() {
        Ok(answer.base_offset as u64)
    } else {
        Err(answer.error)
    }
}

/// Every record value of `topic`/`partition` from offset 0, with its offset.
fn read_all(conn: &mut Conn, topic: &str, partition: u32) -> Vec<(u64, Vec<u8>)> {
    conn.send(
        ApiKey::Fetch,
        &common::fetch_request(topic, partition, 0, 0),
    );
    let frame = conn.read_frame().unwrap();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    let response = response.unwrap();
    let data = &response.topics[0].partitions[0];
    assert!(data.error.is_ok(), "{:?}", data.error);
    let mut out = Vec::new();
    for batch in BatchIter::new(data.records.as_slice(), wire::limits::BATCH_SIZE_MAX) {
        let batch = batch.unwrap();
        for (i, record) in batch.records().unwrap().iter().enumerate() {
            out.push((
                batch.base_offset() + i as u64,
                record.value_bytes().to_vec(),
            ));
        }
    }
    out
}

/// The error a client must see for a deleted topic: unknown topic or partition, naming it.
fn assert_deleted_error(error: &WireError, what: &str) {
    assert_eq!(
        error.code,
        ErrorCode::UnknownTopicOrPartition,
        "{what}: {error:?}"
    );
    assert!(error.message.contains("doomed"), "{what}: {error:?}");
}

/// The whole story: load on the topic, delete, errors, others unaffected, directory gone,
/// recreate.
#[test]
fn deleting_a_topic_under_load_fails_its_requests_clearly_and_keeps_the_broker_serving() {
    let mut broker = Broker::start(&[]);
    let mut admin = Conn::connect(broker.addr);
    admin.create_topic("doomed", 3, Some(Durability::Always));
    admin.create_topic("survivor", 2, Some(Durability::Always));
    let topic_dir = broker.data_dir.join("topics").join("doomed");
    assert!((0..3).all(|partition| topic_dir.join(partition.to_string()).is_dir()));

    // A producer that keeps producing (acks=all, fsync per batch) to both partitions until it
    // has seen the deletion's error on each.
    let acknowledged = Arc::new(AtomicU64::new(0));
    let producer = {
        let addr = broker.addr;
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            let mut conn = Conn::connect(addr);
            let mut errors: Vec<WireError> = Vec::new();
            let mut failed_partitions = [false; 2];
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut sent = 0u64;
            while !(failed_partitions[0] && failed_partitions[1]) && Instant::now() < deadline {
                let partition = (sent % 2) as u32;
                sent += 1;
                match produce(&mut conn, "doomed", partition, b"load") {
                    Ok(_) => {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(error) => {
                        failed_partitions[partition as usize] = true;
                        errors.push(error);
                    }
                }
            }
            errors
        })
    };
    // Let the producer get going (a readiness check: acknowledged produces), so the deletion
    // lands while appends and fsyncs are in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the producer made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }

    // A consumer long-polling the empty partition 2 (max wait 30 s): the deletion must answer
    // it long before that. (Whether it is parked yet when the deletion lands, it must get the
    // same clear error.)
    let mut consumer = Conn::connect(broker.addr);
    let long_poll_sent = Instant::now();
    consumer.send(
        ApiKey::Fetch,
        &common::fetch_request("doomed", 2, 0, 30_000),
    );

    let deleted: DeleteTopicsResponse = admin
        .call(
            ApiKey::DeleteTopics,
            &DeleteTopicsRequest {
                names: vec!["doomed".into()],
                timeout_ms: 10_000,
            },
        )
        .unwrap();
    assert!(deleted.topics[0].error.is_ok(), "{:?}", deleted.topics[0]);
    // Answered means every shard closed the topic's logs and removed its data.
    assert!(!topic_dir.exists(), "{} still exists", topic_dir.display());

    let frame = consumer.read_frame().unwrap();
    let waited = long_poll_sent.elapsed();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    match response {
        Ok(response) => {
            assert_deleted_error(&response.topics[0].partitions[0].error, "long poll");
        }
        Err(error) => assert_deleted_error(&error, "long poll (request level)"),
    }
    assert!(
        waited < Duration::from_secs(20),
        "the long poll was answered only after {waited:?}"
    );

    let errors = producer.join().unwrap();
    assert!(!errors.is_empty(), "the producer never saw the deletion");
    for error in &errors {
        assert_deleted_error(error, "produce");
    }
    eprintln!(
        "{} produces acknowledged before the deletion; then {} clear errors",
        acknowledged.load(Ordering::SeqCst),
        errors.len()
    );

    // The broker keeps serving the other topic, on both shards.
    assert!(broker.child.try_wait().unwrap().is_none(), "broker exited");
    let mut other = Conn::connect(broker.addr);
    for partition in 0..2 {
        let offset = produce(&mut other, "survivor", partition, b"still here").unwrap();
        let records = read_all(&mut other, "survivor", partition);
        assert_eq!(records, vec![(offset, b"still here".to_vec())]);
    }

    // Recreated under the same name: a new, empty topic that works.
    admin.create_topic("doomed", 1, Some(Durability::Always));
    assert!(topic_dir.join("0").is_dir());
    assert_eq!(read_all(&mut other, "doomed", 0), Vec::new());
    assert_eq!(produce(&mut other, "doomed", 0, b"reborn").unwrap(), 0);
    assert_eq!(
        read_all(&mut other, "doomed", 0),
        vec![(0, b"reborn".to_vec())]
    );
    assert!(broker.terminate().success());
}
