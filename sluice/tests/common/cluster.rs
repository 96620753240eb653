//! A cluster of real `sluice serve` processes for the Jepsen-style tests
//! (`sluice/tests/cluster.rs`): start N brokers that are all controller voters, kill -9 and
//! restart any of them on the same addresses and data, find the controller leader and the
//! leader of a partition, and read a partition whole for the history check.
//!
//! ```text
//!  TestCluster::start(3, options)
//!    broker i: taskset -c <i mod cores> sluice serve --broker-id i --listen A_i
//!              --controller-voters 0@C_0,1@C_1,2@C_2 --cores 1 --data-dir <root>/broker-i ...
//!              (inside its own network namespace with Network::Namespaces, see netns.rs)
//!    stdout, stderr -> <root>/logs/broker-i.<start>.{stdout,stderr}  (printed on failure)
//!  kill9(i) · restart(i) · stop_all() · wait_ready() · controller_leader() ·
//!  wait_partition(topic, p, condition) · read_partition(topic, p)
//! ```
//!
//! Every wait polls a condition against a generous deadline (the machine has 2 cores shared
//! by the three brokers and the test); nothing sleeps a fixed time. Brokers share the cores:
//! broker i runs on CPU `i mod cores`, the CPU its one shard pins itself to.
//!
//! Data and logs live under `target/test-data/` (a real disk: O_DIRECT). A cluster that is
//! dropped while its test panics prints the end of every broker's stderr and keeps the logs
//! (not the data) for post-mortem (`SLUICE_KEEP_CLUSTER_LOGS=1` keeps them for passing tests
//! too); otherwise everything is removed.
#![allow(dead_code, clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wire::protocol::{
    decode_response, encode_request, ApiKey, Decode, DescribeClusterRequest,
    DescribeClusterResponse, Encode, ErrorCode, FetchResponse, MetadataRequest, MetadataResponse,
    PartitionMetadata,
};
use wire::{AlignedVec, BatchIter};

use crate::common::{fetch_request, free_port};
use crate::netns::NetLab;

/// Longest wait for a broker's readiness line after it was spawned.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait for a cluster condition (all brokers registered, a new leader, the ISR
/// grown back): far above the few seconds they take, spent only when something is wrong.
pub const CONDITION_DEADLINE: Duration = Duration::from_secs(45);
/// A wait shorter than this is not logged.
const QUIET_WAIT: Duration = Duration::from_millis(100);
/// How often a condition is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Timeout of one request of the harness (connect, write, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Set (to anything) to keep the brokers' logs of a passing test too.
pub const KEEP_LOGS_ENV: &str = "SLUICE_KEEP_CLUSTER_LOGS";
/// Lines of each broker's stderr printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Main and controller ports of a broker inside its own network namespace (each namespace
/// has its own port space, so they are fixed).
const NAMESPACE_MAIN_PORT: u16 = 9092;
const NAMESPACE_CONTROLLER_PORT: u16 = 9093;

/// Where the brokers live on the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// 127.0.0.1, a free port each.
    Loopback,
    /// One network namespace per broker behind a bridge, so that a broker can be cut off
    /// from the others (see `netns.rs`; needs root, `ip` and `nft`).
    Namespaces,
}

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Loopback or namespaces.
    pub network: Network,
    /// `--replica-lag-time-max-ms`: a follower this far behind leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `--broker-session-timeout-ms`: a broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `--default-replication-factor`.
    pub default_replication_factor: u16,
    /// `--min-insync-replicas` (the broker default).
    pub min_insync_replicas: u16,
    /// `--log` of every broker (stderr, kept for post-mortem).
    pub log: String,
    /// Start the brokers without any cluster flag (single nodes): to exercise the process
    /// handling of the harness itself.
    pub standalone: bool,
    /// More flags for every broker.
    pub extra_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            network: Network::Loopback,
            replica_lag_time_max_ms: 2_000,
            broker_session_timeout_ms: 3_000,
            default_replication_factor: 3,
            min_insync_replicas: 2,
            // openraft logs every vote and append at info: kept at warn, or the tails printed
            // on failure show nothing else.
            log: "info,openraft=warn".into(),
            standalone: false,
            extra_args: Vec::new(),
        }
    }
}

