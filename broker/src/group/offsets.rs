//! Committed offsets: records in one `__consumer_offsets` partition, the table they add up to,
//! and snapshots of that table so a restart does not replay the whole history.
//!
//! ```text
//!  record key    version:u16=1 | group:string | topic:string | partition:u32
//!  record value  version:u16=1 | offset:u64 | metadata:string | commit_ms:i64 | producer_id:i64
//!                (producer_id is -1; transactional commits will carry theirs)
//!                empty value: a tombstone (the offset was deleted with its topic)
//!  snapshot      "SLO1" | log_offset:u64 | count:u32 | (key, value, record_offset:u64)* | crc32c
//! ```
//!
//! A commit is one record batch appended to the group's partition (whose durability is
//! `always`), answered once fsynced: committed offsets survive kill -9. The table keeps, per
//! key, the value of the record with the highest log offset, whatever order concurrent commits
//! complete in, exactly as a replay would. Every `snapshot_records` applied records (`--offsets-snapshot-records`) the
//! table is written to `offsets.snapshot` (tmp, fsync, rename) together with the log offset
//! below which it holds every record; sealed segments below that offset are then deleted. That
//! is the topic's compaction: restart = read the snapshot + replay the tail.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{bail, Context};
use wire::batch::{BatchBuilder, BatchView};
use wire::protocol::{Decode, Reader};
use wire::AlignedVec;

use storage::StorageError;

use crate::partition::Partition;
use wire::protocol::WireError;

/// Longest wait for an offset commit to reach every in-sync replica: Kafka's
/// `offsets.commit.timeout.ms`.
pub const COMMIT_REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const SNAPSHOT_MAGIC: &[u8; 4] = b"SLO1";
const RECORD_VERSION: u16 = 1;
/// Bytes read per step while replaying the log.
const REPLAY_READ_BYTES: usize = 4 << 20;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: u64,
    /// The note stored with it.
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub commit_timestamp: i64,
    /// Log offset of the record that set it (later records win).
    pub record_offset: u64,
}

/// What one commit record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEntry {
    /// Group id.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset committed.
    pub offset: u64,
    /// Note.
    pub metadata: String,
}

/// One group's committed offsets, by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, u32), Committed>;

/// Committed offsets of the groups whose offsets live in one `__consumer_offsets` partition.
pub struct OffsetStore {
    /// The partition holding the records.
    pub partition: Rc<Partition>,
    /// group → (topic, partition) → committed.
    table: RefCell<HashMap<String, GroupOffsets>>,
    /// Base offsets of commit batches appended but not yet applied.
    in_flight: RefCell<BTreeSet<u64>>,
    records_since_snapshot: Cell<u64>,
    /// Applied records between two snapshots.
    snapshot_records: u64,
    snapshotting: Cell<bool>,
    /// Log offset covered by the newest snapshot on disk (0 without one).
    snapshot_covered: Cell<u64>,
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("offsets.snapshot")
}

fn previous_snapshot_path(dir: &Path) -> PathBuf {
    dir.join("offsets.snapshot.prev")
}

/// A parsed snapshot: the log offset it covers and its entries.
type Snapshot = (u64, Vec<(Key, Committed)>);

/// Reads and parses a snapshot file; `None` when there is none.
fn read_snapshot_file(path: &Path) -> Option<anyhow::Result<Snapshot>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(parse_snapshot(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(e).with_context(|| format!("reading {}", path.display()))),
    }
}

/// Makes the current snapshot the previous one, before a new one is written with
/// [`storage::metadata::atomic_write`]: a crash at any point leaves the old current snapshot,
/// or the previous one, readable. Blocking: runs off the shard.
fn keep_as_previous_snapshot(dir: &Path) -> std::io::Result<()> {
    let path = snapshot_path(dir);
    if path.exists() {
        std::fs::rename(&path, previous_snapshot_path(dir))?;
    }
    Ok(())
}

/// Parses a snapshot (checksum, magic, entries) without applying anything.
fn parse_snapshot(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        bail!("too short");
    };
    let (body, crc) = bytes.split_at(body_len);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        bail!("checksum mismatch");
    }
    if body.get(..4) != Some(SNAPSHOT_MAGIC.as_slice()) {
        bail!("bad magic");
    }
    let mut reader = Reader::new(body, 4);
    let covered = u64::decode(&mut reader)?;
    let count = reader.count(16)?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let key = decode_key(&mut reader)?;
        let (offset, metadata, commit_timestamp) = decode_value(&mut reader)?;
        let record_offset = u64::decode(&mut reader)?;
        entries.push((
            key,
            Committed {
                offset,
                metadata,
                commit_timestamp,
                record_offset,
            },
        ));
    }
    if reader.remaining() != 0 {
        bail!("trailing bytes");
    }
    Ok((covered, entries))
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    // Group ids, topic names and metadata are bounded well below u16::MAX by validation.
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn encode_key(group: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + group.len() + topic.len());
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    put_string(&mut out, group);
    put_string(&mut out, topic);
    out.extend_from_slice(&partition.to_le_bytes());
    out
}

