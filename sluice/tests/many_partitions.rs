//! Many partitions on one node (real broker process, 2 shards): 10 topics x 1000 partitions =
//! 10 000 partitions, one small record written to each. Disk and memory must follow the data
//! and the budgets, not grow by a fixed large amount per partition:
//!
//! ```text
//!  allocated disk of the data dir (sum of st_blocks x 512)
//!      <= N x (PREALLOCATE_FIRST_STEP_BYTES 64 KiB + DIR_AND_FILES_BYTES 8 KiB)
//!       + OTHER_FILES_BYTES 16 MiB (registry, offsets partitions, producer ids)
//!         = 10 000 x 72 KiB + 16 MiB ~= 719 MiB          (measured: 664 MiB)
//!  broker VmRSS after the writes
//!      <= RSS of the same broker with no topic (runtime, io_uring rings, binary)
//!       + cores x (tail cache budget 32 MiB + SPARE_CHUNKS_MAX 8 x 1 MiB)   = 80 MiB
//!       + N x PER_PARTITION_MEMORY_BYTES 12 KiB (log state, one tail page, maps)
//!         = 37 (measured) + 80 + 117 ~= 234 MiB           (measured: 132 MiB)
//! ```
//! (With one 64 MiB reservation or one 1 MiB chunk per partition, 10 000 partitions would need
//! 625 GiB of disk or 10 GiB of memory: the bounds catch a return to that.) Then the broker is
//! stopped and restarted on the same directory, and a sample of partitions gives back its
//! record. The whole test takes about 40 s on 2 shared cores (debug build): creating the
//! partitions ~10 s, writing ~7 s, restarting ~14 s, removing the data ~4 s.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, CreateTopic, CreateTopicsRequest, CreateTopicsResponse, Durability,
    FetchResponse, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic, Records,
};
use wire::{BatchBuilder, BatchIter};

/// Topics created.
const TOPICS: u32 = 10;
/// Partitions per topic.
const PARTITIONS_PER_TOPIC: u32 = 1000;
/// Partitions in total.
const PARTITIONS: u64 = (TOPICS * PARTITIONS_PER_TOPIC) as u64;
/// Tail-cache budget per core given to the broker: small, so that the 10 000 partitions' first
/// chunks (16 KiB each, 160 MiB in total) cannot all stay cached and eviction must work.
const TAIL_CACHE_BYTES_PER_CORE: u64 = 32 << 20;
/// Shards of the broker (`common::Broker` starts 2).
const CORES: u64 = 2;
/// Disk one idle partition may take beyond its first reservation: its directory (4 KiB on
/// ext4) and the small files next to its segment, with a page to spare (measured: 4 KiB).
const DIR_AND_FILES_BYTES: u64 = 8 << 10;
/// Disk of everything else in the data directory: topic registry, `__consumer_offsets`
/// partitions (8 x 64 KiB reserved), producer-id block.
const OTHER_FILES_BYTES: u64 = 16 << 20;
/// Memory one partition may hold beyond the budgets: its log and segment state, the tail page
/// it keeps (4 KiB), index and map entries (measured: about 9 KiB including what the cache
/// budget holds, in a debug build). Tight enough that one 16 KiB chunk kept per partition
/// regardless of the budget (160 MiB more) breaks the bound.
const PER_PARTITION_MEMORY_BYTES: u64 = 12 << 10;

/// Sum of `st_blocks x 512` over every file and directory under `dir`. The broker runs
/// meanwhile: a file it removes (a checkpoint's temporary, renamed over the old one) between
/// the listing and its `stat` holds no disk and is skipped.
fn allocated_bytes(dir: &Path) -> u64 {
    let gone = |error: &std::io::Error| error.kind() == std::io::ErrorKind::NotFound;
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(error) if gone(&error) => continue,
            Err(error) => panic!("stat {}: {error}", path.display()),
        };
        total += metadata.blocks() * 512;
        if metadata.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(error) if gone(&error) => continue,
                Err(error) => panic!("list {}: {error}", path.display()),
            };
            for entry in entries {
                pending.push(entry.unwrap().path());
            }
        }
    }
    total
}

/// The broker's resident memory (VmRSS of /proc/PID/status), in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn topic_name(topic: u32) -> String {
    format!("many-{topic}")
}

fn record_value(topic: u32, partition: u32) -> Vec<u8> {
    format!("record of {topic}/{partition}").into_bytes()
}

/// The one record of `topic`/`partition` (from offset 0), as (offset, value).
fn read_first(conn: &mut Conn, topic: &str, partition: u32) -> Option<(u64, Vec<u8>)> {
    conn.send(
        ApiKey::Fetch,
        &common::fetch_request(topic, partition, 0, 0),
    );
    let frame = conn.read_frame().unwrap();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    let response = response.unwrap();
    let data = &response.topics[0].partitions[0];
    assert!(data.error.is_ok(), "{topic}/{partition}: {:?}", data.error);
    let batch = BatchIter::new(data.records.as_slice(), wire::limits::BATCH_SIZE_MAX).next()?;
    let batch = batch.unwrap();
    let records = batch.records().unwrap();
    let record = records.iter().next()?;
    Some((batch.base_offset(), record.value_bytes().to_vec()))
}