/// One broker of the cluster: its fixed addresses and data, and its process while it runs.
struct BrokerNode {
    id: u32,
    /// The main listener (what clients bootstrap with).
    listen: SocketAddr,
    /// Its controller address when it is a voter.
    controller: Option<SocketAddr>,
    data_dir: PathBuf,
    /// Index of its network namespace in the lab.
    namespace: Option<usize>,
    process: Option<Child>,
    /// Starts so far (names its log files).
    starts: u32,
}

/// Real broker processes forming one cluster; see the module doc. Killed on drop.
pub struct TestCluster {
    name: String,
    root: PathBuf,
    options: ClusterOptions,
    voters: String,
    nodes: Vec<BrokerNode>,
    /// Dropped after the processes (see `Drop`).
    lab: Option<NetLab>,
    /// CPUs this process may run on; broker i gets `cpus[i % len]`.
    cpus: Vec<usize>,
}

impl TestCluster {
    /// Starts `brokers` brokers, all of them controller voters, and waits until each printed
    /// its readiness line (not until the cluster formed: see [`TestCluster::wait_ready`]).
    /// `name` names the data directory (one per test).
    pub fn start(name: &str, brokers: usize, options: ClusterOptions) -> TestCluster {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let base = workspace.join("target/test-data");
        let root = base.join(format!("cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("logs")).unwrap();
        let lab = match options.network {
            Network::Loopback => None,
            Network::Namespaces => {
                Some(NetLab::create(brokers).unwrap_or_else(|e| panic!("network lab: {e}")))
            }
        };
        let mut nodes = Vec::new();
        for i in 0..brokers {
            let (listen, controller): (SocketAddr, SocketAddr) = match &lab {
                None => (
                    SocketAddr::from(([127, 0, 0, 1], free_port())),
                    SocketAddr::from(([127, 0, 0, 1], free_port())),
                ),
                Some(lab) => (
                    SocketAddr::from((lab.broker_ip(i), NAMESPACE_MAIN_PORT)),
                    SocketAddr::from((lab.broker_ip(i), NAMESPACE_CONTROLLER_PORT)),
                ),
            };
            nodes.push(BrokerNode {
                id: i as u32,
                listen,
                controller: Some(controller),
                data_dir: root.join(format!("broker-{i}")),
                namespace: lab.as_ref().map(|_| i),
                process: None,
                starts: 0,
            });
        }
        let voters = nodes
            .iter()
            .map(|n| format!("{}@{}", n.id, n.controller.unwrap()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster {
            name: name.to_owned(),
            root,
            options,
            voters,
            nodes,
            lab,
            cpus: allowed_cpus(),
        };
        // All spawned before any is waited for: a voter may need a quorum to serve.
        for i in 0..brokers {
            cluster.spawn(i);
        }
        for i in 0..brokers {
            cluster.wait_listening(i);
        }
        cluster
    }

    /// Adds a broker that is not a controller voter (it registers with the quorum of the
    /// first brokers), starts it and waits for its readiness line; returns its index.
    pub fn add_broker(&mut self) -> usize {
        let i = self.nodes.len();
        assert!(
            self.lab.is_none(),
            "brokers are added only on loopback (the lab is sized at start)"
        );
        self.nodes.push(BrokerNode {
            id: i as u32,
            listen: SocketAddr::from(([127, 0, 0, 1], free_port())),
            controller: None,
            data_dir: self.root.join(format!("broker-{i}")),
            namespace: None,
            process: None,
            starts: 0,
        });
        self.spawn(i);
        self.wait_listening(i);
        i
    }

    /// Number of brokers (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Broker `i`'s main address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].listen
    }

    /// Broker `i`'s id.
    pub fn id(&self, i: usize) -> u32 {
        self.nodes[i].id
    }

    /// The index of the broker with id `id`.
    pub fn index_of(&self, id: u32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no broker with id {id}"))
    }

    /// Whether broker `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.nodes[i].process {
            None => false,
            Some(child) => child.try_wait().map(|s| s.is_none()).unwrap_or(false),
        }
    }

    /// Indexes of the brokers whose process runs.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_running(i))
            .collect()
    }

