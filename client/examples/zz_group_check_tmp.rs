//! Scratch end-to-end check of consumer groups against a running `sluice serve` (not part of
//! the repository).
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{
    Admin, AssignorKind, ClientError, Consumer, ConsumerConfig, Delivery, ErrorCode, GroupConfig,
    NewTopic, Offset, Producer, ProducerConfig, ProducerRecord, RebalanceEvent, TopicPartition,
};

#[derive(Default)]
struct Log {
    records: Vec<(u32, u64, String, Instant)>,
    events: Vec<(Instant, RebalanceEvent)>,
    errors: Vec<(Instant, ClientError)>,
    assignment: Vec<TopicPartition>,
    generation: i32,
}

struct Run {
    name: String,
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    handle: tokio::task::JoinHandle<Consumer>,
}

impl Run {
    fn start(name: &str, mut consumer: Consumer) -> Run {
        let log = Arc::new(Mutex::new(Log::default()));
        let events = log.clone();
        let who = name.to_owned();
        consumer.on_rebalance(move |event| {
            println!("  [{who}] {event:?}");
            events.lock().unwrap().events.push((Instant::now(), event.clone()));
        });
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let (s, p, l) = (stop.clone(), pause.clone(), log.clone());
        let who = name.to_owned();
        let handle = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                if p.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let result = consumer.poll(Duration::from_millis(200)).await;
                let now = Instant::now();
                let failed = result.is_err();
                {
                let mut log = l.lock().unwrap();
                match result {
                    Ok(records) => {
                        for r in &records {
                            log.records.push((
                                r.partition,
                                r.offset,
                                String::from_utf8_lossy(r.value).into_owned(),
                                now,
                            ));
                        }
                    }
                    Err(e) => {
                        if log.errors.is_empty() {
                            println!("  [{who}] poll error: {e}");
                        }
                        log.errors.push((now, e));
                    }
                }
                log.assignment = consumer.assignment();
                log.generation = consumer.group_metadata().map_or(-2, |m| m.generation);
                }
                if failed {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            consumer
        });
        Run {
            name: name.to_owned(),
            stop,
            pause,
            log,
            handle,
        }
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.log.lock().unwrap().assignment.clone()
    }

    fn generation(&self) -> i32 {
        self.log.lock().unwrap().generation
    }

    fn values(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .records
            .iter()
            .map(|r| r.2.clone())
            .collect()
    }

    fn events(&self) -> Vec<RebalanceEvent> {
        self.log
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|e| e.1.clone())
            .collect()
    }

    async fn stop(self) -> (Consumer, Arc<Mutex<Log>>) {
        self.stop.store(true, Ordering::SeqCst);
        let consumer = self.handle.await.unwrap();
        println!("  [{}] stopped", self.name);
        (consumer, self.log)
    }
}

async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        if start.elapsed() > timeout {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = start.elapsed();
    println!("  ok: {what} after {took:?}");
    took
}

async fn produce(producer: &Producer, topic: &str, partitions: u32, per_partition: u32, tag: &str) -> Vec<String> {
    let mut pending = Vec::new();
    let mut values = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let value = format!("{tag}-{p}-{i}");
            values.push(value.clone());
            pending.push(
                producer
                    .enqueue(ProducerRecord::new(topic, value.into_bytes()).with_partition(p))
                    .await
                    .unwrap(),
            );
        }
    }
    for d in pending {
        d.await.unwrap();
    }
    values
}

fn group(id: &str) -> GroupConfig {
    GroupConfig {
        session_timeout: Duration::from_secs(3),
        heartbeat_interval: Duration::from_millis(500),
        auto_offset_reset: Offset::Earliest,
        auto_commit_interval: Duration::from_secs(1),
        ..GroupConfig::new(id)
    }
}

fn consumer(bootstrap: &str, group: GroupConfig, topic: &str) -> Consumer {
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap).with_group(group)).unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn partitions(topic: &str, n: u32) -> Vec<TopicPartition> {
    (0..n).map(|p| TopicPartition::new(topic, p)).collect()
}

