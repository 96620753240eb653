//! The metrics and health endpoint of a real broker process (`--metrics-listen 127.0.0.1:0`):
//! scraped before and after producing, fetching and committing a group offset over the raw
//! protocol, the counters move by exactly what was sent, the partition's offsets and the
//! group's lag are what was produced and committed, the latency histograms have samples; the
//! node is ready and live while it serves and stops being ready once SIGTERM arrives. The text
//! is parsed by `prometheus-parse`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Broker, Conn};
use prometheus_parse::{Scrape, Value};
use wire::protocol::{
    decode_response, ApiKey, Durability, FetchResponse, OffsetCommitPartition, OffsetCommitRequest,
    OffsetCommitResponse, OffsetCommitTopic, ProduceRequest, ProduceResponse,
};
use wire::BatchBuilder;

const TOPIC: &str = "metered";
const BATCHES: u64 = 5;
const RECORDS_PER_BATCH: u64 = 10;
const COMMITTED_OFFSET: u64 = 20;
const GROUP: &str = "billing";

/// An HTTP/1.0 GET: the status code and the body, or the connection error.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {response:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

/// One sample's labels and value.
type Sample = (HashMap<String, String>, f64);

/// A parsed scrape: samples by metric name.
struct Metrics {
    samples: HashMap<String, Vec<Sample>>,
}

impl Metrics {
    fn scrape(addr: SocketAddr) -> Metrics {
        let (status, body) = http_get(addr, "/metrics").unwrap();
        assert_eq!(status, 200, "{body}");
        let scrape = Scrape::parse(body.lines().map(|line| Ok(line.to_owned()))).unwrap();
        let mut samples: HashMap<String, Vec<_>> = HashMap::new();
        for sample in scrape.samples {
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(buckets) => {
                    // The +Inf bucket is the histogram's count.
                    buckets
                        .iter()
                        .find(|bucket| bucket.less_than.is_infinite())
                        .map_or(0.0, |bucket| bucket.count)
                }
                Value::Summary(_) => continue,
            };
            let labels: HashMap<String, String> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            samples
                .entry(sample.metric)
                .or_default()
                .push((labels, value));
        }
        Metrics { samples }
    }

    /// Sum of a metric over every sample whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .get(name)
            .map(|samples| {
                samples
                    .iter()
                    .filter(|(have, _)| {
                        labels
                            .iter()
                            .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
                    })
                    .map(|(_, value)| value)
                    .sum()
            })
            .unwrap_or(0.0)
    }

    /// The one sample of a metric with exactly these labels.
    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .samples
            .get(name)
            .unwrap_or_else(|| panic!("no metric {name}"))
            .iter()
            .filter(|(have, _)| {
                have.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, value)| *value)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0]
    }
}

/// Produces one batch of `RECORDS_PER_BATCH` records with acks=all; returns the batch's size.
fn produce_batch(conn: &mut Conn, round: u64) -> u64 {
    let mut builder = BatchBuilder::new();
    for i in 0..RECORDS_PER_BATCH {
        let value = format!("round {round} record {i}");
        builder.push(common::now_ms(), None, value.as_bytes(), &[], None);
    }
    let batch = builder.build().unwrap();
    let request = ProduceRequest::to_partition(TOPIC, 0, wire::Acks::All, 10_000, &batch);
    let response: ProduceResponse = conn.call(ApiKey::Produce, &request).unwrap();
    let answer = &response.topics[0].partitions[0];
    assert!(answer.error.is_ok(), "{:?}", answer.error);
    assert_eq!(answer.base_offset as u64, round * RECORDS_PER_BATCH);
    batch.len() as u64
}

/// Fetches the whole partition in one request; returns the record-batch bytes received.
fn fetch_all(conn: &mut Conn) -> u64 {
    let request = common::fetch_request(TOPIC, 0, 0, 0);
    conn.send(ApiKey::Fetch, &request);
    let frame = conn.read_frame().unwrap();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    let response = response.unwrap();
    let data = &response.topics[0].partitions[0];
    assert!(data.error.is_ok(), "{:?}", data.error);
    data.records.as_slice().len() as u64
}

fn commit(conn: &mut Conn) {
    let request = OffsetCommitRequest {
        group_id: GROUP.into(),
        generation: -1,
        member_id: String::new(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            topic: TOPIC.into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset: COMMITTED_OFFSET,
                metadata: String::new(),
            }],
        }],
    };
    let response: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, &request).unwrap();
    let answer = &response.topics[0].partitions[0];
    assert!(answer.error.is_ok(), "{:?}", answer.error);
}

