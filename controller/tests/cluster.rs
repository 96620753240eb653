//! Controller quorums on real loopback sockets and real data directories.
//!
//! Every test starts real controller nodes (each its own thread, tokio runtime, TCP listener
//! and directory under `target/test-data/controller/`) in this process and talks to them only
//! through their handles: a quorum bootstraps and elects a leader, proposals made on any node
//! reach every node, the leader's death hands over to a survivor with the metadata intact, a
//! restart from the directories brings the same metadata back, and a broker that stops
//! heartbeating is fenced with its partitions moved to ISR members under bumped epochs.
//! Waits are on conditions with a 30 s deadline; nothing sleeps for a fixed time to let
//! something happen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use controller::raft::node::{ANSWER_SLACK, THREAD_STOP_TIMEOUT};
use controller::{
    BrokerId, Command, Controller, ControllerConfig, ControllerHandle, MetadataImage, Outcome,
    Voter,
};

/// Generous: elections on a loaded 2-core machine in a debug build take seconds at worst.
const DEADLINE: Duration = Duration::from_secs(30);
/// How often a condition is re-checked.
const POLL: Duration = Duration::from_millis(20);

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if condition() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    bail!("timed out after {DEADLINE:?} waiting until {what}")
}

fn data_root(test: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-data/controller")
        .join(test);
    let _ = std::fs::remove_dir_all(&root);
    root
}

/// A quorum of `count` voters on ephemeral loopback ports.
struct Quorum {
    root: PathBuf,
    voters: Vec<Voter>,
    nodes: Vec<Option<ControllerHandle>>,
    session_timeout_ms: u64,
    snapshot_log_keep_entries: u64,
    request_timeout_ms: u64,
}

impl Quorum {
    fn start(test: &str, count: usize, session_timeout_ms: u64) -> Result<Self> {
        Self::start_keeping(test, count, session_timeout_ms, 4)
    }

    /// As `start`, keeping `snapshot_log_keep_entries` log entries behind each snapshot.
    fn start_keeping(
        test: &str,
        count: usize,
        session_timeout_ms: u64,
        snapshot_log_keep_entries: u64,
    ) -> Result<Self> {
        let request_timeout_ms = ControllerConfig::new(1, Vec::new(), "").request_timeout_ms;
        Self::start_full(
            test,
            count,
            session_timeout_ms,
            snapshot_log_keep_entries,
            request_timeout_ms,
        )
    }

