//! The shard layer: one glommio executor pinned to one core, owning a set of partitions and
//! the per-core resources (the topic registry snapshot, the endpoints, the shutdown and drain
//! state). Everything about a partition (its log, its waiters) lives on its owner shard, so the
//! data path takes no lock; other shards reach it only through the [`bus`], whose work items
//! the shard's message pump ([`pump`]) runs.
//!
//! Below the request handlers, the group coordinator and the topic admin: nothing here names
//! them. The layer above defines the context the bus's work items run against (the per-shard
//! services, `crate::services`) and what they do.

pub mod bus;
pub mod router;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use controller::MetadataImage;
use wire::protocol::{ShardEndpoint, TopicConfig, WireError};

use self::bus::Inbox;
use self::router::shard_for;
use crate::cluster_metadata::{assignment, holds_replica, registry_of};
use crate::config::Config;
use crate::error_code;
use crate::partition::{Partition, ReplicationSettings};
use crate::probe::ShardProbe;
use crate::replica::Transition;
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
    /// Shards on this node.
    shards: usize,
    /// Node configuration.
    pub config: Arc<Config>,
    /// Whether this broker still holds its controller session (see [`crate::session`]).
    pub session: Arc<crate::session::SessionWatch>,
    /// The current topic registry snapshot (the topics of `image`).
    pub registry: RefCell<Arc<TopicRegistry>>,
    /// The cluster metadata this shard last applied.
    pub image: RefCell<Arc<MetadataImage>>,
    /// Partitions owned by this shard.
    pub partitions: RefCell<OwnedPartitions>,
    /// Every shard's endpoint, once all are bound.
    pub endpoints: RefCell<Arc<Vec<ShardEndpoint>>>,
    /// Port of the main listener.
    pub main_port: Cell<u16>,
    /// Set by [`Shard::begin_shutdown`]: stop accepting, drain.
    pub shutting_down: Cell<bool>,
    /// Requests being handled on this shard (drained before exit).
    requests_in_flight: Rc<Cell<usize>>,
    /// Woken when the shard state changes (shutdown, endpoints, drain progress).
    pub changed: Rc<storage::Signal>,
    /// Counters and latency histograms of this shard's work (read by the metrics endpoint).
    pub probe: ShardProbe,
    /// `applied_commands` of the image applied last (see [`Shard::apply_metadata`]).
    applied_commands: Cell<u64>,
}

/// What applying a metadata image changed, for the layer above.
#[derive(Default)]
pub struct MetadataApplied {
    /// Topics the image no longer has.
    pub deleted_topics: HashSet<String>,
    /// Partitions that now follow a leader: (partition, leader broker id).
    pub followers: Vec<(Rc<Partition>, u32)>,
    /// The applied image's version (its `applied_commands`).
    pub applied_commands: u64,
}

impl Shard {
    /// Creates the shard: installs the core's storage resources (one tail-cache budget for
    /// every log of this core, [`Config::tail_cache_bytes_per_core`]), then opens the logs of
    /// every partition of `image` it owns a replica of and takes each one's role. Runs on the
    /// shard's executor.
    pub async fn open(
        id: usize,
        shards: usize,
        config: Arc<Config>,
        image: Arc<MetadataImage>,
        session: Arc<crate::session::SessionWatch>,
    ) -> Result<(Rc<Shard>, MetadataApplied), storage::StorageError> {
        storage::CoreResources::install(config.shard_budget());
        let shard = Rc::new(Shard {
            id,
            shards,
            config,
            registry: RefCell::new(Arc::new(TopicRegistry::default())),
            image: RefCell::new(Arc::new(MetadataImage::default())),
            partitions: RefCell::new(OwnedPartitions::default()),
            endpoints: RefCell::new(Arc::new(Vec::new())),
            main_port: Cell::new(0),
            shutting_down: Cell::new(false),
            requests_in_flight: Rc::new(Cell::new(0)),
            changed: Rc::new(storage::Signal::default()),
            probe: ShardProbe::default(),
            applied_commands: Cell::new(0),
            session,
        });
        let applied = shard.apply_metadata(image).await?;
        Ok((shard, applied))
    }