/// 10 000 partitions: disk and memory within the stated bounds, every partition written,
/// a sample read back after a restart.
#[test]
fn ten_thousand_partitions_cost_disk_and_memory_in_proportion_to_data_and_budgets() {
    let started = Instant::now();
    let dir = common::data_dir();
    let flags = [
        "--tail-cache-bytes-per-core",
        &TAIL_CACHE_BYTES_PER_CORE.to_string(),
    ]
    .map(String::from);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut broker = Broker::start_in(dir.path(), &flags);
    let mut conn = Conn::connect(broker.addr);
    let baseline_rss = rss_bytes(broker.child.id());

    let request = CreateTopicsRequest {
        topics: (0..TOPICS)
            .map(|topic| CreateTopic {
                name: topic_name(topic),
                partitions: PARTITIONS_PER_TOPIC,
                replication_factor: 1,
                durability: Some(Durability::interval(50)),
                ..Default::default()
            })
            .collect(),
        timeout_ms: 120_000,
    };
    let created: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, &request).unwrap();
    assert!(
        created.topics.iter().all(|t| t.error.is_ok()),
        "{created:?}"
    );
    let created_after = started.elapsed();

    // One produce request per topic, one small batch per partition.
    for topic in 0..TOPICS {
        let batches: Vec<_> = (0..PARTITIONS_PER_TOPIC)
            .map(|partition| {
                let mut builder = BatchBuilder::new();
                builder.push(
                    common::now_ms(),
                    None,
                    &record_value(topic, partition),
                    &[],
                    None,
                );
                builder.build().unwrap()
            })
            .collect();
        let request = ProduceRequest {
            acks: wire::Acks::Leader,
            timeout_ms: 60_000,
            topics: vec![ProduceTopic {
                topic: topic_name(topic),
                partitions: batches
                    .iter()
                    .enumerate()
                    .map(|(partition, batch)| ProducePartition {
                        partition: partition as u32,
                        records: Records::from_slice(batch),
                    })
                    .collect(),
            }],
        };
        let produced: ProduceResponse = conn.call(ApiKey::Produce, &request).unwrap();
        for answer in &produced.topics[0].partitions {
            assert!(
                answer.error.is_ok(),
                "{topic}/{}: {:?}",
                answer.partition,
                answer.error
            );
            assert_eq!(answer.base_offset, 0);
        }
    }
    let produced_after = started.elapsed();
    // A fetch of a partition on each shard answers (the records are readable).
    for partition in [0, 1, 997, 999] {
        assert_eq!(
            read_first(&mut conn, &topic_name(3), partition),
            Some((0, record_value(3, partition)))
        );
    }

    let disk = allocated_bytes(dir.path());
    let disk_bound = PARTITIONS * (storage::PREALLOCATE_FIRST_STEP_BYTES + DIR_AND_FILES_BYTES)
        + OTHER_FILES_BYTES;
    let rss = rss_bytes(broker.child.id());
    let rss_bound = baseline_rss
        + CORES * (TAIL_CACHE_BYTES_PER_CORE + storage::SPARE_CHUNKS_MAX as u64 * (1 << 20))
        + PARTITIONS * PER_PARTITION_MEMORY_BYTES;
    eprintln!(
        "{PARTITIONS} partitions: created in {created_after:?}, written by {produced_after:?}; \
         disk {} MiB (bound {} MiB, {} KiB per partition); RSS {} MiB (no topics: {} MiB; \
         bound {} MiB, {} KiB per partition above the no-topic RSS)",
        disk >> 20,
        disk_bound >> 20,
        (disk / PARTITIONS) >> 10,
        rss >> 20,
        baseline_rss >> 20,
        rss_bound >> 20,
        (rss.saturating_sub(baseline_rss) / PARTITIONS) >> 10,
    );
    assert!(disk <= disk_bound, "disk {disk} > bound {disk_bound}");
    assert!(rss <= rss_bound, "RSS {rss} > bound {rss_bound}");

    // Restart on the same directory: every partition reopens, a sample has its record.
    drop(conn);
    assert!(broker.terminate().success());
    let restart = Instant::now();
    let broker = Broker::start_in(dir.path(), &flags);
    let reopened_in = restart.elapsed();
    let mut conn = Conn::connect(broker.addr);
    for topic in 0..TOPICS {
        for partition in (topic * 7..PARTITIONS_PER_TOPIC).step_by(97) {
            assert_eq!(
                read_first(&mut conn, &topic_name(topic), partition),
                Some((0, record_value(topic, partition))),
                "{topic}/{partition} after the restart"
            );
        }
    }
    eprintln!(
        "restart with {PARTITIONS} partitions: ready in {reopened_in:?}; total {:?}",
        started.elapsed()
    );
    drop(conn);
    let stopping = Instant::now();
    let mut broker = broker;
    assert!(broker.terminate().success());
    let stopped_in = stopping.elapsed();
    // Removing 20 000 files is filesystem metadata work: one thread per topic overlaps it.
    let removing = Instant::now();
    std::thread::scope(|scope| {
        for topic in 0..TOPICS {
            let topic_dir = dir.path().join("topics").join(topic_name(topic));
            scope.spawn(move || std::fs::remove_dir_all(topic_dir).unwrap());
        }
    });
    dir.close().unwrap();
    eprintln!(
        "stopped in {stopped_in:?}; data removed in {:?}",
        removing.elapsed()
    );
}