    /// As `start_keeping`, with each node's `request_timeout_ms`.
    fn start_full(
        test: &str,
        count: usize,
        session_timeout_ms: u64,
        snapshot_log_keep_entries: u64,
        request_timeout_ms: u64,
    ) -> Result<Self> {
        let root = data_root(test);
        let listeners: Vec<std::net::TcpListener> = (0..count)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let voters: Vec<Voter> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(Voter {
                    id: i as u64 + 1,
                    addr: l.local_addr()?,
                })
            })
            .collect::<std::io::Result<_>>()?;
        let mut quorum = Quorum {
            root,
            voters,
            nodes: Vec::new(),
            session_timeout_ms,
            snapshot_log_keep_entries,
            request_timeout_ms,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let mut config = quorum.config(i as u64 + 1);
            config.listener = Some(listener);
            quorum.nodes.push(Some(Controller::start(config)?));
        }
        Ok(quorum)
    }

    fn config(&self, id: u64) -> ControllerConfig {
        let mut config = ControllerConfig::new(
            id,
            self.voters.clone(),
            self.root.join(format!("node-{id}")),
        )
        .with_broker_session_timeout_ms(self.session_timeout_ms);
        // Small, so the tests also build snapshots and purge the log behind them.
        config.snapshot_every_entries = 8;
        config.snapshot_log_keep_entries = self.snapshot_log_keep_entries;
        config.request_timeout_ms = self.request_timeout_ms;
        config
    }

    /// Start node `id` again from its directory, binding its voter address.
    fn restart(&mut self, id: u64) -> Result<()> {
        let handle = Controller::start(self.config(id))?;
        self.nodes[id as usize - 1] = Some(handle);
        Ok(())
    }

    fn node(&self, id: u64) -> Result<&ControllerHandle> {
        self.nodes[id as usize - 1]
            .as_ref()
            .with_context(|| format!("node {id} is down"))
    }

    fn running(&self) -> impl Iterator<Item = &ControllerHandle> {
        self.nodes.iter().flatten()
    }

    /// Wait until exactly one running node leads and every running node knows it.
    fn wait_for_leader(&self) -> Result<u64> {
        let mut leader = None;
        wait_until("one leader known to every running node", || {
            let leaders: Vec<u64> = self
                .running()
                .filter(|n| n.is_leader())
                .map(|n| n.node_id())
                .collect();
            let agreed =
                leaders.len() == 1 && self.running().all(|n| n.leader() == Some(leaders[0]));
            if agreed {
                leader = Some(leaders[0]);
            }
            agreed
        })?;
        leader.context("leader")
    }

    /// Wait until every running node has applied an image equal to `expected`'s topics and
    /// brokers.
    fn wait_for_same_metadata(&self, what: &str, expected: &MetadataImage) -> Result<()> {
        wait_until(what, || {
            self.running().all(|n| {
                let image = n.metadata();
                image.topics == expected.topics && image.brokers == expected.brokers
            })
        })
    }

    fn stop(&mut self, id: u64) -> Result<()> {
        if let Some(handle) = self.nodes[id as usize - 1].take() {
            handle.shutdown()?;
        }
        Ok(())
    }
}

/// Sets its flag when dropped: a helper thread told to stop by it stops however the scope
/// that owns the guard ends, a panic included (`thread::scope` joins its threads even then).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether `image` has `id` registered and fenced (an unknown broker is not fenced).
fn is_fenced(image: &MetadataImage, id: BrokerId) -> bool {
    image.brokers.get(&id).is_some_and(|broker| broker.fenced)
}

fn register(id: u32) -> Command {
    Command::RegisterBroker {
        id: BrokerId(id),
        endpoints: vec![format!("127.0.0.1:{}", 19_000 + id)],
        rack: None,
        incarnation: 1,
    }
}

fn create_topic(name: &str, partitions: u32, replication_factor: u16) -> Command {
    Command::CreateTopic {
        name: name.to_string(),
        partitions,
        replication_factor,
        min_insync: replication_factor.min(2),
        config: BTreeMap::new(),
    }
}

