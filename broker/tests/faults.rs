//! The broker on a failing disk: in-process nodes ([`Node::start`]) whose logs share a
//! [`storage::FaultPlan`] ([`Config::storage_faults`]), driven over loopback with the raw
//! protocol. The files are real O_DIRECT files under `target/test-data/`; the plan replaces or
//! cuts short one real call at a time.
//!
//! - a failed fsync under an `acks=all` produce to an `always` topic: the produce fails with a
//!   storage error, later produces to that partition say the log is poisoned, other partitions
//!   keep working, and a restart without faults has every acknowledged record;
//! - a full disk during a produce: a clear disk-full error, reads keep working, writes resume
//!   once space is back;
//! - a failed fsync of the offsets partition: the offset commit is answered with an error;
//! - an offsets snapshot that cannot be written: the broker keeps committing, and a restart
//!   recovers the offsets from the log.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use broker::{Config, GroupLimits, Node, NodeHandle, TopicDefaults};
use storage::FaultPlan;
use wire::protocol::{
    decode_response, encode_request, ApiKey, CreateTopic, CreateTopicsRequest,
    CreateTopicsResponse, Decode, Durability, Encode, ErrorCode, FetchPartition, FetchRequest,
    FetchResponse, FetchTopic, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitResponse,
    OffsetCommitTopic, OffsetFetchRequest, OffsetFetchResponse, OffsetFetchTopic, ProduceRequest,
    ProduceResponse, WireError, CONSUMER_OFFSETS_TOPIC,
};
use wire::{AlignedVec, BatchBuilder, BatchIter};

/// A fresh data directory on the real disk (O_DIRECT).
fn data_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(&base).unwrap()
}

/// A two-shard node's configuration on `data_dir`, with `faults` armed by the test.
fn config(data_dir: &Path, faults: Option<Arc<FaultPlan>>) -> Config {
    Config {
        max_frame_bytes: 8 << 20,
        idle_timeout: Duration::from_secs(300),
        retention_check: Duration::from_secs(3600),
        offsets_partitions: 1,
        offsets_segment_bytes: 1 << 20,
        group_limits: GroupLimits {
            initial_rebalance_delay: Duration::from_millis(0),
            max_members: 100,
            ..Config::new(data_dir.to_path_buf(), 2).group_limits
        },
        topic_defaults: TopicDefaults {
            partitions: 1,
            retention_ms: -1,
            durability: Durability::Always,
            segment_bytes: 64 << 20,
            max_batch_bytes: 4 << 20,
        },
        tail_cache_bytes_per_core: 16 << 20,
        storage_faults: faults,
        ..Config::new(data_dir.to_path_buf(), 2)
    }
}

/// A running node, asked to stop if the test fails before it does.
struct Running(Option<NodeHandle>);

impl Running {
    fn start(config: Config) -> Running {
        Running(Some(Node::start(config).unwrap()))
    }

    fn addr(&self) -> SocketAddr {
        self.0.as_ref().unwrap().main_addr()
    }

    /// Graceful stop; the node's result.
    fn stop(mut self) -> Result<(), broker::NodeError> {
        let node = self.0.take().unwrap();
        node.shutdown();
        node.wait()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            node.shutdown();
            let _ = node.wait();
        }
    }
}

/// A blocking protocol connection.
struct Conn {
    stream: TcpStream,
    correlation_id: u32,
}

impl Conn {
    fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Conn {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends a request; its response frame (16-aligned, as decoders of batches want).
    fn round_trip<T: Encode>(&mut self, api: ApiKey, body: &T) -> AlignedVec<16> {
        self.correlation_id += 1;
        let mut buffer = Vec::new();
        let frame = encode_request(&mut buffer, api, self.correlation_id, body);
        for part in frame.parts() {
            self.stream.write_all(part).unwrap();
        }
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix).unwrap();
        let len = u32::from_le_bytes(prefix) as usize;
        let mut frame = AlignedVec::<16>::with_capacity(len + 4);
        frame.extend_from_slice(&prefix);
        frame.resize(len + 4, 0);
        self.stream.read_exact(&mut frame[4..]).unwrap();
        frame
    }

