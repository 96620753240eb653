//! Consumer groups end to end: a real broker and real consumer processes (`sluice consume
//! --group`), killed with SIGKILL or stopped with SIGTERM like in production. Each consumer
//! prints `partition<TAB>offset<TAB>value` per record and, with `--log-rebalances`, one line per
//! rebalance event on standard error; the test timestamps every line as it arrives.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use client::{Producer, ProducerConfig, ProducerRecord};
use common::{Broker, Conn};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 6;
/// Session timeout of the consumers that stay alive: far longer than any scheduling stall of
/// a loaded 2-core machine, so that no survivor is expelled for a late heartbeat (spurious
/// revocations and redeliveries unrelated to the behaviour under test). Members that stop
/// leave the group (SIGTERM), so no test waits for this timeout.
const SESSION_MS: u64 = 30_000;
/// Session timeout of the consumers that get killed (SIGKILL): the time their partitions stay
/// orphaned, so short to keep the tests quick.
const KILLED_SESSION_MS: u64 = 2000;
/// Heartbeat interval of every member: a member learns of a rebalance within this.
const HEARTBEAT_MS: u64 = 200;
/// Deadline for anything the group must do (join, rebalance, deliver): generous for a loaded
/// machine, and spent only when the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// One line a consumer printed, with when the test saw it.
#[derive(Debug, Clone)]
struct Line {
    at: Instant,
    partition: u32,
    offset: u64,
    value: String,
}

/// A rebalance event a consumer logged.
#[derive(Debug, Clone)]
struct Event {
    at: Instant,
    kind: String,
    partitions: Vec<u32>,
}

/// A `sluice consume --group` process.
struct GroupConsumer {
    child: Child,
    lines: Arc<Mutex<Vec<Line>>>,
    events: Arc<Mutex<Vec<Event>>>,
    /// The threads reading the child's standard output and error; they end at EOF, once the
    /// child is gone and the pipes are drained. Joined by `kill` / `stop`, so that `lines()`
    /// and `events()` are complete afterwards.
    readers: Vec<thread::JoinHandle<()>>,
    /// Held while the standard output reader is paused (see [`GroupConsumer::start_paused`]);
    /// dropping it lets the reader go on.
    release: Option<mpsc::Sender<()>>,
    /// The read end of the child's standard output, for [`pipe_bytes`].
    stdout_fd: RawFd,
    started: Instant,
}

impl GroupConsumer {
    fn start(broker: &Broker, group: &str, extra: &[&str]) -> GroupConsumer {
        GroupConsumer::start_paused(broker, group, extra, usize::MAX)
    }