/// Bootstrap, agree, lose the leader, keep going, restart everything: the metadata survives.
#[test]
fn three_voters_replicate_fail_over_and_restart() -> Result<()> {
    let mut quorum = Quorum::start("three_voters", 3, 60_000)?;
    let leader = quorum.wait_for_leader()?;
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;

    // Proposals on a follower are forwarded to the leader.
    for broker in 1..=3 {
        let outcome = quorum.node(follower)?.propose(register(broker))?;
        assert!(
            matches!(outcome, Outcome::BrokerRegistered { .. }),
            "{outcome:?}"
        );
    }
    let outcome = quorum
        .node(follower)?
        .propose(create_topic("orders", 6, 3))?;
    let Outcome::TopicPlaced { replicas, .. } = outcome else {
        bail!("unexpected outcome {outcome:?}");
    };
    assert_eq!(replicas.len(), 6);
    // A rejection travels back as the command's error.
    let again = quorum.node(leader)?.propose(create_topic("orders", 1, 1));
    assert!(
        matches!(again, Err(controller::ControllerError::TopicExists { .. })),
        "{again:?}"
    );

    let expected = quorum.node(leader)?.metadata();
    assert_eq!(expected.brokers.len(), 3);
    assert_eq!(expected.topics["orders"].partitions.len(), 6);
    quorum.wait_for_same_metadata("all three nodes applied the topic", &expected)?;

    // The leader dies: a survivor takes over with the metadata intact and accepts writes.
    let term_before = quorum.node(follower)?.current_term();
    quorum.stop(leader)?;
    let new_leader = quorum.wait_for_leader()?;
    assert_ne!(new_leader, leader);
    assert!(quorum.node(new_leader)?.current_term() > term_before);
    assert_eq!(quorum.node(new_leader)?.metadata().topics, expected.topics);
    let survivor = (1..=3)
        .find(|id| *id != leader && *id != new_leader)
        .context("survivor")?;
    quorum
        .node(survivor)?
        .propose(create_topic("payments", 3, 2))?;
    let after_failover = quorum.node(new_leader)?.metadata();
    assert!(after_failover.topics.contains_key("payments"));
    quorum.wait_for_same_metadata("both survivors applied the second topic", &after_failover)?;

    // Everyone stops; everyone restarts from its directory; the same metadata comes back,
    // including on the node that was down when the second topic was created.
    for id in 1..=3 {
        quorum.stop(id)?;
    }
    for id in 1..=3 {
        quorum.restart(id)?;
    }
    quorum.wait_for_leader()?;
    quorum.wait_for_same_metadata(
        "all three restarted nodes have the metadata",
        &after_failover,
    )?;
    for id in 1..=3 {
        quorum.stop(id)?;
    }
    Ok(())
}

/// A voter that was down while the others took snapshots and purged their logs catches up
/// through a snapshot sent over the controller protocol (openraft's chunked transfer).
#[test]
fn lagging_voter_catches_up_from_a_snapshot() -> Result<()> {
    let mut quorum = Quorum::start_keeping("snapshot_catch_up", 3, 60_000, 0)?;
    let leader = quorum.wait_for_leader()?;
    let lagging = (1..=3).find(|id| *id != leader).context("a follower")?;
    quorum.node(leader)?.propose(register(1))?;
    quorum.stop(lagging)?;
    for i in 0..30 {
        quorum
            .node(leader)?
            .propose(create_topic(&format!("topic-{i}"), 1, 1))?;
    }
    let expected = quorum.node(leader)?.metadata();
    // Wait until the leader has purged beyond what the lagging node has.
    let leader_dir = quorum.root.join(format!("node-{leader}"));
    wait_until("the leader purged its log behind a snapshot", || {
        leader_dir.join("purged").exists()
    })?;
    quorum.restart(lagging)?;
    quorum.wait_for_same_metadata("the restarted voter caught up", &expected)?;
    let lagging_dir = quorum.root.join(format!("node-{lagging}"));
    assert!(lagging_dir.join("snapshot").exists());
    for id in 1..=3 {
        quorum.stop(id)?;
    }
    Ok(())
}

