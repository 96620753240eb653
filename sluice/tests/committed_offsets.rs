//! Committed offsets on the wire: they are records in `__consumer_offsets`, compacted by the
//! coordinator's snapshots, and they survive kill -9 of the broker. Raw protocol against a real
//! broker process.

#![allow(clippy::unwrap_used)]

mod common;

use common::{data_dir, Broker, Conn};
use wire::protocol::{
    ApiKey, ErrorCode, FindCoordinatorRequest, FindCoordinatorResponse, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsResponse, ListOffsetsTopic, OffsetCommitPartition,
    OffsetCommitRequest, OffsetCommitResponse, OffsetCommitTopic, OffsetFetchRequest,
    OffsetFetchResponse, OffsetFetchTopic, CONSUMER_OFFSETS_TOPIC, EARLIEST_TIMESTAMP,
};

const ROUNDS: u64 = 1000;

fn commit(conn: &mut Conn, group: &str, round: u64, partitions: u32) -> OffsetCommitResponse {
    let request = OffsetCommitRequest {
        group_id: group.into(),
        generation: -1,
        member_id: String::new(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            topic: "t".into(),
            partitions: (0..partitions)
                .map(|p| OffsetCommitPartition {
                    partition: p,
                    offset: round * 10 + u64::from(p),
                    metadata: format!("round {round}"),
                })
                .collect(),
        }],
    };
    conn.call(ApiKey::OffsetCommit, &request).unwrap()
}

/// The committed offsets of `group` for partitions 0 to 3 of topic `t`. The answer has one
/// entry per partition asked for, in order (offset -1 when nothing is committed), which is
/// asserted here, so that checks on every entry never pass on an empty answer.
fn fetch(conn: &mut Conn, group: &str) -> OffsetFetchResponse {
    let request = OffsetFetchRequest {
        group_id: group.into(),
        topics: Some(vec![OffsetFetchTopic {
            topic: "t".into(),
            partitions: vec![0, 1, 2, 3],
        }]),
    };
    let response: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, &request).unwrap();
    assert_eq!(response.topics.len(), 1, "{group}: {response:?}");
    assert_eq!(response.topics[0].topic, "t", "{group}: {response:?}");
    let partitions: Vec<u32> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect();
    assert_eq!(partitions, [0, 1, 2, 3], "{group}: {response:?}");
    response
}

fn log_start(conn: &mut Conn, partition: u32) -> i64 {
    let request = ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            topic: CONSUMER_OFFSETS_TOPIC.into(),
            partitions: vec![ListOffsetsPartition {
                partition,
                timestamp: EARLIEST_TIMESTAMP,
            }],
        }],
    };
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, &request).unwrap();
    response.topics[0].partitions[0].offset
}

