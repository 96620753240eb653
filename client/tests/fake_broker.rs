//! The client end to end against an in-process fake broker that speaks the wire protocol: one
//! main listener plus two shard listeners, partitions owned by shard `p % 2`. It checks what
//! the unit tests cannot: routing to shard endpoints, produce → fetch round trips through real
//! sockets, seeks, `OffsetOutOfRange`, acks = 0, admin calls and reconnection after a restart.
//!
//! The fake is deliberately simple (a mutex over in-memory logs, copies everywhere); it is a
//! test double for the protocol, not a model of the broker. Real-broker tests live in the
//! top-level `tests/`.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    partitioner::partition_for_key, Acks, Admin, ClientError, Consumer, ConsumerConfig, NewTopic,
    Offset, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use wire::limits::BATCH_SIZE_MAX;
use wire::protocol::*;
use wire::{stamp_base_offset, AlignedVec, BatchView};

const SHARDS: u16 = 2;

#[derive(Default)]
struct PartitionLog {
    /// (base offset, batch bytes)
    batches: Vec<(u64, AlignedVec<16>)>,
    next_offset: u64,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, (TopicConfig, Vec<PartitionLog>)>,
    /// Produce/fetch/list-offsets partitions that reached the main listener instead of
    /// their shard.
    data_on_main: usize,
}

struct FakeBroker {
    state: Arc<Mutex<State>>,
    /// Main listener port, then one port per shard.
    ports: Vec<u16>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    produce_requests: Arc<AtomicUsize>,
}

impl FakeBroker {
    async fn start() -> FakeBroker {
        let mut listeners = Vec::new();
        for _ in 0..=SHARDS {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let broker = FakeBroker {
            state: Arc::default(),
            ports,
            tasks: Arc::default(),
            produce_requests: Arc::default(),
        };
        broker.serve(listeners);
        broker
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    fn serve(&self, listeners: Vec<TcpListener>) {
        for (index, listener) in listeners.into_iter().enumerate() {
            let shard = index.checked_sub(1).map(|s| s as u16);
            let state = self.state.clone();
            let ports = self.ports.clone();
            let tasks = self.tasks.clone();
            let produced = self.produce_requests.clone();
            let accept = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let connection = tokio::spawn(handle(
                        stream,
                        shard,
                        state.clone(),
                        ports.clone(),
                        produced.clone(),
                    ));
                    tasks.lock().unwrap().push(connection);
                }
            });
            self.tasks.lock().unwrap().push(accept);
        }
    }

    /// Kills every listener and connection, then listens again on the same ports with the
    /// same data, like a broker process restarting.
    async fn restart(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut listeners = Vec::new();
        for port in &self.ports {
            listeners.push(TcpListener::bind(("127.0.0.1", *port)).await.unwrap());
        }
        self.serve(listeners);
    }
}

async fn read_frame(stream: &mut TcpStream) -> Option<AlignedVec<16>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).await.ok()?;
    let total = check_frame(&prefix, FRAME_SIZE_MAX).unwrap().unwrap();
    let mut frame = AlignedVec::<16>::with_capacity(total);
    frame.extend_from_slice(&prefix);
    frame.resize(total, 0);
    stream.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

fn owner(partition: u32) -> u16 {
    (partition % u32::from(SHARDS)) as u16
}

/// `Err` when `partition` must not be served by this listener.
fn check_route(state: &mut State, shard: Option<u16>, partition: u32) -> Result<(), WireError> {
    match shard {
        None => {
            state.data_on_main += 1;
            Ok(())
        }
        Some(shard) if shard == owner(partition) => Ok(()),
        Some(_) => Err(WireError::new(ErrorCode::NotLeader, "wrong shard")),
    }
}

