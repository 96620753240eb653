//! A node: the top of the broker's layers. [`Node::start`] locks the data directory, binds the
//! listeners, starts one glommio executor per shard (pinned to a core), waits until every shard
//! has opened its partitions and services, then starts listening and hands every shard the
//! endpoint list; it returns a [`NodeHandle`] once the node serves. [`NodeHandle::shutdown`]
//! has every shard stop accepting, drain and close its logs; [`NodeHandle::wait`] joins them.
//!
//! Process safety: the data directory belongs to one process (an exclusive `flock` on
//! `<data-dir>/.lock`, which holds the owner's pid), and so does every listen address: each is
//! bound once, here, without SO_REUSEPORT, and accepted on by one plain thread that hands the
//! connections to the shards ([`crate::net::listener`]: no io_uring operation ever holds a
//! listening socket, so a killed broker's listeners close with its process). A bind that finds
//! its address in use is retried until [`Config::bind_retry`] is over (a process that just died
//! may still be closing). `listen()` is called only once every shard is ready, so the first
//! client that connects is served.
//!
//! With [`Config::metrics_listen`] the node also serves its metrics and health endpoint
//! ([`crate::metrics`]) from a thread of its own: bound before the shards start (so `/ready`
//! says 503 until the node serves, and 503 again once a shutdown begins), stopped after the
//! shards have stopped.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use wire::protocol::{ShardEndpoint, CONSUMER_OFFSETS_TOPIC};

use crate::config::Config;
use crate::membership;
use crate::metrics::server::MetricsServer;
use crate::metrics::Readiness;
use crate::net::limits::{NetStats, ShardNet};
use crate::net::listener::{Acceptors, Target};
use crate::services::{ServiceBus, ShardServices};
use crate::shard::bus::{Bus, Inbox};
use crate::shard::Shard;
use crate::topics::RegistryError;

/// Longest wait for requests in flight at shutdown before the logs are closed anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections the kernel queues per listener before a shard accepts them: 1024 covers a burst
/// of every client of a bench run reconnecting at once, at ~1 KiB of kernel memory each.
const LISTEN_BACKLOG: i32 = 1024;
/// Pause between two bind attempts while an address is still held (by a process that just
/// died): short next to the default 5 s deadline, long enough not to spin.
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(20);
/// Name of the lock file in the data directory.
const LOCK_FILE: &str = ".lock";