/// Thousands of commits with tiny offsets segments and a short snapshot interval: the
/// coordinator snapshots its table and deletes the sealed segments the snapshots cover (the
/// history is compacted away: the partition's log start moves). After kill -9 and a restart
/// the last commit of every partition is back, including one made only at the very start,
/// whose record is gone from the log (it comes from the snapshot). A damaged newest snapshot
/// falls back to the previous one; when both are damaged and the log no longer has what they
/// covered, the broker refuses to start rather than forget offsets.
#[test]
fn commits_are_compacted_by_snapshots_and_survive_kill() {
    let dir = data_dir();
    let flags = [
        "--offsets-partitions",
        "1",
        "--offsets-segment-bytes",
        "65536",
        "--offsets-snapshot-records",
        "400",
    ];
    let mut broker = Broker::start_in(dir.path(), &flags);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("t", 4, None);
    commit(&mut conn, "early", 7, 4);
    for round in 0..ROUNDS {
        let response = commit(&mut conn, "g", round, 4);
        for partition in &response.topics[0].partitions {
            assert!(partition.error.is_ok(), "{:?}", partition.error);
        }
    }
    let coordinator: FindCoordinatorResponse = conn
        .call(
            ApiKey::FindCoordinator,
            &FindCoordinatorRequest {
                group_id: "g".into(),
            },
        )
        .unwrap();
    assert_eq!(coordinator.offsets_partition, 0);
    let start = log_start(&mut conn, 0);
    assert!(
        start > 0,
        "sealed segments covered by a snapshot are deleted (log start {start})"
    );

    let check = |broker: &Broker| {
        let mut conn = Conn::connect(broker.addr);
        let fetched = fetch(&mut conn, "g");
        for partition in &fetched.topics[0].partitions {
            let p = u64::from(partition.partition);
            assert_eq!(partition.offset as u64, (ROUNDS - 1) * 10 + p);
            assert_eq!(partition.metadata, format!("round {}", ROUNDS - 1));
            assert!(partition.commit_timestamp > 0);
        }
        let early = fetch(&mut conn, "early");
        let offsets: Vec<i64> = early.topics[0]
            .partitions
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(offsets, [70, 71, 72, 73], "from the snapshot");
        // A group that never committed has no offsets.
        let none = fetch(&mut conn, "other");
        assert!(none.topics[0].partitions.iter().all(|p| p.offset == -1));
        assert!(log_start(&mut conn, 0) >= start);
    };
    broker.kill();
    let mut broker = Broker::start_in(dir.path(), &flags);
    check(&broker);

    // A clean stop writes a snapshot (the previous one is kept); damage the newest.
    assert!(broker.terminate().success());
    let partition_dir = dir
        .path()
        .join("topics")
        .join(CONSUMER_OFFSETS_TOPIC)
        .join("0");
    let damage = |name: &str| {
        let path = partition_dir.join(name);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    };
    damage("offsets.snapshot");
    let mut broker = Broker::start_in(dir.path(), &flags);
    check(&broker);
    assert!(broker.terminate().success());

    damage("offsets.snapshot");
    damage("offsets.snapshot.prev");
    let mut refused = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--cores", "2"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread, so that a broker that neither starts nor exits fails the test (after
    // a generous deadline) instead of hanging it.
    let stdout = refused.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = sender.send(read.map(|_| line));
    });
    let Ok(first_line) = receiver.recv_timeout(common::BROKER_START_DEADLINE) else {
        let _ = refused.kill();
        panic!("the broker neither refused to start nor started");
    };
    let first_line = first_line.unwrap();
    if !first_line.is_empty() {
        let _ = refused.kill();
        panic!("the broker started with both snapshots damaged: {first_line}");
    }
    let output = refused.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("damaged"), "{stderr}");
}