    /// This broker's id.
    pub fn broker_id(&self) -> u32 {
        self.config.broker_id
    }

    /// Number of shards on this node.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Publishes every shard's endpoint and the main port (once all listeners are bound).
    pub fn set_endpoints(&self, main_port: u16, endpoints: Arc<Vec<ShardEndpoint>>) {
        self.main_port.set(main_port);
        *self.endpoints.borrow_mut() = endpoints;
        self.changed.notify_all();
    }

    /// Starts a graceful stop: listeners stop accepting, connections finish, the shard drains.
    pub fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        self.changed.notify_all();
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
        if !holds_replica(&self.image.borrow(), self.broker_id(), topic, partition) {
            let leader = assignment(&self.image.borrow(), topic, partition).and_then(|a| a.leader);
            return Err(WireError::new(
                wire::protocol::ErrorCode::NotLeader,
                match leader {
                    Some(leader) => {
                        format!("broker {leader} leads partition {partition} of {topic:?}")
                    }
                    None => format!("partition {partition} of {topic:?} has no leader"),
                },
            ));
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

    /// Makes the owned partitions match `image`: opens the new replicas this shard owns,
    /// closes and deletes the data of the ones removed (topic deleted, or replica moved away),
    /// and gives every owned partition its role from the image. Returns the topics the image
    /// no longer has (the layer above forgets what it kept about them, e.g. committed offsets)
    /// and the partitions that now follow a leader (the layer above fetches for them).
    pub async fn apply_metadata(
        &self,
        image: Arc<MetadataImage>,
    ) -> Result<MetadataApplied, storage::StorageError> {
        let fallback = self.default_topic_config();
        let registry = Arc::new(registry_of(&image, &fallback));
        self.image.replace(image.clone());
        let previous = self.registry.replace(registry.clone());
        let broker = self.broker_id();
        let deleted_topics: HashSet<String> = previous
            .topics
            .keys()
            .filter(|topic| !registry.topics.contains_key(*topic))
            .cloned()
            .collect();
        let data_dir = self.config.data_dir.clone();
        for (topic, config) in &registry.topics {
            for partition in 0..config.partitions {
                if shard_for(topic, partition, self.shards()) != self.id
                    || !holds_replica(&image, broker, topic, partition)
                    || self.partitions.borrow().get(topic, partition).is_some()
                {
                    continue;
                }
                let dir = TopicRegistry::partition_dir(&data_dir, topic, partition);
                let faults = self.config.storage_faults.as_ref();
                let opened = Partition::open(
                    topic,
                    partition,
                    config,
                    &dir,
                    faults,
                    self.probe.sync_observer(),
                    ReplicationSettings {
                        local_broker: broker,
                        replica_lag_time_max_ms: self
                            .config
                            .cluster
                            .replica_lag_time_max
                            .as_millis() as u64,
                    },
                )
                .await?;
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
                    || !holds_replica(&image, broker, topic, *partition)
            })
            .collect();
        for key in removed {
            let Some(partition) = self.partitions.borrow_mut().remove(&key.0, key.1) else {
                continue;
            };
            let dir = TopicRegistry::partition_dir(&data_dir, &key.0, key.1);
            // Requests still holding the partition (a read, an append, a produce waiting for
            // its fsync) finish first; later ones get `Closed`, which the partition reports as
            // "deleted". Only then is the directory removed: nothing touches it any more.
            partition.mark_deleted();
            if let Err(error) = partition.log.close().await {
                tracing::warn!(topic = key.0, partition = key.1, %error, "closing a deleted partition's log failed");
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
        let mut followers = Vec::new();
        for partition in self.partitions.borrow().values() {
            let Some(decided) = assignment(&image, &partition.topic, partition.partition) else {
                continue;
            };
            match partition.apply_assignment(&decided) {
                Transition::BecameFollower { leader } => {
                    followers.push((partition.clone(), leader))
                }
                Transition::BecameLeader => {
                    // An empty log's new epoch is checkpointed with its first append (the
                    // produce path); a non-empty one's now, in the background.
                    if partition.log.log_end_offset() > partition.log.log_start_offset() {
                        self.checkpoint_in_background(&partition);
                    }
                }
                Transition::None => {}
            }
        }
        Ok(MetadataApplied {
            deleted_topics,
            followers,
            applied_commands: image.applied_commands,
        })
    }

    /// Records that the layer above finished applying the image of `applied_commands` (what
    /// topic administration waits for before answering).
    pub fn mark_applied(&self, applied_commands: u64) {
        self.applied_commands.set(applied_commands);
        self.changed.notify_all();
    }

    /// Writes `partition`'s epoch checkpoint if it changed, in the background; counted as in
    /// flight, so a shutdown waits for the write.
    pub fn checkpoint_in_background(&self, partition: &Partition) {
        if let Some(write) = partition.dirty_epoch_checkpoint() {
            let in_flight = InFlight::new(self);
            glommio::spawn_local(async move {
                write.await;
                drop(in_flight);
            })
            .detach();
        }
    }

    /// The settings a topic gets where the image says nothing (the broker's defaults).
    pub fn default_topic_config(&self) -> TopicConfig {
        let defaults = &self.config.topic_defaults;
        TopicConfig {
            partitions: defaults.partitions,
            replication_factor: self.config.cluster.default_replication_factor,
            retention_ms: defaults.retention_ms,
            retention_bytes: -1,
            segment_bytes: defaults.segment_bytes,
            max_batch_bytes: defaults.max_batch_bytes,
            durability: defaults.durability,
        }
    }

    /// The image version (its count of applied commands) this shard has applied.
    pub fn applied_commands(&self) -> u64 {
        self.applied_commands.get()
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

    /// Requests being handled on this shard now.
    pub fn requests_in_flight(&self) -> usize {
        self.requests_in_flight.get()
    }

    /// Waits until the requests in flight are done, at most `limit`.
    pub async fn wait_drained(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.requests_in_flight.get() > 0 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(DRAIN_POLL_PERIOD).await;
        }
    }

    /// Closes every owned log, also those a request still holds (a long poll, an append that
    /// outlived the drain): each close syncs, waits for the reads and appends in progress, and
    /// makes later ones fail with `Closed`, so no log is abandoned with unsynced data.
    pub async fn close_logs(&self) {
        let partitions = self.partitions.borrow_mut().drain();
        for partition in partitions {
            if let Err(error) = partition.log.close().await {
                tracing::error!(topic = partition.topic, partition = partition.partition, %error, "closing log failed");
            }
        }
    }
}

/// How often a draining shard looks at its in-flight count: requests do not signal their end,
/// and a drain happens once per process, so a 5 ms poll costs nothing and delays exit by 5 ms.
const DRAIN_POLL_PERIOD: Duration = Duration::from_millis(5);

/// The message pump: runs every work item sent to this shard, each as its own task, against
/// the shard's context (what the layer above made of the shard). Ends when every sender is
/// gone; the shard's executor ending stops it too.
pub async fn pump<C: 'static>(context: Rc<C>, inbox: Inbox<C>) {
    while let Ok(envelope) = inbox.recv_async().await {
        let work = envelope.open();
        glommio::spawn_local(work(context.clone())).detach();
    }
}

/// Counts a request as in flight for its lifetime (drained at shutdown).
pub struct InFlight {
    requests_in_flight: Rc<Cell<usize>>,
}

impl InFlight {
    /// Starts counting.
    pub fn new(shard: &Shard) -> InFlight {
        let count = shard.requests_in_flight.clone();
        count.set(count.get() + 1);
        InFlight {
            requests_in_flight: count,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let count = &self.requests_in_flight;
        count.set(count.get().saturating_sub(1));
    }
}
