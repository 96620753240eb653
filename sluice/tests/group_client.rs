//! The consumer-group API of the native client against the real `sluice` binary: rebalance
//! callbacks, commits (sync, async, explicit, at-most-once), group metadata, cooperative
//! rebalances, the max poll interval, static-membership fencing, manual assignment with a
//! group, and the broker fencing stale members. Every consumer runs in this process; the
//! broker is a real `sluice serve`. No test waits for a session to expire (members leave by
//! `close`, by the max poll interval, or are fenced by instance id), so sessions are long
//! enough that a loaded machine never expels a member by accident.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use client::{
    Admin, ClientError, Consumer, ConsumerConfig, Delivery, ErrorCode, GroupConfig, GroupMetadata,
    NewTopic, Offset, Producer, ProducerConfig, ProducerRecord, RebalanceEvent, TopicPartition,
    LATEST_TIMESTAMP,
};
use common::{receive, Broker, Conn, Received};
use tokio::task::JoinHandle;
use wire::protocol::{
    ApiKey, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitResponse, OffsetCommitTopic,
};

/// Session timeout of every member: far longer than any scheduling stall of a loaded 2-core
/// machine, so that no member is expelled for a late heartbeat (spurious `Lost` events and
/// redeliveries unrelated to what a test checks). No test waits for it to expire.
const SESSION: Duration = Duration::from_secs(30);
/// Heartbeat interval of every member: how fast a member learns of a rebalance.
const HEARTBEAT: Duration = Duration::from_millis(200);
/// Deadline for anything the group must do (join, rebalance, deliver): generous for a loaded
/// machine, and spent only when a test fails.
const DEADLINE: Duration = Duration::from_secs(60);

fn start_broker() -> Broker {
    Broker::start(&["--group-min-session-timeout-ms", "100"])
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: u32) {
    Admin::new(bootstrap)
        .unwrap()
        .create_topic(NewTopic::new(topic, partitions))
        .await
        .unwrap();
}

/// Group settings for the tests: long session, short heartbeat, a max poll interval that
/// never expires by accident, and `Earliest` for partitions the group never committed.
fn group(group_id: &str) -> GroupConfig {
    GroupConfig {
        session_timeout: SESSION,
        heartbeat_interval: HEARTBEAT,
        max_poll_interval: Duration::from_secs(10),
        auto_offset_reset: Offset::Earliest,
        ..GroupConfig::new(group_id)
    }
}

fn consumer(bootstrap: &str, group: GroupConfig) -> Consumer {
    let config = ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        ..ConsumerConfig::new(bootstrap).with_group(group)
    };
    Consumer::new(config).unwrap()
}

/// A consumer of `group` subscribed to `topic`.
fn subscribed(bootstrap: &str, group: GroupConfig, topic: &str) -> Consumer {
    let mut consumer = consumer(bootstrap, group);
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

fn partitions(topic: &str, count: u32) -> Vec<TopicPartition> {
    (0..count).map(|p| TopicPartition::new(topic, p)).collect()
}

/// Produces `per_partition` records `"<tag>-<p>-<i>"` to each partition of `topic`, every
/// acknowledgement awaited; returns the values.
async fn produce(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    per_partition: u32,
    tag: &str,
) -> BTreeSet<String> {
    let producer = Producer::new(ProducerConfig::new(bootstrap)).unwrap();
    let mut sent = BTreeSet::new();
    let mut deliveries = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let value = format!("{tag}-{p}-{i}");
            let record = ProducerRecord::new(topic, value.clone().into_bytes()).with_partition(p);
            deliveries.push(producer.enqueue(record).await.unwrap());
            sent.insert(value);
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await.unwrap();
    sent
}

/// A producer writing one record to every partition each ~10 ms until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    task: JoinHandle<BTreeSet<String>>,
}

