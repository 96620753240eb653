//! A shard: one glommio executor pinned to one core, owning a set of partitions. Everything
//! about a partition (its log, its waiters) lives on its owner shard, so the data path takes no
//! lock; other shards reach it only through the [`Bus`]. The shard's message pump
//! ([`Shard::pump`]) is the single place where bus messages are handled.

pub mod admin;
pub mod producer_ids;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use wire::protocol::{ShardEndpoint, TopicConfig, WireError};

use crate::bus::{Bus, ShardMessage};
use crate::config::Config;
use crate::error_code;
use crate::partition::Partition;
use crate::router::shard_for;
use crate::topics::TopicRegistry;

/// The partitions a shard owns, by topic then number: looked up with a borrowed topic name,
/// so routing a request allocates nothing.
#[derive(Default)]
pub struct OwnedPartitions {
    by_topic: HashMap<String, HashMap<u32, Rc<Partition>>>,
}

impl OwnedPartitions {
    /// The partition, if owned here.
    pub fn get(&self, topic: &str, partition: u32) -> Option<Rc<Partition>> {
        self.by_topic.get(topic)?.get(&partition).cloned()
    }

    /// Adds a partition.
    pub fn insert(&mut self, topic: &str, partition: u32, owned: Rc<Partition>) {
        self.by_topic
            .entry(topic.to_string())
            .or_default()
            .insert(partition, owned);
    }

    /// Removes a partition.
    pub fn remove(&mut self, topic: &str, partition: u32) -> Option<Rc<Partition>> {
        let partitions = self.by_topic.get_mut(topic)?;
        let removed = partitions.remove(&partition);
        if partitions.is_empty() {
            self.by_topic.remove(topic);
        }
        removed
    }

    /// Every (topic, partition) owned.
    pub fn keys(&self) -> Vec<(String, u32)> {
        self.by_topic
            .iter()
            .flat_map(|(topic, partitions)| partitions.keys().map(move |p| (topic.clone(), *p)))
            .collect()
    }

    /// Every partition owned.
    pub fn values(&self) -> Vec<Rc<Partition>> {
        self.by_topic
            .values()
            .flat_map(|p| p.values().cloned())
            .collect()
    }

    /// Removes and returns every partition.
    pub fn drain(&mut self) -> Vec<Rc<Partition>> {
        std::mem::take(&mut self.by_topic)
            .into_values()
            .flat_map(|p| p.into_values())
            .collect()
    }
}

/// Where a partition's requests must go.
pub enum Route {
    /// Owned here.
    Local(Rc<Partition>),
    /// Owned by another shard.
    Remote(usize),
}

/// A shard's state. `!Send`: it never leaves its executor.
pub struct Shard {
    /// Shard number.
    pub id: usize,
    /// Node configuration.
    pub config: Arc<Config>,
    /// Inboxes of every shard.
    pub bus: Bus,
    /// The current topic registry snapshot.
    pub registry: RefCell<Arc<TopicRegistry>>,
    /// Partitions owned by this shard.
    pub partitions: RefCell<OwnedPartitions>,
    /// Every shard's endpoint, once all are bound.
    pub endpoints: RefCell<Arc<Vec<ShardEndpoint>>>,
    /// Port of the main listener.
    pub main_port: Cell<u16>,
    /// Set by Shutdown: stop accepting, drain.
    pub shutting_down: Cell<bool>,
    /// Requests being handled on this shard (drained before exit).
    pub requests_in_flight: Cell<usize>,
    /// Woken when the shard state changes (shutdown, endpoints, drain progress).
    pub changed: Rc<storage::Signal>,
    /// Serialises topic creation and deletion (shard 0 only).
    pub admin_lock: glommio::sync::Semaphore,
    /// Producer id allocator (shard 0 only).
    pub producer_ids: RefCell<Option<producer_ids::ProducerIds>>,
    /// Coordinator of the consumer groups whose offsets partitions this shard owns.
    pub coordinator: Rc<crate::group::Coordinator>,
}

