//! This node's membership in its cluster: it starts the node's controller (an openraft voter
//! on a thread of its own, see the `controller` crate), registers the broker with a new
//! incarnation and its client endpoints, creates `__consumer_offsets` once enough brokers are
//! live, and heartbeats from a thread of its own, re-registering when the controller forgot
//! it. A node started with no `--controller-voters` is a cluster of one: the same code, one
//! voter. The shards never block on any of this: they read the controller's metadata image.
//!
//! ```text
//!  Node::start ─ start_controller ─ register (waits for a quorum) ─ migrate topics.meta
//!              └ shards start with the image ─ Membership thread: heartbeat every session/4
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::{BrokerId, Command, ControllerConfig, ControllerError, ControllerHandle, Voter};
use wire::protocol::CONSUMER_OFFSETS_TOPIC;

use crate::cluster_metadata::config_strings;
use crate::config::Config;
use crate::topics::TopicRegistry;

/// Longest wait at start for the controller quorum to accept this broker's registration: the
/// other voters may start a little later (an operator starting three machines).
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two registration attempts while there is no quorum.
const REGISTRATION_RETRY: Duration = Duration::from_millis(200);
/// Name of the file holding the incarnation counter in the data directory.
const INCARNATION_FILE: &str = "incarnation";

/// Why the node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The controller could not start or refused the registration.
    #[error("controller: {0}")]
    Controller(#[from] ControllerError),
    /// The incarnation file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// No quorum accepted the registration in time.
    #[error("no controller quorum accepted broker {broker} within {timeout_s} s: are the other --controller-voters running?")]
    NoQuorum {
        /// This broker.
        broker: u32,
        /// The wait.
        timeout_s: u64,
    },
}