impl Traffic {
    fn start(bootstrap: &str, topic: &str, partitions: u32, tag: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (bootstrap, topic, tag) = (bootstrap.to_owned(), topic.to_owned(), tag.to_owned());
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let producer = Producer::new(ProducerConfig::new(bootstrap)).unwrap();
            let mut sent = BTreeSet::new();
            let mut i = 0u64;
            while !stopping.load(Ordering::SeqCst) {
                let mut acks = Vec::new();
                for p in 0..partitions {
                    let value = format!("{tag}-{p}-{i}");
                    let record =
                        ProducerRecord::new(&*topic, value.clone().into_bytes()).with_partition(p);
                    acks.push(producer.send(record));
                    sent.insert(value);
                }
                for ack in acks {
                    ack.await.unwrap();
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            producer.close().await.unwrap();
            sent
        });
        Traffic { stop, task }
    }

    /// Stops producing; every value sent (and acknowledged).
    async fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// What the application saw, in order: rebalance callbacks and returned records.
#[derive(Debug, Clone)]
enum Entry {
    Event(RebalanceEvent),
    Record(Received),
}

/// What a background member saw.
#[derive(Debug, Default)]
struct Seen {
    log: Vec<(Instant, Entry)>,
    /// `Consumer::assignment()` after the last poll.
    assignment: Vec<TopicPartition>,
    /// `Consumer::group_metadata()` after the last poll.
    metadata: Option<GroupMetadata>,
    /// The poll error that ended the loop.
    error: Option<ClientError>,
    /// Set once the loop stopped polling for a pause.
    paused_since: Option<Instant>,
    /// When the last poll was called: no earlier than the end of the last poll the consumer
    /// itself counts its max poll interval from.
    last_poll_started: Option<Instant>,
}

/// A consumer polled in a loop by a background task (poll timeout 200 ms), recording what it
/// saw; it can pause (stop calling poll) and be stopped to get the consumer back.
struct Member {
    seen: Arc<Mutex<Seen>>,
    pause: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<Consumer>>,
}

impl Member {
    /// Installs the rebalance callback and starts polling.
    fn start(mut consumer: Consumer) -> Member {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let log = seen.clone();
        consumer.on_rebalance(move |event| {
            log.lock()
                .unwrap()
                .log
                .push((Instant::now(), Entry::Event(event.clone())));
        });
        let pause = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (state, pausing, stopping) = (seen.clone(), pause.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !stopping.load(Ordering::SeqCst) {
                if pausing.load(Ordering::SeqCst) {
                    state
                        .lock()
                        .unwrap()
                        .paused_since
                        .get_or_insert_with(Instant::now);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                {
                    let mut seen = state.lock().unwrap();
                    seen.paused_since = None;
                    seen.last_poll_started = Some(Instant::now());
                }
                let result = consumer.poll(Duration::from_millis(200)).await;
                let mut seen = state.lock().unwrap();
                seen.assignment = consumer.assignment();
                seen.metadata = consumer.group_metadata();
                match result {
                    Ok(records) => {
                        let now = Instant::now();
                        for r in records.iter() {
                            seen.log.push((
                                now,
                                Entry::Record(Received {
                                    partition: r.partition,
                                    offset: r.offset,
                                    timestamp_ms: r.timestamp_ms,
                                    key: r.key.map(<[u8]>::to_vec),
                                    value: r.value.to_vec(),
                                }),
                            ));
                        }
                    }
                    Err(error) => {
                        seen.error = Some(error);
                        break;
                    }
                }
            }
            consumer
        });
        Member {
            seen,
            pause,
            stop,
            task: Some(task),
        }
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    /// Partitions assigned after the last poll.
    fn owned(&self) -> BTreeSet<u32> {
        self.seen()
            .assignment
            .iter()
            .map(|tp| tp.partition)
            .collect()
    }

    fn events(&self) -> Vec<(Instant, RebalanceEvent)> {
        self.seen()
            .log
            .iter()
            .filter_map(|(at, entry)| match entry {
                Entry::Event(event) => Some((*at, event.clone())),
                Entry::Record(_) => None,
            })
            .collect()
    }

    fn records(&self) -> Vec<(Instant, Received)> {
        self.seen()
            .log
            .iter()
            .filter_map(|(at, entry)| match entry {
                Entry::Record(record) => Some((*at, record.clone())),
                Entry::Event(_) => None,
            })
            .collect()
    }

    fn values(&self) -> Vec<String> {
        self.records()
            .into_iter()
            .map(|(_, r)| r.text().to_owned())
            .collect()
    }

    fn metadata(&self) -> Option<GroupMetadata> {
        self.seen().metadata.clone()
    }

    fn error(&self) -> Option<ClientError> {
        self.seen().error.clone()
    }

    /// Stops calling poll; returns once the loop is no longer polling, with when its last
    /// poll was called (the max poll interval runs from that poll's end, which is later).
    async fn pause(&self) -> Instant {
        self.pause.store(true, Ordering::SeqCst);
        wait_for("the member to stop polling", DEADLINE, || {
            self.seen().paused_since.is_some()
        })
        .await;
        self.seen()
            .last_poll_started
            .expect("the member polled before its pause")
    }

    fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }

    /// Ends the poll loop and returns the consumer (its callback still records here).
    async fn stop(&mut self) -> Consumer {
        self.stop.store(true, Ordering::SeqCst);
        self.task.take().unwrap().await.unwrap()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Waits until `condition` holds, panicking with `what` after `timeout`.
async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The members own disjoint sets of `partitions / n` partitions each that cover the topic.
fn balanced(members: &[&Member], partitions: u32) -> bool {
    let sets: Vec<BTreeSet<u32>> = members.iter().map(|m| m.owned()).collect();
    let share = partitions as usize / members.len();
    let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| s.len() == share) && union.len() == partitions as usize
}

fn partition_numbers(partitions: &[TopicPartition]) -> BTreeSet<u32> {
    partitions.iter().map(|tp| tp.partition).collect()
}

/// A consumer subscribed with `auto_offset_reset = Earliest` to a 4-partition topic that has
/// records gets `Assigned` for all 4 partitions before any record is returned, and nothing
/// else (no revocation, no loss) while it is alone. After polling everything, `commit_sync`
/// stores exactly the positions, which are the log end offsets (nothing was committed
/// before: auto-commit is off); `commit_async` of later positions resolves `Ok` and is read
/// back by `committed`; `group_metadata` names the group, a generation >= 1 and the member
/// id; `close` passes every partition to the callback as `Revoked`, and a new consumer of the
/// same group resumes at the committed offsets: it gets exactly the records produced after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_and_commits() {
    const TOPIC: &str = "events";
    let broker = start_broker();
    let bootstrap = broker.addr.to_string();
    create_topic(&bootstrap, TOPIC, 4).await;
    let first = produce(&bootstrap, TOPIC, 4, 25, "first").await;
    let all = partitions(TOPIC, 4);
    let config = GroupConfig {
        auto_commit: false,
        ..group("callbacks")
    };

    let mut member = Member::start(subscribed(&bootstrap, config.clone(), TOPIC));
    wait_for("every record", DEADLINE, || {
        member.records().len() >= first.len()
    })
    .await;
    let mut consumer = member.stop().await;

    let log = member.seen().log.clone();
    let first_record = log
        .iter()
        .position(|(_, entry)| matches!(entry, Entry::Record(_)))
        .unwrap();
    let mut assigned_before = BTreeSet::new();
    for (_, entry) in &log[..first_record] {
        match entry {
            Entry::Event(RebalanceEvent::Assigned(tps)) => {
                assigned_before.extend(partition_numbers(tps))
            }
            other => panic!("unexpected entry before the first record: {other:?}"),
        }
    }
    assert_eq!(
        assigned_before,
        (0..4).collect(),
        "all 4 partitions assigned before the first record"
    );
    let events = member.events();
    assert!(
        events
            .iter()
            .all(|(_, e)| matches!(e, RebalanceEvent::Assigned(_))),
        "only assignments while alone: {events:?}"
    );
    let values: Vec<String> = member.values();
    assert_eq!(values.len(), first.len(), "no record twice");
    assert_eq!(values.into_iter().collect::<BTreeSet<_>>(), first);

