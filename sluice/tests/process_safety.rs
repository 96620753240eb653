//! Process safety of `sluice serve`, with real processes: a data directory and a listen
//! address each belong to one broker; a broker restarted right after kill -9 serves the first
//! client that connects; a produce forwarded between shards keeps the request's own timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, Conn};
use wire::protocol::{
    ApiKey, ErrorCode, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
};
use wire::{Acks, BatchBuilder, Durability};

/// Runs a second `sluice serve` to completion (it is expected to refuse to start).
fn second_broker(data_dir: &std::path::Path, listen: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", listen, "--cores", "1", "--log", "warn"])
        .args(["--bind-retry-ms", "300"])
        .output()
        .unwrap()
}

/// The broker still answers a metadata request.
fn assert_serves(addr: SocketAddr) {
    let mut conn = Conn::connect(addr);
    let response: Result<MetadataResponse, _> =
        conn.call(ApiKey::Metadata, &MetadataRequest { topics: None });
    assert!(response.is_ok(), "{response:?}");
}

/// A second broker on a data directory in use exits non-zero, naming the directory and the
/// holder's pid; the first one is untouched.
#[test]
fn second_broker_on_the_same_data_dir_is_refused() {
    let first = Broker::start(&[]);
    let output = second_broker(&first.data_dir, "127.0.0.1:0");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "data directory {} is in use by pid {}",
        first.data_dir.canonicalize().unwrap().display(),
        first.child.id()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_serves(first.addr);
}

/// A second broker on an address in use exits non-zero with "address in use" (no
/// SO_REUSEPORT sharing); the first one keeps serving.
#[test]
fn second_broker_on_the_same_address_is_refused() {
    let first = Broker::start(&[]);
    let other_dir = common::data_dir();
    let started = Instant::now();
    let output = second_broker(other_dir.path(), &first.addr.to_string());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("address in use"), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it retried the bind for --bind-retry-ms first"
    );
    assert_serves(first.addr);
}

/// kill -9, then a restart on the same address and data directory, with a client connecting
/// in a tight loop from the moment of the kill: the first connection the port accepts gets its
/// request answered. Nothing of the dead process answers: its listeners were used by plain
/// accept threads only (no io_uring operation held them), so they closed with the process, and
/// until the new broker listens (once every shard is ready) connections are refused, not
/// accepted and reset.
#[test]
fn restart_after_kill_9_serves_the_first_client() {
    let dir = common::data_dir();
    let mut broker = Broker::start_in(dir.path(), &[]);
    let addr = broker.addr;
    for round in 0..5 {
        broker.kill();
        broker.child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen",
                &addr.to_string(),
                "--cores",
                "2",
                "--log",
                "warn",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(stream) => break stream,
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "round {round}: never accepted: {error}"
                ),
            }
        };
        let mut conn = Conn::over(stream);
        let response: Result<MetadataResponse, _> =
            conn.call(ApiKey::Metadata, &MetadataRequest { topics: None });
        assert!(response.is_ok(), "round {round}: {response:?}");
        let mut line = String::new();
        BufReader::new(broker.child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("sluice listening on"),
            "round {round}: {line:?}"
        );
    }
    assert!(broker.terminate().success());
}

/// A produce that reaches its partition through another shard is answered by its own
/// timeout, not a fixed one: acks=all on an `always` topic with a 1 ms timeout and a batch
/// whose validation, append and fsync take far longer gets RequestTimedOut, while the same
/// produce with a generous timeout succeeds.
#[test]
fn forwarded_produce_keeps_its_timeout() {
    let broker = Broker::start(&[]);
    let mut admin = Conn::connect(broker.addr);
    admin.create_topic("slow", 1, Some(Durability::Always));
    let metadata: MetadataResponse = admin
        .call(ApiKey::Metadata, &MetadataRequest { topics: None })
        .unwrap();
    let shards = &metadata.brokers[0].shards;
    assert_eq!(shards.len(), 2);
    let owner = broker::shard::router::shard_for("slow", 0, shards.len());
    let other = &shards[1 - owner];
    let mut conn = Conn::connect(format!("{}:{}", other.host, other.port).parse().unwrap());
    // 8 MiB of records: checksummed, validated, copied across cores, written and fsynced.
    let mut builder = BatchBuilder::new();
    let value = vec![7u8; 64 * 1024];
    for timestamp in 0..120 {
        builder.push(timestamp, None, &value, &[], None);
    }
    let batch = builder.build().unwrap();
    let produce =
        |timeout_ms| ProduceRequest::to_partition("slow", 0, Acks::All, timeout_ms, &batch);
    let answered: ProduceResponse = conn.call(ApiKey::Produce, &produce(1)).unwrap();
    let error = &answered.topics[0].partitions[0].error;
    assert_eq!(error.code, ErrorCode::RequestTimedOut, "{error:?}");
    let answered: ProduceResponse = conn.call(ApiKey::Produce, &produce(30_000)).unwrap();
    let error = &answered.topics[0].partitions[0].error;
    assert!(error.is_ok(), "{error:?}");
}