/// Bad commits get clear errors and store nothing: unknown partitions, empty group ids, member
/// commits to a group that does not know the member, and writes to the internal topic.
#[test]
fn bad_commits_are_refused() {
    let broker = Broker::start(&[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("t", 2, None);
    let response = commit(&mut conn, "g", 1, 3);
    let errors: Vec<ErrorCode> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error.code)
        .collect();
    assert_eq!(
        errors,
        [
            ErrorCode::None,
            ErrorCode::None,
            ErrorCode::UnknownTopicOrPartition
        ]
    );
    let error = conn
        .call::<_, OffsetCommitResponse>(
            ApiKey::OffsetCommit,
            &OffsetCommitRequest {
                group_id: String::new(),
                generation: -1,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidGroupId);
    let error = conn
        .call::<_, OffsetCommitResponse>(
            ApiKey::OffsetCommit,
            &OffsetCommitRequest {
                group_id: "g".into(),
                generation: 3,
                member_id: "ghost".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::UnknownMemberId);
    let fetched = fetch(&mut conn, "g");
    let offsets: Vec<i64> = fetched.topics[0]
        .partitions
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(offsets, [10, 11, -1, -1]);

    // Clients cannot write the internal topic.
    let mut builder = wire::BatchBuilder::new();
    builder.push(1, Some(b"k"), b"v", &[], None);
    let batch = builder.build().unwrap();
    let request = wire::protocol::ProduceRequest {
        acks: wire::Acks::Leader,
        timeout_ms: 1000,
        topics: vec![wire::protocol::ProduceTopic {
            topic: CONSUMER_OFFSETS_TOPIC.into(),
            partitions: vec![wire::protocol::ProducePartition {
                partition: 0,
                records: wire::protocol::Records::from_slice(&batch),
            }],
        }],
    };
    let response: wire::protocol::ProduceResponse = conn.call(ApiKey::Produce, &request).unwrap();
    assert_eq!(
        response.topics[0].partitions[0].error.code,
        ErrorCode::InvalidRequest
    );
}

/// A group whose committed offset is outside the log (here: beyond its end, as after a
/// retention cut or a bad manual commit) starts that partition at `auto_offset_reset` instead of
/// failing, like Kafka's `auto.offset.reset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_commit_falls_back_to_auto_offset_reset() {
    use client::{
        Consumer, ConsumerConfig, GroupConfig, Offset, Producer, ProducerConfig, ProducerRecord,
    };
    let broker = Broker::start(&["--group-min-session-timeout-ms", "100"]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("t", 1, None);
    let producer = Producer::new(ProducerConfig::new(broker.addr.to_string())).unwrap();
    for i in 0..5 {
        let record = ProducerRecord::new("t", format!("m{i}").into_bytes()).with_partition(0);
        producer.send(record).await.unwrap();
    }
    let response = commit(&mut conn, "reset", 100, 1); // offset 1000: far past the log end
    assert!(response.topics[0].partitions[0].error.is_ok());

    let mut group = GroupConfig::new("reset");
    group.auto_offset_reset = Offset::Earliest;
    // A lone member that must stay in: a session no scheduling stall can outlast.
    group.session_timeout = std::time::Duration::from_secs(30);
    group.heartbeat_interval = std::time::Duration::from_millis(200);
    let config = ConsumerConfig::new(broker.addr.to_string()).with_group(group);
    let mut consumer = Consumer::new(config).unwrap();
    consumer.subscribe(&["t"]).unwrap();
    let received = common::receive(&mut consumer, 5, std::time::Duration::from_secs(60)).await;
    let values: Vec<&str> = received.iter().map(|r| r.text()).collect();
    assert_eq!(values, ["m0", "m1", "m2", "m3", "m4"]);
    consumer.close().await.unwrap();
}

/// Deleting a topic deletes its committed offsets, durably (tombstones in
/// `__consumer_offsets`): after the delete, and after kill -9 and a restart, the group has none
/// for it, and a group that only had those offsets is no longer listed.
#[test]
fn deleting_a_topic_deletes_its_committed_offsets() {
    use wire::protocol::{
        DeleteTopicsRequest, DeleteTopicsResponse, ListGroupsRequest, ListGroupsResponse,
    };
    let dir = data_dir();
    let mut broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    conn.create_topic("t", 4, None);
    conn.create_topic("kept", 1, None);
    // Several groups, so that offsets of the deleted topic sit on several coordinators.
    let groups: Vec<String> = (0..6).map(|i| format!("g{i}")).collect();
    for group in &groups {
        commit(&mut conn, group, 1, 4);
    }
    let kept = OffsetCommitRequest {
        group_id: "g0".into(),
        generation: -1,
        member_id: String::new(),
        group_instance_id: None,
        topics: vec![OffsetCommitTopic {
            topic: "kept".into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset: 5,
                metadata: String::new(),
            }],
        }],
    };
    let _: OffsetCommitResponse = conn.call(ApiKey::OffsetCommit, &kept).unwrap();
    let deleted: DeleteTopicsResponse = conn
        .call(
            ApiKey::DeleteTopics,
            &DeleteTopicsRequest {
                names: vec!["t".into()],
                timeout_ms: 10_000,
            },
        )
        .unwrap();
    assert!(deleted.topics[0].error.is_ok());
    let check = |conn: &mut Conn| {
        for group in &groups {
            let fetched = fetch(conn, group);
            assert!(
                fetched.topics[0].partitions.iter().all(|p| p.offset == -1),
                "{group}: {fetched:?}"
            );
        }
        let listed: ListGroupsResponse = conn
            .call(ApiKey::ListGroups, &ListGroupsRequest {})
            .unwrap();
        let names: Vec<&str> = listed.groups.iter().map(|g| g.group_id.as_str()).collect();
        assert_eq!(names, ["g0"], "only g0 still has offsets (for \"kept\")");
        let request = OffsetFetchRequest {
            group_id: "g0".into(),
            topics: None,
        };
        let all: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, &request).unwrap();
        assert_eq!(all.topics.len(), 1);
        assert_eq!(all.topics[0].topic, "kept");
        assert_eq!(all.topics[0].partitions[0].offset, 5);
    };
    check(&mut conn);
    broker.kill();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    check(&mut conn);
}
