//! A partition replica as its owner shard holds it: the log plus the topic settings that
//! decide when data is visible and acknowledged. Lives on exactly one shard.

use storage::Log;
use wire::protocol::{DurabilitySetting, TopicConfig};

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
}

impl Partition {
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
