//! Data survives: a graceful restart keeps topics and data; kill -9 during a produce stream
//! with durability `always` and acks=all loses no acknowledged message, duplicates none and
//! keeps their order. Real broker processes, real files.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, Durability, FetchResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse,
};
use wire::{BatchBuilder, BatchIter, BatchView};

/// Produces one batch of `values` with acks=all; returns the base offset or None on error.
fn produce(conn: &mut Conn, topic: &str, partition: u32, values: &[String]) -> Option<u64> {
    send_produce(conn, topic, partition, values);
    read_produce_answer(conn)
}

/// Sends one batch of `values` with acks=all, without waiting for the answer.
fn send_produce(conn: &mut Conn, topic: &str, partition: u32, values: &[String]) {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(storage::now_ms(), None, value.as_bytes(), &[], None);
    }
    let batch = builder.build().unwrap();
    let request = ProduceRequest::to_partition(topic, partition, wire::Acks::All, 10_000, &batch);
    conn.send(ApiKey::Produce, &request);
}

/// Reads the answer to the oldest produce sent on `conn`: its base offset, or None on error.
fn read_produce_answer(conn: &mut Conn) -> Option<u64> {
    let frame = conn.read_frame().ok()?;
    let (_, response) = decode_response::<ProduceResponse>(&frame).ok()?;
    let answer = response.ok()?.topics[0].partitions[0].clone();
    answer.error.is_ok().then_some(answer.base_offset as u64)
}

/// Every record value of a partition, in offset order, with its offset.
fn read_all(conn: &mut Conn, topic: &str, partition: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let request = common::fetch_request(topic, partition, offset, 0);
        conn.send(ApiKey::Fetch, &request);
        let frame = conn.read_frame().unwrap();
        let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
        let response = response.unwrap();
        let data = &response.topics[0].partitions[0];
        assert!(data.error.is_ok(), "{:?}", data.error);
        let bytes = data.records.as_slice();
        if bytes.is_empty() {
            return out;
        }
        for batch in BatchIter::new(bytes, wire::limits::BATCH_SIZE_MAX) {
            let batch: BatchView<'_> = batch.unwrap();
            for (i, record) in batch.records().unwrap().iter().enumerate() {
                let at = batch.base_offset() + i as u64;
                if at >= offset {
                    out.push((
                        at,
                        String::from_utf8(record.value_bytes().to_vec()).unwrap(),
                    ));
                }
            }
            offset = batch.last_offset() + 1;
        }
    }
}

/// A SIGTERM'ed broker exits 0 and, restarted on the same directory, has the same topics and
/// data; appends continue at the right offsets.
#[test]
fn restart_keeps_topics_and_data() {
    let dir = common::data_dir();
    let mut broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("kept", 3, None);
    let mut expected: Vec<Vec<(u64, String)>> = vec![Vec::new(); 3];
    for i in 0..30u32 {
        let partition = i % 3;
        let values: Vec<String> = (0..5).map(|j| format!("m-{i}-{j}")).collect();
        let base = produce(&mut conn, "kept", partition, &values).unwrap();
        for (j, value) in values.into_iter().enumerate() {
            expected[partition as usize].push((base + j as u64, value));
        }
    }
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");

    let broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    let metadata: MetadataResponse = conn
        .call(ApiKey::Metadata, &MetadataRequest { topics: None })
        .unwrap();
    assert_eq!(metadata.topics.len(), 1);
    assert_eq!(metadata.topics[0].name, "kept");
    assert_eq!(metadata.topics[0].partitions.len(), 3);
    for partition in 0..3u32 {
        assert_eq!(
            read_all(&mut conn, "kept", partition),
            expected[partition as usize]
        );
    }
    let base = produce(&mut conn, "kept", 0, &["after".into()]).unwrap();
    assert_eq!(base, expected[0].len() as u64);
}

/// Produce requests each producer connection keeps in flight (sent before the first answer is
/// read), so that the order promise covers batches in flight together.
const PIPELINED_REQUESTS: usize = 4;
/// Records per produce request (one batch).
const RECORDS_PER_BATCH: usize = 10;

/// kill -9 in the middle of a stream of acks=all produces to an `always` topic, each
/// connection with 4 batches in flight: after a restart every acknowledged message is there,
/// once, in send order; nothing unacknowledged comes between them (at most the 4 batches in
/// flight at the kill appear after the last acknowledged one).
#[test]
fn kill_9_loses_no_acknowledged_message() {
    let dir = common::data_dir();
    let mut broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("durable", 2, Some(Durability::Always));
    let acknowledged: Arc<Mutex<Vec<Vec<String>>>> =
        Arc::new(Mutex::new(vec![Vec::new(), Vec::new()]));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for partition in 0..2u32 {
        let addr = broker.addr;
        let acknowledged = acknowledged.clone();
        let stop = stop.clone();
        producers.push(std::thread::spawn(move || {
            let mut conn = Conn::connect(addr);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut in_flight = Vec::with_capacity(PIPELINED_REQUESTS);
                for _ in 0..PIPELINED_REQUESTS {
                    let values: Vec<String> = (0..RECORDS_PER_BATCH)
                        .map(|j| format!("p{partition}-b{i}-r{j}"))
                        .collect();
                    send_produce(&mut conn, "durable", partition, &values);
                    in_flight.push(values);
                    i += 1;
                }
                // Answers come in request order: credit each batch as its answer arrives.
                for values in in_flight {
                    match read_produce_answer(&mut conn) {
                        Some(_) => acknowledged.lock().unwrap()[partition as usize].extend(values),
                        None => return,
                    }
                }
            }
        }));
    }
    // Let the stream run, then kill the broker in the middle of it. A producer that ended
    // before the kill met an error: fail rather than wait forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().iter().any(|a| a.len() < 500) {
        assert!(
            producers.iter().all(|p| !p.is_finished()),
            "a producer stopped before the kill"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for 500 acknowledged records per partition"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill();
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer.join().unwrap();
    }

    let broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    let acknowledged = acknowledged.lock().unwrap();
    for partition in 0..2u32 {
        let stored: Vec<(u64, String)> = read_all(&mut conn, "durable", partition);
        let offsets: Vec<u64> = stored.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..stored.len() as u64).collect::<Vec<_>>(),
            "offsets must be dense"
        );
        let values: Vec<&String> = stored.iter().map(|(_, v)| v).collect();
        let acked = &acknowledged[partition as usize];
        assert!(
            values.len() >= acked.len(),
            "partition {partition}: {} stored < {} acknowledged",
            values.len(),
            acked.len()
        );
        for (i, value) in acked.iter().enumerate() {
            assert_eq!(values[i], value, "partition {partition} offset {i}");
        }
        // Anything after the acknowledged prefix is among the batches in flight at the kill.
        assert!(
            values.len() - acked.len() <= PIPELINED_REQUESTS * RECORDS_PER_BATCH,
            "more than the batches in flight at the kill survived unacknowledged"
        );
    }
}
