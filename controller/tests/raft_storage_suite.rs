//! openraft's own conformance suite run against the controller's on-disk log store and state
//! machine (`openraft::testing::Suite`): vote, append, truncate, purge, log state, membership
//! and snapshot behaviour as openraft requires them. Each case gets a fresh directory under
//! `target/test-data/controller/storage-suite/`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use controller::metadata::MetadataImage;
use controller::raft::log_store::LogStore;
use controller::raft::state_machine::StateMachineStore;
use controller::raft::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct DiskStores {
    root: PathBuf,
    next_case: AtomicU64,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for DiskStores {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let case = self.next_case.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("case-{case}"));
        let _ = std::fs::remove_dir_all(&dir);
        let to_storage = |error: controller::ControllerError| -> StorageError {
            openraft::StorageIOError::write(&error).into()
        };
        let log = LogStore::open(&dir).map_err(to_storage)?;
        let (publisher, _) = tokio::sync::watch::channel(Arc::new(MetadataImage::new()));
        let state_machine = StateMachineStore::open(&dir, publisher).map_err(to_storage)?;
        Ok(((), log, state_machine))
    }
}

#[test]
fn openraft_storage_suite() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-data/controller/storage-suite");
    let _ = std::fs::remove_dir_all(&root);
    Suite::test_all(DiskStores {
        root,
        next_case: AtomicU64::new(0),
    })?;
    Ok(())
}