fn encode_value(offset: u64, metadata: &str, commit_timestamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(28 + metadata.len());
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    put_string(&mut out, metadata);
    out.extend_from_slice(&commit_timestamp.to_le_bytes());
    out.extend_from_slice(&(-1i64).to_le_bytes());
    out
}

type Key = (String, String, u32);

fn decode_key(reader: &mut Reader<'_>) -> anyhow::Result<Key> {
    let version = u16::decode(reader)?;
    if version != RECORD_VERSION {
        bail!("unknown offset key version {version}");
    }
    Ok((
        String::decode(reader)?,
        String::decode(reader)?,
        u32::decode(reader)?,
    ))
}

fn decode_value(reader: &mut Reader<'_>) -> anyhow::Result<(u64, String, i64)> {
    let version = u16::decode(reader)?;
    if version != RECORD_VERSION {
        bail!("unknown offset value version {version}");
    }
    let offset = u64::decode(reader)?;
    let metadata = String::decode(reader)?;
    let timestamp = i64::decode(reader)?;
    let _producer_id = i64::decode(reader)?;
    Ok((offset, metadata, timestamp))
}

/// Builds the record batch of one commit.
pub fn commit_batch(entries: &[CommitEntry], now_ms: i64) -> Result<AlignedVec<16>, StorageError> {
    record_batch(
        entries.iter().map(|entry| {
            (
                encode_key(&entry.group, &entry.topic, entry.partition),
                encode_value(entry.offset, &entry.metadata, now_ms),
            )
        }),
        now_ms,
    )
}

/// Builds the record batch of tombstones (empty values) for `keys`.
fn tombstone_batch(keys: &[Key], now_ms: i64) -> Result<AlignedVec<16>, StorageError> {
    record_batch(
        keys.iter()
            .map(|(group, topic, partition)| (encode_key(group, topic, *partition), Vec::new())),
        now_ms,
    )
}

/// One record per (key, value), all stamped `now_ms`.
fn record_batch(
    records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
    now_ms: i64,
) -> Result<AlignedVec<16>, StorageError> {
    let mut builder = BatchBuilder::new();
    for (key, value) in records {
        builder.push(now_ms, Some(&key), &value, &[], None);
    }
    let mut out = AlignedVec::<16>::new();
    builder
        .build_into(&mut out)
        .map_err(|e| StorageError::Config(format!("building offset records: {e}")))?;
    Ok(out)
}

impl OffsetStore {
    /// Loads the table of `partition`: its newest readable snapshot, then the records after it.
    /// Refuses to start when the snapshots are damaged and the log no longer holds what they
    /// covered (offsets would silently go back in time).
    pub async fn load(
        partition: Rc<Partition>,
        snapshot_records: u64,
    ) -> anyhow::Result<OffsetStore> {
        let store = OffsetStore {
            partition,
            table: RefCell::new(HashMap::new()),
            in_flight: RefCell::new(BTreeSet::new()),
            records_since_snapshot: Cell::new(0),
            snapshot_records,
            snapshotting: Cell::new(false),
            snapshot_covered: Cell::new(0),
        };
        let log = &store.partition.log;
        let dir = log.dir().to_path_buf();
        let current = read_snapshot_file(&snapshot_path(&dir));
        let previous = read_snapshot_file(&previous_snapshot_path(&dir));
        let (covered, entries) = match (current, previous) {
            (Some(Ok(snapshot)), _) => snapshot,
            (current, Some(Ok(snapshot))) => {
                if let Some(Err(error)) = current {
                    tracing::error!(dir = %dir.display(), %error, "newest offsets snapshot is damaged; using the previous one");
                }
                snapshot
            }
            (None, None) => (0, Vec::new()),
            (current, previous) => {
                let error = current
                    .or(previous)
                    .and_then(Result::err)
                    .map_or_else(String::new, |e| format!("{e:#}"));
                if log.log_start_offset() > 0 {
                    bail!(
                        "the offsets snapshots in {} are damaged ({error}) and the log before offset {} \
                         is gone: committed offsets would be lost. Restore the snapshot files, or \
                         delete them to start with only the offsets still in the log",
                        dir.display(),
                        log.log_start_offset()
                    );
                }
                tracing::error!(dir = %dir.display(), %error, "offsets snapshots are damaged; replaying the whole log");
                (0, Vec::new())
            }
        };
        for ((group, topic, partition), committed) in entries {
            store.apply(group, topic, partition, committed);
        }
        store.snapshot_covered.set(covered);
        let from = covered.max(log.log_start_offset());
        let mut replayed = 0u64;
        let mut offset = from;
        while offset < log.log_end_offset() {
            let read = log.read(offset, REPLAY_READ_BYTES).await?;
            let Some(next) = read.next_offset() else {
                break;
            };
            for batch in &read.batches {
                replayed += store.apply_batch(&batch.bytes, offset);
            }
            offset = next;
        }
        store.records_since_snapshot.set(replayed);
        tracing::info!(
            dir = %log.dir().display(),
            groups = store.table.borrow().len(),
            snapshot_offset = from,
            replayed,
            "committed offsets loaded"
        );
        Ok(store)
    }