fn check_complete(label: &str, produced: &[String], consumed: &[String]) {
    let consumed_set: BTreeSet<&String> = consumed.iter().collect();
    let missing: Vec<&String> = produced.iter().filter(|v| !consumed_set.contains(v)).collect();
    let dupes = consumed.len() - consumed_set.len();
    println!(
        "  {label}: produced {}, consumed {} ({} distinct, {dupes} duplicates), missing {}",
        produced.len(),
        consumed.len(),
        consumed_set.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "{label}: missing {:?}", &missing[..missing.len().min(5)]);
}

/// Cooperative: a second member joins; the first keeps half its partitions without interruption.
async fn cooperative(bootstrap: &str, admin: &Admin, producer: &Producer) {
    println!("== cooperative-sticky: join, incremental revoke, close hands over at once");
    admin.create_topic(NewTopic::new("coop", 6)).await.unwrap();
    let mut produced = produce(producer, "coop", 6, 50, "a").await;
    let c1 = Run::start("c1", consumer(bootstrap, group("g-coop"), "coop"));
    wait_until("c1 consumed the backlog", Duration::from_secs(20), || c1.values().len() >= 300).await;
    assert_eq!(c1.events(), vec![RebalanceEvent::Assigned(partitions("coop", 6))]);
    let g1 = c1.generation();

    // Keep producing while c2 joins.
    let stop_producing = Arc::new(AtomicBool::new(false));
    let flag = stop_producing.clone();
    let p2 = producer.clone();
    let background = tokio::spawn(async move {
        let mut values = Vec::new();
        let mut round = 0;
        while !flag.load(Ordering::SeqCst) {
            values.extend(produce(&p2, "coop", 6, 2, &format!("b{round}")).await);
            round += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        values
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let joined_at = Instant::now();
    let c2 = Run::start("c2", consumer(bootstrap, group("g-coop"), "coop"));
    wait_until("c2 owns 3 partitions", Duration::from_secs(20), || c2.assignment().len() == 3).await;
    wait_until("c1 owns 3 partitions", Duration::from_secs(20), || c1.assignment().len() == 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_producing.store(true, Ordering::SeqCst);
    produced.extend(background.await.unwrap());
    tokio::time::sleep(Duration::from_secs(2)).await;

    let e1 = c1.events();
    let e2 = c2.events();
    assert_eq!(e1.len(), 2, "c1 events {e1:?}");
    let RebalanceEvent::Revoked(revoked) = &e1[1] else { panic!("{e1:?}") };
    assert_eq!(revoked.len(), 3);
    assert_eq!(e2, vec![RebalanceEvent::Assigned(revoked.clone())]);
    let kept: Vec<u32> = c1.assignment().iter().map(|tp| tp.partition).collect();
    println!("  c1 generation {g1} -> {}, c2 {}", c1.generation(), c2.generation());
    assert!(c1.generation() >= g1 + 2, "two rebalances expected");
    // Kept partitions were consumed during the rebalance: the largest gap between records of a
    // kept partition around the join stays small.
    {
        let log = c1.log.lock().unwrap();
        for p in &kept {
            let times: Vec<Instant> = log
                .records
                .iter()
                .filter(|r| r.0 == *p && r.3 > joined_at)
                .map(|r| r.3)
                .collect();
            let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
            let first = times.first().map(|t| *t - joined_at);
            println!("  kept partition {p}: {} records after the join, first after {first:?}, largest gap {gap:?}", times.len());
            assert!(gap < Duration::from_secs(1), "kept partition {p} stalled for {gap:?}");
        }
    }
    let mut consumed = c1.values();
    consumed.extend(c2.values());
    check_complete("coop", &produced, &consumed);

    // close c1: c2 gets its partitions well before the session timeout.
    let (c1c, _) = c1.stop().await;
    let closed_at = Instant::now();
    c1c.close().await.unwrap();
    let took = wait_until("c2 owns all 6 after c1.close", Duration::from_secs(20), || c2.assignment().len() == 6).await;
    println!("  handover after close took {:?}", closed_at.elapsed());
    assert!(took < Duration::from_secs(3));
    // Committed offsets = log end for every partition (both committed on revoke / auto).
    let (mut c2c, _) = c2.stop().await;
    c2c.commit_sync().await.unwrap();
    let committed = c2c.committed(&partitions("coop", 6)).await.unwrap();
    println!("  committed after the run: {committed:?}");
    for (p, c) in committed.iter().enumerate() {
        let end = produced.iter().filter(|v| v.split('-').nth(1) == Some(&p.to_string())).count() as u64;
        assert_eq!(*c, Some(end), "partition {p}");
    }
    c2c.close().await.unwrap();
}

/// Eager (range): everything is revoked before the rejoin; a dropped member is removed by the
/// session timeout.
async fn eager(bootstrap: &str, admin: &Admin, producer: &Producer) {
    println!("== range (eager): revoke all, reassign; drop = crash, session timeout");
    admin.create_topic(NewTopic::new("eager", 4)).await.unwrap();
    let produced = produce(producer, "eager", 4, 25, "e").await;
    let range = || GroupConfig {
        assignors: vec![AssignorKind::Range],
        ..group("g-eager")
    };
    let c1 = Run::start("e1", consumer(bootstrap, range(), "eager"));
    wait_until("e1 consumed", Duration::from_secs(20), || c1.values().len() >= 100).await;
    let c2 = Run::start("e2", consumer(bootstrap, range(), "eager"));
    wait_until("e2 owns 2", Duration::from_secs(20), || c2.assignment().len() == 2).await;
    wait_until("e1 owns 2", Duration::from_secs(20), || c1.assignment().len() == 2).await;
    let e1 = c1.events();
    println!("  e1 events {e1:?}");
    assert_eq!(e1[1], RebalanceEvent::Revoked(partitions("eager", 4)));
    assert!(matches!(&e1[2], RebalanceEvent::Assigned(p) if p.len() == 2));
    // Drop e2 (a crash): e1 gets everything back after about the session timeout.
    let (c2c, _) = c2.stop().await;
    let dropped_at = Instant::now();
    drop(c2c);
    wait_until("e1 owns 4 after e2 crashed", Duration::from_secs(20), || c1.assignment().len() == 4).await;
    let took = dropped_at.elapsed();
    assert!(took >= Duration::from_millis(2500), "too early: {took:?}");
    let produced2 = produce(producer, "eager", 4, 5, "e2").await;
    wait_until("e1 consumed the rest", Duration::from_secs(20), || {
        let v: BTreeSet<String> = c1.values().into_iter().collect();
        produced2.iter().all(|p| v.contains(p))
    })
    .await;
    let mut all = produced;
    all.extend(produced2);
    check_complete("eager", &all, &c1.values());
    let (c1c, _) = c1.stop().await;
    c1c.close().await.unwrap();
}

/// Static members: a restart within the session timeout keeps the assignment with no
/// rebalance; a second consumer with the same instance id fences the first.
async fn static_members(bootstrap: &str, admin: &Admin, producer: &Producer) {
    println!("== static membership");
    admin.create_topic(NewTopic::new("static", 4)).await.unwrap();
    produce(producer, "static", 4, 10, "s").await;
    let with_instance = |instance: &str| GroupConfig {
        instance_id: Some(instance.to_owned()),
        session_timeout: Duration::from_secs(6),
        ..group("g-static")
    };
    let s1 = Run::start("s1", consumer(bootstrap, with_instance("i1"), "static"));
    let s2 = Run::start("s2", consumer(bootstrap, with_instance("i2"), "static"));
    wait_until("s1 and s2 own 2 each", Duration::from_secs(20), || {
        s1.assignment().len() == 2 && s2.assignment().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let generation = s1.generation();
    let s2_partitions = s2.assignment();
    let s1_events = s1.events().len();
    let (s2c, _) = s2.stop().await;
    s2c.close().await.unwrap(); // static: no LeaveGroup
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s2 = Run::start("s2'", consumer(bootstrap, with_instance("i2"), "static"));
    wait_until("s2' got its partitions back", Duration::from_secs(10), || s2.assignment() == s2_partitions).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s1.events().len(), s1_events, "s1 saw a rebalance: {:?}", s1.events());
    assert_eq!(s1.generation(), generation);
    assert_eq!(s2.generation(), generation);
    println!("  generation stayed {generation}");

    // Fencing: another consumer takes instance i1.
    let s3 = Run::start("s3", consumer(bootstrap, with_instance("i1"), "static"));
    wait_until("s1 fenced", Duration::from_secs(10), || {
        s1.log.lock().unwrap().errors.iter().any(|e| e.1.code() == Some(ErrorCode::FencedInstanceId))
    })
    .await;
    assert!(matches!(s1.events().last(), Some(RebalanceEvent::Lost(_))));
    assert!(s1.assignment().is_empty());
    wait_until("s3 owns i1's partitions", Duration::from_secs(10), || s3.assignment().len() == 2).await;
    let (s1c, _) = s1.stop().await;
    drop(s1c);
    for run in [s2, s3] {
        let (c, _) = run.stop().await;
        c.close().await.unwrap();
    }
}

/// Max poll interval: a member that stops polling leaves; its partitions move; it comes back
/// at its next poll with a Lost event.
async fn max_poll(bootstrap: &str, admin: &Admin, producer: &Producer) {
    println!("== max poll interval");
    admin.create_topic(NewTopic::new("mpi", 4)).await.unwrap();
    produce(producer, "mpi", 4, 10, "m").await;
    let short = || GroupConfig {
        max_poll_interval: Duration::from_secs(3),
        ..group("g-mpi")
    };
    let m1 = Run::start("m1", consumer(bootstrap, short(), "mpi"));
    let m2 = Run::start("m2", consumer(bootstrap, short(), "mpi"));
    wait_until("2 each", Duration::from_secs(20), || m1.assignment().len() == 2 && m2.assignment().len() == 2).await;
    m1.pause.store(true, Ordering::SeqCst);
    let paused = Instant::now();
    wait_until("m2 owns 4 while m1 does not poll", Duration::from_secs(20), || m2.assignment().len() == 4).await;
    println!("  moved {:?} after m1 stopped polling", paused.elapsed());
    assert!(paused.elapsed() >= Duration::from_millis(2900));
    m1.pause.store(false, Ordering::SeqCst);
    wait_until("2 each again", Duration::from_secs(20), || m1.assignment().len() == 2 && m2.assignment().len() == 2).await;
    let events = m1.events();
    println!("  m1 events {events:?}");
    assert!(events.iter().any(|e| matches!(e, RebalanceEvent::Lost(p) if p.len() == 2)));
    for run in [m1, m2] {
        let (c, _) = run.stop().await;
        c.close().await.unwrap();
    }
}

/// At-most-once: positions are committed before poll returns the records.
async fn at_most_once(bootstrap: &str, admin: &Admin, producer: &Producer) {
    println!("== at-most-once and at-least-once auto-commit");
    admin.create_topic(NewTopic::new("amo", 2)).await.unwrap();
    produce(producer, "amo", 2, 20, "x").await;
    let config = GroupConfig {
        delivery: Delivery::AtMostOnce,
        ..group("g-amo")
    };
    let mut c = consumer(bootstrap, config, "amo");
    let mut got = 0;
    let start = Instant::now();
    while got < 40 && start.elapsed() < Duration::from_secs(20) {
        let records = c.poll(Duration::from_millis(500)).await.unwrap();
        got += records.len();
        if !records.is_empty() {
            let tps = partitions("amo", 2);
            let committed: Vec<u64> = c.committed(&tps).await.unwrap().into_iter().map(|c| c.unwrap_or(0)).collect();
            let mut positions = Vec::new();
            for tp in &tps {
                positions.push(c.position(tp).await.unwrap());
            }
            assert_eq!(committed, positions, "committed before records were returned");
        }
    }
    assert_eq!(got, 40);
    println!("  ok: every poll committed its positions before returning ({got} records)");
    c.close().await.unwrap();

    // At-least-once auto-commit: positions of the previous polls are committed at a later poll.
    let mut c = consumer(bootstrap, group("g-alo"), "amo");
    let mut got = 0;
    while got < 40 {
        got += c.poll(Duration::from_millis(500)).await.unwrap().len();
    }
    let tps = partitions("amo", 2);
    assert_eq!(c.committed(&tps).await.unwrap(), vec![None, None]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.poll(Duration::from_millis(300)).await.unwrap(); // starts the auto-commit
    c.poll(Duration::from_millis(300)).await.unwrap();
    assert_eq!(c.committed(&tps).await.unwrap(), vec![Some(20), Some(20)]);
    println!("  ok: auto-commit committed 20/20");
    let metadata = c.group_metadata().unwrap();
    println!("  group metadata {metadata:?}");
    assert!(metadata.generation >= 1 && !metadata.member_id.is_empty());
    c.close().await.unwrap();
}

/// Manual assignment with a group: commits with generation -1 while the group has no members;
/// a new manual consumer resumes from the committed offset.
async fn manual(bootstrap: &str, producer: &Producer) {
    println!("== manual assignment with a group");
    let tps = partitions("amo", 2);
    let config = GroupConfig { auto_commit: false, ..group("g-manual") };
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap).with_group(config.clone())).unwrap();
    c.assign(&tps);
    let mut got = 0;
    while got < 40 {
        got += c.poll(Duration::from_millis(500)).await.unwrap().len();
    }
    c.commit_offsets(&[(tps[0].clone(), 5)]).await.unwrap();
    assert_eq!(c.committed(&tps).await.unwrap(), vec![Some(5), None]);
    c.commit_sync().await.unwrap();
    assert_eq!(c.committed(&tps).await.unwrap(), vec![Some(20), Some(20)]);
    c.close().await.unwrap();
    produce(producer, "amo", 2, 1, "y").await;
    let mut c = Consumer::new(ConsumerConfig::new(bootstrap).with_group(config)).unwrap();
    c.assign(&tps);
    let mut values = Vec::new();
    while values.len() < 2 {
        for r in &c.poll(Duration::from_millis(500)).await.unwrap() {
            values.push((r.partition, r.offset));
        }
    }
    values.sort();
    assert_eq!(values, vec![(0, 20), (1, 20)]);
    println!("  ok: resumed at the committed offsets");
    // A member-less commit is refused while the group has members.
    let mut member = consumer(bootstrap, group("g-manual"), "amo");
    let start = Instant::now();
    while member.assignment().is_empty() && start.elapsed() < Duration::from_secs(10) {
        member.poll(Duration::from_millis(200)).await.unwrap();
    }
    let error = c.commit_sync().await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NonEmptyGroup));
    println!("  ok: manual commit refused while the group has members ({error})");
    member.close().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::main]
async fn main() {
    let bootstrap = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:19092".into());
    let which: BTreeMap<&str, bool> = BTreeMap::new();
    let _ = which;
    let only = std::env::args().nth(2);
    let admin = Admin::new(bootstrap.clone()).unwrap();
    let producer = Producer::new(ProducerConfig::new(bootstrap.clone())).unwrap();
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if run("coop") {
        cooperative(&bootstrap, &admin, &producer).await;
    }
    if run("eager") {
        eager(&bootstrap, &admin, &producer).await;
    }
    if run("static") {
        static_members(&bootstrap, &admin, &producer).await;
    }
    if run("mpi") {
        max_poll(&bootstrap, &admin, &producer).await;
    }
    if run("amo") {
        at_most_once(&bootstrap, &admin, &producer).await;
        manual(&bootstrap, &producer).await;
    }
    producer.close().await.unwrap();
    println!("ALL CHECKS PASSED");
}
