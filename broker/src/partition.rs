//! A partition replica as its owner shard holds it: the log, the topic settings, the producer
//! state and its replication ([`Replica`]: role, leader epochs, high watermark).
//! [`Partition::wait_acknowledgeable`] is the one point where an appended batch becomes
//! acknowledgeable (durability on this replica, then the high watermark for `acks=all`), used
//! by local and forwarded produce alike. Lives on exactly one shard.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use storage::{Log, StorageError};

use crate::cluster_metadata::ReplicaAssignment;
use crate::replica::{Replica, Transition};
use wire::protocol::{ErrorCode, TopicConfig, WireError};
use wire::Acks;

/// Bytes read per step while rebuilding producer state at open.
const REBUILD_READ_BYTES: usize = 4 << 20;

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
    /// Its replication: role, leader epoch cache, high watermark.
    pub replica: Replica,
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
        replication: ReplicationSettings,
    ) -> Result<Partition, storage::StorageError> {
        let log_config = storage::LogConfig {
            sync_observer: Some(sync_observer),
            ..crate::config::log_config(config, faults)
        };
        let log = Log::open(dir, log_config).await?;
        let producers = replay_producers(&log).await?;
        let replica = Replica::open(
            replication.local_broker,
            replication.replica_lag_time_max_ms,
            dir,
            log.log_end_offset(),
        )
        .map_err(|reason| storage::StorageError::Corrupt {
            path: dir.join(crate::replica::EPOCH_CHECKPOINT_FILE),
            position: 0,
            reason,
        })?;
        Ok(Partition {
            topic: topic.to_string(),
            partition,
            config: config.clone(),
            log,
            producers: RefCell::new(producers),
            replica,
            deleted: Cell::new(false),
        })
    }

    /// Takes the controller's decision for this partition (role, ISR, epochs). Returns what
    /// the shard must do next: checkpoint the epoch cache of a new leadership
    /// ([`Partition::checkpoint_epochs`], in the background), or register with a leader's
    /// fetch session.
    pub fn apply_assignment(&self, assignment: &ReplicaAssignment) -> Transition {
        let transition = self.replica.apply(
            assignment,
            self.log.log_start_offset(),
            self.log.log_end_offset(),
            now_ms(),
        );
        match transition {
            Ok(Transition::BecameLeader) => {
                tracing::info!(
                    topic = self.topic,
                    partition = self.partition,
                    epoch = assignment.leader_epoch,
                    log_end_offset = self.log.log_end_offset(),
                    "leading"
                );
                Transition::BecameLeader
            }
            Ok(transition) => transition,
            Err(error) => {
                tracing::error!(topic = self.topic, partition = self.partition, %error, ?assignment, "cannot take the controller's decision");
                Transition::None
            }
        }
    }

    /// Writes the epoch cache's checkpoint (atomically, off the event loop). A failure (or a
    /// crash before it) is logged and costs no committed record: a replica whose cache lacks
    /// its newest epoch reports an older last epoch when it next follows, and the leader's
    /// answer then truncates it further than needed, to a point it fetches again from.
    pub async fn checkpoint_epochs(&self) {
        let (path, bytes) = self.replica.epoch_checkpoint();
        write_epoch_checkpoint(path, bytes).await;
    }

    /// The checkpoint to write in the background if the epoch cache changed since the last
    /// one (a new leadership's first append): `None` when nothing changed.
    pub fn dirty_epoch_checkpoint(
        &self,
    ) -> Option<impl std::future::Future<Output = ()> + 'static> {
        if !self.replica.take_epochs_dirty() {
            return None;
        }
        let (path, bytes) = self.replica.epoch_checkpoint();
        Some(write_epoch_checkpoint(path, bytes))
    }

    /// Appends a batch fetched from the leader, as received (the leader's bytes, its offsets):
    /// checks the CRC (not the records: the leader validated them deeply), appends, checks
    /// the log put it where the leader did, and replays its producer state so that this
    /// replica deduplicates retries if it becomes leader.
    pub async fn append_replicated(&self, bytes: &[u8]) -> Result<(), String> {
        let view = wire::batch::BatchView::validate(bytes, wire::limits::BATCH_SIZE_MAX)
            .map_err(|e| format!("fetched batch: {e}"))?;
        let header = view.header();
        let info = self.log.append(view).await.map_err(|e| e.to_string())?;
        if info.base_offset != header.base_offset {
            return Err(format!(
                "fetched batch at {} landed at {}",
                header.base_offset, info.base_offset
            ));
        }
        let mut stamped = header;
        stamped.base_offset = info.base_offset;
        self.producers.borrow_mut().replay(&stamped);
        Ok(())
    }

    /// True once the partition was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.get()
    }

    /// Cuts the log's divergent tail at `offset` (a follower told so by its leader) and
    /// rebuilds the producer state from what is left. Returns the new log end.
    pub async fn truncate_to(&self, offset: u64) -> Result<u64, StorageError> {
        let end = self.log.truncate_to(offset).await?;
        let producers = replay_producers(&self.log).await?;
        self.producers.replace(producers);
        tracing::info!(
            topic = self.topic,
            partition = self.partition,
            log_end_offset = end,
            "truncated a divergent tail"
        );
        Ok(end)
    }

    /// Marks the partition deleted (before its log closes for the deletion).
    pub fn mark_deleted(&self) {
        self.deleted.set(true);
        self.replica.changed().notify_all();
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

    /// True when this replica must have a batch written to its file (not only in memory)
    /// before it counts as replicated here: a partition with several replicas whose topic is
    /// not synced before every ack. Followers report only written offsets, and the leader
    /// writes before it acknowledges, so a record the high watermark covers survives a kill -9
    /// of every replica at once (not a power loss: that takes `always`).
    pub fn writes_before_ack(&self) -> bool {
        self.local_store() == LocalStore::Written
    }

    /// How far a record must reach on this replica before it counts here: see
    /// [`LocalStore`]. The one place the durability policy and the replica count decide it.
    fn local_store(&self) -> LocalStore {
        if self.syncs_before_ack() {
            LocalStore::Synced
        } else if self.replica.replica_count() > 1 {
            LocalStore::Written
        } else {
            LocalStore::Appended
        }
    }

    /// Offsets below this are stored on this replica as [`Partition::local_store`] requires.
    fn stored_offset(&self) -> u64 {
        match self.local_store() {
            LocalStore::Synced => self.log.durable_offset(),
            LocalStore::Written => self.log.written_offset(),
            LocalStore::Appended => self.log.log_end_offset(),
        }
    }

    /// Makes `offset` stored on this replica as [`Partition::local_store`] requires, asking
    /// for the sync or the write it needs (shared with concurrent callers).
    pub async fn store_locally(&self, offset: u64) -> Result<(), StorageError> {
        match self.local_store() {
            LocalStore::Synced => self.log.wait_durable(offset).await,
            LocalStore::Written => self.log.wait_written(offset).await,
            LocalStore::Appended => Ok(()),
        }
    }

    /// Offsets below this may be read by consumers: committed on every in-sync replica (the
    /// replication high watermark) and on this replica's disk: synced with `always`, written
    /// when [`Partition::writes_before_ack`].
    pub fn high_watermark(&self) -> u64 {
        self.replica.high_watermark().min(self.stored_offset())
    }

    /// Waits until the high watermark is past `offset`.
    pub async fn wait_for_high_watermark(&self, offset: u64) {
        self.replica
            .changed()
            .wait_until(|| self.replica.high_watermark() > offset || self.deleted.get())
            .await;
        match self.local_store() {
            LocalStore::Synced => self.log.wait_for_durable_offset(offset).await,
            LocalStore::Written => self.log.wait_for_written_offset(offset).await,
            LocalStore::Appended => self.log.wait_for_offset(offset).await,
        }
    }

    /// Waits until a batch appended up to `last_offset` may be acknowledged under `acks`, at
    /// most until `deadline`: at once for `acks=0`; for `1`, once the topic's durability is met
    /// on this replica (fsync for `always`, written to the file when
    /// [`Partition::writes_before_ack`]); for `all`, that and once the high watermark covers
    /// the batch (every in-sync replica has it). A replica that stops leading meanwhile
    /// answers `NotLeader`: the batch may or may not be committed, and the (idempotent)
    /// producer retries on the new leader.
    pub async fn wait_acknowledgeable(
        &self,
        last_offset: u64,
        acks: Acks,
        deadline: Instant,
    ) -> Result<(), WireError> {
        if acks == Acks::None {
            if self.writes_before_ack() {
                // Nobody waits for this batch, but the high watermark only covers it once it
                // is written here: start the write (the tail write is shared with any other).
                self.log.write_soon(last_offset);
            }
            return Ok(());
        }
        let timed_out = |what: &str| {
            WireError::new(
                ErrorCode::RequestTimedOut,
                format!("the batch was not {what} in time"),
            )
        };
        let store = self.local_store();
        if store != LocalStore::Appended {
            let stored = async { Some(self.store_locally(last_offset).await) };
            match futures_lite::future::or(stored, sleep_until(deadline)).await {
                Some(Ok(())) => {}
                Some(Err(error)) => return Err(self.storage_error(&error)),
                None if store == LocalStore::Synced => return Err(timed_out("synced")),
                None => return Err(timed_out("written")),
            }
        }
        if acks != Acks::All {
            return Ok(());
        }
        let end_offset = last_offset + 1;
        let committed = async {
            self.replica
                .changed()
                .wait_until(|| !matches!(self.replica.acks_all_status(end_offset), Ok(false)))
                .await;
            Some(self.replica.acks_all_status(end_offset))
        };
        match futures_lite::future::or(committed, sleep_until(deadline)).await {
            Some(Ok(_)) => Ok(()),
            Some(Err(error)) => Err(error),
            None => Err(timed_out("replicated to the in-sync replicas")),
        }
    }
}