    let admin = Admin::new(&bootstrap).unwrap();
    let mut log_ends = Vec::new();
    for tp in &all {
        log_ends.push(Some(
            admin.list_offsets(tp, LATEST_TIMESTAMP).await.unwrap(),
        ));
        assert_eq!(consumer.position(tp).await.unwrap(), 25);
    }
    assert_eq!(log_ends, vec![Some(25); 4]);
    assert_eq!(
        consumer.committed(&all).await.unwrap(),
        vec![None; 4],
        "nothing committed before commit_sync (auto-commit is off)"
    );
    consumer.commit_sync().await.unwrap();
    assert_eq!(consumer.committed(&all).await.unwrap(), log_ends);

    let metadata = consumer.group_metadata().unwrap();
    assert_eq!(metadata.group_id, "callbacks");
    assert!(metadata.generation >= 1, "{metadata:?}");
    assert!(!metadata.member_id.is_empty(), "{metadata:?}");
    assert_eq!(metadata.instance_id, None);

    let second = produce(&bootstrap, TOPIC, 4, 2, "second").await;
    let received = receive(&mut consumer, second.len(), DEADLINE).await;
    assert_eq!(
        received
            .iter()
            .map(|r| r.text().to_owned())
            .collect::<BTreeSet<_>>(),
        second
    );
    consumer.commit_async().await.unwrap().unwrap();
    assert_eq!(consumer.committed(&all).await.unwrap(), vec![Some(27); 4]);

    consumer.close().await.unwrap();
    match member.events().last() {
        Some((_, RebalanceEvent::Revoked(tps))) => assert_eq!(tps, &all),
        other => panic!("close did not revoke every partition: {other:?}"),
    }

    let third = produce(&bootstrap, TOPIC, 4, 3, "third").await;
    let mut successor = subscribed(&bootstrap, config, TOPIC);
    let received = receive(&mut successor, third.len(), DEADLINE).await;
    let values: Vec<String> = received.iter().map(|r| r.text().to_owned()).collect();
    assert_eq!(values.len(), third.len(), "{values:?}");
    assert_eq!(values.into_iter().collect::<BTreeSet<_>>(), third);
    assert!(received.iter().all(|r| r.offset >= 27));
    let extra = successor.poll(Duration::from_millis(500)).await.unwrap();
    assert!(extra.is_empty(), "nothing but the new records");
    successor.close().await.unwrap();
}

/// Cooperative rebalance through the library: A owns all 4 partitions; when B joins, A gets
/// `Revoked` only for the partitions B ends up with (never `Lost`, nothing revoked that it
/// keeps), keeps delivering records of its kept partitions that are produced during the
/// rebalance, and both end with 2. Every record is delivered exactly once across the move
/// (revoked positions are committed before B starts from them). When B closes, A gets all 4
/// back, again without losing or revoking anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalance_moves_only_what_changes_owner() {
    const TOPIC: &str = "coop";
    let broker = start_broker();
    let bootstrap = broker.addr.to_string();
    create_topic(&bootstrap, TOPIC, 4).await;

    let a = Member::start(subscribed(&bootstrap, group("coop"), TOPIC));
    wait_for("A to own every partition", DEADLINE, || {
        a.owned().len() == 4
    })
    .await;
    let traffic = Traffic::start(&bootstrap, TOPIC, 4, "live");
    wait_for("live records at A", DEADLINE, || {
        a.owned()
            .iter()
            .all(|p| a.records().iter().any(|(_, r)| r.partition == *p))
    })
    .await;
    let a_events_before = a.events().len();

