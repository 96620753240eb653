//! A partition replica as its owner shard holds it: the log plus the topic settings that
//! decide when data is visible and acknowledged. Lives on exactly one shard.

use std::cell::RefCell;

use storage::Log;
use wire::protocol::{DurabilitySetting, TopicConfig};

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
}

impl Partition {
    /// Opens a partition: its log, then the producer state rebuilt from the log's batch headers.
    pub async fn open(
        topic: &str,
        partition: u32,
        config: &TopicConfig,
        dir: &std::path::Path,
    ) -> Result<Partition, storage::StorageError> {
        let log = Log::open(dir, crate::config::log_config(config)).await?;
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
        })
    }

    /// True when acknowledgements and visibility wait for fsync.
    pub fn syncs_before_ack(&self) -> bool {
        self.config.durability.kind == DurabilitySetting::ALWAYS
    }

    /// Offsets below this may be read by consumers: what an acknowledged producer could have
    /// been told. With `always`, that is what is on disk; otherwise the log end (replication
    /// will make it the ISR's high watermark).
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
}
