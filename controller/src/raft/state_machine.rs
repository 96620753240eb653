//! The controller's state machine (openraft's `RaftStateMachine`): the metadata image, and its
//! snapshots on disk.
//!
//! Committed entries are applied to the [`MetadataImage`] in memory with
//! [`MetadataImage::apply`] and each new image is published on a `watch` channel (the
//! [`ControllerHandle`](super::node::ControllerHandle)'s `metadata()` and `subscribe()`).
//! Each applied batch copies the image once (copy-on-write: readers keep the old `Arc`), which
//! is the controller's price for lock-free readers; at ~64 bytes per partition a 100 000
//! partition cluster copies ~6 MB per batch, at metadata-change rates. Applying does no I/O: after a restart the image comes back from the last snapshot and the
//! log entries after it are applied again once committed, so the image is durable through the
//! log. A snapshot is one file:
//!
//! ```text
//!   <data_dir>/snapshot   postcard(StoredSnapshot { meta: SnapshotMeta, image: postcard(MetadataImage) })
//! ```
//!
//! written through [`files::write_checked`] when openraft builds one (every
//! `snapshot_every_entries` entries) or installs one received from the leader. The snapshot
//! data openraft ships between nodes is the encoded image.
//! Called by openraft on the controller thread ([`super::node`]).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::files;
use super::{storage_error, storage_read_error, BasicNode, CommandResult, Entry, LogId};
use super::{StorageError, TypeConfig};
use crate::codec;
use crate::error::ControllerError;
use crate::metadata::{MetadataImage, Outcome};

const SNAPSHOT_FILE: &str = "snapshot";

/// The snapshot file's content.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    /// `postcard(MetadataImage)`: also the bytes shipped to followers.
    image: Vec<u8>,
}

/// The state machine of one controller node.
#[derive(Debug)]
pub struct StateMachineStore {
    data_dir: PathBuf,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
    publisher: watch::Sender<Arc<MetadataImage>>,
    snapshots_built: u64,
}

impl StateMachineStore {
    /// Open the state machine under `data_dir`: the last snapshot, or an empty image.
    /// `publisher` receives every new image.
    pub fn open(
        data_dir: &Path,
        publisher: watch::Sender<Arc<MetadataImage>>,
    ) -> Result<Self, ControllerError> {
        let mut store = StateMachineStore {
            data_dir: data_dir.to_path_buf(),
            image: Arc::new(MetadataImage::new()),
            last_applied: None,
            last_membership: StoredMembership::default(),
            publisher,
            snapshots_built: 0,
        };
        if let Some(stored) = read_snapshot(data_dir)? {
            store.image = Arc::new(codec::decode(&stored.image, "metadata image")?);
            store.last_applied = stored.meta.last_log_id;
            store.last_membership = stored.meta.last_membership;
        }
        store.publisher.send_replace(store.image.clone());
        Ok(store)
    }

    /// True when a snapshot exists on disk.
    pub fn has_snapshot(&self) -> bool {
        self.data_dir.join(SNAPSHOT_FILE).exists()
    }
}

fn read_snapshot(data_dir: &Path) -> Result<Option<StoredSnapshot>, ControllerError> {
    match files::read_checked(&data_dir.join(SNAPSHOT_FILE))? {
        Some(bytes) => Ok(Some(codec::decode(&bytes, "controller snapshot")?)),
        None => Ok(None),
    }
}

fn write_snapshot(data_dir: &Path, stored: &StoredSnapshot) -> Result<(), ControllerError> {
    let bytes = codec::encode(stored, "controller snapshot")?;
    files::write_checked(&data_dir.join(SNAPSHOT_FILE), &bytes)
}

/// Builds a snapshot from a copy of the state taken when openraft asked for the builder.
#[derive(Debug)]
pub struct SnapshotBuilder {
    data_dir: PathBuf,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<u64, BasicNode>,
    snapshot_number: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let image = codec::encode(&*self.image, "metadata image").map_err(storage_error)?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, self.snapshot_number),
            None => format!("empty-{}", self.snapshot_number),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta, image };
        write_snapshot(&self.data_dir, &stored).map_err(storage_error)?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.image)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let image = Arc::make_mut(&mut self.image);
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => results.push(Ok(Outcome::Unchanged)),
                EntryPayload::Normal(command) => results.push(image.apply(&command)),
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    results.push(Ok(Outcome::Unchanged));
                }
            }
        }
        self.publisher.send_replace(self.image.clone());
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            data_dir: self.data_dir.clone(),
            image: self.image.clone(),
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_number: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let image: MetadataImage =
            codec::decode(&bytes, "metadata image").map_err(storage_read_error)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            image: bytes,
        };
        write_snapshot(&self.data_dir, &stored).map_err(storage_error)?;
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        self.publisher.send_replace(self.image.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = read_snapshot(&self.data_dir).map_err(storage_read_error)?;
        Ok(stored.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.image)),
        }))
    }
}