/// How far a record must reach on a replica before it counts there (acknowledged, reported to
/// the leader, visible below the high watermark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalStore {
    /// fdatasync'ed: the topic's durability is `always` (survives a power loss).
    Synced,
    /// Written to the segment file: a replicated topic without `always` (survives a kill -9
    /// of every replica).
    Written,
    /// Appended in memory: a single replica without `always` (the policy's own sync schedule).
    Appended,
}

/// Writes an epoch cache checkpoint; a failure is logged (see
/// [`Partition::checkpoint_epochs`]).
async fn write_epoch_checkpoint(path: std::path::PathBuf, bytes: Vec<u8>) {
    if let Err(error) = storage::metadata::atomic_write(&path, bytes).await {
        tracing::warn!(path = %path.display(), %error, "writing the leader epoch checkpoint failed");
    }
}

/// The idempotent producers' state, rebuilt from the batch headers of the whole log.
async fn replay_producers(
    log: &Log,
) -> Result<crate::producer_state::ProducerStates, StorageError> {
    let mut producers = crate::producer_state::ProducerStates::default();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let read = log.read(offset, REBUILD_READ_BYTES).await?;
        let Some(next) = read.next_offset() else {
            break;
        };
        for batch in &read.batches {
            if let Ok(header) = wire::batch::peek_header(&batch.bytes, wire::limits::BATCH_SIZE_MAX)
            {
                producers.replay(&header);
            }
        }
        offset = next;
    }
    Ok(producers)
}

/// Sleeps until `deadline`, then yields `None` (the losing side of a race with a wait).
async fn sleep_until<T>(deadline: Instant) -> Option<T> {
    glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).await;
    None
}

/// Milliseconds of the monotonic clock (the replication state machines' `now_ms`).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What a partition's replication needs from the node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationSettings {
    /// This broker's id.
    pub local_broker: u32,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
}