    /// Like [`GroupConsumer::start`], but the test stops reading the consumer's standard
    /// output after `pause_after` lines, until the consumer is killed or stopped: the
    /// consumer then blocks on the full pipe in the middle of printing a poll.
    fn start_paused(
        broker: &Broker,
        group: &str,
        extra: &[&str],
        pause_after: usize,
    ) -> GroupConsumer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .args(["consume", "--broker", &broker.addr.to_string()])
            .args(["--topic", TOPIC, "--group", group, "--from", "earliest"])
            .args(["--print-partition", "--print-offset", "--log-rebalances"])
            .args(["--heartbeat-interval-ms", &HEARTBEAT_MS.to_string()]);
        if !extra.contains(&"--session-timeout-ms") {
            command.args(["--session-timeout-ms", &SESSION_MS.to_string()]);
        }
        let mut child = command
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stdout_fd = stdout.as_raw_fd();
        let sink = lines.clone();
        let (release, paused) = mpsc::channel::<()>();
        let stdout_reader = thread::spawn(move || {
            for (count, line) in complete_lines(stdout).enumerate() {
                if count == pause_after {
                    // Nothing is ever sent: this returns when the sender is dropped.
                    let _ = paused.recv();
                }
                let mut fields = line.splitn(3, '\t');
                let (Some(p), Some(o), Some(v)) = (fields.next(), fields.next(), fields.next())
                else {
                    panic!("unexpected output line {line:?}");
                };
                sink.lock().unwrap().push(Line {
                    at: Instant::now(),
                    partition: p.parse().unwrap(),
                    offset: o.parse().unwrap(),
                    value: v.to_owned(),
                });
            }
        });
        let stderr = child.stderr.take().unwrap();
        let sink = events.clone();
        let stderr_reader = thread::spawn(move || {
            for line in complete_lines(stderr) {
                let mut words = line.split_whitespace();
                let kind = words.next().unwrap_or_default();
                if !matches!(kind, "assigned" | "revoked" | "lost") {
                    eprintln!("consumer: {line}");
                    continue;
                }
                let partitions = words
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|tp| !tp.is_empty())
                    .map(|tp| tp.rsplit_once(':').unwrap().1.parse().unwrap())
                    .collect();
                sink.lock().unwrap().push(Event {
                    at: Instant::now(),
                    kind: kind.to_owned(),
                    partitions,
                });
            }
        });
        GroupConsumer {
            child,
            lines,
            events,
            readers: vec![stdout_reader, stderr_reader],
            release: Some(release),
            stdout_fd,
            started: Instant::now(),
        }
    }

    /// Partitions owned now, per the assigned / revoked / lost events so far.
    fn owned(&self) -> BTreeSet<u32> {
        let mut owned = BTreeSet::new();
        for event in self.events.lock().unwrap().iter() {
            for p in &event.partitions {
                if event.kind == "assigned" {
                    owned.insert(*p);
                } else {
                    owned.remove(p);
                }
            }
        }
        owned
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap().clone()
    }

    fn values(&self) -> Vec<String> {
        self.lines().into_iter().map(|l| l.value).collect()
    }

    /// SIGKILL; returns once every line the consumer wrote before dying has been read.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_readers();
    }

    /// SIGTERM: the consumer commits what it printed and exits 0. Returns once its output
    /// has been read to the end.
    fn stop(&mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        self.join_readers();
        assert!(status.success(), "consumer exit status {status}");
    }

    /// Waits for the reader threads, which end at EOF of the pipes of the reaped child.
    fn join_readers(&mut self) {
        self.release = None;
        for reader in self.readers.drain(..) {
            let outcome = reader.join();
            // A reader that panicked (unexpected output) fails the test, unless it is already
            // failing (a panic while unwinding would abort).
            if outcome.is_err() && !thread::panicking() {
                panic!("a consumer output reader panicked");
            }
        }
    }
}

/// The newline-terminated lines of `pipe` until EOF (or a read error), without their newline:
/// a last line without one was cut by a SIGKILL in the middle of a write and is left out.
fn complete_lines(pipe: impl std::io::Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(pipe);
    std::iter::from_fn(move || {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(_) if line.ends_with('\n') => {
                line.pop();
                Some(line)
            }
            _ => None,
        }
    })
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `condition` holds, panicking with `what` after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the consumers own disjoint partition sets that cover the topic, each with
/// `PARTITIONS / n` (so the cooperative rebalances are over).
fn wait_balanced(consumers: &[&GroupConsumer]) {
    let share = PARTITIONS as usize / consumers.len();
    wait_for("a balanced assignment", DEADLINE, || {
        let sets: Vec<BTreeSet<u32>> = consumers.iter().map(|c| c.owned()).collect();
        let union: BTreeSet<u32> = sets.iter().flatten().copied().collect();
        sets.iter().all(|s| s.len() == share)
            && union.len() == PARTITIONS as usize
            && sets.iter().map(BTreeSet::len).sum::<usize>() == PARTITIONS as usize
    });
}

fn start_broker() -> Broker {
    let broker = Broker::start(&["--group-min-session-timeout-ms", "100"]);
    Conn::connect(broker.addr).create_topic(TOPIC, PARTITIONS, None);
    broker
}

