//! Sluice replication core: the state machines of Kafka's ISR replication with leader epochs,
//! free of I/O.
//!
//! Everything here is "sans-IO", as quinn-proto and TigerBeetle write protocol logic: the broker
//! feeds in events (an append, a fetch request, a fetch answer, a controller decision, the time
//! as a `now_ms` number) and carries out the actions that come back (answer a produce, read the
//! log up to an offset, append bytes, truncate, send a proposal to the controller). No sockets,
//! no files, no clock, no async, no runtime — so every rule can be unit- and property-tested on
//! its own (`tests/cluster_model.rs` drives three replicas through random histories).
//!
//! # The model
//!
//! ```text
//!                 ┌──────────── controller (later: an openraft quorum) ────────────┐
//!                 │ elects leaders from the ISR, bumps the leader epoch,           │
//!                 │ commits ISR changes                                            │
//!                 └────▲──────────────────────────────┬────────────────────────────┘
//!   IsrShrink/IsrExpand│ (AlterPartition,             │ LeaderElection, on_isr_confirmed,
//!   proposals          │  KIP-497)                    │ on_leader_change (metadata)
//!                 ┌────┴────────────────┐             ▼
//!   producer ────▶│ LeaderState         │◀── fetch (fetch_offset, ─────┐
//!   check_produce,│ ISR, each follower's│    last_fetched_epoch,       │
//!   on_append,    │ log end, high       │    current_leader_epoch)     │
//!   acks_all_     │ watermark (HW)      │                    ┌─────────┴─────────┐
//!   status        │                     │── Records {.., HW} │ FollowerState     │
//!   consumer ────▶│ check_consumer_fetch│   or Diverging ───▶│ next_fetch,       │
//!   (reads < HW)  │ on_tick (time)      │   {epoch, end}     │ on_fetched_records│
//!                 └─────────────────────┘                    │ on_diverging      │
//!                                                            └───────────────────┘
//!   every replica's log has a LeaderEpochCache (epoch → start offset) beside it
//! ```
//!
//! - A partition has replicas on several brokers; one leads ([`leader::LeaderState`]), the
//!   others follow ([`follower::FollowerState`]) by pulling: a follower fetches from the offset
//!   where its log ends, so the leader learns each follower's log end from its fetches.
//! - The high watermark (HW) is the smallest log end over the in-sync replicas (ISR, leader
//!   included). Consumers read below it; an `acks=all` produce is answered once it covers the
//!   batch; `min.insync.replicas` refuses `acks=all` writes while the ISR is too small.
//! - A follower not caught up for `replica_lag_time_max_ms` is proposed out of the ISR; one that
//!   reaches the HW again is proposed back in. The controller commits ISR changes; the leader
//!   applies them only when confirmed.
//! - Every log keeps a [`epochs::LeaderEpochCache`]. A follower's fetch carries the epoch of
//!   its last record; if the leader's log does not have that epoch up to that offset, it
//!   answers with where the epoch ends and the follower truncates its divergent, uncommitted
//!   tail (KIP-101, KIP-279), never a committed record. Every request carries the leader epoch
//!   the sender believes current, and a stale one is told so (`FencedLeaderEpoch`, KIP-320).
//!
//! The HW never decreases while one replica leads. After a leader change the new leader starts
//! from the HW it learned as a follower, which may be lower than the old leader's (as in
//! Kafka); it rises again once every ISR follower has fetched from it. Committed records are
//! never lost across the change: elections pick from the ISR, every ISR member holds every
//! record below any HW, and truncation never goes below a HW.
//!
//! # One round trip
//!
//! ```
//! use replication::*;
//!
//! let (leader_id, follower_id) = (ReplicaId(1), ReplicaId(2));
//! let config = LeaderConfig { min_insync_replicas: 2, replica_lag_time_max_ms: 30_000 };
//! let (mut leader_epochs, mut follower_epochs) = (LeaderEpochCache::new(), LeaderEpochCache::new());
//! let mut leader = LeaderState::elected(
//!     LeaderElection {
//!         local: leader_id, leader_epoch: 1, replicas: vec![leader_id, follower_id],
//!         isr: vec![leader_id, follower_id], isr_version: 1, log_start_offset: 0,
//!         log_end_offset: 0, high_watermark: 0, config, now_ms: 0,
//!     },
//!     &mut leader_epochs,
//! )?;
//! let mut follower = FollowerState::new(follower_id, leader_id, 1, 0, 0);
//!
//! // A producer's acks=all batch of 10 records: allowed (2 in sync), appended, not yet committed.
//! leader.check_produce(Acks::All)?;
//! leader.on_append(10);
//! assert_eq!(leader.acks_all_status(10), Ok(false));
//!
//! // The follower fetches from 0 and appends the batch it gets, as received.
//! let request = follower.next_fetch(&follower_epochs);
//! let FollowerFetchReply::Records { high_watermark, .. } =
//!     leader.on_follower_fetch(follower_id, request, &leader_epochs, 5)?
//! else { unreachable!("a valid position") };
//! let batch = FetchedBatch { base_offset: 0, end_offset: 10, leader_epoch: 1 };
//! let append = follower.on_fetched_records(&request, [batch], high_watermark, &mut follower_epochs)?;
//! assert_eq!((append.base_offset, append.end_offset), (0, 10));
//!
//! // Its next fetch, from 10, tells the leader it has everything: the batch is committed.
//! let request = follower.next_fetch(&follower_epochs);
//! leader.on_follower_fetch(follower_id, request, &leader_epochs, 6)?;
//! assert_eq!(leader.poll_action(), Some(LeaderAction::HighWatermarkAdvanced(10)));
//! assert_eq!(leader.acks_all_status(10), Ok(true));
//! # Ok::<(), ReplicationError>(())
//! ```
//!
//! # What the broker does with each output
//!
//! | output | broker's job |
//! |---|---|
//! | [`LeaderAction::HighWatermarkAdvanced`] | answer `acks=all` produces per [`LeaderState::acks_all_status`], wake waiting consumer fetches, checkpoint the HW lazily |
//! | [`LeaderAction::IsrShrink`] / [`LeaderAction::IsrExpand`] | send the proposal to the controller; feed back [`LeaderState::on_isr_confirmed`] or [`LeaderState::on_isr_change_failed`] |
//! | [`FollowerFetchReply::Records`] | read the log from the fetch offset up to `log_end_offset` within the fetch's byte budget; send it with the HW |
//! | [`FollowerFetchReply::Diverging`] | send the divergence answer, no records |
//! | [`follower::AppendRecords`] from [`FollowerState::on_fetched_records`] | append the answer's bytes as received at `base_offset`; checkpoint the epoch cache if it changed |
//! | [`follower::Truncation`] | truncate the local log to `truncate_to`; checkpoint the epoch cache |
//! | a changed [`LeaderEpochCache`] | checkpoint it ([`LeaderEpochCache::encode_checkpoint`], atomic write) |
//! | a [`ReplicationError`] | map it to the wire error code of the request that caused it |
//!
//! # Not here yet
//!
//! - The transport: fetch sessions on one connection per (follower shard, leader shard) pair,
//!   many partitions multiplexed on it; the broker's partition that owns these states and does
//!   the log I/O; the leader epoch stamped in the record batch header (the follower reads
//!   [`follower::FetchedBatch::leader_epoch`] from it).
//! - The controller (an openraft quorum holding the cluster metadata, electing leaders from the
//!   ISR, committing ISR proposals) and a multi-broker cluster to run it all.

pub mod epochs;
pub mod error;
pub mod follower;
pub mod leader;

pub use epochs::{EpochEntry, FetchEpochCheck, LeaderEpochCache};
pub use error::ReplicationError;
pub use follower::{AppendRecords, FetchedBatch, FollowerState, Truncation};
pub use leader::{
    Acks, FollowerFetch, FollowerFetchReply, LeaderAction, LeaderConfig, LeaderElection,
    LeaderState,
};

/// The id of a replica: the id of the broker that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u32);

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)
    }
}