/// A broker that stops heartbeating is fenced; the partitions it led get new leaders from the
/// ISR with bumped epochs, on every node; when it heartbeats again it is unfenced.
#[test]
fn silent_broker_is_fenced_and_its_partitions_move() -> Result<()> {
    let session_timeout_ms = 1_500;
    let mut quorum = Quorum::start("fencing", 3, session_timeout_ms)?;
    let leader = quorum.wait_for_leader()?;
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;
    for broker in 1..=3 {
        quorum.node(leader)?.propose(register(broker))?;
    }
    quorum.node(leader)?.propose(create_topic("orders", 6, 3))?;
    let before = quorum.node(leader)?.metadata();
    let silent = BrokerId(3);
    let led_before = before.partitions_led_by(silent);
    assert!(
        !led_before.is_empty(),
        "placement gives broker 3 some leaders"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let result = std::thread::scope(|scope| -> Result<()> {
        // However this closure ends (a failed assertion included), the heartbeats stop, or
        // the scope would wait for them for ever.
        let _stop_on_exit = StopOnDrop(&stop);
        // Brokers 1 and 2 heartbeat through a follower (forwarded to the leader); 3 is silent.
        let heartbeats = scope.spawn(|| -> Result<()> {
            let handle = quorum.node(follower)?;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if start.elapsed() > 4 * DEADLINE {
                    bail!("the heartbeat thread was never told to stop");
                }
                for id in [BrokerId(1), BrokerId(2)] {
                    handle.broker_heartbeat(id, 1)?;
                }
                // The heartbeat interval, a sixth of the session.
                std::thread::sleep(Duration::from_millis(session_timeout_ms / 6));
            }
            Ok(())
        });
        let fenced = wait_until("broker 3 is fenced on every node", || {
            quorum
                .running()
                // A follower may not have applied the registration yet.
                .all(|n| is_fenced(&n.metadata(), silent))
        });
        let after = quorum.node(leader)?.metadata();
        let still_live = [BrokerId(1), BrokerId(2)]
            .iter()
            .all(|id| after.brokers.get(id).is_some_and(|b| !b.fenced));
        stop.store(true, Ordering::Relaxed);
        heartbeats
            .join()
            .map_err(|_| anyhow::anyhow!("heartbeat thread panicked"))??;
        fenced?;
        assert!(still_live, "heartbeating brokers were fenced");
        Ok(())
    });
    result?;

    let after = quorum.node(leader)?.metadata();
    assert_eq!(after.check_invariants(), Ok(()));
    for tp in &led_before {
        let old = before
            .partition(&tp.topic, tp.partition)
            .context("old partition")?;
        let new = after
            .partition(&tp.topic, tp.partition)
            .context("new partition")?;
        let new_leader = new.leader.context("a new leader")?;
        assert_ne!(new_leader, silent);
        assert!(
            old.isr.contains(&new_leader),
            "{tp:?}: new leader {new_leader} from the ISR"
        );
        assert_eq!(new.leader_epoch, old.leader_epoch + 1, "{tp:?}");
        assert_eq!(new.partition_epoch, old.partition_epoch + 1, "{tp:?}");
        assert!(
            !new.isr.contains(&silent),
            "{tp:?}: fenced broker left the ISR"
        );
    }
    assert!(after.partitions_led_by(silent).is_empty());
    quorum.wait_for_same_metadata("every node saw the fencing", &after)?;

    // It comes back: the leader unfences it (it leads nothing until an election moves
    // leadership back, and rejoins ISRs through the partition leaders' AlterIsr).
    let unfenced = std::thread::scope(|scope| {
        let back = scope.spawn(|| -> Result<()> {
            let handle = quorum.node(leader)?;
            let start = Instant::now();
            while start.elapsed() < DEADLINE && is_fenced(&handle.metadata(), silent) {
                for id in [BrokerId(1), BrokerId(2), silent] {
                    handle.broker_heartbeat(id, 1)?;
                }
                std::thread::sleep(Duration::from_millis(session_timeout_ms / 6));
            }
            Ok(())
        });
        back.join()
            .map_err(|_| anyhow::anyhow!("heartbeat thread panicked"))
    })?;
    unfenced?;
    assert!(!is_fenced(&quorum.node(leader)?.metadata(), silent));
    // A heartbeat with another incarnation is refused.
    let stale = quorum.node(leader)?.broker_heartbeat(silent, 7);
    assert!(
        matches!(
            stale,
            Err(controller::ControllerError::StaleIncarnation { .. })
        ),
        "{stale:?}"
    );
    for id in 1..=3 {
        quorum.stop(id)?;
    }
    Ok(())
}

