//! Broker liveness on the controller leader: a pure state machine of heartbeats and time.
//!
//! Brokers send heartbeats to the controller leader (an RPC, not a log entry: heartbeats are
//! frequent and carry no state worth replicating). The leader's driver
//! ([`crate::raft::node`]) feeds [`Liveness::heartbeat`] and, every tick,
//! [`Liveness::tick`], and proposes the [`LivenessAction`]s that come back as
//! `FenceBroker` / `UnfenceBroker` commands. No clock, no I/O: time comes in as `now_ms`.
//!
//! A new leader knows no heartbeat yet; [`Liveness::reset`] gives every registered broker half
//! a session from the moment it took over: a live broker heartbeats every quarter session and
//! finds the new leader within one retry, so it is heard from in time, while a broker that died
//! with the old leader (often the same process) is fenced half a session after the takeover
//! instead of a whole one, which keeps a controller failover within the failover budget.

use std::collections::BTreeMap;

use crate::metadata::{BrokerId, MetadataImage};

/// What the leader should propose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    /// The broker missed its session: propose `FenceBroker`.
    Fence(BrokerId),
    /// A fenced broker heartbeats again: propose `UnfenceBroker`.
    Unfence(BrokerId),
}

/// Last heartbeat per broker, and the session timeout.
#[derive(Debug, Clone)]
pub struct Liveness {
    session_timeout_ms: u64,
    last_heartbeat_ms: BTreeMap<BrokerId, u64>,
    /// Fenced brokers this machine has seen fenced: only a heartbeat after that unfences one,
    /// so a broker fenced on its own request (a controlled shutdown, which stops its
    /// heartbeats first) is not unfenced by a heartbeat that preceded the fencing.
    seen_fenced: std::collections::BTreeSet<BrokerId>,
}

impl Liveness {
    /// Fence a broker after `session_timeout_ms` without a heartbeat.
    pub fn new(session_timeout_ms: u64) -> Self {
        Liveness {
            session_timeout_ms,
            last_heartbeat_ms: BTreeMap::new(),
            seen_fenced: Default::default(),
        }
    }

    /// Forget every heartbeat and count every live broker as heard from half a session before
    /// `now_ms` (called when this node becomes leader; see the module docs). Fenced brokers
    /// stay fenced until they heartbeat.
    pub fn reset(&mut self, now_ms: u64, image: &MetadataImage) {
        let heard = now_ms.saturating_sub(self.session_timeout_ms / 2);
        self.last_heartbeat_ms = image
            .brokers
            .values()
            .filter(|broker| !broker.fenced)
            .map(|broker| (broker.id, heard))
            .collect();
        self.seen_fenced.clear();
    }

    /// A heartbeat from `id` at `now_ms`.
    pub fn heartbeat(&mut self, id: BrokerId, now_ms: u64) {
        let last = self.last_heartbeat_ms.entry(id).or_insert(now_ms);
        *last = (*last).max(now_ms);
    }

    /// Compare every registered broker's last heartbeat with `now_ms`: fence the silent live
    /// ones, unfence the fenced ones heard from within the session.
    pub fn tick(&mut self, now_ms: u64, image: &MetadataImage) -> Vec<LivenessAction> {
        let mut actions = Vec::new();
        self.last_heartbeat_ms
            .retain(|id, _| image.brokers.contains_key(id));
        for (id, broker) in &image.brokers {
            if broker.fenced {
                if self.seen_fenced.insert(*id) {
                    // Fenced since the last tick: heartbeats from before do not count.
                    self.last_heartbeat_ms.remove(id);
                    continue;
                }
                let heard = self.last_heartbeat_ms.get(id);
                if heard.is_some_and(|last| now_ms.saturating_sub(*last) <= self.session_timeout_ms)
                {
                    actions.push(LivenessAction::Unfence(*id));
                }
                continue;
            }
            self.seen_fenced.remove(id);
            // A broker registered since the last reset gets its session from now.
            let last = *self.last_heartbeat_ms.entry(*id).or_insert(now_ms);
            if now_ms.saturating_sub(last) > self.session_timeout_ms {
                actions.push(LivenessAction::Fence(*id));
            }
        }
        actions
    }

