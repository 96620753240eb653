//! This broker's controller session as the broker itself sees it: when did a heartbeat last
//! succeed. The membership thread writes it, the shards read it (one atomic load and one
//! clock read per produce request).
//!
//! Why: a leader cut off from the controller quorum is fenced there after the session timeout
//! and another replica leads, but nothing tells the cut-off broker. Without this it would keep
//! accepting `acks=1` writes that the new leader never sees (lost when it rejoins and
//! truncates) and let `acks=all` writes time out. A broker whose last successful heartbeat is
//! older than two thirds of the session stops taking writes for replicated partitions
//! (`NotLeader`): earlier than the controller fences it (a heartbeat's answer comes after the
//! controller counted it), so the two leaderships never overlap, at the price of refusing
//! writes for a moment when heartbeats are merely slow.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// See the module docs.
#[derive(Debug)]
pub struct SessionWatch {
    started: Instant,
    /// Milliseconds after `started` of the last successful heartbeat (or registration).
    last_ok_ms: AtomicU64,
    /// Silence after which the session counts as lost here.
    lost_after_ms: u64,
}

impl SessionWatch {
    /// A session that is fresh now and is lost after two thirds of `session_timeout` without
    /// a successful heartbeat.
    pub fn new(session_timeout: Duration) -> SessionWatch {
        SessionWatch {
            started: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            lost_after_ms: (session_timeout.as_millis() as u64).saturating_mul(2) / 3,
        }
    }

    /// A heartbeat (or a registration) was answered by the controller leader.
    pub fn heartbeat_succeeded(&self) {
        self.heartbeat_at(self.elapsed_ms());
    }

    /// True when no heartbeat succeeded for longer than the limit: this broker may have been
    /// fenced, and must not act as a partition leader.
    pub fn is_lost(&self) -> bool {
        self.lost_at(self.elapsed_ms())
    }

    fn heartbeat_at(&self, elapsed_ms: u64) {
        self.last_ok_ms.fetch_max(elapsed_ms, Ordering::Relaxed);
    }

    fn lost_at(&self, elapsed_ms: u64) -> bool {
        elapsed_ms.saturating_sub(self.last_ok_ms.load(Ordering::Relaxed)) > self.lost_after_ms
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_after_two_thirds_of_the_session_without_a_heartbeat() {
        let watch = SessionWatch::new(Duration::from_millis(3_000));
        assert!(!watch.lost_at(2_000), "fresh for 2 s after the start");
        assert!(watch.lost_at(2_001));
        watch.heartbeat_at(2_500);
        assert!(!watch.lost_at(4_500), "a heartbeat renews it");
        watch.heartbeat_at(1_000);
        assert!(
            watch.lost_at(4_501),
            "an older answer arriving late does not"
        );
    }
}
