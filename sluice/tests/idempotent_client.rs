//! The idempotent producer end to end: a relay between the client and the broker's shard
//! forwards the first produce request, lets the broker write it, then drops the connection
//! instead of forwarding the answer. The client retries the same bytes on a new connection;
//! the broker recognises the batch and answers with its original offset; every record is
//! stored exactly once. Without idempotence the same scenario stores the batch twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    Admin, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use common::Broker;

/// Reads one frame (length prefix included) or None at EOF.
fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let len = u32::from_le_bytes(prefix) as usize;
    let mut frame = prefix.to_vec();
    frame.resize(4 + len, 0);
    stream.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// A relay from `listener` to `target` that swallows the answer to the first produce request
/// it sees (and closes both sides instead), once; `dropped` tells whether that happened.
fn lossy_relay(listener: TcpListener, target: String, dropped: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let victim: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut broker) = TcpStream::connect(&target) else {
                return;
            };
            let (mut client_in, mut broker_out) =
                (client.try_clone().unwrap(), broker.try_clone().unwrap());
            let (victim_in, dropped_in) = (victim.clone(), dropped.clone());
            std::thread::spawn(move || {
                while let Some(frame) = read_frame(&mut client_in) {
                    let api = u16::from_le_bytes([frame[4], frame[5]]);
                    let correlation =
                        u32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]);
                    let mut victim = victim_in.lock().unwrap();
                    if api == wire::protocol::ApiKey::Produce as u16
                        && victim.is_none()
                        && !dropped_in.load(Ordering::SeqCst)
                    {
                        *victim = Some(correlation);
                    }
                    drop(victim);
                    if broker_out.write_all(&frame).is_err() {
                        return;
                    }
                }
            });
            let (victim_out, dropped_out) = (victim.clone(), dropped.clone());
            std::thread::spawn(move || {
                while let Some(frame) = read_frame(&mut broker) {
                    let correlation = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
                    let mut victim = victim_out.lock().unwrap();
                    if *victim == Some(correlation) && !dropped_out.load(Ordering::SeqCst) {
                        // The broker has written the batch; its answer is lost.
                        dropped_out.store(true, Ordering::SeqCst);
                        *victim = None;
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = broker.shutdown(Shutdown::Both);
                        return;
                    }
                    drop(victim);
                    if client.write_all(&frame).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Runs the lost-answer scenario and returns how many times each value was stored.
async fn stored_counts(idempotent: bool) -> (bool, Vec<usize>) {
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let shard_port = common::free_port();
    let broker = Broker::start(&[
        "--cores",
        "1",
        "--shard-port-base",
        &shard_port.to_string(),
        "--advertised-shard-port-base",
        &relay_port.to_string(),
    ]);
    let dropped = Arc::new(AtomicBool::new(false));
    lossy_relay(relay, format!("127.0.0.1:{shard_port}"), dropped.clone());
    let bootstrap = broker.addr.to_string();
    Admin::new(&bootstrap)
        .unwrap()
        .create_topic(NewTopic::new("once", 1))
        .await
        .unwrap();
    let producer = Producer::new(ProducerConfig {
        enable_idempotence: idempotent,
        linger: Duration::from_millis(1),
        retries: 20,
        retry_backoff: Duration::from_millis(20),
        request_timeout: Duration::from_secs(5),
        ..ProducerConfig::new(&bootstrap)
    })
    .unwrap();
    let mut deliveries = Vec::new();
    for n in 0..20u32 {
        let record = ProducerRecord::new("once", format!("v{n}").into_bytes()).with_partition(0);
        deliveries.push(producer.enqueue(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let mut consumer = Consumer::new(ConsumerConfig::new(&bootstrap)).unwrap();
    let tp = TopicPartition::new("once", 0);
    consumer.assign(std::slice::from_ref(&tp));
    consumer.seek(&tp, Offset::Earliest).unwrap();
    // Read up to the log end, duplicates included.
    let log_end = Admin::new(&bootstrap)
        .unwrap()
        .list_offsets(&tp, client::LATEST_TIMESTAMP)
        .await
        .unwrap();
    let mut counts = vec![0usize; 20];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while consumer.position(&tp).await.unwrap() < log_end {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out reading up to offset {log_end}"
        );
        let records = consumer.poll(Duration::from_millis(200)).await.unwrap();
        for record in &records {
            let n: usize = std::str::from_utf8(&record.value[1..])
                .unwrap()
                .parse()
                .unwrap();
            counts[n] += 1;
        }
    }
    (dropped.load(Ordering::SeqCst), counts)
}

/// With idempotence the retried batch is stored once; without it, twice (so the scenario
/// really exercises the lost acknowledgement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_acknowledgement_does_not_duplicate_records() {
    let (dropped, counts) = stored_counts(true).await;
    assert!(dropped, "the relay must have swallowed an answer");
    assert!(
        counts.iter().all(|c| *c == 1),
        "idempotent producer stored {counts:?}"
    );

    let (dropped, counts) = stored_counts(false).await;
    assert!(dropped);
    assert!(counts.iter().all(|c| *c >= 1), "every record is there");
    assert!(
        counts.contains(&2),
        "without idempotence the retry duplicates: {counts:?}"
    );
}