/// Why a node could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory cannot be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data directory {} is in use by pid {pid}", path.display())]
    DataDirInUse {
        /// The directory.
        path: PathBuf,
        /// The holder's pid, as written in its lock file (0 if unreadable).
        pid: u32,
    },
    /// Another process holds a listen address.
    #[error("address in use: {addr} (another broker listens there)")]
    AddressInUse {
        /// The address.
        addr: SocketAddr,
    },
    /// A listener could not be set up.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        source: std::io::Error,
    },
    /// The storage engine failed (direct I/O check, opening a log).
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The topic registry cannot be read or written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A shard's services (producer ids, committed offsets) cannot open.
    #[error(transparent)]
    Services(#[from] crate::services::ServicesError),
    /// A shard's executor could not be started.
    #[error("starting shard {shard}: {message}")]
    Spawn {
        /// The shard.
        shard: usize,
        /// glommio's reason.
        message: String,
    },
    /// The node could not join its cluster (controller, registration).
    #[error(transparent)]
    Membership(#[from] membership::MembershipError),
    /// A shard failed.
    #[error("shard {shard}: {source}")]
    Shard {
        /// The shard.
        shard: usize,
        /// Its error.
        source: Box<NodeError>,
    },
    /// A shard stopped (or its thread died) without saying why.
    #[error("shard {shard} stopped unexpectedly{detail}")]
    ShardStopped {
        /// The shard.
        shard: usize,
        /// What is known (a panic message), with a leading ": ".
        detail: String,
    },
}

/// Entry point of the library: starts nodes.
pub struct Node;

impl Node {
    /// Starts a node and returns once it serves: every shard has opened its partitions and
    /// services, and the listeners accept.
    pub fn start(config: Config) -> Result<NodeHandle, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let lock = DataDirLock::acquire(&config.data_dir)?;
        storage::check_direct_io(&config.data_dir)?;
        let mut config = config;
        tracing::info!(?config, "starting");
        let deadline = Instant::now() + config.bind_retry;
        let main_socket = bind(config.listen, deadline)?;
        let main_addr = local_addr(&main_socket, config.listen)?;
        let mut shard_sockets = Vec::with_capacity(config.shards);
        for shard in 0..config.shards {
            let port = if config.shard_port_base == 0 {
                0
            } else {
                config.shard_port_base.saturating_add(shard as u16)
            };
            let addr = SocketAddr::new(config.listen.ip(), port);
            shard_sockets.push(bind(addr, deadline)?);
        }
        let shard_addrs = shard_sockets
            .iter()
            .map(|socket| local_addr(socket, config.listen))
            .collect::<Result<Vec<_>, _>>()?;
        let registration = membership::registration_endpoints(&config, main_addr, &shard_addrs);
        let controller = Arc::new(membership::start_controller(&config)?);
        let incarnation = membership::next_incarnation(&config.data_dir)?;
        membership::register(&controller, &config, &registration, incarnation)?;
        membership::migrate_registry(&controller, &config)?;
        if !config.cluster.is_multi_node()
            && !membership::ensure_offsets_topic(&controller, &config)
        {
            return Err(NodeError::Membership(
                membership::MembershipError::NoQuorum {
                    broker: config.broker_id,
                    timeout_s: 0,
                },
            ));
        }
        let image = controller.metadata();
        if let Some(offsets) = image.topics.get(CONSUMER_OFFSETS_TOPIC) {
            config.offsets_partitions = offsets.partitions.len() as u32;
        }
        tracing::info!(
            broker = config.broker_id,
            incarnation,
            topics = image.topics.len(),
            "registered with the controller"
        );
        let config = Arc::new(config);
        // Registered just now: the session is fresh.
        let session = Arc::new(crate::session::SessionWatch::new(
            config.cluster.broker_session_timeout,
        ));
        // Heartbeats start now: opening many partitions may take longer than a session.
        let membership = membership::Membership::start(
            controller.clone(),
            config.clone(),
            registration,
            incarnation,
            session.clone(),
        )
        .map_err(|error| NodeError::Spawn {
            shard: 0,
            message: format!("membership thread: {error}"),
        })?;
        let (bus, inboxes) = Bus::new(config.shards, config.shard_inbox_bytes);
        let net_stats = Arc::new(NetStats::new(config.shards, config.max_connections));
        let readiness = Arc::new(Readiness::default());
        let metrics = match config.metrics_listen {
            Some(addr) => Some(
                MetricsServer::start(addr, bus.clone(), readiness.clone(), net_stats.clone())
                    .map_err(|source| NodeError::Bind { addr, source })?,
            ),
            None => None,
        };
        let mut node = NodeHandle {
            main_addr,
            net_stats: net_stats.clone(),
            endpoints: Arc::new(Vec::new()),
            bus: bus.clone(),
            readiness: readiness.clone(),
            acceptors: Acceptors::default(),
            executors: Vec::new(),
            metrics,
            controller: Some(controller.clone()),
            handover: config
                .cluster
                .is_multi_node()
                .then(|| Arc::new(membership.handover(controller.clone(), config.broker_id))),
            membership: Some(membership),
            _lock: lock,
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<usize, NodeError>>();
        let cpus = allowed_cpus();
        for (id, inbox) in inboxes.into_iter().enumerate() {
            let start = ShardStart {
                id,
                config: config.clone(),
                bus: bus.clone(),
                inbox,
                image: image.clone(),
                controller: controller.clone(),
                session: session.clone(),
                net_stats: net_stats.clone(),
            };
            let ready = ready_tx.clone();
            let mut builder = LocalExecutorBuilder::new(Placement::Fixed(cpus[id % cpus.len()]))
                .name(&format!("sluice-shard-{id}"));
            if !config.spin_before_park.is_zero() {
                builder = builder.spin_before_park(config.spin_before_park);
            }
            let spawned = builder.spawn(move || async move {
                match open_shard(start).await {
                    Ok(opened) => {
                        if ready.send(Ok(id)).is_err() {
                            return Ok(());
                        }
                        drop(ready);
                        serve_shard(opened).await
                    }
                    Err(error) => {
                        // Reported through the start-up channel; the node stops.
                        let _ = ready.send(Err(NodeError::Shard {
                            shard: id,
                            source: Box::new(error),
                        }));
                        Ok(())
                    }
                }
            });
            match spawned {
                Ok(executor) => node.executors.push(executor),
                Err(error) => {
                    return Err(node.abort(NodeError::Spawn {
                        shard: id,
                        message: error.to_string(),
                    }))
                }
            }
        }
        drop(ready_tx);
        for _ in 0..config.shards {
            match ready_rx.recv() {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(node.abort(error)),
                Err(_) => {
                    return Err(node.abort(NodeError::ShardStopped {
                        shard: 0,
                        detail: String::from(": during start-up"),
                    }))
                }
            }
        }
        // Every shard is ready: from here on a client that connects is served.
        listen(&main_socket, main_addr)?;
        let mut endpoints = Vec::with_capacity(config.shards);
        for (shard, socket) in shard_sockets.iter().enumerate() {
            let addr = local_addr(socket, config.listen)?;
            listen(socket, addr)?;
            endpoints.push(ShardEndpoint {
                shard: shard as u16,
                host: config.advertised_host.clone(),
                port: config
                    .advertised_shard_port_base
                    .map_or(addr.port(), |base| base.saturating_add(shard as u16)),
            });
        }
        node.endpoints = Arc::new(endpoints);
        for shard in 0..config.shards {
            let endpoints = node.endpoints.clone();
            let main_port = main_addr.port();
            let sent = bus.run_on_blocking(shard, 0, move |services| async move {
                services.set_endpoints(main_port, endpoints);
            });
            if sent.is_err() {
                return Err(node.abort(NodeError::ShardStopped {
                    shard,
                    detail: String::from(": during start-up"),
                }));
            }
        }
        // Every shard knows the endpoints: hand connections to them from now on.
        let accepting = std::iter::once((
            main_socket,
            main_addr,
            Target::EveryShard,
            "main".to_string(),
        ))
        .chain(
            shard_sockets
                .into_iter()
                .enumerate()
                .map(|(shard, socket)| {
                    let addr = SocketAddr::new(main_addr.ip(), node.endpoints[shard].port);
                    (socket, addr, Target::Shard(shard), format!("shard-{shard}"))
                }),
        );
        for (socket, addr, target, name) in accepting {
            if let Err(source) =
                node.acceptors
                    .spawn(socket, addr, target, bus.clone(), net_stats.clone(), &name)
            {
                return Err(node.abort(NodeError::Bind { addr, source }));
            }
        }
        readiness.ready.store(true, Ordering::Release);
        tracing::info!(%main_addr, shards = config.shards, "ready");
        Ok(node)
    }
}

/// Defaults live here, at the top of the layers, because they come from every layer below
/// (the network bounds, the shard inbox, the storage budgets).
impl Config {
    /// A configuration with the defaults of `sluice serve` (see its `--help`) for `shards`
    /// shards on `data_dir`, listening on a free loopback port: for embedders and tests, which
    /// change what they need with struct update syntax (`Config { x, ..Config::new(..) }`).
    pub fn new(data_dir: PathBuf, shards: usize) -> Config {
        Config {
            data_dir,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            shards,
            shard_port_base: 0,
            advertised_shard_port_base: None,
            advertised_host: "127.0.0.1".into(),
            broker_id: 0,
            max_frame_bytes: 64 << 20,
            idle_timeout: Duration::from_secs(600),
            max_connections: crate::net::limits::MAX_CONNECTIONS_DEFAULT,
            max_request_bytes_in_flight: crate::net::limits::MAX_REQUEST_BYTES_IN_FLIGHT_DEFAULT,
            receive_buffer_budget_bytes: crate::net::limits::RECEIVE_BUFFER_BUDGET_BYTES_DEFAULT,
            request_budget_bytes: crate::net::limits::REQUEST_BUDGET_BYTES_DEFAULT,
            request_timeout: Duration::from_millis(crate::net::limits::REQUEST_TIMEOUT_MS_DEFAULT),
            spin_before_park: Duration::from_micros(
                crate::net::limits::SPIN_BEFORE_PARK_US_DEFAULT,
            ),
            retention_check: Duration::from_secs(300),
            offsets_partitions: 8,
            offsets_segment_bytes: 16 << 20,
            offsets_snapshot_records: 20_000,
            group_limits: crate::config::GroupLimits {
                min_session_timeout: Duration::from_millis(500),
                max_session_timeout: Duration::from_secs(1800),
                initial_rebalance_delay: Duration::from_millis(300),
                max_members: 1000,
            },
            shard_inbox_bytes: crate::shard::bus::SHARD_INBOX_BYTES_DEFAULT,
            bind_retry: Duration::from_secs(5),
            topic_defaults: crate::config::TopicDefaults {
                partitions: 1,
                retention_ms: 14 * 24 * 3600 * 1000,
                durability: wire::Durability::interval(wire::Durability::INTERVAL_MS_DEFAULT),
                segment_bytes: 1 << 30,
                max_batch_bytes: 8 << 20,
            },
            tail_cache_bytes_per_core: crate::config::TAIL_CACHE_BYTES_PER_CORE_DEFAULT,
            storage_faults: None,
            metrics_listen: None,
            cluster: crate::config::ClusterSettings::single_node(),
        }
    }
}

/// A running node.
pub struct NodeHandle {
    main_addr: SocketAddr,
    net_stats: Arc<NetStats>,
    endpoints: Arc<Vec<ShardEndpoint>>,
    bus: ServiceBus,
    readiness: Arc<Readiness>,
    acceptors: Acceptors,
    executors: Vec<ExecutorJoinHandle<Result<(), NodeError>>>,
    /// The metrics endpoint, stopped once the shards have.
    metrics: Option<MetricsServer>,
    /// The node's controller voter, stopped once the shards have.
    controller: Option<Arc<controller::ControllerHandle>>,
    /// The heartbeat thread, stopped once the shards have.
    membership: Option<membership::Membership>,
    /// A broker of a multi-node cluster hands its leaderships over before it stops.
    handover: Option<Arc<membership::Handover>>,
    _lock: DataDirLock,
}

/// Begins a node's graceful stop from anywhere (a signal-handling thread); cheap to clone.
#[derive(Clone)]
pub struct ShutdownTrigger {
    bus: ServiceBus,
    readiness: Arc<Readiness>,
    acceptors: Acceptors,
    handover: Option<Arc<membership::Handover>>,
}

impl ShutdownTrigger {
    /// Marks the node not ready (`/ready` says 503); in a multi-node cluster, moves this
    /// broker's leaderships to other replicas ([`membership::Handover`], bounded waits) while
    /// still serving, so clients are redirected rather than left to time out; then stops
    /// accepting connections and has every shard drain and close its logs. Idempotent.
    pub fn shutdown(&self) {
        self.readiness.ready.store(false, Ordering::Release);
        if let Some(handover) = &self.handover {
            handover.run_once();
        }
        self.acceptors.stop();
        for shard in 0..self.bus.shards() {
            let _ =
                self.bus.run_on_blocking(
                    shard,
                    0,
                    |services| async move { services.begin_shutdown() },
                );
        }
    }
}

impl NodeHandle {
    /// The main listener's address (the port chosen, when the configuration said 0).
    pub fn main_addr(&self) -> SocketAddr {
        self.main_addr
    }

    /// Counters of the network path (connections open and refused, receive-buffer and
    /// request bytes in use), readable from any thread.
    pub fn net_stats(&self) -> Arc<NetStats> {
        self.net_stats.clone()
    }

    /// Every shard's advertised endpoint.
    pub fn endpoints(&self) -> &[ShardEndpoint] {
        &self.endpoints
    }

    /// The metrics endpoint's address (the port chosen, when the configuration said 0), if
    /// [`Config::metrics_listen`] asked for one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::addr)
    }

    /// Begins a graceful stop (see [`ShutdownTrigger::shutdown`]); [`NodeHandle::wait`] then
    /// returns once every shard is done.
    pub fn shutdown(&self) {
        self.trigger().shutdown();
    }

    /// A handle that can begin the stop from another thread while this one waits.
    pub fn trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            bus: self.bus.clone(),
            readiness: self.readiness.clone(),
            acceptors: self.acceptors.clone(),
            handover: self.handover.clone(),
        }
    }

    /// Waits until every shard has stopped; the first shard error, if any.
    pub fn wait(mut self) -> Result<(), NodeError> {
        let result = join(std::mem::take(&mut self.executors));
        self.stop_cluster_threads();
        // The endpoint outlives the shards: a scrape during the drain is answered.
        drop(self.metrics.take());
        tracing::info!("stopped");
        result
    }

    /// Stops the shards started so far and returns `error` (a failed start).
    fn abort(mut self, error: NodeError) -> NodeError {
        // A node that failed to start has nothing to hand over.
        self.handover = None;
        self.shutdown();
        let _ = join(std::mem::take(&mut self.executors));
        self.stop_cluster_threads();
        error
    }

    /// Stops heartbeating, then the controller voter (once the shards, which hold it, are
    /// gone).
    fn stop_cluster_threads(&mut self) {
        if let Some(mut membership) = self.membership.take() {
            membership.stop();
        }
        if let Some(controller) = self.controller.take() {
            match Arc::try_unwrap(controller) {
                Ok(controller) => {
                    if let Err(error) = controller.shutdown() {
                        tracing::warn!(%error, "controller shutdown");
                    }
                }
                Err(_) => tracing::warn!("controller still in use at shutdown"),
            }
        }
    }
}