    let b_started = Instant::now();
    let mut b = Member::start(subscribed(&bootstrap, group("coop"), TOPIC));
    wait_for("a balanced group", DEADLINE, || balanced(&[&a, &b], 4)).await;
    let b_assigned_at = b
        .events()
        .iter()
        .find(|(_, e)| matches!(e, RebalanceEvent::Assigned(_)))
        .unwrap()
        .0;
    let moved = b.owned();
    let kept = a.owned();
    assert_eq!((moved.len(), kept.len()), (2, 2));
    let mut revoked = BTreeSet::new();
    for (_, event) in &a.events()[a_events_before..] {
        match event {
            RebalanceEvent::Revoked(tps) => revoked.extend(partition_numbers(tps)),
            other => panic!("A: only revocations while B joins, got {other:?}"),
        }
    }
    assert_eq!(revoked, moved, "A revoked exactly what B got");
    // The rebalance is surely under way from A's first revocation (round one of the
    // cooperative protocol) until B gets the revoked partitions (round two): records of the
    // kept partitions delivered in between show that A kept fetching them.
    let first_revoke = a.events()[a_events_before..]
        .iter()
        .find(|(_, e)| matches!(e, RebalanceEvent::Revoked(_)))
        .expect("A revoked what B got")
        .0;
    assert!(first_revoke <= b_assigned_at, "revoked after the move");
    let during = a
        .records()
        .iter()
        .filter(|(at, r)| *at > first_revoke && *at < b_assigned_at && kept.contains(&r.partition))
        .count();
    eprintln!(
        "cooperative rebalance: B assigned {:?} after its start, {:?} after A's first \
         revocation; A delivered {during} records of its kept partitions in between",
        b_assigned_at - b_started,
        b_assigned_at - first_revoke,
    );
    assert!(
        during > 0,
        "A stopped delivering its kept partitions during the rebalance"
    );

    let a_events_before = a.events().len();
    let b_consumer = b.stop().await;
    b_consumer.close().await.unwrap();
    wait_for("A to own every partition again", DEADLINE, || {
        a.owned().len() == 4
    })
    .await;
    let sent = traffic.stop().await;
    wait_for("every record", DEADLINE, || {
        let got: BTreeSet<String> = a.values().into_iter().chain(b.values()).collect();
        got.is_superset(&sent)
    })
    .await;
    let mut back = BTreeSet::new();
    for (_, event) in &a.events()[a_events_before..] {
        match event {
            RebalanceEvent::Assigned(tps) => back.extend(partition_numbers(tps)),
            other => panic!("A: only assignments when B leaves, got {other:?}"),
        }
    }
    assert_eq!(back, moved, "A got B's partitions back");
    assert!(
        a.events()
            .iter()
            .all(|(_, e)| !matches!(e, RebalanceEvent::Lost(_))),
        "A never lost anything"
    );
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for value in a.values().into_iter().chain(b.values()) {
        *count.entry(value).or_default() += 1;
    }
    let twice: Vec<&String> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, _)| v)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    assert_eq!(count.len(), sent.len(), "nothing but what was sent");
}