impl Shard {
    /// Creates the shard and opens the logs of every partition it owns.
    pub async fn open(
        id: usize,
        config: Arc<Config>,
        bus: Bus,
        registry: TopicRegistry,
    ) -> anyhow::Result<Rc<Shard>> {
        let coordinator = Rc::new(crate::group::Coordinator::new(
            id,
            config.group_limits.clone(),
            config.offsets_partitions,
            config.offsets_snapshot_records,
        ));
        let shard = Rc::new(Shard {
            id,
            config,
            bus,
            registry: RefCell::new(Arc::new(TopicRegistry::default())),
            partitions: RefCell::new(OwnedPartitions::default()),
            endpoints: RefCell::new(Arc::new(Vec::new())),
            main_port: Cell::new(0),
            shutting_down: Cell::new(false),
            requests_in_flight: Cell::new(0),
            changed: Rc::new(storage::Signal::default()),
            admin_lock: glommio::sync::Semaphore::new(1),
            producer_ids: RefCell::new(None),
            coordinator,
        });
        if id == 0 {
            *shard.producer_ids.borrow_mut() =
                Some(producer_ids::ProducerIds::load(&shard.config.data_dir)?);
        }
        shard.apply_registry(Arc::new(registry)).await?;
        shard.coordinator.load(&shard).await?;
        Ok(shard)
    }

    /// Number of shards on this node.
    pub fn shards(&self) -> usize {
        self.bus.shards()
    }

    /// Settings of a topic, if it exists.
    pub fn topic(&self, topic: &str) -> Option<TopicConfig> {
        self.registry.borrow().topics.get(topic).cloned()
    }

    /// Where requests for `partition` of `topic` go; an error for an unknown one.
    pub fn route(&self, topic: &str, partition: u32) -> Result<Route, WireError> {
        let Some(config) = self.topic(topic) else {
            return Err(error_code::unknown_partition(topic, partition));
        };
        if partition >= config.partitions {
            return Err(error_code::unknown_partition(topic, partition));
        }
        let owner = shard_for(topic, partition, self.shards());
        if owner != self.id {
            return Ok(Route::Remote(owner));
        }
        match self.partitions.borrow().get(topic, partition) {
            Some(partition) => Ok(Route::Local(partition.clone())),
            None => Err(WireError::new(
                wire::protocol::ErrorCode::NotLeader,
                format!("partition {partition} of {topic:?} is still being opened; retry"),
            )),
        }
    }

