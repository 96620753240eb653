//! The per-shard services: what the layer above the shards keeps on every shard, next to the
//! [`Shard`] itself — the group coordinator, the producer-id allocator and the topic admin
//! (both on shard 0), and the bus whose work items run against these services. Request
//! handlers take a `ShardServices`; the shard layer never sees it (it is only the `C` of its
//! generic bus and pump).

pub mod follower_fetch;

use std::cell::RefCell;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use wire::protocol::{ErrorCode, WireError};

use controller::{BrokerId, Command, ControllerHandle, MetadataImage};

use self::follower_fetch::FollowerFetchers;
use crate::group::Coordinator;
use crate::partition::{now_ms, Partition};
use crate::producer_ids::ProducerIds;
use crate::replica::IsrProposal;
use crate::shard::bus::Bus;
use crate::shard::{MetadataApplied, Shard};

/// Why a shard's services could not open.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The producer-id allocator's file.
    #[error(transparent)]
    ProducerIds(#[from] crate::producer_ids::ProducerIdsError),
    /// The committed offsets of the `__consumer_offsets` partitions this shard owns.
    #[error("loading committed offsets: {0}")]
    CommittedOffsets(String),
}

/// The bus between shards, its work items running against each shard's services.
pub type ServiceBus = Bus<ShardServices>;

/// One shard and the services that run on it. `!Send`: it never leaves its executor.
pub struct ShardServices {
    /// The shard (partitions, registry, per-core state).
    pub shard: Rc<Shard>,
    /// Inboxes of every shard.
    pub bus: ServiceBus,
    /// Coordinator of the consumer groups whose offsets partitions this shard owns.
    pub coordinator: Rc<Coordinator>,
    /// Producer id allocator (shard 0 only).
    producer_ids: RefCell<Option<ProducerIds>>,
    /// One producer-id reservation at a time (shard 0 only).
    producer_ids_lock: glommio::sync::Semaphore,
    /// Serialises topic creation and deletion (shard 0 only).
    pub admin_lock: glommio::sync::Semaphore,
    /// The node's controller: proposals (topics, ISR changes) and the metadata image.
    pub controller: Arc<ControllerHandle>,
    /// This shard's follower fetch sessions.
    pub fetchers: FollowerFetchers,
}

/// How often a shard's leaders check their followers' lag: a tenth of the default 10 s
/// `replica.lag.time.max`, so a lagging follower leaves the ISR at most 10 % late.
const REPLICATION_TICK: Duration = Duration::from_millis(1000);