/// Max poll interval: of two members, A (max poll interval 1.5 s, session 30 s, so only the
/// max poll interval can move its partitions) stops calling poll; its membership leaves the
/// group and B owns all 4 partitions, not before the interval has passed. When A polls again, its callback reports `Lost` for its old partitions (not
/// `Revoked`: another member may own them already), then A rejoins and the group is
/// balanced again. B never loses anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_poll_interval_moves_partitions_and_reports_them_lost() {
    const TOPIC: &str = "slow";
    const MAX_POLL: Duration = Duration::from_millis(1500);
    let broker = start_broker();
    let bootstrap = broker.addr.to_string();
    create_topic(&bootstrap, TOPIC, 4).await;

    let slow = GroupConfig {
        max_poll_interval: MAX_POLL,
        ..group("slow")
    };
    let a = Member::start(subscribed(&bootstrap, slow, TOPIC));
    let b = Member::start(subscribed(&bootstrap, group("slow"), TOPIC));
    wait_for("a balanced group", DEADLINE, || balanced(&[&a, &b], 4)).await;
    let a_old = a.owned();
    let a_events_before = a.events().len();

    let last_poll_started = a.pause().await;
    wait_for("B to own every partition", DEADLINE, || {
        b.owned().len() == 4
    })
    .await;
    // B's callback ran before `owned()` showed all 4; A's last poll ended after it started.
    let moved_after = b
        .events()
        .iter()
        .rev()
        .find(|(_, e)| matches!(e, RebalanceEvent::Assigned(_)))
        .unwrap()
        .0
        - last_poll_started;
    eprintln!(
        "partitions moved {moved_after:?} after A stopped polling (max poll interval \
         {MAX_POLL:?})"
    );
    assert!(
        moved_after >= MAX_POLL,
        "A's partitions moved {moved_after:?} after its last poll, before its max poll \
         interval ({MAX_POLL:?}) expired"
    );
    assert_eq!(
        a.events().len(),
        a_events_before,
        "no callback without poll"
    );
    let described = Admin::new(&bootstrap)
        .unwrap()
        .describe_group("slow")
        .await
        .unwrap();
    assert_eq!(
        described.members.len(),
        1,
        "A left the group: {described:?}"
    );
    let sent = produce(&bootstrap, TOPIC, 4, 3, "while-a-sleeps").await;
    wait_for("B to read every partition", DEADLINE, || {
        let got: BTreeSet<String> = b.values().into_iter().collect();
        got.is_superset(&sent)
    })
    .await;

    a.resume();
    wait_for("a balanced group again", DEADLINE, || {
        balanced(&[&a, &b], 4)
    })
    .await;
    let after = a.events()[a_events_before..].to_vec();
    match after.first() {
        Some((_, RebalanceEvent::Lost(tps))) => {
            assert_eq!(partition_numbers(tps), a_old, "A lost its old partitions")
        }
        other => panic!("A's first event after the pause is not Lost: {other:?}"),
    }
    assert!(
        after
            .iter()
            .skip(1)
            .all(|(_, e)| matches!(e, RebalanceEvent::Assigned(_))),
        "A: nothing revoked or lost after rejoining: {after:?}"
    );
    assert!(
        b.events()
            .iter()
            .all(|(_, e)| !matches!(e, RebalanceEvent::Lost(_))),
        "B never lost anything"
    );
    assert!(a.error().is_none() && b.error().is_none());
}

/// Static membership fencing: a second consumer with the same `instance_id` takes over the
/// first one's slot without a rebalance (same generation) and owns its partitions; the first
/// one's poll fails with `FencedInstanceId` (after a `Lost` callback for its partitions) and
/// keeps failing with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_static_instance_fences_the_first() {
    const TOPIC: &str = "fence";
    let broker = start_broker();
    let bootstrap = broker.addr.to_string();
    create_topic(&bootstrap, TOPIC, 4).await;
    let config = GroupConfig {
        instance_id: Some("instance-1".into()),
        ..group("fence")
    };

    let mut first = Member::start(subscribed(&bootstrap, config.clone(), TOPIC));
    wait_for("the first to own every partition", DEADLINE, || {
        first.owned().len() == 4
    })
    .await;
    let first_metadata = first.metadata().unwrap();
    assert_eq!(first_metadata.instance_id.as_deref(), Some("instance-1"));

    let second = Member::start(subscribed(&bootstrap, config, TOPIC));
    wait_for("the first to be fenced", DEADLINE, || {
        first.error().is_some()
    })
    .await;
    let error = first.error().unwrap();
    assert_eq!(error.code(), Some(ErrorCode::FencedInstanceId), "{error}");
    match first.events().last() {
        Some((_, RebalanceEvent::Lost(tps))) => assert_eq!(partition_numbers(tps).len(), 4),
        other => panic!("the fenced member's partitions were not lost: {other:?}"),
    }
    assert!(first.owned().is_empty());

    wait_for("the second to own every partition", DEADLINE, || {
        second.owned().len() == 4
    })
    .await;
    let second_metadata = second.metadata().unwrap();
    assert_ne!(second_metadata.member_id, first_metadata.member_id);
    assert_eq!(
        second_metadata.generation, first_metadata.generation,
        "the static member took over without a rebalance"
    );
    let sent = produce(&bootstrap, TOPIC, 4, 2, "after").await;
    wait_for("the second to read", DEADLINE, || {
        let got: BTreeSet<String> = second.values().into_iter().collect();
        got.is_superset(&sent)
    })
    .await;

    let mut fenced = first.stop().await;
    let again = fenced.poll(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::FencedInstanceId), "sticky");
    assert!(second.error().is_none());
}