async fn handle(
    mut stream: TcpStream,
    shard: Option<u16>,
    state: Arc<Mutex<State>>,
    ports: Vec<u16>,
    produced: Arc<AtomicUsize>,
) {
    let mut out = Vec::new();
    while let Some(frame) = read_frame(&mut stream).await {
        let (header, request) = match decode_request(&frame) {
            Ok(r) => r,
            Err(e) => panic!("{e}: {:?}", &frame[..frame.len().min(128)]),
        };
        let corr = header.correlation_id;
        let ok = WireError::none();
        let response = match request {
            Request::Handshake(_) => {
                let body = HandshakeResponse {
                    broker_id: 1,
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
                encode_response(&mut out, corr, &ok, Some(&body)).to_vec()
            }
            Request::Metadata(request) => {
                let state = state.lock().unwrap();
                let names: Vec<String> = match request.topics {
                    Some(names) => names,
                    None => state.topics.keys().cloned().collect(),
                };
                let topics = names
                    .into_iter()
                    .map(|name| match state.topics.get(&name) {
                        None => TopicMetadata {
                            name,
                            error: WireError::new(ErrorCode::UnknownTopicOrPartition, "no"),
                            ..TopicMetadata::default()
                        },
                        Some((config, logs)) => TopicMetadata {
                            name,
                            error: WireError::none(),
                            config: config.clone(),
                            partitions: (0..logs.len() as u32)
                                .map(|p| PartitionMetadata {
                                    partition: p,
                                    error: WireError::none(),
                                    leader: 1,
                                    leader_shard: owner(p),
                                    leader_epoch: 0,
                                    replicas: vec![1],
                                    isr: vec![1],
                                })
                                .collect(),
                        },
                    })
                    .collect();
                let body = MetadataResponse {
                    cluster_id: "fake".into(),
                    controller_id: 1,
                    brokers: vec![BrokerMetadata {
                        broker_id: 1,
                        host: "127.0.0.1".into(),
                        port: ports[0],
                        shards: (0..SHARDS)
                            .map(|s| ShardEndpoint {
                                shard: s,
                                host: "127.0.0.1".into(),
                                port: ports[usize::from(s) + 1],
                            })
                            .collect(),
                    }],
                    topics,
                };
                encode_response(&mut out, corr, &ok, Some(&body)).to_vec()
            }
            Request::CreateTopics(request) => {
                let mut state = state.lock().unwrap();
                let topics = request
                    .topics
                    .into_iter()
                    .map(|topic| {
                        let error = if state.topics.contains_key(&topic.name) {
                            WireError::new(ErrorCode::TopicAlreadyExists, "exists")
                        } else {
                            let config = TopicConfig {
                                partitions: topic.partitions,
                                replication_factor: topic.replication_factor,
                                retention_ms: topic.retention_ms.unwrap_or(-1),
                                retention_bytes: topic.retention_bytes.unwrap_or(-1),
                                segment_bytes: 1 << 30,
                                max_batch_bytes: topic.max_batch_bytes.unwrap_or(1 << 20),
                                durability: topic.durability.unwrap_or_default(),
                            };
                            let logs = (0..topic.partitions)
                                .map(|_| PartitionLog::default())
                                .collect();
                            state.topics.insert(topic.name.clone(), (config, logs));
                            WireError::none()
                        };
                        TopicResult {
                            name: topic.name,
                            error,
                        }
                    })
                    .collect();
                let body = CreateTopicsResponse { topics };
                encode_response(&mut out, corr, &ok, Some(&body)).to_vec()
            }
            Request::DeleteTopics(request) => {
                let mut state = state.lock().unwrap();
                let topics = request
                    .names
                    .into_iter()
                    .map(|name| {
                        let error = match state.topics.remove(&name) {
                            Some(_) => WireError::none(),
                            None => WireError::new(ErrorCode::UnknownTopicOrPartition, "no"),
                        };
                        TopicResult { name, error }
                    })
                    .collect();
                let body = DeleteTopicsResponse { topics };
                encode_response(&mut out, corr, &ok, Some(&body)).to_vec()
            }
            Request::Produce(request) => {
                produced.fetch_add(1, Ordering::Relaxed);
                let mut state = state.lock().unwrap();
                let mut topics = Vec::new();
                for topic in &request.topics {
                    let mut partitions = Vec::new();
                    for partition in &topic.partitions {
                        let p = partition.partition;
                        let result = check_route(&mut state, shard, p).and_then(|()| {
                            let (_, logs) =
                                state.topics.get_mut(&topic.topic).ok_or_else(|| {
                                    WireError::new(ErrorCode::UnknownTopicOrPartition, "no")
                                })?;
                            let log = logs.get_mut(p as usize).ok_or_else(|| {
                                WireError::new(ErrorCode::UnknownTopicOrPartition, "no")
                            })?;
                            let bytes = partition.records.as_slice();
                            let view =
                                BatchView::validate_deep(bytes, BATCH_SIZE_MAX).map_err(|e| {
                                    WireError::new(ErrorCode::CorruptMessage, e.to_string())
                                })?;
                            let mut batch = AlignedVec::<16>::new();
                            batch.extend_from_slice(view.as_bytes());
                            let base = log.next_offset;
                            stamp_base_offset(&mut batch, base).unwrap();
                            log.next_offset += u64::from(view.header().last_offset_delta) + 1;
                            log.batches.push((base, batch));
                            Ok(base)
                        });
                        partitions.push(match result {
                            Ok(base) => ProducePartitionResponse {
                                partition: p,
                                error: WireError::none(),
                                base_offset: base as i64,
                                log_start_offset: 0,
                            },
                            Err(error) => ProducePartitionResponse {
                                partition: p,
                                error,
                                base_offset: -1,
                                log_start_offset: -1,
                            },
                        });
                    }
                    topics.push(ProduceTopicResponse {
                        topic: topic.topic.clone(),
                        partitions,
                    });
                }
                if request.acks == 0 {
                    continue;
                }
                let body = ProduceResponse { topics };
                encode_response(&mut out, corr, &ok, Some(&body)).to_vec()
            }
            Request::Fetch(request) => {
                // Long poll: wait (bounded) until any asked partition has data.
                let waited = std::time::Instant::now();
                loop {
                    let has_data = {
                        let state = state.lock().unwrap();
                        request.topics.iter().any(|t| {
                            t.partitions.iter().any(|p| {
                                state.topics.get(&t.topic).is_some_and(|(_, logs)| {
                                    logs.get(p.partition as usize)
                                        .is_some_and(|log| log.next_offset > p.fetch_offset)
                                })
                            })
                        })
                    };
                    if has_data || waited.elapsed().as_millis() >= u128::from(request.max_wait_ms) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut state = state.lock().unwrap();
                // Copy the chosen batches out first, then borrow them in the response.
                let mut chosen: Vec<(String, u32, WireError, u64, Vec<u8>)> = Vec::new();
                for topic in &request.topics {
                    for p in &topic.partitions {
                        let route = check_route(&mut state, shard, p.partition);
                        let mut bytes = Vec::new();
                        let mut high_watermark = 0;
                        let error = match (route, state.topics.get(&topic.topic)) {
                            (Err(e), _) => e,
                            (_, None) => WireError::new(ErrorCode::UnknownTopicOrPartition, "no"),
                            (Ok(()), Some((_, logs))) => match logs.get(p.partition as usize) {
                                None => WireError::new(ErrorCode::UnknownTopicOrPartition, "no"),
                                Some(log) if p.fetch_offset > log.next_offset => {
                                    high_watermark = log.next_offset;
                                    WireError::new(ErrorCode::OffsetOutOfRange, "out of range")
                                }
                                Some(log) => {
                                    high_watermark = log.next_offset;
                                    for (base, batch) in &log.batches {
                                        let view =
                                            BatchView::validate(batch, BATCH_SIZE_MAX).unwrap();
                                        if view.header().next_offset() <= p.fetch_offset {
                                            continue;
                                        }
                                        if !bytes.is_empty()
                                            && bytes.len() + batch.len() > p.max_bytes as usize
                                        {
                                            break;
                                        }
                                        let _ = base;
                                        bytes.extend_from_slice(batch);
                                    }
                                    WireError::none()
                                }
                            },
                        };
                        chosen.push((
                            topic.topic.clone(),
                            p.partition,
                            error,
                            high_watermark,
                            bytes,
                        ));
                    }
                }
                drop(state);
                let mut topics: Vec<FetchTopicResponse<'_>> = Vec::new();
                for (topic, partition, error, high_watermark, bytes) in &chosen {
                    let part = FetchPartitionResponse {
                        partition: *partition,
                        error: error.clone(),
                        high_watermark: *high_watermark,
                        log_start_offset: 0,
                        records: if bytes.is_empty() {
                            Records::default()
                        } else {
                            Records::from_slice(bytes)
                        },
                    };
                    match topics.iter_mut().find(|t| &t.topic == topic) {
                        Some(t) => t.partitions.push(part),
                        None => topics.push(FetchTopicResponse {
                            topic: topic.clone(),
                            partitions: vec![part],
                        }),
                    }
                }
                let body = FetchResponse { topics };
                encode_response(&mut out, corr, &ok, Some(&body)).to_vec()
            }
            Request::ListOffsets(request) => {
                let mut state = state.lock().unwrap();
                let mut topics = Vec::new();
                for topic in &request.topics {
                    let mut partitions = Vec::new();
                    for p in &topic.partitions {
                        let route = check_route(&mut state, shard, p.partition);
                        let log = state
                            .topics
                            .get(&topic.topic)
                            .and_then(|(_, logs)| logs.get(p.partition as usize));
                        let (error, offset) = match (route, log) {
                            (Err(e), _) => (e, -1),
                            (_, None) => {
                                (WireError::new(ErrorCode::UnknownTopicOrPartition, "no"), -1)
                            }
                            (Ok(()), Some(log)) => {
                                let offset = match p.timestamp {
                                    EARLIEST_TIMESTAMP => 0,
                                    LATEST_TIMESTAMP => log.next_offset,
                                    ts => log
                                        .batches
                                        .iter()
                                        .find(|(_, b)| {
                                            BatchView::validate(b, BATCH_SIZE_MAX)
                                                .unwrap()
                                                .max_timestamp_ms()
                                                >= ts
                                        })
                                        .map_or(log.next_offset, |(base, _)| *base),
                                };
                                (WireError::none(), offset as i64)
                            }
                        };
                        partitions.push(ListOffsetsPartitionResponse {
                            partition: p.partition,
                            error,
                            offset,
                            timestamp: p.timestamp,
                        });
                    }
                    topics.push(ListOffsetsTopicResponse {
                        topic: topic.topic.clone(),
                        partitions,
                    });
                }
                let body = ListOffsetsResponse { topics };
                encode_response(&mut out, corr, &ok, Some(&body)).to_vec()
            }
        };
        if stream.write_all(&response).await.is_err() {
            return;
        }
    }
}

fn producer_config(bootstrap: String) -> ProducerConfig {
    ProducerConfig {
        linger: Duration::from_millis(2),
        retry_backoff: Duration::from_millis(20),
        retry_backoff_max: Duration::from_millis(200),
        retries: 20,
        request_timeout: Duration::from_secs(5),
        ..ProducerConfig::new(bootstrap)
    }
}

/// Produce keyed and keyless records, then read everything back from the earliest offset:
/// every record once, in order per partition, keys in their hash partition, and every data
/// request sent to the owning shard's endpoint.
#[tokio::test]
async fn produce_then_consume_from_earliest() {
    let broker = FakeBroker::start().await;
    let admin = Admin::new(broker.bootstrap()).unwrap();
    admin
        .create_topic(NewTopic::new("orders", 4))
        .await
        .unwrap();

    let producer = Producer::new(producer_config(broker.bootstrap())).unwrap();
    let mut pending = Vec::new();
    for i in 0..200u32 {
        let mut record = ProducerRecord::new("orders", format!("value-{i}").into_bytes())
            .with_header("i", i.to_le_bytes().to_vec());
        if i % 2 == 0 {
            record = record.with_key(format!("key-{}", i % 10).into_bytes());
        }
        pending.push(producer.enqueue(record).await.unwrap());
    }
    let mut offsets: HashMap<u32, Vec<u64>> = HashMap::new();
    for delivery in pending {
        let metadata = delivery.await.unwrap();
        assert_eq!(&*metadata.topic, "orders");
        offsets
            .entry(metadata.partition)
            .or_default()
            .push(metadata.offset.unwrap());
    }
    for list in offsets.values() {
        // Offsets of one partition are handed out in send order.
        assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
    }
    producer.close().await.unwrap();

    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(50),
        ..ConsumerConfig::new(broker.bootstrap())
    })
    .unwrap();
    let partitions = consumer.topic_partitions("orders").await.unwrap();
    assert_eq!(partitions.len(), 4);
    consumer.assign(&partitions);
    let mut seen: HashMap<u32, Vec<(u64, u32)>> = HashMap::new();
    let mut total = 0;
    for _ in 0..100 {
        let records = consumer.poll(Duration::from_millis(200)).await.unwrap();
        for record in &records {
            let i = u32::from_le_bytes(record.headers.get("i").unwrap().try_into().unwrap());
            assert_eq!(record.value, format!("value-{i}").as_bytes());
            if let Some(key) = record.key {
                assert_eq!(partition_for_key(key, 4), record.partition);
            }
            seen.entry(record.partition)
                .or_default()
                .push((record.offset, i));
            total += 1;
        }
        if total == 200 {
            break;
        }
    }
    assert_eq!(total, 200);
    for (partition, records) in &seen {
        let offsets: Vec<u64> = records.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "p{partition}"
        );
        // Send order is kept within a partition.
        assert!(records.windows(2).all(|w| w[0].1 < w[1].1));
        let position = consumer
            .position(&TopicPartition::new("orders", *partition))
            .await
            .unwrap();
        assert_eq!(position, offsets.len() as u64);
    }
    // Keyless records were spread, not all in one partition.
    assert!(seen.len() >= 2);
    assert_eq!(broker.state.lock().unwrap().data_on_main, 0);
    // Nothing more: an empty poll after the timeout.
    assert!(consumer
        .poll(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());
}

