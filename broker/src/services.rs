//! The per-shard services: what the layer above the shards keeps on every shard, next to the
//! [`Shard`] itself — the group coordinator, the producer-id allocator and the topic admin
//! (both on shard 0), and the bus whose work items run against these services. Request
//! handlers take a `ShardServices`; the shard layer never sees it (it is only the `C` of its
//! generic bus and pump).

use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use wire::protocol::{ErrorCode, WireError};

use crate::group::Coordinator;
use crate::producer_ids::ProducerIds;
use crate::shard::bus::Bus;
use crate::shard::Shard;
use crate::topics::TopicRegistry;

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
}

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
        bus: ServiceBus,
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
            Some(ProducerIds::load(&config.data_dir)?)
        } else {
            None
        };
        Ok(Rc::new(ShardServices {
            shard,
            bus,
            coordinator,
            producer_ids: RefCell::new(producer_ids),
            producer_ids_lock: glommio::sync::Semaphore::new(1),
            admin_lock: glommio::sync::Semaphore::new(1),
        }))
    }

    /// Makes the shard's partitions match `registry`; the committed offsets of deleted topics
    /// go too, on whichever shard coordinates the groups that committed them.
    pub async fn apply_registry(
        &self,
        registry: Arc<TopicRegistry>,
    ) -> Result<(), storage::StorageError> {
        let deleted_topics: HashSet<String> = self.shard.apply_registry(registry).await?;
        if !deleted_topics.is_empty() {
            self.coordinator.forget_topics(&deleted_topics).await;
        }
        Ok(())
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
    /// flight, snapshot the committed offsets, close the logs.
    pub async fn drain_and_close(&self, limit: Duration) {
        self.coordinator.release_waiters();
        self.shard.wait_drained(limit).await;
        self.coordinator.snapshot_all().await;
        self.shard.close_logs().await;
    }
}