/// Manual assignment with a group id (`assign` + `commit_offsets`, no subscribe): commits
/// go out with generation -1 and are accepted while the group has no members, `committed`
/// reads them back, and a manually assigned partition starts at the committed offset. Once
/// another consumer subscribed in that group, the manual commit fails with `NonEmptyGroup`;
/// after that member closed (left), it is accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_assignment_commits_only_into_an_empty_group() {
    const TOPIC: &str = "manual";
    let broker = start_broker();
    let bootstrap = broker.addr.to_string();
    create_topic(&bootstrap, TOPIC, 2).await;
    produce(&bootstrap, TOPIC, 2, 5, "m").await;
    let all = partitions(TOPIC, 2);

    let mut manual = consumer(&bootstrap, group("manual"));
    manual.assign(&all);
    let metadata = manual.group_metadata().unwrap();
    assert_eq!((metadata.generation, metadata.member_id.as_str()), (-1, ""));
    assert_eq!(manual.committed(&all).await.unwrap(), vec![None, None]);
    manual
        .commit_offsets(&[(all[0].clone(), 3), (all[1].clone(), 5)])
        .await
        .unwrap();
    assert_eq!(
        manual.committed(&all).await.unwrap(),
        vec![Some(3), Some(5)]
    );
    let received = receive(&mut manual, 2, DEADLINE).await;
    let got: Vec<(u32, u64)> = received.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(
        got,
        vec![(0, 3), (0, 4)],
        "started at the committed offsets"
    );

    let mut member = Member::start(subscribed(&bootstrap, group("manual"), TOPIC));
    wait_for("the subscriber's assignment", DEADLINE, || {
        member.owned().len() == 2
    })
    .await;
    let error = manual
        .commit_offsets(&[(all[0].clone(), 4)])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::NonEmptyGroup), "{error}");

    let subscriber = member.stop().await;
    subscriber.close().await.unwrap();
    manual.commit_offsets(&[(all[0].clone(), 1)]).await.unwrap();
    assert_eq!(manual.committed(&all[..1]).await.unwrap(), vec![Some(1)]);
    manual.close().await.unwrap();
}