fn join(executors: Vec<ExecutorJoinHandle<Result<(), NodeError>>>) -> Result<(), NodeError> {
    let mut first_error = None;
    for (shard, executor) in executors.into_iter().enumerate() {
        let result = match executor.join() {
            Ok(result) => result.map_err(|error| NodeError::Shard {
                shard,
                source: Box::new(error),
            }),
            Err(error) => Err(NodeError::ShardStopped {
                shard,
                detail: format!(": {error:?}"),
            }),
        };
        if let Err(error) = result {
            tracing::error!(%error, "shard failed");
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The CPUs this process may run on (its affinity mask, as `taskset` sets it), in order:
/// shard i is pinned to the i-th (modulo their count), so brokers started under different
/// masks share no core.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain data for which all-zero is a valid (empty) set;
    // `sched_getaffinity` writes at most `size_of::<cpu_set_t>()` bytes into it, and
    // `CPU_ISSET` only reads it with an index below `CPU_SETSIZE`. Tested by
    // `allowed_cpus_follow_the_affinity_mask`.
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            Vec::new()
        } else {
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect()
        }
    };
    if cpus.is_empty() {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..count).collect()
    } else {
        cpus
    }
}

/// What a shard's executor starts with.
struct ShardStart {
    id: usize,
    config: Arc<Config>,
    bus: ServiceBus,
    inbox: Inbox<ShardServices>,
    /// The cluster metadata at start.
    image: Arc<controller::MetadataImage>,
    /// The node's controller.
    controller: Arc<controller::ControllerHandle>,
    /// This broker's view of its controller session.
    session: Arc<crate::session::SessionWatch>,
    /// The node's network counters.
    net_stats: Arc<NetStats>,
}