/// A leader that lost its quorum cannot commit, and openraft's `client_write` would wait for
/// ever: a proposal on it fails with `Timeout` within its bound instead, and the node still
/// stops within `THREAD_STOP_TIMEOUT`.
#[test]
fn proposal_without_a_quorum_times_out() -> Result<()> {
    let request_timeout_ms = 2_000;
    let request_timeout = Duration::from_millis(request_timeout_ms);
    let mut quorum = Quorum::start_full("no_quorum", 3, 60_000, 4, request_timeout_ms)?;
    let leader = quorum.wait_for_leader()?;
    quorum.node(leader)?.propose(register(1))?;
    for id in (1..=3).filter(|id| *id != leader) {
        quorum.stop(id)?;
    }
    let start = Instant::now();
    let result = quorum.node(leader)?.propose(register(2));
    let waited = start.elapsed();
    assert!(
        matches!(result, Err(controller::ControllerError::Timeout { .. })),
        "{result:?}"
    );
    assert!(
        waited < request_timeout + ANSWER_SLACK,
        "the proposal took {waited:?}"
    );
    let start = Instant::now();
    quorum.stop(leader)?;
    assert!(start.elapsed() < THREAD_STOP_TIMEOUT);
    Ok(())
}

/// Garbage on the controller port (an oversized frame, undecodable bytes, a cut frame) costs
/// the sender its connection and nothing else: the node keeps serving.
#[test]
fn garbage_on_the_controller_port_is_refused_without_harm() -> Result<()> {
    use std::io::{Read, Write};

    let quorum = Quorum::start("garbage", 1, 60_000)?;
    quorum.wait_for_leader()?;
    let addr = quorum.node(1)?.listen_addr();
    let hostile: [&[u8]; 3] = [
        &[0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        &[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef],
        &[0, 0, 1, 0, 7],
    ];
    for bytes in hostile {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(DEADLINE))?;
        // The server may refuse (close) before all is written or before our half-close, so
        // a failed write or shutdown is the refusal too (ENOTCONN, EPIPE, ECONNRESET).
        if stream.write_all(bytes).is_ok() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        let mut answer = Vec::new();
        // The server closes the connection without an answer.
        let read = stream.read_to_end(&mut answer);
        assert!(
            read.is_err() || answer.is_empty(),
            "answered garbage with {answer:?}"
        );
    }
    let outcome = quorum.node(1)?.propose(register(1))?;
    assert!(matches!(outcome, Outcome::BrokerRegistered { .. }));
    Ok(())
}

/// One node with one voter is a working controller: no cluster flags, and it restarts from
/// its directory (from a snapshot and the log after it).
#[test]
fn single_node_works_and_restarts_from_snapshot() -> Result<()> {
    let root = data_root("single_node");
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let config = |listener: Option<std::net::TcpListener>| {
        let mut config = ControllerConfig::single_node(&root, addr);
        config.snapshot_every_entries = 5;
        config.snapshot_log_keep_entries = 2;
        config.listener = listener;
        config
    };
    let node = Controller::start(config(Some(listener)))?;
    wait_until("the single node leads", || node.is_leader())?;
    let mut updates = node.subscribe();
    updates.mark_unchanged();
    node.propose(register(1))?;
    assert!(updates.has_changed()?, "subscribers see the change");
    assert!(updates
        .borrow_and_update()
        .brokers
        .contains_key(&BrokerId(1)));
    for i in 0..20 {
        node.propose(create_topic(&format!("topic-{i}"), 2, 1))?;
    }
    let expected = node.metadata();
    assert_eq!(expected.topics.len(), 20);
    node.shutdown()?;
    assert!(root.join("snapshot").exists(), "a snapshot was taken");
    let log_files = std::fs::read_dir(root.join("log"))?.count();
    assert!(
        log_files < 22,
        "the log was purged behind the snapshot ({log_files} files)"
    );

    let node = Controller::start(config(None))?;
    wait_until("the restarted node leads", || node.is_leader())?;
    wait_until("the restarted node has the metadata", || {
        let image = node.metadata();
        image.topics == expected.topics && image.brokers == expected.brokers
    })?;
    node.shutdown()?;
    Ok(())
}