    /// Applies the records of one batch at or above `from`; returns how many.
    fn apply_batch(&self, bytes: &[u8], from: u64) -> u64 {
        let Ok(view) = BatchView::validate(bytes, wire::limits::BATCH_SIZE_MAX) else {
            return 0;
        };
        let Ok(records) = view.records() else {
            return 0;
        };
        let mut applied = 0;
        for (delta, record) in records.iter().enumerate() {
            let record_offset = view.base_offset() + delta as u64;
            if record_offset < from {
                continue;
            }
            let Some(key) = record.key_bytes() else {
                continue;
            };
            let key = decode_key(&mut Reader::new(key, 0));
            if record.value_bytes().is_empty() {
                match key {
                    Ok((group, topic, partition)) => {
                        self.remove(&group, &topic, partition, record_offset);
                        applied += 1;
                    }
                    Err(error) => {
                        tracing::warn!(record_offset, %error, "skipping an unreadable tombstone")
                    }
                }
                continue;
            }
            let value = decode_value(&mut Reader::new(record.value_bytes(), 0));
            match (key, value) {
                (Ok((group, topic, partition)), Ok((offset, metadata, commit_timestamp))) => {
                    self.apply(
                        group,
                        topic,
                        partition,
                        Committed {
                            offset,
                            metadata,
                            commit_timestamp,
                            record_offset,
                        },
                    );
                    applied += 1;
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(record_offset, %error, "skipping an unreadable offset record")
                }
            }
        }
        applied
    }

    fn apply(&self, group: String, topic: String, partition: u32, committed: Committed) {
        let mut table = self.table.borrow_mut();
        let offsets = table.entry(group).or_default();
        let entry = offsets.entry((topic, partition));
        match entry {
            std::collections::btree_map::Entry::Occupied(mut current) => {
                if current.get().record_offset < committed.record_offset {
                    current.insert(committed);
                }
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(committed);
            }
        }
    }

    /// Applies a tombstone at `record_offset`: the entry goes unless a later record set it.
    fn remove(&self, group: &str, topic: &str, partition: u32, record_offset: u64) {
        let mut table = self.table.borrow_mut();
        let Some(offsets) = table.get_mut(group) else {
            return;
        };
        let key = (topic.to_owned(), partition);
        if offsets
            .get(&key)
            .is_some_and(|c| c.record_offset < record_offset)
        {
            offsets.remove(&key);
        }
        if offsets.is_empty() {
            table.remove(group);
        }
    }

    /// Deletes, durably, every committed offset of `topics` (deleted topics): one batch of
    /// tombstones, then the table entries. Returns how many offsets were deleted.
    pub async fn forget_topics(
        self: &Rc<Self>,
        topics: &std::collections::HashSet<String>,
    ) -> Result<usize, StorageError> {
        let doomed: Vec<Key> = self
            .table
            .borrow()
            .iter()
            .flat_map(|(group, offsets)| {
                offsets
                    .keys()
                    .filter(|(topic, _)| topics.contains(topic))
                    .map(move |(topic, partition)| (group.clone(), topic.clone(), *partition))
            })
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        self.detached(move |store| async move {
            let batch = tombstone_batch(&doomed, storage::now_ms())?;
            let base_offset = store.append_durably(&batch, doomed.len()).await?;
            for (delta, (group, topic, partition)) in doomed.iter().enumerate() {
                store.remove(group, topic, *partition, base_offset + delta as u64);
            }
            Ok(doomed.len())
        })
        .await
    }