/// Starts this node's controller: `<data-dir>/controller` holds its Raft state. A voter
/// listens on its voter address; a broker that is not a voter (or a lone node) listens on
/// `--controller-listen`, and joins the quorum as a learner.
pub fn start_controller(config: &Config) -> Result<ControllerHandle, MembershipError> {
    let cluster = &config.cluster;
    let dir = config.data_dir.join("controller");
    let node_id = u64::from(config.broker_id);
    let bind_own = || {
        let listener =
            std::net::TcpListener::bind(cluster.controller_listen).map_err(|source| {
                MembershipError::Io {
                    path: dir.clone(),
                    source,
                }
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MembershipError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok::<_, MembershipError>((listener, addr))
    };
    let mut controller_config = if cluster.controller_voters.is_empty() {
        let (listener, addr) = bind_own()?;
        let mut single = ControllerConfig::new(node_id, vec![Voter { id: node_id, addr }], &dir);
        single.listener = Some(listener);
        single
    } else {
        let mut quorum = ControllerConfig::new(node_id, cluster.controller_voters.clone(), &dir);
        if quorum.is_learner() {
            quorum.listener = Some(bind_own()?.0);
        }
        quorum
    };
    controller_config = controller_config
        .with_broker_session_timeout_ms(cluster.broker_session_timeout.as_millis() as u64);
    Ok(controller::Controller::start(controller_config)?)
}

/// The client endpoints this broker registers: the main listener, then one per shard.
pub fn registration_endpoints(
    config: &Config,
    main: SocketAddr,
    shards: &[SocketAddr],
) -> Vec<String> {
    let host = &config.advertised_host;
    std::iter::once(format!("{host}:{}", main.port()))
        .chain(shards.iter().enumerate().map(|(shard, addr)| {
            let port = config
                .advertised_shard_port_base
                .map_or(addr.port(), |base| base.saturating_add(shard as u16));
            format!("{host}:{port}")
        }))
        .collect()
}

/// The next incarnation of this broker (one more than the last start's), persisted first so
/// a crash cannot reuse one.
pub fn next_incarnation(data_dir: &Path) -> Result<u64, MembershipError> {
    let path = data_dir.join(INCARNATION_FILE);
    let last = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let next = last + 1;
    storage::metadata::atomic_write_blocking(&path, next.to_string().as_bytes())
        .map_err(|source| MembershipError::Io { path, source })?;
    Ok(next)
}

/// Registers the broker and waits until this node's image shows it live: retried while there
/// is no quorum, up to [`REGISTRATION_TIMEOUT`].
pub fn register(
    controller: &ControllerHandle,
    config: &Config,
    endpoints: &[String],
    incarnation: u64,
) -> Result<(), MembershipError> {
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    let id = BrokerId(config.broker_id);
    let mut last_log = Instant::now();
    loop {
        let proposed = controller.propose(Command::RegisterBroker {
            id,
            endpoints: endpoints.to_vec(),
            rack: config.cluster.rack.clone(),
            incarnation,
        });
        match proposed {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                if last_log.elapsed() > Duration::from_secs(5) {
                    tracing::info!(%error, "waiting for the controller quorum");
                    last_log = Instant::now();
                }
                std::thread::sleep(REGISTRATION_RETRY);
            }
            Err(_) => {
                return Err(MembershipError::NoQuorum {
                    broker: config.broker_id,
                    timeout_s: REGISTRATION_TIMEOUT.as_secs(),
                })
            }
        }
    }
    let registered = |image: &controller::MetadataImage| {
        image
            .brokers
            .get(&id)
            .is_some_and(|b| b.incarnation == incarnation && !b.fenced)
    };
    // Heartbeat while waiting: the controller may fence this incarnation before it is seen
    // unfenced (the session of the previous, killed incarnation can expire right after the
    // registration is applied), and the heartbeat thread only starts once this returns, so
    // without a heartbeat here nothing would ever unfence it.
    while Instant::now() < deadline {
        let round = (Instant::now() + REGISTRATION_RETRY).min(deadline);
        if wait_for_image(controller, round, registered) {
            return Ok(());
        }
        if let Err(error) = controller.broker_heartbeat(id, incarnation) {
            tracing::debug!(%error, "heartbeat while registering failed");
        }
    }
    Err(MembershipError::NoQuorum {
        broker: config.broker_id,
        timeout_s: REGISTRATION_TIMEOUT.as_secs(),
    })
}

/// Waits until this node's image satisfies `done` (polling: start-up only).
fn wait_for_image(
    controller: &ControllerHandle,
    deadline: Instant,
    done: impl Fn(&controller::MetadataImage) -> bool,
) -> bool {
    while Instant::now() < deadline {
        if done(&controller.metadata()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Moves a single node's topics from its `topics.meta` (written before the controller
/// existed) into the controller, once: topics the image lacks are proposed with their
/// settings and replication factor 1, and the file is renamed `topics.meta.migrated`.
pub fn migrate_registry(
    controller: &ControllerHandle,
    config: &Config,
) -> Result<(), MembershipError> {
    let path = TopicRegistry::path(&config.data_dir);
    if !path.exists() {
        return Ok(());
    }
    let registry = TopicRegistry::load(&config.data_dir).map_err(|error| MembershipError::Io {
        path: path.clone(),
        source: std::io::Error::other(error.to_string()),
    })?;
    let image = controller.metadata();
    for (name, topic) in &registry.topics {
        if image.topics.contains_key(name) {
            continue;
        }
        let created = controller.propose(Command::CreateTopic {
            name: name.clone(),
            partitions: topic.partitions,
            replication_factor: 1,
            min_insync: 1,
            config: config_strings(topic),
        });
        match created {
            Ok(_) | Err(ControllerError::TopicExists { .. }) => {
                tracing::info!(topic = name, "topic moved into the controller")
            }
            Err(error) => return Err(error.into()),
        }
    }
    let migrated = config.data_dir.join("topics.meta.migrated");
    std::fs::rename(&path, &migrated).map_err(|source| MembershipError::Io { path, source })?;
    Ok(())
}

/// Creates `__consumer_offsets` if the image lacks it and enough brokers are live for its
/// replication factor (`min(offsets_replication_factor, voters)`); returns whether it exists.
pub fn ensure_offsets_topic(controller: &ControllerHandle, config: &Config) -> bool {
    let image = controller.metadata();
    if image.topics.contains_key(CONSUMER_OFFSETS_TOPIC) {
        return true;
    }
    let voters = config.cluster.controller_voters.len().max(1);
    let factor = usize::from(config.cluster.offsets_replication_factor)
        .min(voters)
        .max(1);
    let live = image.brokers.values().filter(|b| !b.fenced).count();
    if live < factor {
        return false;
    }
    let topic =
        crate::group::offsets_topic_config(config.offsets_partitions, config.offsets_segment_bytes);
    let created = controller.propose(Command::CreateTopic {
        name: CONSUMER_OFFSETS_TOPIC.to_owned(),
        partitions: topic.partitions,
        replication_factor: factor as u16,
        min_insync: (factor as u16).min(2),
        config: config_strings(&topic),
    });
    match created {
        Ok(_) | Err(ControllerError::TopicExists { .. }) => true,
        Err(error) => {
            tracing::debug!(%error, "creating __consumer_offsets failed; retrying");
            false
        }
    }
}

/// The heartbeat thread: heartbeats every quarter of the session, re-registers when the
/// controller lost the registration, creates `__consumer_offsets` when it can. Stops (and is
/// joined) with the node.
pub struct Membership {
    stop: Arc<AtomicBool>,
    /// Set by the thread as it ends (after its last heartbeat call returned).
    stopped: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long a controlled shutdown waits for the heartbeat thread's call in progress: a
/// heartbeat to a reachable leader takes milliseconds; past this the fencing goes ahead (a
/// late heartbeat is then ignored by the controller, see `Liveness`).
const HANDOVER_HEARTBEAT_STOP: Duration = Duration::from_secs(2);
/// How long a controlled shutdown waits for the new leaders to be in the metadata: a proposal
/// and its application take milliseconds with a quorum; without one, the broker stops anyway.
const HANDOVER_LEADERS_MOVED: Duration = Duration::from_secs(5);

/// Moves this broker's leaderships to other in-sync replicas before it stops (Kafka's
/// controlled shutdown), so a clean stop costs clients a redirect, not a session timeout:
/// stop heartbeating, ask the controller to fence this broker (which re-elects the leaders of
/// its partitions from their ISR in the same log entry), wait until the metadata shows it
/// leads no replicated partition. Every wait is bounded; a broker without a quorum stops
/// anyway and is fenced after its session.
pub struct Handover {
    controller: Arc<ControllerHandle>,
    broker: BrokerId,
    stop: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    /// Set by the first run: a second shutdown request does not fence again.
    started: AtomicBool,
}

impl Handover {
    /// Runs the handover once (blocking; call it from a thread outside any async runtime);
    /// later calls return at once.
    pub fn run_once(&self) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.store(true, Ordering::Release);
        let until = Instant::now() + HANDOVER_HEARTBEAT_STOP;
        while !self.stopped.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(error) = self
            .controller
            .propose(Command::FenceBroker { id: self.broker })
        {
            tracing::warn!(%error, "controlled shutdown: fencing this broker failed; stopping anyway");
            return;
        }
        let leads_replicated = |image: &controller::MetadataImage| {
            image.topics.values().any(|topic| {
                topic.partitions.iter().any(|partition| {
                    partition.leader == Some(self.broker) && partition.replicas.len() > 1
                })
            })
        };
        // Polled: this runs once, at shutdown, for a few milliseconds.
        let until = Instant::now() + HANDOVER_LEADERS_MOVED;
        while leads_replicated(&self.controller.metadata()) {
            if Instant::now() >= until {
                tracing::warn!(
                    broker = self.broker.0,
                    "controlled shutdown: leaderships not moved in time; stopping anyway"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(
            broker = self.broker.0,
            "controlled shutdown: leaderships moved"
        );
    }
}

impl Membership {
    /// Starts the thread.
    pub fn start(
        controller: Arc<ControllerHandle>,
        config: Arc<Config>,
        endpoints: Vec<String>,
        incarnation: u64,
        session: Arc<crate::session::SessionWatch>,
    ) -> std::io::Result<Membership> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let stopped = Arc::new(AtomicBool::new(false));
        let ended = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-membership".into())
            .spawn(move || {
                let period = config.cluster.broker_session_timeout / 4;
                let id = BrokerId(config.broker_id);
                let mut offsets_ready = false;
                while !stopping.load(Ordering::Acquire) {
                    match controller.broker_heartbeat(id, incarnation) {
                        Ok(()) => session.heartbeat_succeeded(),
                        Err(ControllerError::UnknownBroker { .. }) => {
                            let registered = controller.propose(Command::RegisterBroker {
                                id,
                                endpoints: endpoints.clone(),
                                rack: config.cluster.rack.clone(),
                                incarnation,
                            });
                            if registered.is_ok() {
                                session.heartbeat_succeeded();
                            }
                        }
                        Err(error) => tracing::debug!(%error, "heartbeat failed"),
                    }
                    if !offsets_ready {
                        offsets_ready = ensure_offsets_topic(&controller, &config);
                    }
                    let until = Instant::now() + period;
                    while Instant::now() < until && !stopping.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(20).min(period));
                    }
                }
                ended.store(true, Ordering::Release);
            })?;
        Ok(Membership {
            stop,
            stopped,
            thread: Some(thread),
        })
    }

    /// The controlled-shutdown step for this broker (see [`Handover`]).
    pub fn handover(&self, controller: Arc<ControllerHandle>, broker: u32) -> Handover {
        Handover {
            controller,
            broker: BrokerId(broker),
            stop: self.stop.clone(),
            stopped: self.stopped.clone(),
            started: AtomicBool::new(false),
        }
    }

    /// Stops heartbeating (the controller fences this broker after the session) and joins.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop();
    }
}
