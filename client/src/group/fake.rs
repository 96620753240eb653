//! Test support: a fake group coordinator on a local port, enough of one for the membership
//! task and commits. JoinGroup is answered at once with a fixed generation and member id,
//! SyncGroup never (the rebalance stays in its completing phase), heartbeats succeed, and
//! OffsetCommit is fenced like the broker fences it (generation and member id of the
//! current generation, unless the group accepts anything), after an optional delay per
//! commit. Every commit is recorded with when it arrived and when it was answered.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wire::protocol::{
    check_frame, decode_request, encode_response, ApiKey, ApiVersionRange, Encode, ErrorCode,
    FindCoordinatorResponse, HandshakeResponse, HeartbeatResponse, JoinGroupResponse,
    LeaveGroupResponse, OffsetCommitPartitionResponse, OffsetCommitResponse,
    OffsetCommitTopicResponse, Request, WireError, FRAME_SIZE_MAX,
};

use crate::cluster::TopicPartition;

/// What the fake coordinator does.
#[derive(Debug, Clone)]
pub(crate) struct Behavior {
    /// Generation and member id of JoinGroup answers; commits must carry them (when
    /// `fence_commits`).
    pub generation: i32,
    pub member_id: String,
    /// Commits with another generation or member id get IllegalGeneration.
    pub fence_commits: bool,
    /// Delay before answering the n-th commit (none past the end).
    pub commit_delays: Vec<Duration>,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            generation: 7,
            member_id: "m-1".into(),
            fence_commits: true,
            commit_delays: Vec::new(),
        }
    }
}

/// A commit the fake coordinator received.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub received: Instant,
    /// When it was answered (`None` while held).
    pub answered: Option<Instant>,
    pub generation: i32,
    pub member_id: String,
    pub offsets: Vec<(TopicPartition, u64)>,
}

/// A running fake coordinator; stops when dropped.
pub(crate) struct FakeCoordinator {
    pub addr: String,
    pub commits: Arc<Mutex<Vec<Commit>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeCoordinator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCoordinator {
    pub async fn start(behavior: Behavior) -> FakeCoordinator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let commits = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(serve(listener, behavior, commits.clone()));
        FakeCoordinator {
            addr,
            commits,
            task,
        }
    }

    pub fn commits(&self) -> Vec<Commit> {
        self.commits.lock().unwrap().clone()
    }
}

/// Writes one response frame.
async fn answer<T: Encode>(
    writer: &tokio::sync::Mutex<OwnedWriteHalf>,
    correlation_id: u32,
    error: WireError,
    body: Option<&T>,
) {
    let bytes: Vec<u8> = {
        let mut buffer = Vec::new();
        let frame = encode_response(&mut buffer, correlation_id, &error, body);
        frame.parts().flatten().copied().collect()
    };
    let _ = writer.lock().await.write_all(&bytes).await;
}

async fn serve(listener: TcpListener, behavior: Behavior, commits: Arc<Mutex<Vec<Commit>>>) {
    let port = listener.local_addr().unwrap().port();
    let mut tasks = Vec::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (mut reader, writer) = stream.into_split();
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let behavior = behavior.clone();
        let commits = commits.clone();
        tasks.push(tokio::spawn(async move {
            let mut buffer = Vec::new();
            loop {
                let total = loop {
                    if let Some(total) = check_frame(&buffer, FRAME_SIZE_MAX).unwrap() {
                        if buffer.len() >= total {
                            break total;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    let read = reader.read(&mut chunk).await.unwrap_or(0);
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                };
                let frame: Vec<u8> = buffer.drain(..total).collect();
                let (header, request) = decode_request(&frame).unwrap();
                let id = header.correlation_id;
                let ok = WireError::none;
                match request {
                    Request::Handshake(_) => {
                        let response = HandshakeResponse {
                            broker_id: 0,
                            cluster_id: "fake".into(),
                            api_versions: ApiKey::ALL
                                .iter()
                                .map(|api| ApiVersionRange {
                                    api_key: *api as u16,
                                    min_version: 1,
                                    max_version: 1,
                                })
                                .collect(),
                        };
                        answer(&writer, id, ok(), Some(&response)).await;
                    }
                    Request::FindCoordinator(_) => {
                        let response = FindCoordinatorResponse {
                            broker_id: 0,
                            host: "127.0.0.1".into(),
                            port,
                            shard: 0,
                            offsets_partition: 0,
                        };
                        answer(&writer, id, ok(), Some(&response)).await;
                    }
                    Request::JoinGroup(request) => {
                        let response = JoinGroupResponse {
                            generation: behavior.generation,
                            protocol_name: request.protocols[0].name.clone(),
                            leader: "someone-else".into(),
                            member_id: behavior.member_id.clone(),
                            skip_assignment: false,
                            members: Vec::new(),
                        };
                        answer(&writer, id, ok(), Some(&response)).await;
                    }
                    Request::SyncGroup(_) => {} // held: the leader never syncs
                    Request::Heartbeat(_) => {
                        answer(&writer, id, ok(), Some(&HeartbeatResponse {})).await;
                    }
                    Request::LeaveGroup(_) => {
                        answer(&writer, id, ok(), Some(&LeaveGroupResponse {})).await;
                    }
                    Request::OffsetCommit(request) => {
                        let index = {
                            let mut commits = commits.lock().unwrap();
                            commits.push(Commit {
                                received: Instant::now(),
                                answered: None,
                                generation: request.generation,
                                member_id: request.member_id.clone(),
                                offsets: request
                                    .topics
                                    .iter()
                                    .flat_map(|topic| {
                                        topic.partitions.iter().map(|p| {
                                            (
                                                TopicPartition::new(&topic.topic, p.partition),
                                                p.offset,
                                            )
                                        })
                                    })
                                    .collect(),
                            });
                            commits.len() - 1
                        };
                        let delay = behavior.commit_delays.get(index).copied();
                        let fenced = behavior.fence_commits
                            && (request.generation != behavior.generation
                                || request.member_id != behavior.member_id);
                        let writer = writer.clone();
                        let commits = commits.clone();
                        // Answered from a task of its own, so that a held commit does not
                        // hold up the requests behind it on the connection.
                        tokio::spawn(async move {
                            if let Some(delay) = delay {
                                tokio::time::sleep(delay).await;
                            }
                            commits.lock().unwrap()[index].answered = Some(Instant::now());
                            if fenced {
                                let error = WireError::new(ErrorCode::IllegalGeneration, "stale");
                                answer::<u8>(&writer, id, error, None).await;
                                return;
                            }
                            let response = OffsetCommitResponse {
                                topics: request
                                    .topics
                                    .iter()
                                    .map(|topic| OffsetCommitTopicResponse {
                                        topic: topic.topic.clone(),
                                        partitions: topic
                                            .partitions
                                            .iter()
                                            .map(|p| OffsetCommitPartitionResponse {
                                                partition: p.partition,
                                                error: WireError::none(),
                                            })
                                            .collect(),
                                    })
                                    .collect(),
                            };
                            answer(&writer, id, ok(), Some(&response)).await;
                        });
                    }
                    other => panic!("the fake coordinator got an unexpected {other:?}"),
                }
            }
        }));
        tasks.retain(|task: &JoinHandle<()>| !task.is_finished());
    }
}