/// At most once through the library (`Delivery::AtMostOnce`): when poll returns records, the
/// positions after them are already committed, as the Admin's `committed_offsets` and the
/// consumer's own `committed` show after every non-empty poll; partitions not read yet have
/// nothing committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_commits_before_returning() {
    const TOPIC: &str = "amo";
    let broker = start_broker();
    let bootstrap = broker.addr.to_string();
    create_topic(&bootstrap, TOPIC, 4).await;
    let admin = Admin::new(&bootstrap).unwrap();
    let config = GroupConfig {
        delivery: Delivery::AtMostOnce,
        ..group("amo")
    };
    let mut consumer = subscribed(&bootstrap, config, TOPIC);
    let all = partitions(TOPIC, 4);
    let topics = [TOPIC.to_owned()];

    let mut expected: BTreeMap<u32, u64> = BTreeMap::new();
    let mut non_empty_polls = 0;
    for wave in 0..4 {
        let sent = produce(&bootstrap, TOPIC, 4, 5, &format!("w{wave}")).await;
        let mut got = BTreeSet::new();
        let deadline = Instant::now() + DEADLINE;
        while got.len() < sent.len() {
            assert!(Instant::now() < deadline, "wave {wave}: got {got:?}");
            let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
            if records.is_empty() {
                continue;
            }
            non_empty_polls += 1;
            for r in records.iter() {
                let next = expected.entry(r.partition).or_default();
                assert_eq!(r.offset, *next, "dense offsets from 0");
                *next = r.offset + 1;
                got.insert(std::str::from_utf8(r.value).unwrap().to_owned());
            }
            drop(records);
            let committed = admin.committed_offsets("amo", Some(&topics)).await.unwrap();
            assert_eq!(committed.len(), 4);
            for (tp, offset) in &committed {
                assert_eq!(
                    offset.offset,
                    expected.get(&tp.partition).copied(),
                    "admin view of {tp} after poll {non_empty_polls}"
                );
            }
            let own = consumer.committed(&all).await.unwrap();
            let want: Vec<Option<u64>> = (0..4).map(|p| expected.get(&p).copied()).collect();
            assert_eq!(own, want, "consumer view after poll {non_empty_polls}");
            for (p, next) in &expected {
                let position = consumer.position(&all[*p as usize]).await.unwrap();
                assert_eq!(position, *next);
            }
        }
        assert_eq!(got, sent);
    }
    assert!(non_empty_polls >= 4, "{non_empty_polls} non-empty polls");
    assert_eq!(expected, (0..4).map(|p| (p, 20)).collect());
    consumer.close().await.unwrap();
}

/// A stale member is fenced by the broker: an OffsetCommit carrying the consumer's member id
/// (from `group_metadata()`) with the previous generation fails with `IllegalGeneration`,
/// one with a made-up member id fails with `UnknownMemberId`, while the member's current
/// identity commits fine; the consumer's own `commit_sync` still works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_unknown_members_cannot_commit() {
    const TOPIC: &str = "stale";
    let broker = start_broker();
    let bootstrap = broker.addr.to_string();
    create_topic(&bootstrap, TOPIC, 2).await;
    let mut member = Member::start(subscribed(&bootstrap, group("stale"), TOPIC));
    wait_for("the assignment", DEADLINE, || member.owned().len() == 2).await;
    let metadata = member.metadata().unwrap();
    assert!(metadata.generation >= 1 && !metadata.member_id.is_empty());

    let addr = broker.addr;
    let raw = metadata.clone();
    let (stale, unknown, current) = tokio::task::spawn_blocking(move || {
        let mut conn = Conn::connect(addr);
        let mut commit = |generation: i32, member_id: &str| {
            let request = OffsetCommitRequest {
                group_id: raw.group_id.clone(),
                generation,
                member_id: member_id.to_owned(),
                group_instance_id: None,
                topics: vec![OffsetCommitTopic {
                    topic: TOPIC.into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: 0,
                        offset: 1,
                        metadata: String::new(),
                    }],
                }],
            };
            conn.call::<_, OffsetCommitResponse>(ApiKey::OffsetCommit, &request)
        };
        (
            commit(raw.generation - 1, &raw.member_id),
            commit(raw.generation, "made-up-member"),
            commit(raw.generation, &raw.member_id),
        )
    })
    .await
    .unwrap();
    assert_eq!(
        stale.unwrap_err().code,
        ErrorCode::IllegalGeneration,
        "previous generation"
    );
    assert_eq!(
        unknown.unwrap_err().code,
        ErrorCode::UnknownMemberId,
        "made-up member id"
    );
    let current = current.unwrap();
    assert!(current.topics[0].partitions[0].error.is_ok(), "{current:?}");

    let mut consumer = member.stop().await;
    assert_eq!(
        consumer.group_metadata().unwrap().generation,
        metadata.generation,
        "no rebalance"
    );
    assert_eq!(
        consumer.committed(&partitions(TOPIC, 1)).await.unwrap(),
        vec![Some(1)]
    );
    consumer.commit_sync().await.unwrap();
    assert_eq!(
        consumer.committed(&partitions(TOPIC, 2)).await.unwrap(),
        vec![Some(0), Some(0)]
    );
    consumer.close().await.unwrap();
}