/// A shard with its partitions and services open and its pump running.
struct OpenedShard {
    services: std::rc::Rc<ShardServices>,
    /// The message pump, stopped once the shard has drained (see [`serve_shard`]).
    pump: glommio::Task<()>,
}

/// Opens one shard: its partitions, its services, its pump. Connections come later, handed
/// over by the node's acceptor threads once every shard is open.
async fn open_shard(start: ShardStart) -> Result<OpenedShard, NodeError> {
    let ShardStart {
        id,
        config,
        bus,
        inbox,
        image,
        controller,
        session,
        net_stats,
    } = start;
    crate::net::limits::install(ShardNet::new(&config, net_stats, id));
    let shards = bus.shards();
    let (shard, applied) = Shard::open(id, shards, config, image, session).await?;
    let services = ShardServices::open(shard, applied, bus, controller).await?;
    let pump = glommio::spawn_local(crate::shard::pump(services.clone(), inbox));
    Ok(OpenedShard { services, pump })
}

/// The life of one open shard: background loops once the node serves, until shutdown; then
/// drain.
async fn serve_shard(opened: OpenedShard) -> Result<(), NodeError> {
    let OpenedShard { services, pump } = opened;
    let waiting = services.clone();
    services
        .changed
        .wait_until(|| waiting.main_port.get() != 0 || waiting.shutting_down.get())
        .await;
    if !services.shutting_down.get() {
        glommio::spawn_local(services.shard.clone().retention_loop()).detach();
        glommio::spawn_local(services.clone().metadata_loop()).detach();
        glommio::spawn_local(services.clone().replication_tick_loop()).detach();
        glommio::spawn_local(
            services
                .coordinator
                .clone()
                .reap_loop(services.shard.clone()),
        )
        .detach();
        let waiting = services.clone();
        services
            .changed
            .wait_until(|| waiting.shutting_down.get())
            .await;
    }
    services.drain_and_close(DRAIN_TIMEOUT).await;
    // Drops the inbox: from here on, work sent to this shard fails at once (`BusClosed`, or a
    // dropped reply) instead of waiting in an inbox nobody reads (a scrape during the rest of
    // the node's shutdown, another shard still draining).
    pump.cancel().await;
    tracing::debug!(shard = services.id, "shard stopped");
    Ok(())
}

