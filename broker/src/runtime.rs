//! Starts a node: one glommio executor per shard, pinned to a core; binds the listeners; hands
//! every shard the endpoint list; waits for SIGINT/SIGTERM, then has every shard stop accepting,
//! drain and close its logs.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use wire::protocol::{ShardEndpoint, CONSUMER_OFFSETS_TOPIC};

use crate::bus::{Bus, ShardMessage};
use crate::config::Config;
use crate::shard::Shard;
use crate::topics::TopicRegistry;

/// Longest wait for requests in flight at shutdown before the logs are closed anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a shard reports once its listeners are bound.
struct Bound {
    shard: usize,
    main_port: u16,
    shard_port: u16,
}

/// Runs the node until a signal stops it.
pub fn run(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    storage::check_direct_io(&config.data_dir)?;
    // Before anything can report readiness: a SIGTERM right after the readiness line must find
    // the handler installed, not the default action.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    let signal_handle = signals.handle();
    let mut config = config;
    let mut registry = TopicRegistry::load(&config.data_dir)?;
    match registry.topics.get(CONSUMER_OFFSETS_TOPIC) {
        Some(existing) => config.offsets_partitions = existing.partitions,
        None => {
            registry.topics.insert(
                CONSUMER_OFFSETS_TOPIC.to_owned(),
                crate::group::offsets_topic_config(
                    config.offsets_partitions,
                    config.offsets_segment_bytes,
                ),
            );
            registry.save(&config.data_dir)?;
        }
    }
    tracing::info!(?config, topics = registry.topics.len(), "starting");
    let config = Arc::new(config);
    let shards = config.shards;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (bus, inboxes) = Bus::new(shards);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Bound, String>>();
    let mut main_addr = config.listen;
    let mut handles = Vec::new();
    let mut bound = Vec::new();
    for (id, inbox) in inboxes.into_iter().enumerate() {
        let (shard_config, shard_bus, registry, ready) = (
            config.clone(),
            bus.clone(),
            registry.clone(),
            ready_tx.clone(),
        );
        let handle = LocalExecutorBuilder::new(Placement::Fixed(id % cpus))
            .name(&format!("sluice-shard-{id}"))
            .spawn(move || async move {
                let result = run_shard(
                    id,
                    shard_config,
                    shard_bus,
                    registry,
                    inbox,
                    main_addr,
                    &ready,
                )
                .await;
                if let Err(error) = &result {
                    let _ = ready.send(Err(format!("shard {id}: {error:#}")));
                }
                result
            })
            .map_err(|e| anyhow!("starting shard {id}: {e}"))?;
        handles.push(handle);
        // Shard 0 resolves a port 0 first; the others then share that port (SO_REUSEPORT).
        if id == 0 {
            match ready_rx.recv() {
                Ok(Ok(first)) => {
                    main_addr.set_port(first.main_port);
                    bound.push(first);
                }
                Ok(Err(error)) => return stop(&bus, handles, anyhow!(error)),
                Err(_) => return stop(&bus, handles, anyhow!("shard 0 stopped during start-up")),
            }
        }
    }
    while bound.len() < shards {
        match ready_rx.recv() {
            Ok(Ok(next)) => bound.push(next),
            Ok(Err(error)) => return stop(&bus, handles, anyhow!(error)),
            Err(_) => return stop(&bus, handles, anyhow!("a shard stopped during start-up")),
        }
    }
    bound.sort_by_key(|b| b.shard);
    let endpoints: Arc<Vec<ShardEndpoint>> = Arc::new(
        bound
            .iter()
            .map(|b| ShardEndpoint {
                shard: b.shard as u16,
                host: config.advertised_host.clone(),
                port: config
                    .advertised_shard_port_base
                    .map_or(b.shard_port, |base| base.saturating_add(b.shard as u16)),
            })
            .collect(),
    );
    for shard in 0..shards {
        bus.send_blocking(
            shard,
            ShardMessage::Endpoints {
                main_port: main_addr.port(),
                endpoints: endpoints.clone(),
            },
        )
        .map_err(|_| anyhow!("shard {shard} stopped during start-up"))?;
    }
    println!("sluice listening on {main_addr} ({shards} shards)");
    tracing::info!(%main_addr, shards, "ready");

    let signal_bus = bus.clone();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "stopping");
            for shard in 0..signal_bus.shards() {
                let _ = signal_bus.send_blocking(shard, ShardMessage::Shutdown);
            }
        }
    });
    let result = join(handles);
    signal_handle.close();
    result?;
    tracing::info!("stopped");
    Ok(())
}