/// Scrape, produce 5 batches, fetch them, commit offset 20 for a group, scrape again: every
/// counter moved by what was sent, offsets and lag match, histograms have samples. Then
/// SIGTERM: `/ready` turns 503 (or the endpoint closes) and the broker exits cleanly.
#[test]
fn scrape_follows_produce_fetch_and_commit() {
    let mut broker = Broker::start(&["--metrics-listen", "127.0.0.1:0"]);
    let line = broker.stdout_line();
    let metrics_addr: SocketAddr = line
        .trim()
        .strip_prefix("sluice metrics on ")
        .unwrap_or_else(|| panic!("no metrics address line: {line:?}"))
        .parse()
        .unwrap();

    assert_eq!(http_get(metrics_addr, "/ready").unwrap().0, 200);
    assert_eq!(http_get(metrics_addr, "/live").unwrap().0, 200);
    assert_eq!(http_get(metrics_addr, "/nothing").unwrap().0, 404);

    let mut conn = Conn::connect(broker.addr);
    conn.create_topic(TOPIC, 1, Some(Durability::Always));
    let before = Metrics::scrape(metrics_addr);
    assert_eq!(before.sum("sluice_node_ready", &[]), 1.0);
    assert_eq!(
        before.sum("sluice_shard_up", &[]),
        2.0,
        "both shards answer"
    );
    assert!(
        before.sum("sluice_connections", &[]) >= 1.0,
        "our connection is open"
    );

    let mut produced_bytes = 0;
    for round in 0..BATCHES {
        produced_bytes += produce_batch(&mut conn, round);
    }
    let fetched_bytes = fetch_all(&mut conn);
    assert_eq!(
        fetched_bytes, produced_bytes,
        "the fetch returns every batch"
    );
    commit(&mut conn);
    let after = Metrics::scrape(metrics_addr);

    let moved = |name: &str| after.sum(name, &[]) - before.sum(name, &[]);
    assert_eq!(moved("sluice_produce_requests_total"), BATCHES as f64);
    assert_eq!(moved("sluice_produce_bytes_total"), produced_bytes as f64);
    assert_eq!(moved("sluice_appended_batches_total"), BATCHES as f64);
    assert_eq!(moved("sluice_appended_bytes_total"), produced_bytes as f64);
    assert_eq!(moved("sluice_fetch_requests_total"), 1.0);
    assert_eq!(moved("sluice_fetch_bytes_total"), fetched_bytes as f64);
    assert_eq!(
        moved("sluice_produce_latency_seconds_count"),
        BATCHES as f64
    );
    assert_eq!(moved("sluice_fetch_latency_seconds_count"), 1.0);
    assert!(moved("sluice_produce_latency_seconds_sum") > 0.0);
    assert_eq!(
        moved("sluice_produce_latency_seconds"),
        BATCHES as f64,
        "the +Inf bucket counts every produce"
    );
    assert!(
        moved("sluice_fsync_latency_seconds_count") >= BATCHES as f64,
        "an `always` topic syncs before each acks=all answer (and the commit syncs too)"
    );

    let partition = [("topic", TOPIC), ("partition", "0")];
    let produced_records = (BATCHES * RECORDS_PER_BATCH) as f64;
    assert_eq!(
        after.one("sluice_partition_log_start_offset", &partition),
        0.0
    );
    assert_eq!(
        after.one("sluice_partition_log_end_offset", &partition),
        produced_records
    );
    assert_eq!(
        after.one("sluice_partition_high_watermark", &partition),
        produced_records
    );
    let group = [("group", GROUP), ("topic", TOPIC), ("partition", "0")];
    assert_eq!(
        after.one("sluice_group_committed_offset", &group),
        COMMITTED_OFFSET as f64
    );
    assert_eq!(
        after.one("sluice_group_lag", &group),
        produced_records - COMMITTED_OFFSET as f64
    );
    assert!(after.sum("sluice_tail_cache_budget_bytes", &[]) > 0.0);
    // The network path's memory budgets in use are exported; nothing was refused.
    assert_eq!(after.one("sluice_connections_refused_total", &[]), 0.0);
    assert!(after.one("sluice_receive_buffer_bytes", &[]) >= 0.0);
    assert!(after.one("sluice_request_bytes_in_flight", &[]) >= 0.0);
    assert!(
        after.sum("sluice_tail_cache_bytes", &[]) > 0.0,
        "the appended data sits in the tail cache"
    );

    // SIGTERM: the readiness flag drops before the shards drain; the endpoint then says 503
    // until the process exits and the port closes.
    drop(conn);
    // SAFETY: sending a signal to our own child process by pid has no memory effects.
    unsafe {
        libc::kill(broker.child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(metrics_addr, "/ready") {
            Ok((503, _)) | Err(_) => break,
            Ok((status, body)) => {
                assert_eq!(status, 200, "{body}");
                assert!(Instant::now() < deadline, "/ready still 200 after SIGTERM");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let status = broker.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        http_get(metrics_addr, "/ready").is_err(),
        "the endpoint closes with the process"
    );
}
