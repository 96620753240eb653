//! The traffic of a Jepsen-style cluster test, recorded into a [`History`]: idempotent
//! `acks=all` producers sending unique values (`p{producer}-{seq}`) round-robin over a topic's
//! partitions at a steady pace, and a consumer reading every partition throughout, both with
//! the real client bootstrapped with every broker, so they follow leaders through failures.
//!
//! ```text
//!  producer k: for seq in 0..: attempt(p{k}-{seq}, partition seq mod P) ─ enqueue ─┐ at most
//!              acked(offset) / failed(why) ◀── delivery ◀──────────────────────────┘ IN_FLIGHT
//!  consumer:   poll ─▶ read(partition, offset, value); on error: a new consumer at the
//!              next offsets
//!  stop(): no new sends, every delivery awaited (bounded), consumer stopped ─▶ History
//! ```
//!
//! Runs on a tokio runtime the test owns, so the test thread itself stays free to kill and
//! restart brokers with the blocking harness (`cluster.rs`). Used by `sluice/tests/cluster.rs`.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    Acks, Consumer, ConsumerConfig, Offset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::history::{History, MessageId};

/// Longest wait, once stopped, for the outstanding deliveries of a producer: they end with an
/// answer or with the producer's retries exhausted (`PRODUCER_RETRIES` backoffs of at most
/// 1 s, each after a request of at most `PRODUCER_REQUEST_TIMEOUT`).
const DRAIN_DEADLINE: Duration = Duration::from_secs(90);
/// Retries of a batch: with backoffs of 100 ms doubling to 1 s, about 25 s of retrying, which
/// rides out a fail-over (session timeout + election) several times over.
const PRODUCER_RETRIES: u32 = 30;
/// Longest wait for one produce answer (also the broker's produce timeout): a leader cut off
/// from its followers answers `RequestTimedOut` after this, and the client retries elsewhere.
const PRODUCER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Every broker's address, comma-separated.
    pub bootstrap: String,
    /// The topic.
    pub topic: String,
    /// Its partition count.
    pub partitions: u32,
    /// Number of producers (each with its own client).
    pub producers: u32,
    /// Number of the first producer (so two workloads of one test use distinct values).
    pub first_producer: u32,
    /// Pause between two sends of one producer.
    pub send_interval: Duration,
    /// Most unacknowledged sends of one producer.
    pub max_in_flight: usize,
    /// Run a consumer that reads every partition during the run.
    pub consume: bool,
}

impl WorkloadConfig {
    /// Two producers at one send per 2 ms each, 64 in flight each, and a consumer.
    pub fn new(bootstrap: String, topic: &str, partitions: u32) -> WorkloadConfig {
        WorkloadConfig {
            bootstrap,
            topic: topic.to_owned(),
            partitions,
            producers: 2,
            first_producer: 0,
            send_interval: Duration::from_millis(2),
            max_in_flight: 64,
            consume: true,
        }
    }
}

/// State shared by the workload's tasks and the test thread.
struct Shared {
    history: Mutex<History>,
    stop_producing: AtomicBool,
    stop_consuming: AtomicBool,
    acked: AtomicU64,
    /// Acknowledged per partition, indexed by partition.
    acked_in: Vec<AtomicU64>,
    failed: AtomicU64,
    read: AtomicU64,
    /// Errors the clients reported (for the test's log), by kind.
    errors: Mutex<HashMap<String, u64>>,
}

impl Shared {
    fn note_error(&self, who: &str, error: &dyn std::fmt::Display) {
        let text = error.to_string();
        // Counted by the error's first words, so the summary stays short.
        let kind: String = text
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" ");
        *self
            .errors
            .lock()
            .unwrap()
            .entry(format!("{who}: {kind}"))
            .or_default() += 1;
    }
}

/// A running workload; see the module doc.
pub struct Workload {
    shared: Arc<Shared>,
    producers: Vec<JoinHandle<()>>,
    consumer: Option<JoinHandle<()>>,
    started: Instant,
}

