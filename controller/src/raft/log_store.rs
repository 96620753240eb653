//! The controller's Raft log and vote on disk (openraft's `RaftLogStorage`).
//!
//! ```text
//!   <data_dir>/vote                       the current vote (term, voted-for, committed flag)
//!   <data_dir>/purged                     the last purged log id (entries up to it are gone)
//!   <data_dir>/log/<first index:020>.entries   one file per append: the entries of that call
//! ```
//!
//! Every file is written whole through [`files::write_checked`] before openraft is told
//! the append is durable, so an acknowledged entry survives a crash. `truncate` deletes the
//! files after the cut (highest first, so a crash leaves a prefix) and rewrites the one the cut
//! falls in; `purge` records the purge point first, then deletes the files wholly below it.
//! On open, the files are read in index order; entries up to the purge point are dropped and
//! the log must be contiguous after it (a gap is a corrupt directory: an error, not a guess).
//!
//! The entries are also kept in memory (the controller log is small: openraft purges it
//! behind every snapshot), shared with the log readers openraft's replication tasks use. The
//! lock is the controller thread's only one and never on a data path.
//! Called by openraft on the controller thread ([`super::node`]).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, Vote};
use tracing::warn;

use super::files;
use super::{storage_error, storage_read_error, Entry, LogId, StorageError, TypeConfig};
use crate::codec;
use crate::error::ControllerError;

const LOG_DIR: &str = "log";
const ENTRIES_SUFFIX: &str = ".entries";

#[derive(Debug, Default)]
struct LogInner {
    /// Entries after the purge point, by index.
    entries: BTreeMap<u64, Entry>,
    /// Log files: first index in the name → last index in the file.
    files: BTreeMap<u64, u64>,
    last_purged: Option<LogId>,
    vote: Option<Vote<u64>>,
}