/// The services extend their shard: `services.id`, `services.route(..)` and the like read the
/// shard layer directly.
impl Deref for ShardServices {
    type Target = Shard;

    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl ShardServices {
    /// Opens the shard's partitions, then the services on top of them (committed offsets, and
    /// on shard 0 the producer-id allocator).
    pub async fn open(
        shard: Rc<Shard>,
        applied: MetadataApplied,
        bus: ServiceBus,
        controller: Arc<ControllerHandle>,
    ) -> Result<Rc<ShardServices>, ServicesError> {
        let config = shard.config.clone();
        let coordinator = Rc::new(Coordinator::new(
            shard.id,
            config.group_limits.clone(),
            config.offsets_partitions,
            config.offsets_snapshot_records,
        ));
        coordinator
            .load(&shard)
            .await
            .map_err(|error| ServicesError::CommittedOffsets(format!("{error:#}")))?;
        let producer_ids = if shard.id == 0 {
            Some(ProducerIds::load(&config.data_dir, config.broker_id)?)
        } else {
            None
        };
        let services = Rc::new(ShardServices {
            shard,
            bus,
            coordinator,
            producer_ids: RefCell::new(producer_ids),
            producer_ids_lock: glommio::sync::Semaphore::new(1),
            admin_lock: glommio::sync::Semaphore::new(1),
            controller,
            fetchers: FollowerFetchers::default(),
        });
        services.follow(applied);
        Ok(services)
    }

    /// Makes the shard's partitions match `image`; the committed offsets of deleted topics go
    /// too, on whichever shard coordinates the groups that committed them; the coordinator
    /// takes up the offsets partitions this shard now leads and drops the ones it no longer
    /// leads; followers start fetching from their leaders.
    pub async fn apply_metadata(
        self: &Rc<Self>,
        image: Arc<MetadataImage>,
    ) -> Result<(), storage::StorageError> {
        let applied = self.shard.apply_metadata(image).await?;
        if !applied.deleted_topics.is_empty() {
            self.coordinator
                .forget_topics(&applied.deleted_topics)
                .await;
        }
        if let Err(error) = self.coordinator.follow_leadership(&self.shard).await {
            tracing::error!(shard = self.id, error = %format!("{error:#}"), "following the offsets partitions' leadership failed");
        }
        self.follow(applied);
        Ok(())
    }

    fn follow(self: &Rc<Self>, applied: MetadataApplied) {
        for (partition, leader) in applied.followers {
            FollowerFetchers::follow(self, partition, leader);
        }
        self.shard.mark_applied(applied.applied_commands);
    }

    /// Follows the controller's metadata: applies every new image, in order, until shutdown.
    pub async fn metadata_loop(self: Rc<Self>) {
        let mut images = self.controller.subscribe();
        loop {
            let stopping = self.clone();
            let stop = async move {
                stopping
                    .changed
                    .wait_until(|| stopping.shutting_down.get())
                    .await;
                false
            };
            let changed = async { images.changed().await.is_ok() };
            if !futures_lite::future::or(changed, stop).await {
                return;
            }
            let image = images.borrow_and_update().clone();
            if image.applied_commands <= self.applied_commands() {
                continue;
            }
            if let Err(error) = self.apply_metadata(image).await {
                tracing::error!(shard = self.id, %error, "applying cluster metadata failed");
            }
        }
    }

    /// Ticks every leader replica of this shard (followers that lag too long are proposed out
    /// of the ISR), until shutdown.
    pub async fn replication_tick_loop(self: Rc<Self>) {
        loop {
            let stopping = self.clone();
            let stop = async move {
                stopping
                    .changed
                    .wait_until(|| stopping.shutting_down.get())
                    .await
            };
            futures_lite::future::or(glommio::timer::sleep(REPLICATION_TICK), stop).await;
            if self.shutting_down.get() {
                return;
            }
            let now = now_ms();
            for partition in self.partitions.borrow().values() {
                if !partition.replica.is_leader() {
                    continue;
                }
                partition.replica.on_tick(now);
                if let Some(proposal) = partition.replica.take_isr_proposal() {
                    self.send_isr_proposal(partition, proposal);
                }
            }
        }
    }

    /// Sends a leader's ISR change to the controller (in the background); a refusal lets the
    /// leader propose again later. The committed change comes back with the metadata.
    pub fn send_isr_proposal(&self, partition: Rc<Partition>, proposal: IsrProposal) {
        let controller = self.controller.clone();
        glommio::spawn_local(async move {
            let command = Command::AlterIsr {
                topic: partition.topic.clone(),
                partition: partition.partition,
                leader_epoch: proposal.leader_epoch,
                partition_epoch: proposal.partition_epoch,
                new_isr: proposal.isr.iter().map(|&id| BrokerId(id)).collect(),
            };
            tracing::info!(topic = partition.topic, partition = partition.partition, isr = ?proposal.isr, "proposing an ISR change");
            if let Err(error) = controller.propose_async(command).await {
                tracing::warn!(topic = partition.topic, partition = partition.partition, %error, "ISR change refused");
                partition.replica.on_isr_proposal_failed();
            }
        })
        .detach();
    }

    /// A new producer id (shard 0 only). When a block is used up, the next one is reserved
    /// durably first (its file written off the event loop); one allocation at a time.
    pub async fn allocate_producer_id(&self) -> Result<i64, WireError> {
        let not_here = || {
            WireError::new(
                ErrorCode::NotLeader,
                "producer ids are handed out by shard 0",
            )
        };
        let _permit = self
            .producer_ids_lock
            .acquire_permit(1)
            .await
            .map_err(|_| {
                WireError::new(ErrorCode::BrokerShuttingDown, "the broker is shutting down")
            })?;
        let block_needed = match self.producer_ids.borrow().as_ref() {
            Some(ids) => ids.block_needed(),
            None => return Err(not_here()),
        };
        if let Some(block_end) = block_needed {
            ProducerIds::save_block_end(&self.config.data_dir, block_end)
                .await
                .map_err(|e| {
                    WireError::new(
                        ErrorCode::StorageError,
                        format!("reserving producer ids: {e}"),
                    )
                })?;
            if let Some(ids) = self.producer_ids.borrow_mut().as_mut() {
                ids.reserved(block_end);
            }
        }
        self.producer_ids
            .borrow_mut()
            .as_mut()
            .and_then(ProducerIds::take)
            .ok_or_else(not_here)
    }

    /// The end of a graceful stop: answer held group requests, wait (bounded) for requests in
    /// flight, snapshot the committed offsets, close the logs, then wait for the metadata writes
    /// still on the blocking thread (checkpoints the drain did not wait for), which must not
    /// outlive the executor.
    pub async fn drain_and_close(&self, limit: Duration) {
        self.coordinator.release_waiters();
        self.shard.wait_drained(limit).await;
        self.coordinator.snapshot_all().await;
        self.shard.close_logs().await;
        storage::metadata::blocking_work_done().await;
    }
}