/// Produces `per_partition` messages `"<tag>-<p>-<i>"` to every partition; returns them.
fn produce(broker: &Broker, tag: &str, per_partition: u32) -> BTreeSet<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let producer = Producer::new(ProducerConfig::new(broker.addr.to_string())).unwrap();
        let mut sent = BTreeSet::new();
        let mut deliveries = Vec::new();
        for i in 0..per_partition {
            for p in 0..PARTITIONS {
                let value = format!("{tag}-{p}-{i}");
                let record =
                    ProducerRecord::new(TOPIC, value.clone().into_bytes()).with_partition(p);
                deliveries.push(producer.enqueue(record).await.unwrap());
                sent.insert(value);
            }
        }
        for delivery in deliveries {
            delivery.await.unwrap();
        }
        sent
    })
}

/// Values printed by any of `consumers`.
fn received(consumers: &[&GroupConsumer]) -> BTreeSet<String> {
    consumers.iter().flat_map(|c| c.values()).collect()
}

fn wait_received(consumers: &[&GroupConsumer], expected: &BTreeSet<String>) {
    wait_for("every message", DEADLINE, || {
        received(consumers).is_superset(expected)
    });
}

/// Three members of one group split six partitions, receive disjoint sets that cover every
/// message; when one is killed (SIGKILL), its partitions move to the others once its session
/// has timed out (not before: the survivors never take partitions of a member still in its
/// session) and, at least once, nothing is lost.
#[test]
fn members_split_partitions_and_take_over_from_a_killed_one() {
    let broker = start_broker();
    let a = GroupConsumer::start(&broker, "split", &[]);
    let b = GroupConsumer::start(&broker, "split", &[]);
    let killed_session = KILLED_SESSION_MS.to_string();
    let mut c = GroupConsumer::start(&broker, "split", &["--session-timeout-ms", &killed_session]);
    wait_balanced(&[&a, &b, &c]);

    let first = produce(&broker, "first", 50);
    wait_received(&[&a, &b, &c], &first);
    let printed: Vec<Vec<Line>> = [&a, &b, &c].iter().map(|x| x.lines()).collect();
    for (i, lines) in printed.iter().enumerate() {
        let partitions: BTreeSet<u32> = lines.iter().map(|l| l.partition).collect();
        assert_eq!(
            partitions,
            [&a, &b, &c][i].owned(),
            "consumer {i} read only its partitions"
        );
    }
    let all: Vec<&String> = printed.iter().flatten().map(|l| &l.value).collect();
    assert_eq!(all.len(), first.len(), "disjoint: no message twice");
    assert_eq!(all.into_iter().cloned().collect::<BTreeSet<_>>(), first);

    // Kill one member: the others take its partitions once its session times out.
    let orphaned = c.owned();
    c.kill();
    let killed_at = Instant::now();
    let second = produce(&broker, "second", 50);
    wait_for("the orphaned partitions to move", DEADLINE, || {
        a.owned().len() + b.owned().len() == PARTITIONS as usize
    });
    let moved_at = [&a, &b]
        .iter()
        .flat_map(|x| x.events())
        .filter(|e| e.kind == "assigned" && e.partitions.iter().any(|p| orphaned.contains(p)))
        .map(|e| e.at)
        .max()
        .unwrap();
    let took = moved_at - killed_at;
    eprintln!(
        "partitions of the killed member moved after {took:?} (session timeout \
         {KILLED_SESSION_MS} ms)"
    );
    // The killed member's last heartbeat reached the broker at most one interval before the
    // kill, so its session cannot have expired earlier than this. No upper bound: how late
    // the move comes after the expiry depends on the machine's load, not on the code.
    let expiry_earliest = Duration::from_millis(KILLED_SESSION_MS - HEARTBEAT_MS);
    assert!(
        took >= expiry_earliest,
        "partitions moved after {took:?}, before the killed member's session could expire"
    );
    // Nothing lost: the survivors get every later message, the orphaned partitions' included.
    wait_received(&[&a, &b], &second);
    // At least once, and only where needed: what the survivors see again of the first round
    // (records the killed member printed but had not committed yet) all comes from the
    // partitions that moved; a survivor never rereads a partition it kept.
    for survivor in [&a, &b] {
        for line in survivor.lines() {
            if line.at > killed_at && first.contains(&line.value) {
                assert!(
                    orphaned.contains(&line.partition),
                    "redelivered {} of a partition that did not move",
                    line.value
                );
            }
        }
    }
}