/// The Raft log and vote of one controller node; clones share the same state.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: Arc<PathBuf>,
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Open (or create) the log under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, ControllerError> {
        let log_dir = data_dir.join(LOG_DIR);
        files::create_dir_durably(&log_dir)?;
        let vote = match files::read_checked(&data_dir.join("vote"))? {
            Some(bytes) => Some(codec::decode(&bytes, "raft vote")?),
            None => None,
        };
        let last_purged: Option<LogId> = match files::read_checked(&data_dir.join("purged"))? {
            Some(bytes) => codec::decode(&bytes, "raft purge point")?,
            None => None,
        };
        let mut names = Vec::new();
        let listing = std::fs::read_dir(&log_dir)
            .map_err(|error| ControllerError::storage(&log_dir, &error))?;
        for item in listing {
            let item = item.map_err(|error| ControllerError::storage(&log_dir, &error))?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(files::TEMP_SUFFIX) {
                // An atomic write that did not finish: its target still holds the old content.
                files::remove_durably(&item.path())?;
                continue;
            }
            match name.strip_suffix(ENTRIES_SUFFIX).map(str::parse::<u64>) {
                Some(Ok(first)) => names.push(first),
                _ => {
                    warn!(file = %item.path().display(), "ignoring a stray file in the controller log")
                }
            }
        }
        names.sort_unstable();
        let purged_index = last_purged.map(|id| id.index);
        let mut inner = LogInner {
            vote,
            last_purged,
            ..LogInner::default()
        };
        for first in names {
            let path = log_dir.join(entries_file_name(first));
            let Some(bytes) = files::read_checked(&path)? else {
                continue;
            };
            let entries: Vec<Entry> = codec::decode(&bytes, "raft log entries")?;
            let last = entries.last().map(|e| e.log_id.index).unwrap_or(first);
            inner.files.insert(first, last);
            for entry in entries {
                if purged_index.is_none_or(|purged| entry.log_id.index > purged) {
                    inner.entries.insert(entry.log_id.index, entry);
                }
            }
        }
        let mut expected = purged_index.map(|i| i + 1);
        for index in inner.entries.keys() {
            if let Some(expected) = expected {
                if *index != expected {
                    return Err(ControllerError::Storage {
                        path: log_dir.display().to_string(),
                        message: format!("log gap: entry {index} follows {}", expected - 1),
                    });
                }
            }
            expected = Some(index + 1);
        }
        Ok(LogStore {
            dir: Arc::new(data_dir.to_path_buf()),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// True when nothing was ever stored: no vote, no entry, no purge (bootstrap allowed).
    pub fn is_pristine(&self) -> Result<bool, ControllerError> {
        let inner = self.lock()?;
        Ok(inner.vote.is_none() && inner.entries.is_empty() && inner.last_purged.is_none())
    }

    fn lock(&self) -> Result<MutexGuard<'_, LogInner>, ControllerError> {
        self.inner.lock().map_err(|_| poisoned())
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join(LOG_DIR)
    }
}

fn poisoned() -> ControllerError {
    ControllerError::Storage {
        path: "controller log".into(),
        message: "a thread panicked while holding the log".into(),
    }
}

fn entries_file_name(first: u64) -> String {
    format!("{first:020}{ENTRIES_SUFFIX}")
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.lock().map_err(storage_read_error)?;
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(inner
            .entries
            .range((start, end))
            .map(|(_, entry)| entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock().map_err(storage_read_error)?;
        let last_log_id = inner
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        let bytes = codec::encode(vote, "raft vote").map_err(storage_error)?;
        files::write_checked(&self.dir.join("vote"), &bytes).map_err(storage_error)?;
        self.lock().map_err(storage_read_error)?.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        Ok(self.lock().map_err(storage_read_error)?.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let (first, last) = (first.log_id.index, last.log_id.index);
        let written = codec::encode(&entries, "raft log entries").and_then(|bytes| {
            files::write_checked(&self.log_dir().join(entries_file_name(first)), &bytes)
        });
        if let Err(error) = written {
            callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
            return Err(storage_error(error));
        }
        {
            let mut inner = self.lock().map_err(storage_read_error)?;
            inner.files.insert(first, last);
            for entry in entries {
                inner.entries.insert(entry.log_id.index, entry);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let cut = log_id.index;
        let mut inner = self.lock().map_err(storage_read_error)?;
        let affected: Vec<(u64, u64)> = inner
            .files
            .iter()
            .filter(|(_, last)| **last >= cut)
            .map(|(first, last)| (*first, *last))
            .collect();
        for (first, _) in affected.iter().rev() {
            let path = self.log_dir().join(entries_file_name(*first));
            if *first >= cut {
                files::remove_durably(&path).map_err(storage_error)?;
                inner.files.remove(first);
            } else {
                let kept: Vec<Entry> = inner
                    .entries
                    .range(*first..cut)
                    .map(|(_, entry)| entry.clone())
                    .collect();
                let bytes = codec::encode(&kept, "raft log entries").map_err(storage_error)?;
                files::write_checked(&path, &bytes).map_err(storage_error)?;
                inner.files.insert(*first, cut - 1);
            }
        }
        inner.entries.retain(|index, _| *index < cut);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let bytes = codec::encode(&Some(log_id), "raft purge point").map_err(storage_error)?;
        files::write_checked(&self.dir.join("purged"), &bytes).map_err(storage_error)?;
        let mut inner = self.lock().map_err(storage_read_error)?;
        inner.last_purged = Some(log_id);
        inner.entries.retain(|index, _| *index > log_id.index);
        let gone: Vec<u64> = inner
            .files
            .iter()
            .filter(|(_, last)| **last <= log_id.index)
            .map(|(first, _)| *first)
            .collect();
        for first in gone {
            files::remove_durably(&self.log_dir().join(entries_file_name(first)))
                .map_err(storage_error)?;
            inner.files.remove(&first);
        }
        Ok(())
    }
}