    /// Forget a broker's heartbeats once it is fenced, so only a heartbeat sent after the
    /// fencing unfences it.
    pub fn forget(&mut self, id: BrokerId) {
        self.last_heartbeat_ms.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::metadata::Command;

    fn image_with(ids: &[u32]) -> MetadataImage {
        let mut image = MetadataImage::new();
        for id in ids {
            image
                .apply(&Command::RegisterBroker {
                    id: BrokerId(*id),
                    endpoints: vec!["127.0.0.1:1".into()],
                    rack: None,
                    incarnation: 1,
                })
                .expect("register");
        }
        image
    }

    #[test]
    fn silent_broker_is_fenced_after_the_session_and_unfenced_when_back() {
        let mut image = image_with(&[1, 2]);
        let mut liveness = Liveness::new(1_000);
        // A new leader counts both as heard half a session ago (9_500).
        liveness.reset(10_000, &image);
        liveness.heartbeat(BrokerId(1), 10_400);
        assert_eq!(liveness.tick(10_400, &image), vec![]);
        liveness.heartbeat(BrokerId(1), 10_600);
        assert_eq!(
            liveness.tick(10_600, &image),
            vec![LivenessAction::Fence(BrokerId(2))],
            "a broker silent since before the takeover is fenced half a session after it"
        );
        image
            .apply(&Command::FenceBroker { id: BrokerId(2) })
            .expect("fence");
        liveness.forget(BrokerId(2));
        assert_eq!(liveness.tick(10_700, &image), vec![]);
        liveness.heartbeat(BrokerId(2), 10_800);
        assert_eq!(
            liveness.tick(10_800, &image),
            vec![LivenessAction::Unfence(BrokerId(2))]
        );
    }

    /// A broker fenced on its own request (controlled shutdown) while its last heartbeat is
    /// recent stays fenced: only a heartbeat after the fencing was seen unfences it.
    #[test]
    fn a_heartbeat_from_before_the_fencing_does_not_unfence() {
        let mut image = image_with(&[1]);
        let mut liveness = Liveness::new(1_000);
        liveness.reset(10_000, &image);
        liveness.heartbeat(BrokerId(1), 10_100);
        assert_eq!(liveness.tick(10_100, &image), vec![]);
        image
            .apply(&Command::FenceBroker { id: BrokerId(1) })
            .expect("fence");
        assert_eq!(liveness.tick(10_200, &image), vec![]);
        assert_eq!(
            liveness.tick(10_300, &image),
            vec![],
            "old heartbeat forgotten"
        );
        liveness.heartbeat(BrokerId(1), 10_400);
        assert_eq!(
            liveness.tick(10_400, &image),
            vec![LivenessAction::Unfence(BrokerId(1))]
        );
    }

    proptest! {
        /// A broker is fenced exactly when it has been silent for longer than the session.
        #[test]
        fn fences_exactly_the_silent(
            heartbeats in proptest::collection::vec((1u32..5, 0u64..5_000), 0..40),
            now_ms in 0u64..10_000,
        ) {
            let image = image_with(&[1, 2, 3, 4]);
            let mut liveness = Liveness::new(2_000);
            liveness.reset(0, &image);
            let mut last = BTreeMap::new();
            for (id, at) in &heartbeats {
                liveness.heartbeat(BrokerId(*id), *at);
                let entry = last.entry(*id).or_insert(0u64);
                *entry = (*entry).max(*at);
            }
            let fenced: Vec<LivenessAction> = liveness.tick(now_ms, &image);
            for id in 1..5u32 {
                let heard = last.get(&id).copied().unwrap_or(0);
                let expect = now_ms.saturating_sub(heard) > 2_000;
                prop_assert_eq!(fenced.contains(&LivenessAction::Fence(BrokerId(id))), expect);
            }
        }
    }
}