/// Seeks: latest, by timestamp, to an offset; an offset beyond the log end is a clear error,
/// and seeking back recovers.
#[tokio::test]
async fn seeks_and_offset_out_of_range() {
    let broker = FakeBroker::start().await;
    let admin = Admin::new(broker.bootstrap()).unwrap();
    admin.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let producer = Producer::new(producer_config(broker.bootstrap())).unwrap();
    for i in 0..10i64 {
        let record = ProducerRecord::new("t", vec![i as u8])
            .with_partition(0)
            .with_timestamp_ms(1_000 + i * 100);
        // One batch per record, so a timestamp lookup can land inside the log.
        producer.send(record).await.unwrap();
    }
    let tp = TopicPartition::new("t", 0);
    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(20),
        ..ConsumerConfig::new(broker.bootstrap())
    })
    .unwrap();
    consumer.assign(std::slice::from_ref(&tp));
    consumer.seek(&tp, Offset::Latest).unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 10);
    consumer.seek(&tp, Offset::Timestamp(1_450)).unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 5);
    consumer.seek(&tp, Offset::Timestamp(9_999_999)).unwrap();
    assert_eq!(consumer.position(&tp).await.unwrap(), 10);

    consumer.seek(&tp, Offset::At(7)).unwrap();
    let records = consumer.poll(Duration::from_secs(2)).await.unwrap();
    let values: Vec<u8> = records.iter().map(|r| r.value[0]).collect();
    assert_eq!(values, vec![7, 8, 9]);

    consumer.seek(&tp, Offset::At(1_000)).unwrap();
    let error = consumer.poll(Duration::from_secs(2)).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::OffsetOutOfRange {
                offset: 1_000,
                high_watermark: 10,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        consumer.position(&tp).await.unwrap(),
        1_000,
        "no silent reset"
    );
    consumer.seek(&tp, Offset::Earliest).unwrap();
    let records = consumer.poll(Duration::from_secs(2)).await.unwrap();
    assert_eq!(records.iter().next().unwrap().offset, 0);

    // Admin sees the same offsets.
    let description = admin.describe_topic("t").await.unwrap();
    assert_eq!(description.partitions[0].log_start_offset, Some(0));
    assert_eq!(description.partitions[0].log_end_offset, Some(10));
    assert_eq!(admin.list_offsets(&tp, LATEST_TIMESTAMP).await.unwrap(), 10);
}

