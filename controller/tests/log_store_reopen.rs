//! The controller's Raft log on disk survives a reopen exactly: appends, a truncation that
//! cuts a file in two, and a purge behind a snapshot point all read back the same after the
//! store is dropped and opened again from its directory; an unfinished atomic write is
//! discarded; a damaged file is an error, not a shorter log.

use std::path::PathBuf;

use anyhow::{Context, Result};
use controller::metadata::{BrokerId, Command};
use controller::raft::log_store::LogStore;
use controller::raft::{Entry, LogId};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, Vote};

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(Command::FenceBroker {
            id: BrokerId(index as u32),
        }),
    }
}

fn dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-data/controller/log-store")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[test]
fn log_reads_back_the_same_after_reopen() -> Result<()> {
    let dir = dir("reopen");
    runtime()?.block_on(async {
        let mut log = LogStore::open(&dir)?;
        assert!(log.is_pristine()?);
        log.save_vote(&Vote::new(2, 1)).await?;
        log.blocking_append((1..=4).map(|i| entry(1, i))).await?;
        log.blocking_append((5..=9).map(|i| entry(1, i))).await?;
        log.blocking_append((10..=12).map(|i| entry(1, i))).await?;
        // A new leader overwrites from 7 on: the second file is cut, the third removed.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 7))
            .await?;
        log.blocking_append((7..=8).map(|i| entry(2, i))).await?;
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await?;
        let state_before = log.get_log_state().await?;
        let entries_before = log.try_get_log_entries(0..100).await?;
        drop(log);

        let mut reopened = LogStore::open(&dir)?;
        assert!(!reopened.is_pristine()?);
        assert_eq!(reopened.read_vote().await?, Some(Vote::new(2, 1)));
        let state_after = reopened.get_log_state().await?;
        assert_eq!(
            state_after.last_purged_log_id,
            state_before.last_purged_log_id
        );
        assert_eq!(state_after.last_log_id, state_before.last_log_id);
        let entries_after = reopened.try_get_log_entries(0..100).await?;
        assert_eq!(entries_after, entries_before);
        let indexes: Vec<(u64, u64)> = entries_after
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect();
        assert_eq!(indexes, vec![(1, 4), (1, 5), (1, 6), (2, 7), (2, 8)]);
        anyhow::Ok(())
    })
}

#[test]
fn unfinished_write_is_dropped_and_damage_is_an_error() -> Result<()> {
    let dir = dir("damage");
    runtime()?.block_on(async {
        let mut log = LogStore::open(&dir)?;
        log.blocking_append((1..=3).map(|i| entry(1, i))).await?;
        drop(log);
        // A crash between writing the temp file and renaming it.
        let temp = dir.join("log/00000000000000000004.entries.tmp");
        std::fs::write(&temp, b"half a write")?;
        let mut log = LogStore::open(&dir)?;
        assert!(
            !temp.exists(),
            "the temp file of an unfinished write is removed"
        );
        assert_eq!(log.try_get_log_entries(0..100).await?.len(), 3);
        drop(log);

        let file = std::fs::read_dir(dir.join("log"))?
            .next()
            .context("one log file")??
            .path();
        let mut bytes = std::fs::read(&file)?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&file, &bytes)?;
        let reopened = LogStore::open(&dir);
        assert!(
            matches!(reopened, Err(controller::ControllerError::Storage { .. })),
            "{reopened:?}"
        );
        anyhow::Ok(())
    })
}