    /// Makes the owned partitions match `registry`: opens new ones, closes and deletes the
    /// data of removed ones.
    pub async fn apply_registry(&self, registry: Arc<TopicRegistry>) -> anyhow::Result<()> {
        let previous = self.registry.replace(registry.clone());
        // Topics gone from the registry: their committed offsets go too, on whichever shard
        // coordinates the groups that committed them.
        let deleted_topics: std::collections::HashSet<String> = previous
            .topics
            .keys()
            .filter(|topic| !registry.topics.contains_key(*topic))
            .cloned()
            .collect();
        let data_dir = self.config.data_dir.clone();
        for (topic, config) in &registry.topics {
            for partition in 0..config.partitions {
                if shard_for(topic, partition, self.shards()) != self.id
                    || self.partitions.borrow().get(topic, partition).is_some()
                {
                    continue;
                }
                let dir = TopicRegistry::partition_dir(&data_dir, topic, partition);
                let opened = Partition::open(topic, partition, config, &dir)
                    .await
                    .map_err(|e| anyhow::anyhow!("opening {}: {e}", dir.display()))?;
                tracing::debug!(
                    shard = self.id,
                    topic,
                    partition,
                    producers = opened.producers.borrow().producer_count(),
                    "partition opened"
                );
                self.partitions
                    .borrow_mut()
                    .insert(topic, partition, Rc::new(opened));
            }
        }
        let removed: Vec<(String, u32)> = self
            .partitions
            .borrow()
            .keys()
            .into_iter()
            .filter(|(topic, partition)| {
                registry
                    .topics
                    .get(topic)
                    .is_none_or(|config| *partition >= config.partitions)
            })
            .collect();
        for key in removed {
            let Some(partition) = self.partitions.borrow_mut().remove(&key.0, key.1) else {
                continue;
            };
            let dir = TopicRegistry::partition_dir(&data_dir, &key.0, key.1);
            if let Ok(partition) = Rc::try_unwrap(partition) {
                let _ = partition.log.close().await;
            }
            if let Err(error) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), %error, "could not delete partition data");
            }
            tracing::info!(
                shard = self.id,
                topic = key.0,
                partition = key.1,
                "partition deleted"
            );
        }
        if !deleted_topics.is_empty() {
            self.coordinator.forget_topics(&deleted_topics).await;
        }
        Ok(())
    }

    /// A new producer id (shard 0 only).
    pub fn allocate_producer_id(&self) -> Result<i64, WireError> {
        let mut ids = self.producer_ids.borrow_mut();
        let Some(ids) = ids.as_mut() else {
            return Err(WireError::new(
                wire::protocol::ErrorCode::NotLeader,
                "producer ids are handed out by shard 0",
            ));
        };
        ids.allocate(&self.config.data_dir).map_err(|e| {
            WireError::new(
                wire::protocol::ErrorCode::StorageError,
                format!("reserving producer ids: {e:#}"),
            )
        })
    }

    /// The message pump: handles every bus message addressed to this shard, until Shutdown.
    pub async fn pump(self: Rc<Self>, inbox: flume::Receiver<ShardMessage>) {
        while let Ok(message) = inbox.recv_async().await {
            match message {
                ShardMessage::Shutdown => {
                    self.shutting_down.set(true);
                    self.changed.notify_all();
                    return;
                }
                ShardMessage::Endpoints {
                    main_port,
                    endpoints,
                } => {
                    self.main_port.set(main_port);
                    *self.endpoints.borrow_mut() = endpoints;
                    self.changed.notify_all();
                }
                ShardMessage::TopicsChanged { registry, reply } => {
                    if let Err(error) = self.apply_registry(registry).await {
                        tracing::error!(shard = self.id, %error, "applying topic changes failed");
                    }
                    let _ = reply.send(());
                }
                other => {
                    let shard = self.clone();
                    glommio::spawn_local(async move {
                        crate::handler::handle_forwarded(&shard, other).await
                    })
                    .detach();
                }
            }
        }
    }

    /// Runs retention on every owned partition every `retention_check`.
    pub async fn retention_loop(self: Rc<Self>) {
        loop {
            let period = self.config.retention_check;
            let shard = self.clone();
            let stop = self.changed.wait_until(move || shard.shutting_down.get());
            futures_lite::future::or(async { glommio::timer::sleep(period).await }, stop).await;
            if self.shutting_down.get() {
                return;
            }
            let partitions: Vec<Rc<Partition>> = self.partitions.borrow().values();
            for partition in partitions {
                match partition.log.enforce_retention(storage::now_ms()).await {
                    Ok(report) if report.segments_deleted > 0 => {
                        tracing::info!(
                            topic = partition.topic,
                            partition = partition.partition,
                            segments = report.segments_deleted,
                            log_start_offset = report.log_start_offset,
                            "retention"
                        )
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(topic = partition.topic, partition = partition.partition, %error, "retention failed")
                    }
                }
            }
        }
    }

    /// Waits until requests in flight drain (bounded by `limit`), then closes every log.
    pub async fn drain_and_close(&self, limit: Duration) {
        self.coordinator.release_waiters();
        let deadline = std::time::Instant::now() + limit;
        while self.requests_in_flight.get() > 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        self.coordinator.snapshot_all().await;
        let partitions = self.partitions.borrow_mut().drain();
        for partition in partitions {
            match Rc::try_unwrap(partition) {
                Ok(partition) => {
                    if let Err(error) = partition.log.close().await {
                        tracing::error!(topic = partition.topic, partition = partition.partition, %error, "closing log failed");
                    }
                }
                Err(partition) => {
                    if let Err(error) = partition.log.flush().await {
                        tracing::error!(topic = partition.topic, partition = partition.partition, %error, "flushing log failed");
                    }
                }
            }
        }
    }
}

/// Counts a request as in flight for its lifetime (drained at shutdown).
pub struct InFlight {
    shard: Rc<Shard>,
}

impl InFlight {
    /// Starts counting.
    pub fn new(shard: &Rc<Shard>) -> InFlight {
        shard
            .requests_in_flight
            .set(shard.requests_in_flight.get() + 1);
        InFlight {
            shard: shard.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let shard = &self.shard;
        shard
            .requests_in_flight
            .set(shard.requests_in_flight.get().saturating_sub(1));
    }
}