    /// Sends a request and decodes its (owned) response.
    fn call<T: Encode, R: for<'a> Decode<'a>>(
        &mut self,
        api: ApiKey,
        body: &T,
    ) -> Result<R, WireError> {
        let frame = self.round_trip(api, body);
        let (correlation_id, response) = decode_response::<R>(&frame).unwrap();
        assert_eq!(correlation_id, self.correlation_id);
        response
    }

    fn create_topic(&mut self, name: &str, partitions: u32) {
        let request = CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                durability: Some(Durability::Always),
                ..Default::default()
            }],
            timeout_ms: 10_000,
        };
        let response: CreateTopicsResponse = self.call(ApiKey::CreateTopics, &request).unwrap();
        assert!(response.topics[0].error.is_ok(), "{:?}", response.topics[0]);
    }

    /// Produces one record `value` with acks=all; its offset, or the partition's error.
    fn produce(&mut self, topic: &str, partition: u32, value: &[u8]) -> Result<u64, WireError> {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, value, &[], None);
        let batch = builder.build().unwrap();
        let request =
            ProduceRequest::to_partition(topic, partition, wire::Acks::All, 10_000, &batch);
        let response: ProduceResponse = self.call(ApiKey::Produce, &request)?;
        let answer = response.topics[0].partitions[0].clone();
        if answer.error.is_ok() {
            Ok(answer.base_offset as u64)
        } else {
            Err(answer.error)
        }
    }

    /// Every record a consumer can read from `partition` (offset, value), or the error.
    fn read_all(&mut self, topic: &str, partition: u32) -> Result<Vec<(u64, Vec<u8>)>, WireError> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let request = FetchRequest {
                max_wait_ms: 0,
                min_bytes: 1,
                max_bytes: 8 << 20,
                topics: vec![FetchTopic {
                    topic: topic.into(),
                    partitions: vec![FetchPartition {
                        partition,
                        fetch_offset: offset,
                        max_bytes: 8 << 20,
                        current_leader_epoch: None,
                    }],
                }],
            };
            let frame = self.round_trip(ApiKey::Fetch, &request);
            let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
            let response = response?;
            let data = &response.topics[0].partitions[0];
            if !data.error.is_ok() {
                return Err(data.error.clone());
            }
            let bytes = data.records.as_slice();
            if bytes.is_empty() {
                return Ok(out);
            }
            for batch in BatchIter::new(bytes, wire::limits::BATCH_SIZE_MAX) {
                let batch = batch.unwrap();
                for (i, record) in batch.records().unwrap().iter().enumerate() {
                    let at = batch.base_offset() + i as u64;
                    if at >= offset {
                        out.push((at, record.value_bytes().to_vec()));
                    }
                }
                offset = batch.last_offset() + 1;
            }
        }
    }

    /// Commits `offset` for `group` on partition 0 of topic `t` (a commit without a member, as
    /// admin tools do); the partition's answer.
    fn commit(&mut self, group: &str, offset: u64) -> WireError {
        let request = OffsetCommitRequest {
            group_id: group.into(),
            generation: -1,
            member_id: String::new(),
            group_instance_id: None,
            topics: vec![OffsetCommitTopic {
                topic: "t".into(),
                partitions: vec![OffsetCommitPartition {
                    partition: 0,
                    offset,
                    metadata: String::new(),
                }],
            }],
        };
        let response: OffsetCommitResponse = self.call(ApiKey::OffsetCommit, &request).unwrap();
        response.topics[0].partitions[0].error.clone()
    }

    /// The committed offset of `group` on `t`/0 (-1: none).
    fn committed(&mut self, group: &str) -> i64 {
        let request = OffsetFetchRequest {
            group_id: group.into(),
            topics: Some(vec![OffsetFetchTopic {
                topic: "t".into(),
                partitions: vec![0],
            }]),
        };
        let response: OffsetFetchResponse = self.call(ApiKey::OffsetFetch, &request).unwrap();
        let answer = &response.topics[0].partitions[0];
        assert!(answer.error.is_ok(), "{answer:?}");
        answer.offset
    }
}