    /// Appends a commit, waits until it is on disk here and on every in-sync replica of the
    /// offsets partition (as a produce with acks=all would), then applies it. The work runs as
    /// its own task: a caller that goes away (its connection closed) cannot cancel a commit
    /// between its append and its application to the table. A commit that is not replicated
    /// within [`COMMIT_REPLICATION_TIMEOUT`] (or whose coordinator stops leading meanwhile) is
    /// refused and not applied here; the client retries it, on the new coordinator if it moved.
    pub async fn commit(self: &Rc<Self>, entries: Vec<CommitEntry>) -> Result<(), WireError> {
        self.detached(move |store| async move {
            let now = storage::now_ms();
            let batch = commit_batch(&entries, now)?;
            let base_offset = store.append_durably(&batch, entries.len()).await?;
            let last_offset = base_offset + entries.len().max(1) as u64 - 1;
            let deadline = std::time::Instant::now() + COMMIT_REPLICATION_TIMEOUT;
            if let Err(error) = store
                .partition
                .wait_acknowledgeable(last_offset, wire::Acks::All, deadline)
                .await
            {
                // The group moves with the offsets partition's leadership: tell the client to
                // find the new coordinator rather than which partition lost its leader.
                let error = match error.code {
                    wire::protocol::ErrorCode::NotLeader
                    | wire::protocol::ErrorCode::FencedLeaderEpoch => WireError::new(
                        wire::protocol::ErrorCode::NotCoordinator,
                        format!("the coordinator moved before the commit was replicated: {error}"),
                    ),
                    _ => error,
                };
                return Ok(Err(error));
            }
            for (delta, entry) in entries.into_iter().enumerate() {
                store.apply(
                    entry.group,
                    entry.topic,
                    entry.partition,
                    Committed {
                        offset: entry.offset,
                        metadata: entry.metadata,
                        commit_timestamp: now,
                        record_offset: base_offset + delta as u64,
                    },
                );
            }
            Ok(Ok(()))
        })
        .await
        .unwrap_or_else(|error| Err(crate::error_code::from_storage(&error)))
    }