/// A fourth member joining a cooperative group takes some partitions; the partitions that do
/// not move are never revoked and keep being consumed during the rebalance: for every kept
/// partition, a record produced after the first revocation (round one of the cooperative
/// protocol) is printed before the fourth member gets its partitions (round two), which a
/// client that stops fetching for the whole rebalance cannot do however fast the machine is.
/// Afterwards every record of a kept partition is printed exactly once, by its owner.
#[test]
fn joining_member_moves_only_some_partitions() {
    let broker = start_broker();
    let members = [
        GroupConsumer::start(&broker, "coop", &[]),
        GroupConsumer::start(&broker, "coop", &[]),
        GroupConsumer::start(&broker, "coop", &[]),
    ];
    wait_balanced(&[&members[0], &members[1], &members[2]]);
    let before: Vec<BTreeSet<u32>> = members.iter().map(GroupConsumer::owned).collect();
    let events_before: Vec<usize> = members.iter().map(|m| m.events().len()).collect();

    // Keep producing while the fourth member joins; `produced_at[i]` is when the producer
    // started writing `live-<p>-<i>` to every partition p.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let produced_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let producing = {
        let stop = stop.clone();
        let produced_at = produced_at.clone();
        let addr = broker.addr.to_string();
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let producer = Producer::new(ProducerConfig::new(addr)).unwrap();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    produced_at.lock().unwrap().push(Instant::now());
                    for p in 0..PARTITIONS {
                        let record =
                            ProducerRecord::new(TOPIC, format!("live-{p}-{i}").into_bytes())
                                .with_partition(p);
                        producer.send(record).await.unwrap();
                    }
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        })
    };
    wait_for("live traffic", DEADLINE, || {
        members.iter().all(|m| !m.lines().is_empty())
    });
    let fourth = GroupConsumer::start(&broker, "coop", &[]);
    wait_for("the fourth member's partitions", DEADLINE, || {
        !fourth.owned().is_empty()
            && members.iter().map(|m| m.owned().len()).sum::<usize>() + fourth.owned().len()
                == PARTITIONS as usize
    });
    let joined_at = fourth
        .events()
        .iter()
        .find(|e| e.kind == "assigned" && !e.partitions.is_empty())
        .unwrap()
        .at;
    let moved = fourth.owned();
    assert!(moved.len() == 1 || moved.len() == 2, "moved {moved:?}");
    // The rebalance is surely under way from the first revocation (of a moved partition, in
    // the first cooperative round) until the fourth member gets them (second round).
    let first_revoke = members
        .iter()
        .zip(&events_before)
        .flat_map(|(member, &before)| member.events().split_off(before))
        .filter(|event| event.kind == "revoked")
        .map(|event| event.at)
        .min()
        .expect("the partitions that moved were revoked first");
    assert!(first_revoke <= joined_at, "revoked after the move");
    // Stop producing a little after the move, and let every record produced get printed.
    wait_for("records produced after the move", DEADLINE, || {
        produced_at
            .lock()
            .unwrap()
            .last()
            .is_some_and(|&at| at > joined_at)
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    producing.join().unwrap();
    let produced_at = produced_at.lock().unwrap().clone();
    let rounds = produced_at.len();
    eprintln!(
        "rebalance: first revoke {:?} after the fourth member's start, its assignment {:?} \
         later; {rounds} rounds produced",
        first_revoke.saturating_duration_since(fourth.started),
        joined_at.saturating_duration_since(first_revoke),
    );
    let kept: Vec<BTreeSet<u32>> = before
        .iter()
        .map(|owned| owned.difference(&moved).copied().collect())
        .collect();
    wait_for("every record of the kept partitions", DEADLINE, || {
        members.iter().zip(&kept).all(|(member, kept)| {
            let printed: BTreeSet<(u32, String)> = member
                .lines()
                .into_iter()
                .map(|line| (line.partition, line.value))
                .collect();
            kept.iter().all(|&p| {
                (0..rounds).all(|round| printed.contains(&(p, format!("live-{p}-{round}"))))
            })
        })
    });
    for (i, member) in members.iter().enumerate() {
        assert_eq!(
            member.owned(),
            kept[i],
            "member {i} keeps what did not move"
        );
        for event in &member.events()[events_before[i]..] {
            let harmless = event.kind == "assigned" && event.partitions.is_empty();
            assert!(
                harmless
                    || (event.kind == "revoked"
                        && event.partitions.iter().all(|p| moved.contains(p))),
                "member {i}: only moved partitions are revoked, got {event:?}"
            );
        }
        let lines = member.lines();
        for &p in &kept[i] {
            let live: Vec<&Line> = lines
                .iter()
                .filter(|line| line.partition == p && line.value.starts_with("live-"))
                .collect();
            let distinct: BTreeSet<&str> = live.iter().map(|line| line.value.as_str()).collect();
            assert_eq!(
                distinct.len(),
                live.len(),
                "member {i} printed a record of its kept partition {p} twice"
            );
            // Consumption went on during the rebalance: a record produced once it had begun
            // was printed before it ended.
            let during = live
                .iter()
                .filter(|line| first_revoke < line.at && line.at < joined_at)
                .filter(|line| {
                    let round: usize = line.value.rsplit('-').next().unwrap().parse().unwrap();
                    produced_at[round] > first_revoke
                })
                .count();
            eprintln!(
                "member {i}: kept partition {p}, {during} records produced and printed during \
                 the rebalance"
            );
            assert!(
                during > 0,
                "member {i} printed no record of its kept partition {p} produced during the \
                 rebalance ({:?} long) before it ended: consumption stopped",
                joined_at - first_revoke
            );
        }
    }
}

/// A static member (instance id) restarting within its session timeout gets its partitions
/// back with no rebalance: nobody else sees an event and the group's generation stays.
#[test]
fn static_member_restart_causes_no_rebalance() {
    let broker = start_broker();
    // Longer than the deadline for the restarted member to come back, so that only a wrong
    // broker or client, not a slow start, can cause a rebalance.
    const STATIC_SESSION: &str = "120000";
    let session = ["--session-timeout-ms", STATIC_SESSION];
    let static_args = |id: &'static str| -> Vec<&'static str> {
        vec!["--session-timeout-ms", STATIC_SESSION, "--instance-id", id]
    };
    let a = GroupConsumer::start(&broker, "static", &static_args("a"));
    let b = GroupConsumer::start(&broker, "static", &session);
    let mut c = GroupConsumer::start(&broker, "static", &static_args("c"));
    wait_balanced(&[&a, &b, &c]);
    let first = produce(&broker, "first", 20);
    wait_received(&[&a, &b, &c], &first);
    let generation = describe_generation(&broker, "static");
    let owned_by_c = c.owned();
    let events_a = a.events().len();
    let events_b = b.events().len();

    c.stop();
    let second = produce(&broker, "second", 20);
    let c2 = GroupConsumer::start(&broker, "static", &static_args("c"));
    wait_for("the static member's partitions", DEADLINE, || {
        c2.owned() == owned_by_c
    });
    wait_received(&[&a, &b, &c2], &second);
    assert_eq!(a.events().len(), events_a, "no rebalance seen by a");
    assert_eq!(b.events().len(), events_b, "no rebalance seen by b");
    assert_eq!(describe_generation(&broker, "static"), generation);
    // It resumed where it stopped: none of its first-round messages again.
    let again: Vec<String> = c2
        .values()
        .into_iter()
        .filter(|v| first.contains(v))
        .collect();
    assert!(again.is_empty(), "redelivered {again:?}");
}

/// Two groups each receive every message.
#[test]
fn two_groups_each_get_every_message() {
    let broker = start_broker();
    let blue = [
        GroupConsumer::start(&broker, "blue", &[]),
        GroupConsumer::start(&broker, "blue", &[]),
    ];
    let green = GroupConsumer::start(&broker, "green", &[]);
    wait_balanced(&[&blue[0], &blue[1]]);
    wait_balanced(&[&green]);
    let sent = produce(&broker, "m", 30);
    wait_received(&[&blue[0], &blue[1]], &sent);
    wait_received(&[&green], &sent);
    assert_eq!(green.lines().len(), sent.len());
    assert_eq!(blue[0].lines().len() + blue[1].lines().len(), sent.len());
}

/// Committed offsets survive a kill -9 of the broker: after a restart the group resumes after
/// what it printed. `group describe` shows them with the lag, and `group reset-offsets` (refused
/// while members are active) rewinds the group.
#[test]
fn committed_offsets_survive_broker_kill_and_can_be_reset() {
    let mut broker = start_broker();
    let first = produce(&broker, "first", 10);
    let mut a = GroupConsumer::start(&broker, "durable", &[]);
    wait_received(&[&a], &first);
    assert_eq!(
        reset_to_earliest(&broker, "durable").0,
        1,
        "refused while a member is active"
    );
    a.stop();
    let data_dir = broker.data_dir.clone();
    broker.kill();
    // The first broker's guard keeps (and finally deletes) the data directory.
    let broker = Broker::start_in(&data_dir, &["--group-min-session-timeout-ms", "100"]);

    let (status, describe) = sluice(&broker, &["group", "describe", "durable"]);
    assert_eq!(status, 0, "{describe}");
    for p in 0..PARTITIONS {
        let row = describe
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&TOPIC) && f.get(1) == Some(&p.to_string().as_str())
            })
            .unwrap_or_else(|| panic!("no row for partition {p} in\n{describe}"));
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            &fields[2..5],
            &["10", "10", "0"],
            "offset, end, lag of {row}"
        );
    }
    let second = produce(&broker, "second", 5);
    let mut b = GroupConsumer::start(&broker, "durable", &[]);
    wait_received(&[&b], &second);
    let again: Vec<String> = b
        .values()
        .into_iter()
        .filter(|v| first.contains(v))
        .collect();
    assert!(again.is_empty(), "redelivered after restart: {again:?}");
    b.stop();
    let (status, reset) = reset_to_earliest(&broker, "durable");
    assert_eq!(status, 0, "{reset}");
    let c = GroupConsumer::start(&broker, "durable", &[]);
    let everything: BTreeSet<String> = first.union(&second).cloned().collect();
    wait_received(&[&c], &everything);
    let (status, list) = sluice(&broker, &["group", "list"]);
    assert_eq!(status, 0);
    assert!(list.lines().any(|l| l.starts_with("durable")), "{list}");
}