fn value(partition: u32, n: usize) -> Vec<u8> {
    format!("p{partition}-record-{n}").into_bytes()
}

/// (a) A failed fsync under `acks=all` on an `always` topic. The produce waiting for that
/// fsync is answered with a storage error (never success); the partition's log is poisoned and
/// later produces to it say so; the other partitions (on both shards) keep taking writes;
/// consumers never see the batch that failed. Restarted on the same directory without faults,
/// the node has every acknowledged record at its offset; the only record it may hold beyond
/// them is the one whose produce failed (written, not known durable: the client was told it
/// failed, as with a timeout), and nothing produced after the poisoning.
#[test]
fn failed_fsync_fails_the_produce_poisons_the_partition_and_keeps_acknowledged_data() {
    let dir = data_dir();
    let plan = Arc::new(FaultPlan::new());
    let node = Running::start(config(dir.path(), Some(plan.clone())));
    let mut conn = Conn::connect(node.addr());
    conn.create_topic("orders", 4);
    let mut acknowledged: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); 4];
    for n in 0..3 {
        for partition in 0..4u32 {
            let v = value(partition, n);
            let offset = conn.produce("orders", partition, &v).unwrap();
            acknowledged[partition as usize].push((offset, v));
        }
    }

    plan.fail_next_fsyncs(1);
    let failed = conn.produce("orders", 0, b"not acknowledged").unwrap_err();
    assert_eq!(plan.fired().fsyncs_failed, 1);
    assert_eq!(failed.code, ErrorCode::StorageError, "{failed:?}");
    let refused = conn.produce("orders", 0, b"after poisoning").unwrap_err();
    assert_eq!(refused.code, ErrorCode::StorageError, "{refused:?}");
    assert!(refused.message.contains("poisoned"), "{refused:?}");

    for n in 3..6 {
        for partition in 1..4u32 {
            let v = value(partition, n);
            let offset = conn.produce("orders", partition, &v).unwrap();
            acknowledged[partition as usize].push((offset, v));
        }
    }
    for partition in 0..4u32 {
        assert_eq!(
            conn.read_all("orders", partition).unwrap(),
            acknowledged[partition as usize],
            "partition {partition} before the restart"
        );
    }
    drop(conn);
    node.stop().unwrap();

    let node = Running::start(config(dir.path(), None));
    let mut conn = Conn::connect(node.addr());
    for partition in 0..4u32 {
        let mut read = conn.read_all("orders", partition).unwrap();
        let acked = &acknowledged[partition as usize];
        if partition == 0 && read.len() == acked.len() + 1 {
            let extra = read.pop().unwrap();
            assert_eq!(
                extra,
                (acked.len() as u64, b"not acknowledged".to_vec()),
                "the one record beyond the acknowledged ones"
            );
            eprintln!("the batch whose fsync failed was written and survived the restart");
        }
        assert_eq!(&read, acked, "partition {partition} after the restart");
    }
    // The reopened log takes writes again.
    let offset = conn.produce("orders", 0, b"after restart").unwrap();
    assert!(offset >= acknowledged[0].len() as u64);
    drop(conn);
    node.stop().unwrap();
}

/// (b) The disk fills up during a produce (the log must grow its file for a 1 MiB batch and
/// the plan says ENOSPC): a clear disk-full error, nothing appended, the broker keeps serving
/// reads of that partition and of others, and once space is back the same partition takes the
/// batch (a full disk does not poison the log).
#[test]
fn disk_full_during_produce_is_a_clear_error_and_reads_keep_working() {
    let dir = data_dir();
    let plan = Arc::new(FaultPlan::new());
    let node = Running::start(config(dir.path(), Some(plan.clone())));
    let mut conn = Conn::connect(node.addr());
    conn.create_topic("events", 2);
    let mut acknowledged: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); 2];
    for n in 0..3 {
        for partition in 0..2u32 {
            let v = value(partition, n);
            let offset = conn.produce("events", partition, &v).unwrap();
            acknowledged[partition as usize].push((offset, v));
        }
    }

    plan.no_space_after_bytes(0);
    let big = vec![7u8; 1 << 20];
    let full = conn.produce("events", 0, &big).unwrap_err();
    assert!(plan.fired().no_space >= 1);
    assert_eq!(full.code, ErrorCode::DiskFull, "{full:?}");
    assert!(full.message.contains("no space left"), "{full:?}");
    for partition in 0..2u32 {
        assert_eq!(
            conn.read_all("events", partition).unwrap(),
            acknowledged[partition as usize],
            "partition {partition} while the disk is full"
        );
    }

    plan.restore_space();
    let offset = conn.produce("events", 0, &big).unwrap();
    assert_eq!(offset, acknowledged[0].len() as u64, "nothing was appended");
    acknowledged[0].push((offset, big));
    assert_eq!(conn.read_all("events", 0).unwrap(), acknowledged[0]);
    drop(conn);
    node.stop().unwrap();
}