/// Binds `addr` without SO_REUSEPORT (the address belongs to this process alone), retrying
/// while it is in use until `deadline`; does not listen yet.
fn bind(addr: SocketAddr, deadline: Instant) -> Result<Socket, NodeError> {
    let bind_error = |source| NodeError::Bind { addr, source };
    loop {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(bind_error)?;
        // SO_REUSEADDR only lets us bind over connections in TIME_WAIT, never over a listener.
        socket.set_reuse_address(true).map_err(bind_error)?;
        match socket.bind(&SockAddr::from(addr)) {
            Ok(()) => return Ok(socket),
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                if Instant::now() >= deadline {
                    return Err(NodeError::AddressInUse { addr });
                }
                tracing::debug!(%addr, "address in use; retrying");
                std::thread::sleep(BIND_RETRY_PAUSE);
            }
            Err(error) => return Err(bind_error(error)),
        }
    }
}

fn listen(socket: &Socket, addr: SocketAddr) -> Result<(), NodeError> {
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|source| NodeError::Bind { addr, source })
}

fn local_addr(socket: &Socket, configured: SocketAddr) -> Result<SocketAddr, NodeError> {
    socket
        .local_addr()
        .and_then(|addr| {
            addr.as_socket()
                .ok_or_else(|| std::io::Error::other("not an IP socket"))
        })
        .map_err(|source| NodeError::Bind {
            addr: configured,
            source,
        })
}