    /// Runs `work` as its own task, so that a caller going away cannot cancel it between an
    /// append and its application to the table.
    async fn detached<T: 'static, Fut>(
        self: &Rc<Self>,
        work: impl FnOnce(Rc<Self>) -> Fut,
    ) -> Result<T, StorageError>
    where
        Fut: std::future::Future<Output = Result<T, StorageError>> + 'static,
    {
        let dir = self.partition.log.dir().to_path_buf();
        glommio::spawn_local(work(self.clone()))
            .detach()
            .await
            .unwrap_or(Err(StorageError::Closed { dir }))
    }

    /// Appends `batch` (of `records` records) and waits until it is on disk; returns its base
    /// offset. Meanwhile the batch counts as in flight, so no snapshot claims to cover it. On
    /// failure it stays in flight: no snapshot may claim a record the table lacks (the log is
    /// unusable by then anyway).
    async fn append_durably(
        &self,
        batch: &AlignedVec<16>,
        records: usize,
    ) -> Result<u64, StorageError> {
        let log = &self.partition.log;
        let info = log
            .append(BatchView::validate(batch, wire::limits::BATCH_SIZE_MAX)?)
            .await?;
        self.partition.replica.on_appended(info.last_offset + 1);
        self.in_flight.borrow_mut().insert(info.base_offset);
        log.wait_durable(info.last_offset).await?;
        self.in_flight.borrow_mut().remove(&info.base_offset);
        let since = self.records_since_snapshot.get() + records as u64;
        self.records_since_snapshot.set(since);
        Ok(info.base_offset)
    }

    /// True when enough records were applied since the last snapshot to write a new one.
    pub fn wants_snapshot(&self) -> bool {
        self.records_since_snapshot.get() >= self.snapshot_records && !self.snapshotting.get()
    }

    /// True when records were applied since the last snapshot (a snapshot at shutdown would
    /// save the next start a replay).
    pub fn has_unsnapshotted_records(&self) -> bool {
        self.records_since_snapshot.get() > 0
    }

    /// The committed offsets of `group`.
    pub fn group_offsets(&self, group: &str) -> GroupOffsets {
        self.table.borrow().get(group).cloned().unwrap_or_default()
    }

    /// Calls `visit(group, topic, partition, committed offset)` for every committed offset
    /// here (the metrics endpoint's group lag).
    pub fn for_each_committed(&self, mut visit: impl FnMut(&str, &str, u32, u64)) {
        for (group, offsets) in self.table.borrow().iter() {
            for ((topic, partition), committed) in offsets {
                visit(group, topic, *partition, committed.offset);
            }
        }
    }

    /// Every group with committed offsets here.
    pub fn groups(&self) -> Vec<String> {
        self.table.borrow().keys().cloned().collect()
    }

    /// Writes the table to the snapshot file, then deletes the sealed segments the previous
    /// snapshot covers (so that if the newest is ever unreadable, the previous one and the log
    /// after it still hold the whole table). After a failure the next attempt waits for another
    /// `snapshot_records` commits.
    pub async fn snapshot(&self) -> anyhow::Result<()> {
        if self.snapshotting.replace(true) {
            return Ok(());
        }
        let result = self.write_snapshot().await;
        if result.is_err() {
            self.records_since_snapshot.set(0);
        }
        self.snapshotting.set(false);
        result
    }

    async fn write_snapshot(&self) -> anyhow::Result<()> {
        let log = &self.partition.log;
        // Every record below this offset is applied: nothing older is still in flight.
        let covered = self
            .in_flight
            .borrow()
            .first()
            .copied()
            .unwrap_or_else(|| log.log_end_offset());
        let bytes = self.encode_snapshot(covered);
        let size = bytes.len();
        let dir = log.dir().to_path_buf();
        let target = dir.clone();
        storage::metadata::on_blocking_thread(move || keep_as_previous_snapshot(&target))
            .await
            .with_context(|| format!("keeping the previous snapshot in {}", dir.display()))?;
        let path = snapshot_path(&dir);
        storage::metadata::atomic_write(&path, bytes)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        let previous = self.snapshot_covered.replace(covered);
        self.records_since_snapshot.set(0);
        let report = log.delete_segments_before(previous).await?;
        tracing::info!(
            dir = %dir.display(),
            covered,
            bytes = size,
            segments_deleted = report.segments_deleted,
            "offsets snapshot written"
        );
        Ok(())
    }

    fn encode_snapshot(&self, covered: u64) -> Vec<u8> {
        let table = self.table.borrow();
        let count: usize = table.values().map(BTreeMap::len).sum();
        let mut body = Vec::with_capacity(16 + count * 64);
        body.extend_from_slice(SNAPSHOT_MAGIC);
        body.extend_from_slice(&covered.to_le_bytes());
        body.extend_from_slice(&(count as u32).to_le_bytes());
        for (group, offsets) in table.iter() {
            for ((topic, partition), committed) in offsets {
                body.extend_from_slice(&encode_key(group, topic, *partition));
                body.extend_from_slice(&encode_value(
                    committed.offset,
                    &committed.metadata,
                    committed.commit_timestamp,
                ));
                body.extend_from_slice(&committed.record_offset.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Keys and values decode back to what was encoded; versions are checked.
    #[test]
    fn record_codec_round_trip() {
        let key = encode_key("g", "orders", 7);
        assert_eq!(
            decode_key(&mut Reader::new(&key, 0)).unwrap(),
            ("g".to_owned(), "orders".to_owned(), 7)
        );
        let value = encode_value(42, "note", 1234);
        assert_eq!(
            decode_value(&mut Reader::new(&value, 0)).unwrap(),
            (42, "note".to_owned(), 1234)
        );
        let mut bad = key.clone();
        bad[0] = 9;
        assert!(decode_key(&mut Reader::new(&bad, 0)).is_err());
        for cut in 0..value.len() {
            assert!(decode_value(&mut Reader::new(&value[..cut], 0)).is_err());
        }
    }

    /// A commit batch holds one record per entry with key and value in place.
    #[test]
    fn commit_batch_layout() {
        let entries: Vec<CommitEntry> = (0..3)
            .map(|p| CommitEntry {
                group: "g".into(),
                topic: "t".into(),
                partition: p,
                offset: u64::from(p) * 10,
                metadata: String::new(),
            })
            .collect();
        let batch = commit_batch(&entries, 99).unwrap();
        let view = BatchView::validate_deep(&batch, wire::limits::BATCH_SIZE_MAX).unwrap();
        let records = view.records().unwrap();
        assert_eq!(records.len(), 3);
        let key = decode_key(&mut Reader::new(records[2].key_bytes().unwrap(), 0)).unwrap();
        assert_eq!(key.2, 2);
        let value = decode_value(&mut Reader::new(records[2].value_bytes(), 0)).unwrap();
        assert_eq!((value.0, value.2), (20, 99));
    }
}