/// acks = 0 resolves without offsets; the broker does not answer and the client does not wait.
#[tokio::test]
async fn acks_zero_resolves_without_offset() {
    let broker = FakeBroker::start().await;
    let admin = Admin::new(broker.bootstrap()).unwrap();
    admin.create_topic(NewTopic::new("fire", 2)).await.unwrap();
    let producer = Producer::new(ProducerConfig {
        acks: Acks::None,
        ..producer_config(broker.bootstrap())
    })
    .unwrap();
    let metadata = producer
        .send(ProducerRecord::new("fire", b"x".to_vec()))
        .await
        .unwrap();
    assert_eq!(metadata.offset, None);
    producer.flush().await.unwrap();
    // The record did arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let description = admin.describe_topic("fire").await.unwrap();
    let end: u64 = description
        .partitions
        .iter()
        .map(|p| p.log_end_offset.unwrap())
        .sum();
    assert_eq!(end, 1);
}

/// Admin: duplicate creation is the broker's `TopicAlreadyExists`; unknown topics are
/// `UnknownTopic` for admin and producer alike.
#[tokio::test]
async fn admin_and_unknown_topics() {
    let broker = FakeBroker::start().await;
    let admin = Admin::new(broker.bootstrap()).unwrap();
    admin.create_topic(NewTopic::new("a", 1)).await.unwrap();
    admin.create_topic(NewTopic::new("b", 3)).await.unwrap();
    let duplicate = admin.create_topic(NewTopic::new("a", 1)).await.unwrap_err();
    assert_eq!(duplicate.code(), Some(ErrorCode::TopicAlreadyExists));
    let names: Vec<String> = admin
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    assert!(matches!(
        admin.describe_topic("nope").await,
        Err(ClientError::UnknownTopic { .. })
    ));
    admin.delete_topic("a").await.unwrap();
    assert!(matches!(
        admin.delete_topic("a").await,
        Err(ClientError::UnknownTopic { .. })
    ));

    let producer = Producer::new(ProducerConfig {
        retries: 2,
        ..producer_config(broker.bootstrap())
    })
    .unwrap();
    let error = producer
        .send(ProducerRecord::new("nope", b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::UnknownTopic { .. }), "{error}");
    let error = producer
        .send(ProducerRecord::new("b", b"x".to_vec()).with_partition(7))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::UnknownPartition { partitions: 3, .. }),
        "{error}"
    );
}