/// The exclusive lock on a data directory, held for the node's life (the kernel releases it
/// when the process dies, however it dies).
struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    fn acquire(dir: &Path) -> Result<DataDirLock, NodeError> {
        let path = dir.join(LOCK_FILE);
        let io_error = |source| NodeError::DataDir {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        // SAFETY: `file` is an open descriptor for the whole call; flock has no memory effects.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io_error(error));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(NodeError::DataDirInUse {
                path: dir.to_path_buf(),
                pid: text.trim().parse().unwrap_or(0),
            });
        }
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The CPUs read from the affinity mask are the ones `taskset`-style masks allow: the
    /// whole machine here, then exactly one CPU once this thread's mask is narrowed to it.
    #[test]
    fn allowed_cpus_follow_the_affinity_mask() {
        let all = allowed_cpus();
        assert_eq!(
            all.len(),
            std::thread::available_parallelism().unwrap().get()
        );
        let last = *all.last().unwrap();
        std::thread::spawn(move || {
            // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes one bit below
            // CPU_SETSIZE; sched_setaffinity(0) narrows only this (test) thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(last, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                    0
                );
            }
            assert_eq!(allowed_cpus(), vec![last]);
        })
        .join()
        .unwrap();
    }

    /// A second lock on the same directory fails and names the holder's pid; dropping the
    /// first releases it.
    #[test]
    fn data_dir_lock_is_exclusive() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(&base).unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(NodeError::DataDirInUse { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected DataDirInUse, got {:?}", other.err()),
        }
        drop(held);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    /// An address bound by one socket (without SO_REUSEPORT) cannot be bound again: the
    /// second bind gives up at its deadline with AddressInUse.
    #[test]
    fn address_belongs_to_one_socket() {
        let first = bind("127.0.0.1:0".parse().unwrap(), Instant::now()).unwrap();
        let addr = local_addr(&first, "127.0.0.1:0".parse().unwrap()).unwrap();
        listen(&first, addr).unwrap();
        let started = Instant::now();
        match bind(addr, Instant::now() + Duration::from_millis(100)) {
            Err(NodeError::AddressInUse { addr: refused }) => assert_eq!(refused, addr),
            other => panic!("expected AddressInUse, got {:?}", other.err()),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "it retried until the deadline"
        );
    }
}