/// Bytes of every value [`at_most_once_loses_at_most_one_poll_and_never_redelivers`]
/// produces, so that a number of bytes bounds a number of records.
const PADDED_VALUE_BYTES: usize = 200;
/// Records per partition in each acknowledged wave of that test: no batch holds more.
const WAVE_RECORDS: u32 = 4;
/// `--fetch-max-bytes` of that test's consumers.
const AMO_FETCH_MAX_BYTES: usize = 2048;
/// Broker shards (`--cores 2` in `common::Broker`): a poll hands out at most one fetch
/// response per shard.
const SHARDS: usize = 2;
/// Most records one at-most-once poll hands out, hence most a killed consumer can lose. A
/// response carries at most `AMO_FETCH_MAX_BYTES` of batches, beyond that only a partition's
/// first batch if it alone is larger (at most `WAVE_RECORDS` records); every record holds
/// `PADDED_VALUE_BYTES`: per shard 2048 / 200 + 4 = 14 records, per poll 2 × 14 = 28.
const POLL_RECORDS_MAX: usize =
    SHARDS * (AMO_FETCH_MAX_BYTES / PADDED_VALUE_BYTES + WAVE_RECORDS as usize);

/// Produces `per_partition` values `"<tag>-<p>-<i>-…"` of [`PADDED_VALUE_BYTES`] to every
/// partition, in waves of [`WAVE_RECORDS`] per partition, each acknowledged before the next
/// (so no batch holds more than a wave); returns them.
fn produce_padded(broker: &Broker, tag: &str, per_partition: u32) -> BTreeSet<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let producer = Producer::new(ProducerConfig::new(broker.addr.to_string())).unwrap();
        let mut sent = BTreeSet::new();
        for wave in 0..per_partition.div_ceil(WAVE_RECORDS) {
            let mut deliveries = Vec::new();
            let first = wave * WAVE_RECORDS;
            for i in first..(first + WAVE_RECORDS).min(per_partition) {
                for p in 0..PARTITIONS {
                    let mut value = format!("{tag}-{p}-{i}-");
                    value.extend(std::iter::repeat_n('.', PADDED_VALUE_BYTES - value.len()));
                    let record =
                        ProducerRecord::new(TOPIC, value.clone().into_bytes()).with_partition(p);
                    deliveries.push(producer.enqueue(record).await.unwrap());
                    sent.insert(value);
                }
            }
            for delivery in deliveries {
                delivery.await.unwrap();
            }
        }
        sent
    })
}