impl Workload {
    /// Starts the producers (and the consumer) on `runtime`.
    pub fn start(runtime: &Runtime, config: WorkloadConfig) -> Workload {
        let shared = Arc::new(Shared {
            history: Mutex::new(History::new()),
            stop_producing: AtomicBool::new(false),
            stop_consuming: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            acked_in: (0..config.partitions).map(|_| AtomicU64::new(0)).collect(),
            failed: AtomicU64::new(0),
            read: AtomicU64::new(0),
            errors: Mutex::new(HashMap::new()),
        });
        let producers = (0..config.producers)
            .map(|k| {
                runtime.spawn(produce(
                    config.clone(),
                    config.first_producer + k,
                    shared.clone(),
                ))
            })
            .collect();
        let consumer = config
            .consume
            .then(|| runtime.spawn(consume(config.clone(), shared.clone())));
        Workload {
            shared,
            producers,
            consumer,
            started: Instant::now(),
        }
    }

    /// Messages acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.shared.acked.load(Ordering::Acquire)
    }

    /// Records the consumer read so far.
    pub fn read(&self) -> u64 {
        self.shared.read.load(Ordering::Acquire)
    }

    /// Messages acknowledged in `partition` so far.
    pub fn acked_in(&self, partition: u32) -> u64 {
        self.shared.acked_in[partition as usize].load(Ordering::Acquire)
    }

    /// Waits until `more` more messages than now are acknowledged in `partition`; after
    /// `timeout`, an error naming `what` and the clients' errors. Returns how long it took.
    pub fn wait_more_acked_in(
        &self,
        partition: u32,
        more: u64,
        timeout: Duration,
        what: &str,
    ) -> Result<Duration, String> {
        let target = self.acked_in(partition) + more;
        let started = Instant::now();
        while self.acked_in(partition) < target {
            if started.elapsed() > timeout {
                return Err(format!(
                    "{what}: {} acknowledged in partition {partition}, {more} more expected \
                     within {timeout:?}; client errors: {:#?}",
                    self.acked_in(partition),
                    self.errors()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = started.elapsed();
        eprintln!(
            "[workload] {what}: {more} more acknowledged in partition {partition} after {took:?}"
        );
        Ok(took)
    }

    /// Waits until `more` more messages than now are acknowledged in every partition.
    pub fn wait_more_acked_everywhere(
        &self,
        more: u64,
        timeout: Duration,
        what: &str,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut stalled = Vec::new();
        for partition in 0..self.shared.acked_in.len() as u32 {
            let left = timeout.saturating_sub(started.elapsed());
            if let Err(e) = self.wait_more_acked_in(partition, more, left, what) {
                stalled.push(e);
            }
        }
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled.join("\n"))
        }
    }

    /// Runs `f` on the history (for sends the test makes itself, outside the workload).
    pub fn record(&self, f: impl FnOnce(&mut History)) {
        f(&mut self.shared.history.lock().unwrap());
    }

    /// Errors the clients reported, by kind, with counts.
    pub fn errors(&self) -> HashMap<String, u64> {
        self.shared.errors.lock().unwrap().clone()
    }

    /// Stops sending, waits for every outstanding delivery (bounded), stops the consumer
    /// once it read everything acknowledged (bounded), and returns the history.
    pub fn stop(mut self, runtime: &Runtime) -> History {
        self.shared.stop_producing.store(true, Ordering::Release);
        let producers = std::mem::take(&mut self.producers);
        runtime.block_on(async {
            for producer in producers {
                if tokio::time::timeout(DRAIN_DEADLINE, producer)
                    .await
                    .is_err()
                {
                    panic!("a producer's deliveries did not end within {DRAIN_DEADLINE:?}");
                }
            }
        });
        // Give the consumer a chance to catch up to the end, so its reads cover the run.
        let acked = self.acked();
        let catch_up = Instant::now() + Duration::from_secs(10);
        while self.consumer.is_some() && self.read() < acked && Instant::now() < catch_up {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.shared.stop_consuming.store(true, Ordering::Release);
        if let Some(consumer) = self.consumer.take() {
            runtime.block_on(async {
                if tokio::time::timeout(Duration::from_secs(30), consumer)
                    .await
                    .is_err()
                {
                    panic!("the consumer did not stop within 30 s");
                }
            });
        }
        eprintln!(
            "[workload] {:?}: {} acknowledged, {} failed, {} read; client errors: {:#?}",
            self.started.elapsed(),
            self.acked(),
            self.shared.failed.load(Ordering::Acquire),
            self.read(),
            self.errors()
        );
        let history = self.shared.history.lock().unwrap().clone();
        history
    }
}

/// One producer: sends until stopped, then awaits every delivery.
async fn produce(config: WorkloadConfig, producer_number: u32, shared: Arc<Shared>) {
    let producer = Producer::new(ProducerConfig {
        acks: Acks::All,
        enable_idempotence: true,
        linger: Duration::from_millis(2),
        retries: PRODUCER_RETRIES,
        request_timeout: PRODUCER_REQUEST_TIMEOUT,
        ..ProducerConfig::new(config.bootstrap.clone())
    })
    .unwrap();
    let window = Arc::new(Semaphore::new(config.max_in_flight));
    let mut deliveries = Vec::new();
    let mut seq = 0u64;
    while !shared.stop_producing.load(Ordering::Acquire) {
        let permit = window.clone().acquire_owned().await.unwrap();
        let id = MessageId::new(producer_number, seq);
        seq += 1;
        let partition = (id.seq % u64::from(config.partitions)) as u32;
        shared.history.lock().unwrap().attempt(id, partition);
        let record = ProducerRecord::new(config.topic.clone(), id.value().into_bytes())
            .with_partition(partition);
        let shared_for_delivery = shared.clone();
        match producer.enqueue(record).await {
            Ok(delivery) => deliveries.push(tokio::spawn(async move {
                let outcome = delivery.await;
                let shared = shared_for_delivery;
                match outcome {
                    Ok(metadata) => match metadata.offset {
                        Some(offset) => {
                            shared
                                .history
                                .lock()
                                .unwrap()
                                .acked(id, metadata.partition, offset);
                            shared.acked.fetch_add(1, Ordering::AcqRel);
                            if let Some(count) = shared.acked_in.get(metadata.partition as usize) {
                                count.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        None => panic!("acks=all answer without an offset for {id}"),
                    },
                    Err(error) => {
                        shared.note_error("producer", &error);
                        shared.history.lock().unwrap().failed(id, error.to_string());
                        shared.failed.fetch_add(1, Ordering::AcqRel);
                    }
                }
                drop(permit);
            })),
            Err(error) => {
                shared.note_error("producer enqueue", &error);
                shared.history.lock().unwrap().failed(id, error.to_string());
            }
        }
        // Finished deliveries need not be kept.
        if deliveries.len() > 4 * config.max_in_flight {
            deliveries.retain(|d| !d.is_finished());
        }
        tokio::time::sleep(config.send_interval).await;
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    let _ = producer.close().await;
}

/// The consumer: reads every partition from offset 0 until stopped; after an error it starts
/// a new client at the next offsets.
async fn consume(config: WorkloadConfig, shared: Arc<Shared>) {
    let partitions: Vec<TopicPartition> = (0..config.partitions)
        .map(|p| TopicPartition::new(config.topic.clone(), p))
        .collect();
    let mut next: Vec<u64> = vec![0; config.partitions as usize];
    while !shared.stop_consuming.load(Ordering::Acquire) {
        let mut consumer = match Consumer::new(ConsumerConfig {
            request_timeout: Duration::from_secs(5),
            ..ConsumerConfig::new(config.bootstrap.clone())
        }) {
            Ok(consumer) => consumer,
            Err(error) => {
                shared.note_error("consumer", &error);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        consumer.assign(&partitions);
        for (tp, offset) in partitions.iter().zip(&next) {
            consumer.seek(tp, Offset::At(*offset)).unwrap();
        }
        while !shared.stop_consuming.load(Ordering::Acquire) {
            match consumer.poll(Duration::from_millis(500)).await {
                Ok(records) => {
                    let mut history = shared.history.lock().unwrap();
                    for record in &records {
                        let slot = &mut next[record.partition as usize];
                        if record.offset < *slot {
                            continue; // delivered again after a new client started
                        }
                        history.read("consumer", record.partition, record.offset, record.value);
                        *slot = record.offset + 1;
                        shared.read.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Err(error) => {
                    shared.note_error("consumer", &error);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
}