    /// Every broker's main address, comma-separated: a client's bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.listen.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The network lab, with namespaces.
    pub fn lab(&self) -> &NetLab {
        self.lab.as_ref().expect("the cluster runs on loopback")
    }

    /// The command line of broker `i`.
    fn command(&self, i: usize) -> Command {
        let node = &self.nodes[i];
        let options = &self.options;
        let mut argv: Vec<String> = Vec::new();
        if let (Some(lab), Some(namespace)) = (&self.lab, node.namespace) {
            argv.extend(lab.exec_prefix(namespace));
        }
        if !self.cpus.is_empty() {
            let cpu = self.cpus[i % self.cpus.len()];
            argv.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
        }
        argv.push(env!("CARGO_BIN_EXE_sluice").into());
        argv.push("serve".into());
        let mut flag = |name: &str, value: String| {
            argv.push(format!("--{name}"));
            argv.push(value);
        };
        flag("data-dir", node.data_dir.display().to_string());
        flag("listen", node.listen.to_string());
        flag("cores", "1".into());
        flag("shard-port-base", "0".into());
        flag("log", options.log.clone());
        if !options.standalone {
            flag("broker-id", node.id.to_string());
            flag("controller-voters", self.voters.clone());
            flag(
                "replica-lag-time-max-ms",
                options.replica_lag_time_max_ms.to_string(),
            );
            flag(
                "broker-session-timeout-ms",
                options.broker_session_timeout_ms.to_string(),
            );
            flag(
                "default-replication-factor",
                options.default_replication_factor.to_string(),
            );
            flag(
                "min-insync-replicas",
                options.min_insync_replicas.to_string(),
            );
        }
        argv.extend(options.extra_args.iter().cloned());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }

    /// Spawns broker `i` with stdout and stderr going to fresh log files.
    fn spawn(&mut self, i: usize) {
        assert!(!self.is_running(i), "broker {i} already runs");
        let mut command = self.command(i);
        let node = &mut self.nodes[i];
        node.starts += 1;
        let (stdout, stderr) = log_paths(&self.root, node.id, node.starts);
        let stdout = File::create(&stdout).unwrap();
        let stderr = File::create(&stderr).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning broker {i}: {e}"));
        node.process = Some(child);
    }

    /// Waits until broker `i` printed `sluice listening on <its address>`; panics with its
    /// stderr if it exits or does not within [`START_DEADLINE`].
    fn wait_listening(&mut self, i: usize) {
        let node = &self.nodes[i];
        let (stdout_path, _) = log_paths(&self.root, node.id, node.starts);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            if let Some(line) = stdout
                .lines()
                .find(|l| l.starts_with("sluice listening on "))
            {
                let expected = self.nodes[i].listen.to_string();
                assert!(
                    line.contains(&expected),
                    "broker {i} listens elsewhere than {expected}: {line}"
                );
                return;
            }
            if !self.is_running(i) {
                panic!(
                    "broker {i} exited before listening:\n{}",
                    self.log_tail(i, LOG_TAIL_LINES)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "broker {i} not listening after {START_DEADLINE:?}:\n{}",
                    self.log_tail(i, LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// kill -9 broker `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        eprintln!("[cluster {}] killed broker {i} (-9)", self.name);
    }

    /// kill -9 every running broker, as close together as the loop allows, then reap them.
    pub fn kill9_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.process.take())
            .collect();
        for child in &mut children {
            let _ = child.kill();
        }
        for child in &mut children {
            let _ = child.wait();
        }
        eprintln!("[cluster {}] killed every broker (-9)", self.name);
    }

    /// Starts broker `i` again on its addresses and data, and waits for its readiness line.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_listening(i);
        eprintln!("[cluster {}] restarted broker {i}", self.name);
    }

