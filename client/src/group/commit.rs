//! Committed offsets: OffsetCommit and OffsetFetch to the group's coordinator, and the
//! bookkeeping that decides what an automatic commit has to send.
//!
//! ```text
//!  Consumer::commit_* / auto-commit / revoke / close ──▶ Committer::commit
//!        ──▶ OffsetCommit { generation, member id, instance id, offsets }   (coordinator)
//!        ◀── per-partition errors; top-level IllegalGeneration / UnknownMemberId /
//!            RebalanceInProgress (wait for the rebalance to finish, then once more)
//!  newly assigned partitions ──▶ fetch_committed ──▶ OffsetFetch ──▶ offset, or none (-1)
//! ```
//!
//! A commit carries the member's generation, so a member that missed a rebalance cannot
//! overwrite the offsets of a partition's new owner (the broker answers IllegalGeneration).
//! Manual-assignment consumers commit with generation -1 and no member id, which the broker
//! accepts only while the group has no members.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;
use wire::protocol::{
    ApiKey, ErrorCode, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitResponse,
    OffsetCommitTopic, OffsetFetchRequest, OffsetFetchResponse, OffsetFetchTopic,
};

use super::membership::{AppState, Directive};
use crate::cluster::{Cluster, TopicPartition};
use crate::connection::decode_body;
use crate::error::ClientError;

/// Who commits: the fencing fields of OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Generation, or -1 outside a generation (manual assignment, not joined yet).
    pub generation: i32,
    /// Member id, empty with generation -1.
    pub member_id: String,
    /// Static instance id.
    pub instance_id: Option<String>,
}

/// Groups per-partition items by topic, topics in first-seen order (the shape of the
/// OffsetCommit and OffsetFetch requests).
fn by_topic<'a, T>(items: impl Iterator<Item = (&'a TopicPartition, T)>) -> Vec<(String, Vec<T>)> {
    let mut topics: Vec<(String, Vec<T>)> = Vec::new();
    for (tp, item) in items {
        match topics.iter_mut().find(|(topic, _)| *topic == tp.topic) {
            Some((_, items)) => items.push(item),
            None => topics.push((tp.topic.clone(), vec![item])),
        }
    }
    topics
}

/// The OffsetCommit request committing `offsets` (next offsets to consume) as `identity`.
pub(crate) fn commit_request(
    group_id: &str,
    identity: &Identity,
    offsets: &[(TopicPartition, u64)],
) -> OffsetCommitRequest {
    let per_partition = offsets.iter().map(|(tp, offset)| {
        let partition = OffsetCommitPartition {
            partition: tp.partition,
            offset: *offset,
            metadata: String::new(),
        };
        (tp, partition)
    });
    let topics = by_topic(per_partition)
        .into_iter()
        .map(|(topic, partitions)| OffsetCommitTopic { topic, partitions })
        .collect();
    OffsetCommitRequest {
        group_id: group_id.to_owned(),
        generation: identity.generation,
        member_id: identity.member_id.clone(),
        group_instance_id: identity.instance_id.clone(),
        topics,
    }
}

/// The outcome of a commit answer: the first per-partition error, if any.
pub(crate) fn commit_outcome(response: &OffsetCommitResponse) -> Result<(), ClientError> {
    let failed = response
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(move |partition| (topic, partition))
        })
        .find(|(_, partition)| !partition.error.is_ok());
    match failed {
        None => Ok(()),
        Some((topic, partition)) => Err(ClientError::Broker {
            code: partition.error.code,
            message: format!(
                "commit of {}/{}: {}",
                topic.topic, partition.partition, partition.error.message
            ),
        }),
    }
}