/// (c) The fsync of the offsets partition fails under a commit: the commit is answered with
/// an error, not success, and the group's committed offset stays the one acknowledged before.
#[test]
fn offset_commit_whose_fsync_fails_is_answered_with_an_error() {
    let dir = data_dir();
    let plan = Arc::new(FaultPlan::new());
    let node = Running::start(config(dir.path(), Some(plan.clone())));
    let mut conn = Conn::connect(node.addr());
    conn.create_topic("t", 1);
    let committed = conn.commit("billing", 10);
    assert!(committed.is_ok(), "{committed:?}");
    assert_eq!(conn.committed("billing"), 10);

    plan.fail_next_fsyncs(1);
    let failed = conn.commit("billing", 20);
    assert_eq!(plan.fired().fsyncs_failed, 1);
    assert_eq!(failed.code, ErrorCode::StorageError, "{failed:?}");
    assert_eq!(
        conn.committed("billing"),
        10,
        "a commit answered with an error must not be visible"
    );
    // The offsets log is poisoned: later commits of groups on it fail too, clearly.
    let later = conn.commit("billing", 30);
    assert_eq!(later.code, ErrorCode::StorageError, "{later:?}");
    assert!(later.message.contains("poisoned"), "{later:?}");
    // Data topics are unaffected.
    assert_eq!(conn.produce("t", 0, b"still writable").unwrap(), 0);
    drop(conn);
    node.stop().unwrap();
}

/// (d) The offsets snapshot cannot be written (a directory sits where `atomic_write` creates
/// its temporary file): the failure is logged, commits keep being acknowledged and served, the
/// snapshot at shutdown fails too (no snapshot file exists afterwards), and a restart recovers
/// every committed offset from the `__consumer_offsets` log.
#[test]
fn failed_offsets_snapshot_is_survived_and_restart_recovers_offsets_from_the_log() {
    let dir = data_dir();
    let mut config_with_snapshots = config(dir.path(), None);
    config_with_snapshots.offsets_snapshot_records = 3;
    let node = Running::start(config_with_snapshots.clone());
    let offsets_dir: PathBuf = dir
        .path()
        .join("topics")
        .join(CONSUMER_OFFSETS_TOPIC)
        .join("0");
    let conflict = offsets_dir.join("offsets.snapshot.tmp");
    std::fs::create_dir_all(conflict.join("in-the-way")).unwrap();
    let mut conn = Conn::connect(node.addr());
    conn.create_topic("t", 1);
    for round in 1..=12u64 {
        let answer = conn.commit("billing", round * 100);
        assert!(answer.is_ok(), "commit {round}: {answer:?}");
        assert_eq!(conn.committed("billing"), (round * 100) as i64);
    }
    assert_eq!(conn.produce("t", 0, b"still serving").unwrap(), 0);
    drop(conn);
    node.stop().unwrap();
    assert!(
        !offsets_dir.join("offsets.snapshot").exists(),
        "a snapshot was written despite the conflict"
    );
    assert!(conflict.is_dir());

    let node = Running::start(config_with_snapshots);
    let mut conn = Conn::connect(node.addr());
    assert_eq!(conn.committed("billing"), 1200);
    let answer = conn.commit("billing", 1300);
    assert!(answer.is_ok(), "{answer:?}");
    drop(conn);
    node.stop().unwrap();
}