    /// Starts every stopped broker (all spawned before any is waited for) and waits for
    /// their readiness lines.
    pub fn restart_all(&mut self) {
        let stopped: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| !self.is_running(i))
            .collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for &i in &stopped {
            self.wait_listening(i);
        }
        eprintln!("[cluster {}] restarted brokers {stopped:?}", self.name);
    }

    /// SIGTERM to broker `i`, then waits for it to exit (kill -9 after 20 s).
    pub fn stop(&mut self, i: usize) {
        self.stop_each(&[i]);
        eprintln!("[cluster {}] stopped broker {i} (SIGTERM)", self.name);
    }

    /// SIGTERM to every broker, then waits for them to exit (kill -9 after 20 s).
    pub fn stop_all(&mut self) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.stop_each(&all);
    }

    /// SIGTERM to brokers `which` (all signalled before any is waited for), then waits until
    /// they exit, killing any left after 20 s.
    fn stop_each(&mut self, which: &[usize]) {
        for &i in which {
            if let Some(child) = &self.nodes[i].process {
                // SAFETY: sending a signal to our own child process by pid has no memory
                // effects.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for &i in which {
            if let Some(mut child) = self.nodes[i].process.take() {
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(POLL_INTERVAL);
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The last `lines` lines of broker `i`'s stderr of its latest start.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let node = &self.nodes[i];
        let (_, stderr) = log_paths(&self.root, node.id, node.starts);
        let text = std::fs::read_to_string(&stderr).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = all[all.len().saturating_sub(lines)..].join("\n");
        format!("--- {} (last {lines} lines) ---\n{tail}", stderr.display())
    }

    /// The end of every broker's stderr, for a failure message.
    pub fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.log_tail(i, LOG_TAIL_LINES))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// DescribeCluster as broker `i` answers it.
    pub fn describe_cluster_from(&self, i: usize) -> Result<DescribeClusterResponse, String> {
        call(
            self.nodes[i].listen,
            ApiKey::DescribeCluster,
            &DescribeClusterRequest {
                include_fenced: true,
            },
        )
    }

    /// Metadata of `topic` as broker `i` answers it.
    pub fn metadata_from(&self, i: usize, topic: &str) -> Result<MetadataResponse, String> {
        call(
            self.nodes[i].listen,
            ApiKey::Metadata,
            &MetadataRequest {
                topics: Some(vec![topic.to_owned()]),
            },
        )
    }

    /// Waits until `condition` holds for what `probe` returns, polling; panics after
    /// `timeout` with `what`, the last value seen and the brokers' logs.
    pub fn wait_for<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        timeout: Duration,
        probe: impl FnMut(&mut TestCluster) -> T,
        condition: impl FnMut(&T) -> bool,
    ) -> T {
        self.try_wait_for(what, timeout, probe, condition)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// [`TestCluster::wait_for`] returning the failure (what, and the last value seen)
    /// instead of panicking, for a test that goes on to check its history.
    pub fn try_wait_for<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&mut TestCluster) -> T,
        mut condition: impl FnMut(&T) -> bool,
    ) -> Result<T, String> {
        let started = Instant::now();
        loop {
            let value = probe(self);
            if condition(&value) {
                // Conditions met at once (most polls of a read) are not worth a line.
                if started.elapsed() >= QUIET_WAIT {
                    eprintln!(
                        "[cluster {}] {what}: after {:?}",
                        self.name,
                        started.elapsed()
                    );
                }
                return Ok(value);
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "[cluster {}] {what}: not within {timeout:?}; last seen: {value:#?}",
                    self.name
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Every running broker's answer to DescribeCluster (or why it gave none).
    pub fn cluster_views(&mut self) -> Vec<(usize, Result<DescribeClusterResponse, String>)> {
        self.running()
            .into_iter()
            .map(|i| (i, self.describe_cluster_from(i)))
            .collect()
    }

    /// Waits until every running broker reports a controller leader and every running broker
    /// registered and unfenced.
    pub fn wait_ready(&mut self) {
        self.wait_for(
            "every running broker registered, unfenced, with a controller leader",
            CONDITION_DEADLINE,
            |cluster| {
                let running: Vec<u32> = cluster
                    .running()
                    .into_iter()
                    .map(|i| cluster.nodes[i].id)
                    .collect();
                (running, cluster.cluster_views())
            },
            |(running, views)| {
                views.iter().all(|(_, view)| match view {
                    Err(_) => false,
                    Ok(view) => {
                        view.controller_id >= 0
                            && running.iter().all(|id| {
                                view.brokers.iter().any(|b| b.broker_id == *id && !b.fenced)
                            })
                    }
                })
            },
        );
    }

    /// The controller leader's broker index, once a running broker names one that runs.
    pub fn controller_leader(&mut self) -> usize {
        let (_, leader) = self.wait_for(
            "a running controller leader",
            CONDITION_DEADLINE,
            |cluster| {
                let views = cluster.cluster_views();
                let leader = views
                    .iter()
                    .filter_map(|(_, v)| v.as_ref().ok())
                    .max_by_key(|v| v.controller_term)
                    .map(|v| v.controller_id);
                let running = leader
                    .and_then(|id| u32::try_from(id).ok())
                    .and_then(|id| cluster.nodes.iter().position(|n| n.id == id))
                    .filter(|&i| cluster.is_running(i));
                (views, running)
            },
            |(_, running)| running.is_some(),
        );
        leader.unwrap()
    }

    /// The newest view of `topic`/`partition` over the running brokers: the answer with the
    /// highest leader epoch (a broker cut off or just restarted may answer an older one).
    pub fn partition(&mut self, topic: &str, partition: u32) -> Option<PartitionMetadata> {
        self.running()
            .into_iter()
            .filter_map(|i| self.metadata_from(i, topic).ok())
            .filter_map(|metadata| {
                metadata
                    .topics
                    .into_iter()
                    .find(|t| t.name == topic && t.error.is_ok())
                    .and_then(|t| t.partitions.into_iter().find(|p| p.partition == partition))
            })
            .filter(|p| p.error.is_ok())
            .max_by_key(|p| p.leader_epoch)
    }

    /// Waits until the newest view of `topic`/`partition` satisfies `condition`; panics after
    /// [`CONDITION_DEADLINE`].
    pub fn wait_partition(
        &mut self,
        topic: &str,
        partition: u32,
        what: &str,
        condition: impl Fn(&PartitionMetadata) -> bool,
    ) -> PartitionMetadata {
        self.try_wait_partition(topic, partition, what, condition)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// [`TestCluster::wait_partition`] returning the failure instead of panicking.
    pub fn try_wait_partition(
        &mut self,
        topic: &str,
        partition: u32,
        what: &str,
        condition: impl Fn(&PartitionMetadata) -> bool,
    ) -> Result<PartitionMetadata, String> {
        let what = format!("{topic}/{partition}: {what}");
        self.try_wait_for(
            &what,
            CONDITION_DEADLINE,
            |cluster| cluster.partition(topic, partition),
            |p| p.as_ref().is_some_and(&condition),
        )
        .map(Option::unwrap)
    }

    /// Waits until `topic`/`partition` has a leader whose process runs; its broker index.
    pub fn leader_of(&mut self, topic: &str, partition: u32) -> usize {
        let running: Vec<i32> = self
            .running()
            .into_iter()
            .map(|i| self.nodes[i].id as i32)
            .collect();
        let metadata = self.wait_partition(topic, partition, "a leader that runs", |p| {
            running.contains(&p.leader)
        });
        self.index_of(metadata.leader as u32)
    }

    /// Waits until every replica of `topic`/`partition` is in its ISR (and it has a leader).
    pub fn wait_full_isr(&mut self, topic: &str, partition: u32) -> PartitionMetadata {
        self.try_wait_full_isr(topic, partition)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// [`TestCluster::wait_full_isr`] returning the failure instead of panicking.
    pub fn try_wait_full_isr(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<PartitionMetadata, String> {
        self.try_wait_partition(topic, partition, "every replica in the ISR", |p| {
            p.leader >= 0 && !p.replicas.is_empty() && p.replicas.iter().all(|r| p.isr.contains(r))
        })
    }

    /// Reads `topic`/`partition` from offset 0 up to its high watermark from its leader:
    /// `(offset, value)` of every record in log order. Follows leader changes; panics after
    /// [`CONDITION_DEADLINE`].
    pub fn read_partition(&mut self, topic: &str, partition: u32) -> Vec<(u64, Vec<u8>)> {
        self.read_partition_to(topic, partition, 0)
    }

    /// [`TestCluster::read_partition`], reading on while the high watermark is below `end`
    /// (a new leader's high watermark can trail what the previous one exposed until its
    /// followers fetch again). If it stays below `end` until [`CONDITION_DEADLINE`], says so
    /// and returns what it read: the history check then reports what is missing.
    pub fn read_partition_to(
        &mut self,
        topic: &str,
        partition: u32,
        end: u64,
    ) -> Vec<(u64, Vec<u8>)> {
        let deadline = Instant::now() + CONDITION_DEADLINE;
        let mut records = Vec::new();
        let mut offset = 0u64;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            let leader = self.leader_of(topic, partition);
            match fetch_from(self.nodes[leader].listen, topic, partition, offset) {
                Ok(chunk) => {
                    if chunk.next_offset.is_none() && offset >= chunk.high_watermark {
                        if offset >= end {
                            return records;
                        }
                        last_error = format!(
                            "high watermark {} on broker {leader} is below {end}",
                            chunk.high_watermark
                        );
                        std::thread::sleep(POLL_INTERVAL);
                        continue;
                    }
                    for (record_offset, value) in chunk.records {
                        if record_offset >= offset {
                            records.push((record_offset, value));
                        }
                    }
                    offset = offset.max(chunk.next_offset.unwrap_or(offset));
                }
                Err(e) => {
                    last_error = e;
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
        }
        if offset < end {
            eprintln!(
                "[cluster {}] reading {topic}/{partition}: stuck at offset {offset} below \
                 {end}: {last_error}",
                self.name
            );
            return records;
        }
        panic!(
            "reading {topic}/{partition}: stuck at offset {offset}: {last_error}\n{}",
            self.logs()
        );
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let keep_logs = failed || std::env::var_os(KEEP_LOGS_ENV).is_some();
        if failed {
            eprintln!(
                "[cluster {}] test failed; broker logs kept in {}\n{}",
                self.name,
                self.root.join("logs").display(),
                self.logs()
            );
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // The processes are gone: now the namespaces can go.
        self.lab.take();
        if keep_logs {
            eprintln!(
                "[cluster {}] logs kept in {}",
                self.name,
                self.root.join("logs").display()
            );
            for node in &self.nodes {
                let _ = std::fs::remove_dir_all(&node.data_dir);
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// Paths of the stdout and stderr files of broker `id`'s `start`-th start.
fn log_paths(root: &Path, id: u32, start: u32) -> (PathBuf, PathBuf) {
    let logs = root.join("logs");
    (
        logs.join(format!("broker-{id}.{start}.stdout")),
        logs.join(format!("broker-{id}.{start}.stderr")),
    )
}

/// The CPUs this process may run on (empty when `taskset` is missing: brokers then run
/// unpinned).
fn allowed_cpus() -> Vec<usize> {
    if Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("taskset not found: brokers run without a CPU affinity");
        return Vec::new();
    }
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// One request on a fresh connection, with [`REQUEST_TIMEOUT`] on connect, write and read;
/// every failure (refused, timed out, error answer) is an `Err` with the reason.
pub fn call<T: Encode, R: for<'a> Decode<'a>>(
    addr: SocketAddr,
    api: ApiKey,
    body: &T,
) -> Result<R, String> {
    call_with_timeout(addr, api, body, REQUEST_TIMEOUT)
}

/// [`call`] waiting up to `timeout` for the answer.
pub fn call_with_timeout<T: Encode, R: for<'a> Decode<'a>>(
    addr: SocketAddr,
    api: ApiKey,
    body: &T,
    timeout: Duration,
) -> Result<R, String> {
    let frame = exchange(addr, api, body, timeout)?;
    let (_, response) =
        decode_response::<R>(&frame).map_err(|e| format!("{api:?} from {addr}: {e}"))?;
    response.map_err(|e| format!("{api:?} from {addr}: {e}"))
}

/// Sends one request on a fresh connection and returns the response frame.
fn exchange<T: Encode>(
    addr: SocketAddr,
    api: ApiKey,
    body: &T,
    read_timeout: Duration,
) -> Result<AlignedVec<16>, String> {
    let context = |e: std::io::Error| format!("{api:?} to {addr}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(context)?;
    stream
        .set_read_timeout(Some(read_timeout))
        .map_err(context)?;
    stream
        .set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(context)?;
    let mut buffer = Vec::new();
    for part in encode_request(&mut buffer, api, 1, body).parts() {
        stream.write_all(part).map_err(context)?;
    }
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).map_err(context)?;
    let len = u32::from_le_bytes(prefix) as usize;
    let mut frame = AlignedVec::<16>::with_capacity(len + 4);
    frame.extend_from_slice(&prefix);
    frame.resize(len + 4, 0);
    stream.read_exact(&mut frame[4..]).map_err(context)?;
    Ok(frame)
}

/// What one fetch returned.
pub struct FetchedChunk {
    /// `(offset, value)` of every record of the answer's data batches (the first batch may
    /// start before the offset asked for).
    pub records: Vec<(u64, Vec<u8>)>,
    /// The offset after the answer's last batch (control batches included); `None` when the
    /// answer held no batch.
    pub next_offset: Option<u64>,
    /// The partition's high watermark.
    pub high_watermark: u64,
}

/// One fetch of `topic`/`partition` from `offset` at `addr` (no wait).
pub fn fetch_from(
    addr: SocketAddr,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<FetchedChunk, String> {
    let request = fetch_request(topic, partition, offset, 0);
    let frame = exchange(addr, ApiKey::Fetch, &request, REQUEST_TIMEOUT)?;
    let (_, response) =
        decode_response::<FetchResponse>(&frame).map_err(|e| format!("fetch from {addr}: {e}"))?;
    let response = response.map_err(|e| format!("fetch from {addr}: {e}"))?;
    let data = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| format!("fetch from {addr}: empty answer"))?;
    if data.error.code != ErrorCode::None {
        return Err(format!("fetch from {addr}: {}", data.error));
    }
    let mut chunk = FetchedChunk {
        records: Vec::new(),
        next_offset: None,
        high_watermark: data.high_watermark,
    };
    for batch in BatchIter::new(data.records.as_slice(), wire::limits::BATCH_SIZE_MAX) {
        let batch = batch.map_err(|e| format!("fetch from {addr}: bad batch: {e}"))?;
        chunk.next_offset = Some(batch.last_offset() + 1);
        if batch.header().is_control() {
            continue;
        }
        let archived = batch
            .records()
            .map_err(|e| format!("fetch from {addr}: bad records: {e}"))?;
        for (index, record) in archived.iter().enumerate() {
            let record_offset = batch.base_offset() + index as u64;
            chunk
                .records
                .push((record_offset, record.value_bytes().to_vec()));
        }
    }
    Ok(chunk)
}
