//! A partition replica as its owner shard holds it: the log, the topic settings, the replica's
//! [`Role`] and its high watermark. This is the seam where replication plugs in: a follower
//! role, a high watermark that follows the in-sync replicas, and
//! [`Partition::wait_acknowledgeable`] — the one point where an appended batch becomes
//! acknowledgeable, used by local and forwarded produce alike — are all that replication
//! changes. Lives on exactly one shard.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use storage::{Log, StorageError};
use wire::protocol::{ErrorCode, TopicConfig, WireError};
use wire::Acks;

/// Bytes read per step while rebuilding producer state at open.
const REBUILD_READ_BYTES: usize = 4 << 20;

/// What this replica does for its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Takes produce requests, decides the high watermark. A single node is always leader.
    Leader,
    /// Copies the leader's log (replication; not yet).
    Follower {
        /// The leader's broker id.
        leader: u32,
    },
}

/// One partition owned by this shard.
pub struct Partition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Settings of the topic.
    pub config: TopicConfig,
    /// The partition's log.
    pub log: Log,
    /// Idempotent producers' recent batches.
    pub producers: RefCell<crate::producer_state::ProducerStates>,
    /// This replica's role.
    role: Role,
    /// Set when the topic (or this partition) was deleted and its log closed: `Closed` from
    /// the log then means "deleted", not "shutting down".
    deleted: Cell<bool>,
}

impl Partition {
    /// Opens a partition: its log (with the node's test fault plan, if any, and reporting its
    /// syncs to `sync_observer`), then the producer state rebuilt from the log's batch headers.
    pub async fn open(
        topic: &str,
        partition: u32,
        config: &TopicConfig,
        dir: &std::path::Path,
        faults: Option<&std::sync::Arc<storage::FaultPlan>>,
        sync_observer: storage::SyncObserver,
    ) -> Result<Partition, storage::StorageError> {
        let log_config = storage::LogConfig {
            sync_observer: Some(sync_observer),
            ..crate::config::log_config(config, faults)
        };
        let log = Log::open(dir, log_config).await?;
        let mut producers = crate::producer_state::ProducerStates::default();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let read = log.read(offset, REBUILD_READ_BYTES).await?;
            let Some(next) = read.next_offset() else {
                break;
            };
            for batch in &read.batches {
                if let Ok(header) =
                    wire::batch::peek_header(&batch.bytes, wire::limits::BATCH_SIZE_MAX)
                {
                    producers.replay(&header);
                }
            }
            offset = next;
        }
        Ok(Partition {
            topic: topic.to_string(),
            partition,
            config: config.clone(),
            log,
            producers: RefCell::new(producers),
            role: Role::Leader,
            deleted: Cell::new(false),
        })
    }

    /// This replica's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Marks the partition deleted (before its log closes for the deletion).
    pub fn mark_deleted(&self) {
        self.deleted.set(true);
    }

    /// What a client is told about a storage error of this partition: a `Closed` log of a
    /// deleted partition is an unknown partition (the topic is gone; a recreated topic is a
    /// new partition), every other error maps as usual ([`crate::error_code::from_storage`]).
    pub fn storage_error(&self, error: &StorageError) -> WireError {
        if self.deleted.get() && matches!(error, StorageError::Closed { .. }) {
            return WireError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "topic {:?} partition {} was deleted",
                    self.topic, self.partition
                ),
            );
        }
        crate::error_code::from_storage(error)
    }

    /// True when acknowledgements and visibility wait for fsync.
    pub fn syncs_before_ack(&self) -> bool {
        self.config.durability.syncs_before_ack()
    }

    /// Offsets below this may be read by consumers: what an acknowledged producer could have
    /// been told. With `always`, that is what is on disk; otherwise the log end (replication
    /// will make it the in-sync replicas' common offset).
    pub fn high_watermark(&self) -> u64 {
        if self.syncs_before_ack() {
            self.log.durable_offset()
        } else {
            self.log.log_end_offset()
        }
    }

    /// Waits until the high watermark is past `offset`.
    pub async fn wait_for_high_watermark(&self, offset: u64) {
        if self.syncs_before_ack() {
            self.log.wait_for_durable_offset(offset).await
        } else {
            self.log.wait_for_offset(offset).await
        }
    }

    /// Waits until a batch appended up to `last_offset` may be acknowledged under `acks`, at
    /// most until `deadline`: at once for `acks=0`; for `1` and `all`, once the topic's
    /// durability is met (fsync for `always`). On one node `all` is `1` (the in-sync replicas
    /// are the leader); replication makes `all` wait for the high watermark here.
    pub async fn wait_acknowledgeable(
        &self,
        last_offset: u64,
        acks: Acks,
        deadline: Instant,
    ) -> Result<(), WireError> {
        if let Role::Follower { leader } = self.role {
            return Err(WireError::new(
                ErrorCode::NotLeader,
                format!("broker {leader} leads this partition"),
            ));
        }
        if acks == Acks::None || !self.syncs_before_ack() {
            return Ok(());
        }
        let durable = async { Some(self.log.wait_durable(last_offset).await) };
        let timer = async {
            glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
            None
        };
        match futures_lite::future::or(durable, timer).await {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) => Err(self.storage_error(&error)),
            None => Err(WireError::new(
                ErrorCode::RequestTimedOut,
                "the batch was not synced in time",
            )),
        }
    }
}