/// Bytes waiting in the pipe whose read end is `fd`.
fn pipe_bytes(fd: RawFd) -> usize {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to a live c_int;
    // `fd` is the open read end of a child's standard output (the caller holds the child).
    let result = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut bytes as *mut libc::c_int) };
    assert_eq!(result, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(bytes).unwrap()
}

/// At most once: the consumer commits a poll before it hands its records out, so a consumer
/// killed in the middle of printing a poll loses at most the rest of that poll (bounded with
/// `--fetch-max-bytes`: [`POLL_RECORDS_MAX`]), and its successor never prints a record twice.
/// The kill lands mid-stream: the test stops reading the first consumer's output after 300
/// lines, so it blocks on the full pipe with most records still to print.
#[test]
fn at_most_once_loses_at_most_one_poll_and_never_redelivers() {
    const PER_PARTITION: u32 = 400;
    const READ_BEFORE_KILL: usize = 300;
    let broker = start_broker();
    let sent = produce_padded(&broker, "m", PER_PARTITION);
    let killed_session = KILLED_SESSION_MS.to_string();
    let fetch_max_bytes = AMO_FETCH_MAX_BYTES.to_string();
    let amo = [
        "--delivery",
        "at-most-once",
        "--fetch-max-bytes",
        &fetch_max_bytes,
    ];
    let mut a_args = amo.to_vec();
    a_args.extend(["--session-timeout-ms", &killed_session]);
    let mut a = GroupConsumer::start_paused(&broker, "amo", &a_args, READ_BEFORE_KILL);
    wait_for("the first lines", DEADLINE, || {
        a.lines().len() >= READ_BEFORE_KILL
    });
    // Kill it once it is blocked on the full pipe: the bytes waiting there stopped growing.
    // (Killed a little earlier on a very slow machine, it is still mid-stream: the pipe holds
    // 64 KiB, about 300 lines of the 2400.)
    let mut readings = (usize::MAX, 0);
    wait_for("the consumer to block on its full pipe", DEADLINE, || {
        let bytes = pipe_bytes(a.stdout_fd);
        readings = if bytes == readings.0 {
            (bytes, readings.1 + 1)
        } else {
            (bytes, 0)
        };
        bytes > 0 && readings.1 >= 10
    });
    // Killed, and its output read to the end: `first` is everything it printed.
    a.kill();
    let first = a.lines();
    assert!(
        first.len() < sent.len(),
        "the first consumer printed everything: no hand-over to check"
    );
    let mut b = GroupConsumer::start(&broker, "amo", &amo);
    // b starts where a's last commit left each partition. It has caught up once the group's
    // committed offset is the end of every partition: a or b committed every record by
    // then. (Not "someone printed the last record": a may have committed the end of a
    // partition and been killed before printing it, and b then has nothing to print there.)
    // Stopping b (SIGTERM, between polls) then lets it print the poll it committed last.
    let expected_end = u64::from(PER_PARTITION);
    wait_for("the group's offsets to reach the end", DEADLINE, || {
        let committed = committed_offsets(&broker, "amo");
        (0..PARTITIONS).all(|p| committed.get(&p) == Some(&Some(expected_end)))
    });
    b.stop();
    let second = b.lines();
    assert!(!second.is_empty(), "the successor printed nothing");
    let mut last_first: BTreeMap<u32, u64> = BTreeMap::new();
    for line in &first {
        let last = last_first.entry(line.partition).or_default();
        *last = (*last).max(line.offset + 1);
    }
    let mut lost = 0u64;
    for p in 0..PARTITIONS {
        let seen_first = last_first.get(&p).copied().unwrap_or(0);
        let from_second: Vec<u64> = second
            .iter()
            .filter(|l| l.partition == p)
            .map(|l| l.offset)
            .collect();
        assert!(
            from_second.iter().all(|o| *o >= seen_first),
            "partition {p}: redelivered something below {seen_first}"
        );
        let resumed = from_second.first().copied().unwrap_or(expected_end);
        lost += resumed - seen_first;
    }
    let printed: BTreeSet<&String> = first.iter().chain(&second).map(|l| &l.value).collect();
    assert_eq!(
        printed.len(),
        first.len() + second.len(),
        "a record was printed twice"
    );
    let total = first.len() + second.len();
    assert_eq!(
        total as u64 + lost,
        sent.len() as u64,
        "every record once or lost"
    );
    // What was lost is, per partition, one contiguous run right after the last record the
    // killed consumer printed: the records of its last poll, fetched and committed but not
    // printed.
    eprintln!(
        "at-most-once: {} printed before the kill, {lost} lost with the killed consumer \
         (at most {POLL_RECORDS_MAX})",
        first.len()
    );
    assert!(
        lost <= POLL_RECORDS_MAX as u64,
        "lost {lost} records, more than one poll ({POLL_RECORDS_MAX})"
    );
}