/// A broker restart in the middle: the producer retries and reconnects, the consumer resumes
/// from its position, nothing is lost or read twice.
#[tokio::test]
async fn survives_a_broker_restart() {
    let broker = FakeBroker::start().await;
    let admin = Admin::new(broker.bootstrap()).unwrap();
    admin.create_topic(NewTopic::new("r", 2)).await.unwrap();
    let producer = Producer::new(producer_config(broker.bootstrap())).unwrap();
    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        ..ConsumerConfig::new(broker.bootstrap())
    })
    .unwrap();
    let partitions = consumer.topic_partitions("r").await.unwrap();
    consumer.assign(&partitions);

    let mut read = Vec::new();
    for round in 0..2u8 {
        let mut pending = Vec::new();
        for i in 0..50u8 {
            let value = vec![round, i];
            pending.push(
                producer
                    .enqueue(ProducerRecord::new("r", value))
                    .await
                    .unwrap(),
            );
        }
        for delivery in pending {
            delivery.await.unwrap();
        }
        while read.len() < 50 * (usize::from(round) + 1) {
            let records = consumer.poll(Duration::from_secs(2)).await.unwrap();
            assert!(!records.is_empty(), "stalled after {} records", read.len());
            read.extend(records.iter().map(|r| r.value.to_vec()));
        }
        if round == 0 {
            broker.restart().await;
        }
    }
    read.sort();
    let mut expected: Vec<Vec<u8>> = (0..2u8)
        .flat_map(|round| (0..50u8).map(move |i| vec![round, i]))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
    assert!(broker.produce_requests.load(Ordering::Relaxed) >= 2);
}
