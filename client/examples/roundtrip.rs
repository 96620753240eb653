//! One record outstanding at a time: `send().await` in a loop against a running broker, the
//! latency path of a single produce (issue 11, part 4). Prints msgs/s and the round-trip
//! percentiles. A measuring tool, not a test.
//!
//! ```text
//! cargo run --release -p sluice-client --example roundtrip -- 127.0.0.1:9092 [seconds] [value bytes] [threads]
//! ```
//!
//! Creates (or reuses) the one-partition topic `roundtrip`; `acks = 1`, linger 0, one batch
//! in flight; `threads` is the tokio runtime's worker count (default 1).

use std::time::{Duration, Instant};

use client::{Admin, NewTopic, Producer, ProducerConfig, ProducerRecord};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let address = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let seconds: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let value_bytes: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    // The loop runs as a task on the runtime (as an application's task would), not on the
    // thread blocked in `block_on`: with one worker, caller, sender task and connection
    // reader then share a thread and hand over without waking one another's threads.
    let run = runtime.spawn(async move {
        let admin = Admin::new(address.clone())?;
        // Already there from an earlier run is fine.
        let _ = admin.create_topic(NewTopic::new("roundtrip", 1)).await;
        let producer = Producer::new(ProducerConfig {
            linger: Duration::ZERO,
            max_in_flight_per_partition: 1,
            ..ProducerConfig::new(address)
        })?;
        let value = vec![7u8; value_bytes];
        // Warm-up: metadata, producer id, connection.
        for _ in 0..1000 {
            producer
                .send(ProducerRecord::new("roundtrip", value.clone()).with_partition(0))
                .await?;
        }
        let mut latencies_ns: Vec<u64> = Vec::with_capacity(1 << 20);
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            let sent = Instant::now();
            producer
                .send(ProducerRecord::new("roundtrip", value.clone()).with_partition(0))
                .await?;
            latencies_ns.push(sent.elapsed().as_nanos() as u64);
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies_ns.sort_unstable();
        let at = |q: f64| {
            let index = ((latencies_ns.len() as f64 - 1.0) * q).round() as usize;
            latencies_ns.get(index).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "roundtrip: {} msgs in {elapsed:.1} s = {:.0} msgs/s; latency µs p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}",
            latencies_ns.len(),
            latencies_ns.len() as f64 / elapsed,
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0),
        );
        producer.close().await?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    });
    runtime
        .block_on(run)?
        .map_err(|e| e as Box<dyn std::error::Error>)
}