/// Commits `offsets` once (the coordinator lookup and retriable errors are retried until
/// `timeout`).
pub(crate) async fn send_commit(
    cluster: &Cluster,
    group_id: &str,
    identity: &Identity,
    offsets: &[(TopicPartition, u64)],
    timeout: Duration,
) -> Result<(), ClientError> {
    let request = commit_request(group_id, identity, offsets);
    let frame = cluster
        .coordinator_request(
            group_id,
            ApiKey::OffsetCommit,
            &request,
            timeout,
            Instant::now() + timeout,
        )
        .await?;
    let response: OffsetCommitResponse = decode_body(&frame)?;
    commit_outcome(&response)
}

/// The OffsetFetch request for `partitions`.
pub(crate) fn fetch_request(group_id: &str, partitions: &[TopicPartition]) -> OffsetFetchRequest {
    let topics = by_topic(partitions.iter().map(|tp| (tp, tp.partition)))
        .into_iter()
        .map(|(topic, partitions)| OffsetFetchTopic { topic, partitions })
        .collect();
    OffsetFetchRequest {
        group_id: group_id.to_owned(),
        topics: Some(topics),
    }
}

/// The committed offset of each of `partitions` in `response`, in order: `None` when the
/// group committed none.
pub(crate) fn committed_in(
    response: &OffsetFetchResponse,
    partitions: &[TopicPartition],
) -> Vec<Result<Option<u64>, ClientError>> {
    partitions
        .iter()
        .map(|tp| {
            let found = response
                .topics
                .iter()
                .filter(|topic| topic.topic == tp.topic)
                .flat_map(|topic| topic.partitions.iter())
                .find(|partition| partition.partition == tp.partition)
                .ok_or_else(|| ClientError::Broker {
                    code: ErrorCode::Unknown,
                    message: format!("offset fetch response has no answer for {tp}"),
                })?;
            if !found.error.is_ok() {
                return Err(ClientError::broker(found.error.clone()));
            }
            // -1: nothing committed.
            Ok(u64::try_from(found.offset).ok())
        })
        .collect()
}

/// Reads the committed offsets of `partitions` (one result per partition, in order).
pub(crate) async fn fetch_committed(
    cluster: &Cluster,
    group_id: &str,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> Result<Vec<Result<Option<u64>, ClientError>>, ClientError> {
    let request = fetch_request(group_id, partitions);
    let frame = cluster
        .coordinator_request(
            group_id,
            ApiKey::OffsetFetch,
            &request,
            timeout,
            Instant::now() + timeout,
        )
        .await?;
    let response: OffsetFetchResponse = decode_body(&frame)?;
    Ok(committed_in(&response, partitions))
}

/// Sends commits for one consumer, with the identity of its current generation. Cheap to clone
/// into a background task (`commit_async`, auto-commit).
#[derive(Clone)]
pub(crate) struct Committer {
    cluster: Arc<Cluster>,
    group_id: String,
    instance_id: Option<String>,
    timeout: Duration,
    /// The membership channels of a subscribed consumer: the directive carries the current
    /// generation; the app state takes rejoin requests. `None` with manual assignment.
    membership: Option<(watch::Receiver<Directive>, watch::Sender<AppState>)>,
}

impl Committer {
    /// A committer for a manual-assignment consumer (generation -1).
    pub fn new(
        cluster: Arc<Cluster>,
        group_id: String,
        instance_id: Option<String>,
        timeout: Duration,
    ) -> Self {
        Committer {
            cluster,
            group_id,
            instance_id,
            timeout,
            membership: None,
        }
    }

    /// This committer, committing as the member that `directive` describes.
    pub fn with_membership(
        mut self,
        directive: watch::Receiver<Directive>,
        app: watch::Sender<AppState>,
    ) -> Self {
        self.membership = Some((directive, app));
        self
    }

    /// The identity commits are sent with now.
    pub fn identity(&self) -> Identity {
        match &self.membership {
            Some((directive, _)) => {
                let directive = directive.borrow();
                if directive.generation >= 0 && !directive.member_id.is_empty() {
                    return Identity {
                        generation: directive.generation,
                        member_id: directive.member_id.clone(),
                        instance_id: self.instance_id.clone(),
                    };
                }
                self.outside_generation()
            }
            None => self.outside_generation(),
        }
    }

    fn outside_generation(&self) -> Identity {
        Identity {
            generation: -1,
            member_id: String::new(),
            instance_id: None,
        }
    }

    /// Commits `offsets`. `RebalanceInProgress` waits (within the timeout) for the member's
    /// generation to change and commits once more with the new one; a fencing error
    /// (`IllegalGeneration`, `UnknownMemberId`, `FencedInstanceId`) asks the membership task to
    /// check its membership at once, and is returned.
    pub async fn commit(&self, offsets: &[(TopicPartition, u64)]) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            let identity = self.identity();
            let result = send_commit(
                &self.cluster,
                &self.group_id,
                &identity,
                offsets,
                self.timeout,
            )
            .await;
            let Err(error) = result else {
                debug!(group = %self.group_id, generation = identity.generation, partitions = offsets.len(), "offsets committed");
                return Ok(());
            };
            match (error.code(), &self.membership) {
                (Some(ErrorCode::RebalanceInProgress), Some((directive, _))) => {
                    let mut directive = directive.clone();
                    let waited = tokio::time::timeout_at(deadline, async {
                        loop {
                            if directive.borrow_and_update().generation != identity.generation {
                                return true;
                            }
                            if directive.changed().await.is_err() {
                                return false;
                            }
                        }
                    })
                    .await;
                    if waited != Ok(true) {
                        return Err(error);
                    }
                    debug!(group = %self.group_id, "rebalance done; committing again");
                }
                (
                    Some(
                        ErrorCode::IllegalGeneration
                        | ErrorCode::UnknownMemberId
                        | ErrorCode::FencedInstanceId,
                    ),
                    Some((_, app)),
                ) => {
                    app.send_modify(|state| state.rejoin_requests += 1);
                    return Err(error);
                }
                _ => return Err(error),
            }
        }
    }
}