/// Runs a `sluice` CLI command against the broker; returns (exit status, stdout + stderr).
fn sluice(broker: &Broker, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["--broker", &broker.addr.to_string()])
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// The committed offset of each partition of [`TOPIC`] that `sluice group describe` reports
/// (`None`: nothing committed).
fn committed_offsets(broker: &Broker, group: &str) -> BTreeMap<u32, Option<u64>> {
    let (status, text) = sluice(broker, &["group", "describe", group]);
    assert_eq!(status, 0, "{text}");
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() != Some(&TOPIC) {
                return None;
            }
            let partition = fields.get(1)?.parse().ok()?;
            Some((partition, fields.get(2)?.parse().ok()))
        })
        .collect()
}

/// `sluice group reset-offsets GROUP --topic TOPIC --to earliest`.
fn reset_to_earliest(broker: &Broker, group: &str) -> (i32, String) {
    let args = [
        "group",
        "reset-offsets",
        group,
        "--topic",
        TOPIC,
        "--to",
        "earliest",
    ];
    sluice(broker, &args)
}

/// The generation `sluice group describe` reports.
fn describe_generation(broker: &Broker, group: &str) -> String {
    let (status, text) = sluice(broker, &["group", "describe", group]);
    assert_eq!(status, 0, "{text}");
    text.lines()
        .find_map(|l| {
            let lower = l.to_lowercase();
            lower.contains("generation").then(|| l.to_owned())
        })
        .unwrap_or_else(|| panic!("no generation in\n{text}"))
}