fn stop(
    bus: &Bus,
    handles: Vec<glommio::ExecutorJoinHandle<anyhow::Result<()>>>,
    error: anyhow::Error,
) -> anyhow::Result<()> {
    for shard in 0..bus.shards() {
        let _ = bus.send_blocking(shard, ShardMessage::Shutdown);
    }
    let _ = join(handles);
    Err(error)
}

fn join(handles: Vec<glommio::ExecutorJoinHandle<anyhow::Result<()>>>) -> anyhow::Result<()> {
    let mut first_error = None;
    for handle in handles {
        let result = match handle.join() {
            Ok(result) => result,
            Err(error) => Err(anyhow!("a shard thread failed: {error:?}")),
        };
        if let Err(error) = result {
            tracing::error!(error = %format!("{error:#}"), "shard failed");
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// The life of one shard.
async fn run_shard(
    id: usize,
    config: Arc<Config>,
    bus: Bus,
    registry: TopicRegistry,
    inbox: flume::Receiver<ShardMessage>,
    main_addr: SocketAddr,
    ready: &mpsc::Sender<Result<Bound, String>>,
) -> anyhow::Result<()> {
    let shard = Shard::open(id, config.clone(), bus, registry).await?;
    let main_listener =
        TcpListener::bind(main_addr).map_err(|e| anyhow!("binding {main_addr}: {e}"))?;
    let shard_port = if config.shard_port_base == 0 {
        0
    } else {
        config
            .shard_port_base
            .checked_add(id as u16)
            .ok_or_else(|| anyhow!("shard port overflows"))?
    };
    let shard_addr = SocketAddr::new(config.listen.ip(), shard_port);
    let shard_listener =
        TcpListener::bind(shard_addr).map_err(|e| anyhow!("binding {shard_addr}: {e}"))?;
    let main_port = main_listener
        .local_addr()
        .map_err(|e| anyhow!("{e}"))?
        .port();
    let shard_port = shard_listener
        .local_addr()
        .map_err(|e| anyhow!("{e}"))?
        .port();
    if ready
        .send(Ok(Bound {
            shard: id,
            main_port,
            shard_port,
        }))
        .is_err()
    {
        bail!("start-up was abandoned");
    }
    glommio::spawn_local(shard.clone().pump(inbox)).detach();
    let waiting = shard.clone();
    shard
        .changed
        .wait_until(|| waiting.main_port.get() != 0 || waiting.shutting_down.get())
        .await;
    let main_accept = glommio::spawn_local(crate::net::listener::accept_loop(
        shard.clone(),
        main_listener,
        "main",
    ));
    let shard_accept = glommio::spawn_local(crate::net::listener::accept_loop(
        shard.clone(),
        shard_listener,
        "shard",
    ));
    glommio::spawn_local(shard.clone().retention_loop()).detach();
    glommio::spawn_local(shard.coordinator.clone().reap_loop(shard.clone())).detach();
    let waiting = shard.clone();
    shard
        .changed
        .wait_until(|| waiting.shutting_down.get())
        .await;
    main_accept.await;
    shard_accept.await;
    shard.drain_and_close(DRAIN_TIMEOUT).await;
    tracing::debug!(shard = id, "shard stopped");
    Ok(())
}