/// What was committed, per partition, and when the next automatic commit is due: an automatic
/// commit sends only the positions that moved since.
#[derive(Debug)]
pub(crate) struct CommitTracker {
    committed: HashMap<TopicPartition, u64>,
    interval: Duration,
    next_auto_commit: Instant,
}

impl CommitTracker {
    /// A tracker with nothing committed; the first automatic commit is due `interval` from
    /// `now`.
    pub fn new(interval: Duration, now: Instant) -> Self {
        CommitTracker {
            committed: HashMap::new(),
            interval,
            next_auto_commit: now + interval,
        }
    }

    /// The positions of `positions` that differ from what is known to be committed.
    pub fn uncommitted(&self, positions: &[(TopicPartition, u64)]) -> Vec<(TopicPartition, u64)> {
        positions
            .iter()
            .filter(|(tp, offset)| self.committed.get(tp) != Some(offset))
            .cloned()
            .collect()
    }

    /// Remembers that `offsets` are committed (after a successful commit, or when fetched).
    pub fn record(&mut self, offsets: &[(TopicPartition, u64)]) {
        for (tp, offset) in offsets {
            self.committed.insert(tp.clone(), *offset);
        }
    }

    /// Forgets partitions no longer assigned (another member may commit them now).
    pub fn forget(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.committed.remove(tp);
        }
    }

    /// True when an automatic commit is due at `now`; if so, the next one is scheduled one
    /// interval later.
    pub fn auto_commit_due(&mut self, now: Instant) -> bool {
        if now < self.next_auto_commit {
            return false;
        }
        self.next_auto_commit = now + self.interval;
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wire::protocol::{
        OffsetCommitPartitionResponse, OffsetCommitTopicResponse, OffsetFetchPartitionResponse,
        OffsetFetchTopicResponse, WireError,
    };

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    /// Offsets are grouped per topic in order, with the identity's fencing fields.
    #[test]
    fn commit_request_groups_by_topic() {
        let identity = Identity {
            generation: 4,
            member_id: "m".into(),
            instance_id: Some("i".into()),
        };
        let request = commit_request(
            "g",
            &identity,
            &[(tp("a", 0), 10), (tp("b", 1), 20), (tp("a", 2), 30)],
        );
        assert_eq!(request.group_id, "g");
        assert_eq!(request.generation, 4);
        assert_eq!(request.member_id, "m");
        assert_eq!(request.group_instance_id.as_deref(), Some("i"));
        assert_eq!(request.topics.len(), 2);
        assert_eq!(request.topics[0].topic, "a");
        let a: Vec<(u32, u64)> = request.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect();
        assert_eq!(a, vec![(0, 10), (2, 30)]);
    }

    /// The first failed partition becomes the commit's error.
    #[test]
    fn commit_outcome_reports_partition_errors() {
        let ok = OffsetCommitPartitionResponse {
            partition: 0,
            error: WireError::none(),
        };
        let mut response = OffsetCommitResponse {
            topics: vec![OffsetCommitTopicResponse {
                topic: "t".into(),
                partitions: vec![ok.clone()],
            }],
        };
        assert!(commit_outcome(&response).is_ok());
        response.topics[0]
            .partitions
            .push(OffsetCommitPartitionResponse {
                partition: 9,
                error: WireError::new(ErrorCode::UnknownTopicOrPartition, "no such partition"),
            });
        let error = commit_outcome(&response).unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnknownTopicOrPartition));
        assert!(error.to_string().contains("t/9"));
    }

    /// Fetched offsets are matched by partition: -1 is "none", errors and missing answers are
    /// per partition.
    #[test]
    fn committed_offsets_are_matched() {
        let answer = |partition, offset, error| OffsetFetchPartitionResponse {
            partition,
            error,
            offset,
            metadata: String::new(),
            commit_timestamp: -1,
        };
        let response = OffsetFetchResponse {
            topics: vec![OffsetFetchTopicResponse {
                topic: "t".into(),
                partitions: vec![
                    answer(1, -1, WireError::none()),
                    answer(0, 42, WireError::none()),
                    answer(
                        2,
                        -1,
                        WireError::new(ErrorCode::UnknownTopicOrPartition, ""),
                    ),
                ],
            }],
        };
        let partitions = [tp("t", 0), tp("t", 1), tp("t", 2), tp("u", 0)];
        let request = fetch_request("g", &partitions);
        assert_eq!(request.topics.as_ref().unwrap().len(), 2);
        let results = committed_in(&response, &partitions);
        assert_eq!(results[0].as_ref().unwrap(), &Some(42));
        assert_eq!(results[1].as_ref().unwrap(), &None);
        assert_eq!(
            results[2].as_ref().unwrap_err().code(),
            Some(ErrorCode::UnknownTopicOrPartition)
        );
        assert!(results[3].is_err());
    }

    /// Only moved positions are re-committed; forgotten partitions commit again; the
    /// auto-commit timer fires once per interval.
    #[test]
    fn tracker_bookkeeping() {
        let start = Instant::now();
        let mut tracker = CommitTracker::new(Duration::from_secs(5), start);
        let positions = vec![(tp("t", 0), 5), (tp("t", 1), 7)];
        assert_eq!(tracker.uncommitted(&positions), positions);
        tracker.record(&positions);
        assert!(tracker.uncommitted(&positions).is_empty());
        let moved = vec![(tp("t", 0), 6), (tp("t", 1), 7)];
        assert_eq!(tracker.uncommitted(&moved), vec![(tp("t", 0), 6)]);
        tracker.forget(&[tp("t", 1)]);
        assert_eq!(tracker.uncommitted(&moved).len(), 2);

        assert!(!tracker.auto_commit_due(start + Duration::from_secs(4)));
        assert!(tracker.auto_commit_due(start + Duration::from_secs(5)));
        assert!(!tracker.auto_commit_due(start + Duration::from_secs(9)));
        assert!(tracker.auto_commit_due(start + Duration::from_secs(10)));
    }
}
