//! The producer: [`Producer::send`] hands a record to a background sender task, which picks its
//! partition ([`crate::partitioner`]), appends it to that partition's batch
//! (`accumulator`), sends cut batches to the owning shard's endpoint (one produce
//! request per endpoint and round, carrying one batch per partition) and resolves each
//! record's future when the broker acknowledges it.
//!
//! ```text
//!  Producer::send ──(buffer permits: back-pressure)──▶ command channel ──▶ sender task
//!  Producer::send_batch (encoded in the caller, crate::batch_send) ──┘      │ partition, append
//!   record futures ◀── RecordMetadata / error ◀── produce requests ◀── drain ◀─┘ (accumulator)
//!   batch futures  ◀── BatchMetadata / error      (one per endpoint and round, polled by the
//!                                                  sender task itself)  retries with backoff
//! ```
//!
//! Wake-ups: a `send` wakes the sender task only when that can change what is sent. While
//! every partition holding records has a request in flight (whose answer wakes the task
//! anyway), callers only count their bytes and wake it once per batch's worth (`Intake`), so
//! a fast producer costs one wake-up, not one thread hand-off, per batch.
//!
//! Delivery: `acks = 0` resolves records once their batch is written to the socket (no offset);
//! `acks = 1` / `all` once the broker answers. Retriable errors (connection loss, `NotLeader`,
//! `UnknownTopicOrPartition`, timeouts, ...) are retried up to `retries` times with exponential
//! backoff, refreshing the metadata when it may be stale (also every `metadata_max_age`, so
//! leadership moves are learned even without an error); non-retriable ones (`CorruptMessage`,
//! `MessageTooLarge`, ...) fail the records at once.
//!
//! Idempotence (on by default, as in Kafka 3+; not with `acks = 0`): the producer gets a
//! producer id and numbers each partition's batches, so the broker recognises a retry whose
//! first answer was lost (after a failover, a restart, a timeout) and writes it once. Without
//! it (`enable_idempotence = false`, or `acks = 0`) delivery is at-least-once: such a retry may
//! be written twice. A stamped batch that fails for good leaves a gap in its partition's
//! sequence numbers; the producer then holds new batches until the stamped ones are done, bumps
//! its epoch and restarts its sequences at 0 (Kafka's KIP-360), so the partition stays
//! writable.
//!
//! Ordering: records of one partition are appended in the order `send` enqueues them. A batch
//! put back for a retry waits until every batch of its partition still in flight has come back,
//! then leaves ahead of the later ones. With idempotence that makes retries keep send order:
//! the broker refuses a batch that does not follow its predecessor (`OutOfOrderSequence`), and
//! such a refusal while an earlier batch of the partition is still incomplete (it failed on a
//! connection that died before writing it, or went to an old leader) only means the batch
//! arrived first: it is retried behind its predecessor, whatever its attempt count. Without
//! idempotence, a batch that was written but whose answer was lost is written again by its
//! retry, after the batches sent since.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};
use wire::limits::BATCH_SIZE_MAX;
use wire::protocol::{
    ApiKey, ErrorCode, ProducePartition, ProduceRequest, ProduceResponse, ProduceTopic, Records,
};

use crate::accumulator::{
    empty_batch_size, record_size_upper_bound, Accumulator, AccumulatorConfig, ProducerBatch,
    RecordData, Reply,
};
use crate::batch_send::{BatchDelivery, BatchMetadata, BatchPool, BatchRecord, BatchReply};
use crate::cluster::{Cluster, ClusterMetadata, TopicRoute};
use crate::connection::{decode_body, ConnectionConfig};
use crate::error::ClientError;
use crate::partitioner::{partition_for_key, Partitioner};

/// When the broker answers a produce: the one `Acks` type of the project, from `wire`.
pub use wire::Acks;

/// Most batches in flight per partition for an idempotent producer: the broker remembers a
/// producer's last 5 batches per partition (`IDEMPOTENCE_WINDOW` of its producer state), so a
/// retry of any batch in flight is recognised only with at most this many. Kafka's limit too.
pub const IDEMPOTENT_IN_FLIGHT_MAX: usize = 5;

/// Default `metadata_max_age` of producers and consumers: 30 s, Kafka's
/// `metadata.max.age.ms`. One metadata request per client per 30 s is nothing for a broker;
/// a leader change that no error reveals (a consumer reading a follower that stayed up) is
/// learned within it.
pub const DEFAULT_METADATA_MAX_AGE: Duration = Duration::from_secs(30);

/// Settings of a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `host:port` of a broker (or several, comma-separated) to learn the cluster from.
    pub bootstrap: String,
    /// Acknowledgement policy.
    pub acks: Acks,
    /// A partition's batch is cut when it reaches this size (a larger single record gets a
    /// batch of its own, up to the topic's and the wire's batch limit). Default 256 KiB.
    /// While the partition's window is full (`max_in_flight_per_partition` batches in flight
    /// or waiting), the open batch grows past this, up to 4 MiB (or the topic's limit), and
    /// leaves whole at the next free slot: the bytes in flight follow the acknowledgement
    /// latency (an fsync per acknowledgement) rather than a fixed number of batches.
    pub batch_size_bytes: usize,
    /// How long a batch waits for more records before it is sent. Default 5 ms.
    /// `Duration::ZERO`: send as soon as the partition has nothing in flight (records arriving
    /// meanwhile are batched behind the request in flight).
    pub linger: Duration,
    /// Most batches in flight per partition. Default 5; at most
    /// [`IDEMPOTENT_IN_FLIGHT_MAX`] (5) with `enable_idempotence` (the broker recognises a
    /// retry among a partition's last 5 batches).
    pub max_in_flight_per_partition: usize,
    /// Retries of a batch after a retriable error. Default 10: with the default backoffs they
    /// span about 7.5 s, longer than a broker failover (a 3 s session plus the election), so a
    /// failover delays records instead of failing them.
    pub retries: u32,
    /// First retry backoff, doubled at each further retry up to `retry_backoff_max`.
    /// Default 100 ms.
    pub retry_backoff: Duration,
    /// Longest retry backoff. Default 1 s. A batch that failed because its leader moved (or
    /// died) is sent as soon as the metadata names a new leader, whatever its backoff.
    pub retry_backoff_max: Duration,
    /// Longest wait for a produce answer; also sent to the broker as the produce timeout.
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Most bytes of records buffered (enqueued but not yet acknowledged); `send` waits when
    /// this is exceeded. Default 64 MiB; at most `u32::MAX`.
    pub max_buffered_bytes: usize,
    /// Idempotent producer: ask the broker for a producer id and number every batch per
    /// partition, so a batch retried after a lost acknowledgement is written once. Default
    /// true, as in Kafka 3+. Batches are stamped when first sent and retried byte for byte.
    /// Ignored with `acks = 0` (Kafka even requires `acks = all`): the broker does not answer,
    /// so there is no retry to deduplicate and a refused batch would go unnoticed.
    pub enable_idempotence: bool,
    /// Longest time the producer uses its metadata without refreshing it, so it learns new
    /// leaders and partitions even when no error says so. Default 30 s (Kafka's
    /// `metadata.max.age.ms`).
    pub metadata_max_age: Duration,
    /// How long a connection's reader, finding no answer to read, keeps polling its socket
    /// before its task sleeps until the runtime wakes it. Default zero: sleep at once.
    ///
    /// A sleeping reader costs a wake-up per answer: on the 2-core VM of `bench/results`,
    /// about 60 µs of client CPU per round trip, most of a batch-1 round trip with one record
    /// in flight. A reader spinning 50–200 µs finds the next answer already there. Each time
    /// the connection goes quiet the spin burns up to this much CPU, so it pays when the
    /// client has a core of its own (a latency-bound producer awaiting each send), not when
    /// client and broker share cores.
    pub spin_before_park: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap: "127.0.0.1:9092".to_owned(),
            acks: Acks::Leader,
            batch_size_bytes: 256 * 1024,
            linger: Duration::from_millis(5),
            max_in_flight_per_partition: 5,
            retries: 10,
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            max_buffered_bytes: 64 * 1024 * 1024,
            enable_idempotence: true,
            metadata_max_age: DEFAULT_METADATA_MAX_AGE,
            spin_before_park: Duration::ZERO,
        }
    }
}

impl ProducerConfig {
    /// Defaults with this bootstrap address.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ProducerConfig {
            bootstrap: bootstrap.into(),
            ..ProducerConfig::default()
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ClientError> {
        let fail = |what: &str| Err(ClientError::Config(what.to_owned()));
        if self.batch_size_bytes < 1024 || self.batch_size_bytes > BATCH_SIZE_MAX {
            return fail("batch_size_bytes must be between 1 KiB and the wire batch limit");
        }
        if self.max_in_flight_per_partition == 0 {
            return fail("max_in_flight_per_partition must be at least 1");
        }
        if self.idempotent() && self.max_in_flight_per_partition > IDEMPOTENT_IN_FLIGHT_MAX {
            return fail(
                "max_in_flight_per_partition must be at most 5 with enable_idempotence \
                 (the broker deduplicates a retry among a partition's last 5 batches); \
                 lower it or set enable_idempotence = false",
            );
        }
        if self.max_buffered_bytes == 0 || self.max_buffered_bytes > u32::MAX as usize {
            return fail("max_buffered_bytes must be between 1 and u32::MAX");
        }
        if self.request_timeout.is_zero() {
            return fail("request_timeout must be positive");
        }
        if self.metadata_max_age.is_zero() {
            return fail("metadata_max_age must be positive");
        }
        crate::connection::check_spin_before_park(self.spin_before_park)
    }

    /// Whether batches are stamped for idempotence: asked for, and answered (`acks` 1 or all).
    pub fn idempotent(&self) -> bool {
        self.enable_idempotence && self.acks != Acks::None
    }

    /// Backoff before retry number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.retry_backoff
            .saturating_mul(factor)
            .min(self.retry_backoff_max.max(self.retry_backoff))
    }
}

/// A record to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: String,
    /// Partition; `None` lets the partitioner choose (by key, else sticky).
    pub partition: Option<u32>,
    /// Optional key: records with the same key go to the same partition.
    pub key: Option<Bytes>,
    /// Payload. A `Bytes` (or a `Vec<u8>`, converted without a copy) moves to the sender
    /// task as it is; its bytes are copied once, into the batch being built.
    pub value: Bytes,
    /// Application headers (name, value).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Tags the broker may filter on without reading values.
    pub tags: Vec<String>,
    /// Milliseconds since the epoch; `None`: the time the producer's sender task takes the
    /// record (one clock read per round of records, microseconds after `send`).
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A keyless record. `value`: a `Vec<u8>` or `Bytes` (no copy), a `&'static [u8]`, or
    /// `Bytes::copy_from_slice` of borrowed bytes.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: value.into(),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets an explicit partition.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the timestamp.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset; `None` with `acks = 0` (the broker does not answer).
    pub offset: Option<u64>,
}

/// Resolves when the broker acknowledges one record (see [`Producer::enqueue`]).
#[derive(Debug)]
pub struct DeliveryFuture {
    receiver: oneshot::Receiver<Result<RecordMetadata, ClientError>>,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(ClientError::Closed)))
    }
}

/// What `send` hands to the sender task.
enum Command {
    Record {
        record: ProducerRecord,
        reserved_bytes: usize,
        reply: Reply,
    },
    /// A batch built by `send_batch`.
    Batch(BuiltBatch),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// A batch built by the caller of `send_batch`, on its way to the sender task.
struct BuiltBatch {
    topic: String,
    partition: u32,
    bytes: wire::AlignedVec<16>,
    record_count: u32,
    reserved_bytes: usize,
    reply: BatchReply,
}

/// When callers wake the sender task for new records.
///
/// Eager (the default): every command wakes it (the channel's own wake-up), so a record
/// leaves at once when its partition may send. Lazy: the sender task set it because a record
/// appended now could not leave before some other event wakes it anyway (every partition
/// with records has a request in flight, whose answer wakes it): callers then only count
/// the bytes they enqueue and wake it once per `wake_bytes` (a batch's worth), so a fast
/// producer costs one wake-up per batch instead of one per record. Flush, close and
/// `send_batch` always wake it.
struct Intake {
    lazy: AtomicBool,
    /// Bytes enqueued since the sender task last took its commands (counted while lazy).
    pending_bytes: AtomicUsize,
    /// `batch_size_bytes`: records worth a batch wake the sender task even while lazy.
    wake_bytes: usize,
    wake: tokio::sync::Notify,
}

impl Intake {
    /// After enqueueing a record of `bytes`: wakes the sender task if it is lazy and a
    /// batch's worth has now accumulated (eager: the channel woke it already).
    fn record_enqueued(&self, bytes: usize) {
        if self.lazy.load(Ordering::Acquire) {
            let before = self.pending_bytes.fetch_add(bytes, Ordering::AcqRel);
            if before < self.wake_bytes && before + bytes >= self.wake_bytes {
                self.wake.notify_one();
            }
        }
    }
}

/// State shared by every clone of a producer.
struct Shared {
    /// Builders and buffers of `send_batch` batches.
    pool: Arc<BatchPool>,
    commands: mpsc::UnboundedSender<Command>,
    intake: Arc<Intake>,
    /// One permit per buffered byte; `send` waits for permits, the sender task gives them back
    /// when records complete.
    buffer: Arc<Semaphore>,
    /// `send` calls waiting for buffer space: while any waits, later calls wait too, so records
    /// are not reordered by back-pressure.
    waiting: AtomicUsize,
    closed: AtomicBool,
    max_record_bytes: usize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: a lazy sender task must see the channel close.
        self.intake.wake.notify_one();
    }
}

/// Decrements `waiting` when a waiting send is done (enqueued, failed or dropped).
struct WaitingGuard(Arc<Shared>);

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends records to a Sluice cluster. Cheap to clone (clones share the buffer and the sender
/// task), `Send + Sync`.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("closed", &self.shared.closed.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Producer {
    /// A producer for the cluster at `config.bootstrap`. Connects lazily (the first `send`
    /// fetches the metadata). Must be called inside a tokio runtime: it spawns the sender task.
    pub fn new(config: ProducerConfig) -> Result<Producer, ClientError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            ClientError::Config("a Producer must be created inside a tokio runtime".into())
        })?;
        let connection = ConnectionConfig {
            request_timeout: config.request_timeout + Duration::from_secs(1),
            spin_before_park: config.spin_before_park,
            ..ConnectionConfig::default()
        };
        let cluster = Arc::new(Cluster::new(&config.bootstrap, connection)?);
        let (commands, receiver) = mpsc::unbounded_channel();
        let buffer = Arc::new(Semaphore::new(config.max_buffered_bytes));
        let max_record_bytes = config.max_buffered_bytes.min(BATCH_SIZE_MAX);
        debug!(?config, "producer starting");
        let pool = Arc::new(BatchPool::new(config.idempotent()));
        let intake = Arc::new(Intake {
            lazy: AtomicBool::new(false),
            pending_bytes: AtomicUsize::new(0),
            wake_bytes: config.batch_size_bytes,
            wake: tokio::sync::Notify::new(),
        });
        let task = SenderTask::new(
            config,
            cluster,
            receiver,
            buffer.clone(),
            pool.clone(),
            intake.clone(),
        );
        runtime.spawn(task.run());
        Ok(Producer {
            shared: Arc::new(Shared {
                pool,
                commands,
                intake,
                buffer,
                waiting: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                max_record_bytes,
            }),
        })
    }

    /// Sends a record. The record is enqueued right away when the buffer has room (so calls
    /// enqueue in call order); the returned future resolves when the broker acknowledges it
    /// (with `acks = 0`: when it is written, with no offset).
    ///
    /// When the buffer is full (`max_buffered_bytes`), the future first waits for room, and
    /// every later `send` waits behind it; waiting records are enqueued in the order their
    /// futures are first polled. To keep strict order under back-pressure without juggling
    /// futures, use [`Producer::enqueue`] and await each call.
    pub fn send(
        &self,
        record: ProducerRecord,
    ) -> impl Future<Output = Result<RecordMetadata, ClientError>> + Send + 'static {
        let shared = self.shared.clone();
        let early = self.try_enqueue(record);
        async move {
            let delivery = match early {
                Ok(Ok(delivery)) => delivery,
                Ok(Err((record, reserved_bytes, guard))) => {
                    enqueue_waiting(&shared, record, reserved_bytes, guard).await?
                }
                Err(e) => return Err(e),
            };
            delivery.await
        }
    }

    /// Enqueues a record, waiting for buffer room if needed, and returns the future of its
    /// acknowledgement. Awaiting each `enqueue` in turn keeps records in call order even under
    /// back-pressure, while many acknowledgements are awaited later, together.
    pub async fn enqueue(&self, record: ProducerRecord) -> Result<DeliveryFuture, ClientError> {
        match self.try_enqueue(record)? {
            Ok(delivery) => Ok(delivery),
            Err((record, reserved_bytes, guard)) => {
                enqueue_waiting(&self.shared, record, reserved_bytes, guard).await
            }
        }
    }

    /// Checks the record and enqueues it if the buffer has room and nobody waits for room;
    /// otherwise returns it with its size and a registration in the waiting line.
    #[allow(clippy::type_complexity)]
    fn try_enqueue(
        &self,
        record: ProducerRecord,
    ) -> Result<Result<DeliveryFuture, (ProducerRecord, usize, WaitingGuard)>, ClientError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        // The buffer holds what the record adds to a batch; the batch's own overhead (its
        // header) is checked here but not reserved per record.
        let size_bytes = record_size_upper_bound(
            record.key.as_deref(),
            &record.value,
            &record.headers,
            &record.tags,
        );
        if empty_batch_size() + size_bytes > shared.max_record_bytes {
            return Err(ClientError::RecordTooLarge {
                size_bytes: empty_batch_size() + size_bytes,
                max_bytes: shared.max_record_bytes,
            });
        }
        if shared.waiting.load(Ordering::Acquire) == 0 {
            // Bounded by max_record_bytes <= u32::MAX, so the cast is exact.
            if let Ok(permit) = shared.buffer.try_acquire_many(size_bytes as u32) {
                permit.forget();
                return push(shared, record, size_bytes).map(Ok);
            }
        }
        shared.waiting.fetch_add(1, Ordering::AcqRel);
        Ok(Err((record, size_bytes, WaitingGuard(shared.clone()))))
    }

    /// Sends `records` to `topic`/`partition` as one record batch and waits for its
    /// acknowledgement: [`Producer::enqueue_batch`], then the delivery.
    pub fn send_batch<'a>(
        &self,
        topic: &str,
        partition: u32,
        records: impl IntoIterator<Item = BatchRecord<'a>>,
    ) -> impl Future<Output = Result<BatchMetadata, ClientError>> + Send + 'static {
        let enqueued = self.enqueue_batch(topic, partition, records);
        async move { enqueued.await?.await }
    }

    /// Encodes `records` into one record batch for `topic`/`partition` now, in the calling
    /// task (each key and value is copied once, from the caller's bytes into the batch; one
    /// clock read stamps the records without a timestamp), then returns a future that
    /// enqueues the batch, waiting for buffer room like [`Producer::enqueue`], and gives the
    /// [`BatchDelivery`] of its acknowledgement. The records borrow nothing once this returns.
    ///
    /// The batch is sent as it is (not merged with other records), after the records `send`
    /// enqueued before it for the same partition. Its records get consecutive offsets
    /// ([`BatchMetadata::offset`]). Errors: [`ClientError::Batch`] for no records or more
    /// than the wire allows, [`ClientError::RecordTooLarge`] for a batch larger than
    /// `max_buffered_bytes`, the wire's or the topic's batch limit,
    /// [`ClientError::UnknownPartition`] / [`ClientError::UnknownTopic`].
    pub fn enqueue_batch<'a>(
        &self,
        topic: &str,
        partition: u32,
        records: impl IntoIterator<Item = BatchRecord<'a>>,
    ) -> impl Future<Output = Result<BatchDelivery, ClientError>> + Send + 'static {
        let shared = self.shared.clone();
        let built = if shared.closed.load(Ordering::Acquire) {
            Err(ClientError::Closed)
        } else {
            shared.pool.build(records, now_ms())
        };
        let topic = topic.to_owned();
        async move {
            let (bytes, record_count) = built?;
            let reserved_bytes = bytes.len();
            if reserved_bytes > shared.max_record_bytes {
                shared.pool.give_back(bytes);
                return Err(ClientError::RecordTooLarge {
                    size_bytes: reserved_bytes,
                    max_bytes: shared.max_record_bytes,
                });
            }
            let waiting = reserve(&shared, reserved_bytes).await?;
            let (reply, receiver) = oneshot::channel();
            let command = Command::Batch(BuiltBatch {
                topic,
                partition,
                bytes,
                record_count,
                reserved_bytes,
                reply,
            });
            let sent = shared.commands.send(command);
            drop(waiting);
            if sent.is_err() {
                shared.buffer.add_permits(reserved_bytes);
                return Err(ClientError::Closed);
            }
            shared.intake.wake.notify_one();
            Ok(BatchDelivery { receiver })
        }
    }

    /// Waits until every record enqueued before this call is acknowledged or has failed (the
    /// records' own futures tell which). Open batches are sent without waiting for their
    /// linger.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Flush(done))
            .map_err(|_| ClientError::Closed)?;
        self.shared.intake.wake.notify_one();
        wait.await.map_err(|_| ClientError::Closed)
    }

    /// Flushes, then stops the sender task. Every clone of this producer is closed: later
    /// sends fail with [`ClientError::Closed`]. Closing twice is fine.
    pub async fn close(&self) -> Result<(), ClientError> {
        self.shared.closed.store(true, Ordering::Release);
        let (done, wait) = oneshot::channel();
        if self.shared.commands.send(Command::Close(done)).is_err() {
            return Ok(()); // already stopped
        }
        self.shared.intake.wake.notify_one();
        // An error here means the task already stopped, which is what we want.
        let _ = wait.await;
        Ok(())
    }
}

/// Hands a record whose buffer bytes are reserved to the sender task.
fn push(
    shared: &Shared,
    record: ProducerRecord,
    reserved_bytes: usize,
) -> Result<DeliveryFuture, ClientError> {
    let (reply, receiver) = oneshot::channel();
    let command = Command::Record {
        record,
        reserved_bytes,
        reply,
    };
    if shared.commands.send(command).is_err() {
        shared.buffer.add_permits(reserved_bytes);
        return Err(ClientError::Closed);
    }
    shared.intake.record_enqueued(reserved_bytes);
    Ok(DeliveryFuture { receiver })
}

/// Reserves `size_bytes` of the producer buffer, waiting in line behind earlier waiting calls
/// when it is full. The returned registration in the line (if it had to wait) is to be dropped
/// once the command is sent, so later calls cannot overtake it.
async fn reserve(
    shared: &Arc<Shared>,
    size_bytes: usize,
) -> Result<Option<WaitingGuard>, ClientError> {
    // Bounded by max_record_bytes <= u32::MAX, so the cast is exact.
    if shared.waiting.load(Ordering::Acquire) == 0 {
        if let Ok(permit) = shared.buffer.try_acquire_many(size_bytes as u32) {
            permit.forget();
            return Ok(None);
        }
    }
    shared.waiting.fetch_add(1, Ordering::AcqRel);
    let guard = WaitingGuard(shared.clone());
    wait_for_room(shared, size_bytes).await?;
    Ok(Some(guard))
}

/// Waits for `size_bytes` of the producer buffer (the caller is registered in the line).
async fn wait_for_room(shared: &Shared, size_bytes: usize) -> Result<(), ClientError> {
    let permit = shared
        .buffer
        .acquire_many(size_bytes as u32)
        .await
        .map_err(|_| ClientError::Closed)?;
    permit.forget();
    if shared.closed.load(Ordering::Acquire) {
        shared.buffer.add_permits(size_bytes);
        return Err(ClientError::Closed);
    }
    Ok(())
}

async fn enqueue_waiting(
    shared: &Arc<Shared>,
    record: ProducerRecord,
    reserved_bytes: usize,
    guard: WaitingGuard,
) -> Result<DeliveryFuture, ClientError> {
    wait_for_room(shared, reserved_bytes).await?;
    let delivery = push(shared, record, reserved_bytes);
    drop(guard);
    delivery
}

/// Outcome of one batch of a produce request: its base offset (`None` with acks = 0).
type BatchOutcome = Result<Option<u64>, ClientError>;

/// A produce request in flight: resolves to each of its batches with its outcome.
type ProduceFuture = Pin<Box<dyn Future<Output = Vec<(ProducerBatch, BatchOutcome)>> + Send>>;

/// What produce and metadata tasks report back to the sender task.
enum Event {
    Produced(Vec<(ProducerBatch, BatchOutcome)>),
    Metadata(Result<Arc<ClusterMetadata>, ClientError>),
    ProducerId(Result<(i64, i16), ClientError>),
}

/// Where the idempotent producer's id stands.
enum ProducerIdState {
    /// Idempotence is off.
    Off,
    /// Needed, not asked for yet.
    Wanted,
    /// Asked for; batches wait.
    Requested,
    /// Batches are stamped with this id and epoch.
    Ready { id: i64, epoch: i16 },
    /// The broker would not give one: batches fail with this.
    Failed(ClientError),
}

/// What waits for its topic's metadata.
enum ParkedItem {
    /// A record of `send`.
    Record {
        record: ProducerRecord,
        reply: Reply,
    },
    /// A batch of `send_batch`.
    Batch(BuiltBatch),
}

/// A record or batch waiting for its topic's metadata.
struct Parked {
    item: ParkedItem,
    reserved_bytes: usize,
    seq: u64,
}

impl Parked {
    fn topic(&self) -> &str {
        match &self.item {
            ParkedItem::Record { record, .. } => &record.topic,
            ParkedItem::Batch(batch) => &batch.topic,
        }
    }

    /// Fails it with `error`; returns the batch buffer to give back, if any.
    fn fail(self, error: ClientError) -> Option<wire::AlignedVec<16>> {
        match self.item {
            ParkedItem::Record { reply, .. } => {
                let _ = reply.send(Err(error));
                None
            }
            ParkedItem::Batch(batch) => {
                let _ = batch.reply.send(Err(error));
                Some(batch.bytes)
            }
        }
    }
}

#[derive(Default)]
struct ParkedTopic {
    records: VecDeque<Parked>,
    /// Metadata refreshes that did not know the topic so far.
    misses: u32,
}

#[derive(Default)]
struct MetadataState {
    /// A refresh is wanted (parked records, or an error suggesting stale metadata).
    wanted: bool,
    in_flight: bool,
    /// No refresh before this (backoff after a failed or useless refresh).
    not_before: Option<Instant>,
    failures: u32,
}

/// Most batch bytes in one produce request: half the wire's frame limit (`FRAME_SIZE_MAX`,
/// 64 MiB), leaving ample room for the request's own fields. A single batch (at most
/// `BATCH_SIZE_MAX`, 16 MiB) always fits; more batches for one endpoint go in further
/// requests, written right behind.
const REQUEST_BATCH_BYTES_MAX: usize = wire::protocol::FRAME_SIZE_MAX / 2;

/// Splits `batches` (in order) into runs of at most `max_bytes` of batch bytes each (a batch
/// larger than that alone in its run).
fn split_by_bytes(batches: Vec<ProducerBatch>, max_bytes: usize) -> Vec<Vec<ProducerBatch>> {
    let mut runs: Vec<Vec<ProducerBatch>> = Vec::new();
    let mut run_bytes = 0;
    for batch in batches {
        let bytes = batch.bytes.len();
        match runs.last_mut() {
            Some(run) if run_bytes + bytes <= max_bytes => {
                run_bytes += bytes;
                run.push(batch);
            }
            _ => {
                run_bytes = bytes;
                runs.push(vec![batch]);
            }
        }
    }
    runs
}

/// Most commands handled in one round before the sender task drains and sends, so a flood of
/// records cannot delay sending (and thus acknowledgements) indefinitely.
const COMMANDS_PER_ROUND_MAX: usize = 4096;

/// The background task that owns the accumulator.
struct SenderTask {
    config: ProducerConfig,
    cluster: Arc<Cluster>,
    commands: mpsc::UnboundedReceiver<Command>,
    events_sender: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    accumulator: Accumulator,
    partitioner: Partitioner,
    buffer: Arc<Semaphore>,
    /// Where completed `send_batch` buffers go back.
    pool: Arc<BatchPool>,
    /// How callers wake this task (see [`Intake`]).
    intake: Arc<Intake>,
    /// The last round of commands stopped at [`COMMANDS_PER_ROUND_MAX`]: more may be
    /// queued, so the intake stays eager.
    commands_left: bool,
    parked: HashMap<String, ParkedTopic>,
    /// The route of the topic of the previous record, valid for the current round of
    /// commands: a run of records to one topic looks its route up once.
    round_route: Option<Arc<TopicRoute>>,
    /// Wall-clock time read once per round of commands, for records without a timestamp.
    round_now_ms: i64,
    /// Monotonic time read once per round of commands: when batches opened in the round
    /// were created (for their linger).
    round_now: Instant,
    metadata: MetadataState,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    /// Produce requests in flight, polled by this task.
    requests: FuturesUnordered<ProduceFuture>,
    /// Per endpoint, fires once the latest produce request dispatched to it is written.
    last_written: HashMap<Arc<str>, oneshot::Receiver<()>>,
    next_seq: u64,
    input_open: bool,
    producer_id: ProducerIdState,
    /// Next sequence number per partition (idempotent producer).
    sequences: HashMap<(Arc<str>, u32), i32>,
    /// Stamped batches not yet acknowledged or failed.
    stamped_outstanding: usize,
    /// A stamped batch failed for good: its sequence numbers were never written, so every
    /// later batch of its partition would be refused (`OutOfOrderSequence`). Once every stamped
    /// batch is done, the producer bumps its epoch and starts the sequences again at 0, which
    /// the broker accepts (a newer epoch resets its record of the producer), as Kafka's
    /// idempotent producer does (KIP-360). New batches wait meanwhile.
    epoch_bump_wanted: bool,
}

impl SenderTask {
    fn new(
        config: ProducerConfig,
        cluster: Arc<Cluster>,
        commands: mpsc::UnboundedReceiver<Command>,
        buffer: Arc<Semaphore>,
        pool: Arc<BatchPool>,
        intake: Arc<Intake>,
    ) -> Self {
        let (events_sender, events) = mpsc::unbounded_channel();
        let config_idempotent = config.idempotent();
        let accumulator = Accumulator::new(AccumulatorConfig {
            batch_size_bytes: config.batch_size_bytes,
            linger: config.linger,
            max_in_flight: config.max_in_flight_per_partition,
            crc_by_stamp: pool.crc_by_stamp(),
        });
        SenderTask {
            config,
            cluster,
            commands,
            events_sender,
            events,
            accumulator,
            partitioner: Partitioner::default(),
            buffer,
            pool,
            intake,
            commands_left: false,
            parked: HashMap::new(),
            round_route: None,
            round_now_ms: 0,
            round_now: Instant::now(),
            metadata: MetadataState::default(),
            flush_waiters: Vec::new(),
            close_waiters: Vec::new(),
            requests: FuturesUnordered::new(),
            last_written: HashMap::new(),
            next_seq: 0,
            input_open: true,
            producer_id: if config_idempotent {
                ProducerIdState::Wanted
            } else {
                ProducerIdState::Off
            },
            sequences: HashMap::new(),
            stamped_outstanding: 0,
            epoch_bump_wanted: false,
        }
    }

    async fn run(mut self) {
        loop {
            // Commands that arrived without waking this task (lazy intake), or while it was
            // busy: taken before anything is sent.
            if self.input_open {
                self.take_commands(None);
            }
            let now = Instant::now();
            self.maybe_refresh_metadata(now);
            self.maybe_bump_epoch();
            self.maybe_init_producer_id();
            self.dispatch(now);
            self.release(0);
            self.check_flush_waiters();
            if !self.input_open && self.is_idle() {
                break;
            }
            let deadline = self.next_deadline();
            let lazy = self.lazy_intake();
            self.intake.lazy.store(lazy, Ordering::Release);
            tokio::select! {
                biased;
                Some(results) = self.requests.next(), if !self.requests.is_empty() => {
                    self.on_event(Event::Produced(results));
                }
                Some(event) = self.events.recv() => self.on_event(event),
                command = self.commands.recv(), if self.input_open && !lazy => {
                    self.take_commands(Some(command));
                }
                // Lazy: woken by a batch's worth of records, a flush, a close or a
                // `send_batch`; the loop's top takes the commands.
                () = self.intake.wake.notified(), if self.input_open && lazy => {}
                _ = sleep_until_opt(deadline), if deadline.is_some() => {}
            }
        }
        for waiter in self.flush_waiters.drain(..) {
            let _ = waiter.1.send(());
        }
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
        // Wake `send`s waiting for room: they fail with Closed.
        self.buffer.close();
        debug!("producer sender task stopped");
    }

    /// Takes a round of commands: `first` (from a wake-up; `Some(None)`: the channel closed)
    /// then whatever else is queued, up to [`COMMANDS_PER_ROUND_MAX`]. One clock reading
    /// per round stamps the records.
    fn take_commands(&mut self, first: Option<Option<Command>>) {
        let first = match first {
            Some(first) => first,
            None => match self.commands.try_recv() {
                Ok(command) => Some(command),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            },
        };
        self.intake.pending_bytes.store(0, Ordering::Release);
        let Some(first) = first else {
            // Every producer handle is gone: send what is buffered, then stop.
            self.input_open = false;
            self.accumulator.flushing = true;
            return;
        };
        self.round_route = None;
        self.round_now_ms = now_ms();
        self.round_now = Instant::now();
        self.on_command(first);
        self.commands_left = true;
        for _ in 1..COMMANDS_PER_ROUND_MAX {
            match self.commands.try_recv() {
                Ok(command) => self.on_command(command),
                Err(_) => {
                    self.commands_left = false;
                    break;
                }
            }
        }
    }

    /// Whether callers may skip waking this task for each record (see [`Intake`]): a
    /// request is in flight (its answer wakes this task), and every partition holding
    /// records (open or ready) has one in flight, so with the records appended now nothing
    /// more could leave before that answer, except a batch filled by size, which the
    /// callers' byte count wakes this task for. Not while a flush waits or records wait for
    /// metadata. A record for a partition idle right now may then wait up to one answer
    /// (or a batch's worth of records) before it is appended and sent.
    fn lazy_intake(&self) -> bool {
        !self.commands_left
            && !self.requests.is_empty()
            && self.flush_waiters.is_empty()
            && self.parked.is_empty()
            && !self.accumulator.flushing
            && self.accumulator.every_loaded_partition_in_flight()
    }

    fn is_idle(&self) -> bool {
        self.accumulator.is_idle() && self.parked.is_empty() && !self.metadata.in_flight
    }

    /// When the cached metadata reaches `metadata_max_age` (if the producer uses any topic and
    /// no refresh is under way), but not before the backoff of a failed refresh: the next
    /// periodic refresh.
    fn metadata_expiry(&self) -> Option<Instant> {
        if self.metadata.in_flight {
            return None;
        }
        let snapshot = self.cluster.snapshot();
        if snapshot.topics.is_empty() {
            return None;
        }
        let expiry = snapshot.refreshed_at? + self.config.metadata_max_age;
        Some(
            self.metadata
                .not_before
                .map_or(expiry, |not_before| expiry.max(not_before)),
        )
    }

    fn next_deadline(&self) -> Option<Instant> {
        let metadata = (self.metadata.wanted && !self.metadata.in_flight)
            .then_some(self.metadata.not_before)
            .flatten()
            .into_iter()
            .chain(self.metadata_expiry())
            .min();
        match (self.accumulator.next_deadline(), metadata) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives buffer bytes back (plus whatever the accumulator released).
    fn release(&mut self, bytes: usize) {
        let bytes = bytes + self.accumulator.take_released_bytes();
        if bytes > 0 {
            self.buffer.add_permits(bytes);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Record {
                mut record,
                reserved_bytes,
                reply,
            } => {
                if record.timestamp_ms.is_none() {
                    record.timestamp_ms = Some(self.round_now_ms);
                }
                self.admit(ParkedItem::Record { record, reply }, reserved_bytes);
            }
            Command::Batch(batch) => {
                let reserved_bytes = batch.reserved_bytes;
                self.admit(ParkedItem::Batch(batch), reserved_bytes);
            }
            Command::Flush(done) => {
                self.flush_waiters.push((self.next_seq, done));
                self.accumulator.flushing = true;
            }
            Command::Close(done) => {
                self.close_waiters.push(done);
                self.input_open = false;
                self.accumulator.flushing = true;
            }
        }
    }

    /// Numbers a record or batch and places it, or parks it until its topic is known.
    fn admit(&mut self, item: ParkedItem, reserved_bytes: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let parked = Parked {
            item,
            reserved_bytes,
            seq,
        };
        // Records behind parked ones of the same topic park too, to keep their order.
        if !self.parked.is_empty() {
            if let Some(topic) = self.parked.get_mut(parked.topic()) {
                topic.records.push_back(parked);
                return;
            }
        }
        let route = match self.round_route.take() {
            Some(route) if *route.name == *parked.topic() => Some(route),
            _ => self.cluster.cached_route(parked.topic()),
        };
        match route {
            Some(route) => {
                self.place(parked, &route, self.round_now);
                self.round_route = Some(route);
            }
            None => {
                self.metadata.wanted = true;
                self.parked
                    .entry(parked.topic().to_owned())
                    .or_default()
                    .records
                    .push_back(parked);
            }
        }
    }

    /// Gives a finished batch's buffer back to where it was built.
    fn recycle(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        prebuilt: bool,
        bytes: wire::AlignedVec<16>,
    ) {
        if prebuilt {
            self.pool.give_back(bytes);
        } else {
            self.accumulator.recycle(topic, partition, bytes);
        }
    }

    /// Appends a record (picking its partition) or queues a batch, once its topic is known.
    fn place(&mut self, parked: Parked, route: &TopicRoute, now: Instant) {
        let Parked {
            item,
            reserved_bytes,
            seq,
        } = parked;
        let (record, reply) = match item {
            ParkedItem::Record { record, reply } => (record, reply),
            ParkedItem::Batch(batch) => return self.place_batch(batch, seq, route),
        };
        let partitions = route.partition_count();
        let fail = |this: &mut Self, reply: Reply, error: ClientError| {
            let _ = reply.send(Err(error));
            this.release(reserved_bytes);
        };
        if partitions == 0 {
            let error = ClientError::UnknownTopic {
                topic: record.topic.clone(),
            };
            return fail(self, reply, error);
        }
        let partition = match (record.partition, &record.key) {
            (Some(partition), _) if partition >= partitions => {
                let error = ClientError::UnknownPartition {
                    topic: record.topic.clone(),
                    partition,
                    partitions,
                };
                return fail(self, reply, error);
            }
            (Some(partition), _) => partition,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => self.partitioner.keyless(&route.name, partitions),
        };
        let topic_limit = topic_batch_limit(route);
        if empty_batch_size() + reserved_bytes > topic_limit {
            let error = ClientError::RecordTooLarge {
                size_bytes: empty_batch_size() + reserved_bytes,
                max_bytes: topic_limit,
            };
            return fail(self, reply, error);
        }
        let data = RecordData {
            timestamp_ms: record.timestamp_ms.unwrap_or_else(now_ms),
            key: record.key.as_deref(),
            value: &record.value,
            headers: &record.headers,
            tags: &record.tags,
        };
        let cut = self.accumulator.append(
            &route.name,
            partition,
            data,
            reply,
            reserved_bytes,
            seq,
            topic_limit,
            now,
        );
        if cut {
            self.partitioner
                .batch_cut(&route.name, partition, partitions);
        }
    }

    /// Queues a `send_batch` batch whose topic is known, or fails it.
    fn place_batch(&mut self, batch: BuiltBatch, seq: u64, route: &TopicRoute) {
        let partitions = route.partition_count();
        let topic_limit = topic_batch_limit(route);
        let error = if partitions == 0 {
            Some(ClientError::UnknownTopic {
                topic: batch.topic.clone(),
            })
        } else if batch.partition >= partitions {
            Some(ClientError::UnknownPartition {
                topic: batch.topic.clone(),
                partition: batch.partition,
                partitions,
            })
        } else if batch.bytes.len() > topic_limit {
            Some(ClientError::RecordTooLarge {
                size_bytes: batch.bytes.len(),
                max_bytes: topic_limit,
            })
        } else {
            None
        };
        if let Some(error) = error {
            let _ = batch.reply.send(Err(error));
            self.release(batch.reserved_bytes);
            self.pool.give_back(batch.bytes);
            return;
        }
        self.accumulator.append_built(
            &route.name,
            batch.partition,
            batch.bytes,
            batch.reply,
            batch.record_count,
            batch.reserved_bytes,
            seq,
        );
    }

    fn maybe_refresh_metadata(&mut self, now: Instant) {
        if self.metadata_expiry().is_some_and(|at| at <= now) {
            self.metadata.wanted = true;
        }
        let state = &mut self.metadata;
        if !state.wanted || state.in_flight || state.not_before.is_some_and(|at| at > now) {
            return;
        }
        state.wanted = false;
        state.in_flight = true;
        let snapshot = self.cluster.snapshot();
        let mut topics: Vec<String> = snapshot.topics.keys().cloned().collect();
        topics.extend(self.parked.keys().cloned());
        let cluster = self.cluster.clone();
        let events = self.events_sender.clone();
        tokio::spawn(async move {
            let result = cluster.refresh(Some(&topics)).await;
            let _ = events.send(Event::Metadata(result));
        });
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Produced(outcomes) => {
                for (batch, outcome) in outcomes {
                    self.accumulator.returned(&batch);
                    match outcome {
                        Ok(base_offset) => {
                            if batch.stamped {
                                self.stamped_outstanding =
                                    self.stamped_outstanding.saturating_sub(1);
                            }
                            self.accumulator.finished(&batch);
                            self.release(batch.reserved_bytes);
                            let (topic, partition) = (batch.topic.clone(), batch.partition);
                            let prebuilt = batch.prebuilt();
                            let bytes = batch.complete(base_offset);
                            self.recycle(&topic, partition, prebuilt, bytes);
                        }
                        Err(error) => self.on_batch_error(batch, error, now),
                    }
                }
            }
            Event::ProducerId(result) => {
                self.producer_id = match result {
                    Ok((id, epoch)) => {
                        debug!(producer_id = id, epoch, "idempotent producer ready");
                        ProducerIdState::Ready { id, epoch }
                    }
                    Err(error) => {
                        warn!(%error, "no producer id: batches fail");
                        ProducerIdState::Failed(error)
                    }
                };
            }
            Event::Metadata(result) => {
                self.metadata.in_flight = false;
                match result {
                    Ok(snapshot) => {
                        self.metadata.failures = 0;
                        self.on_metadata(&snapshot, now);
                    }
                    Err(error) => {
                        self.metadata.failures += 1;
                        let failures = self.metadata.failures;
                        debug!(%error, failures, "metadata refresh failed");
                        if !self.parked.is_empty() {
                            if error.is_retriable() && failures <= self.config.retries {
                                self.metadata.wanted = true;
                            } else {
                                warn!(%error, "no metadata; failing the records waiting for it");
                                self.fail_parked(|_| Some(error.clone()));
                                self.metadata.failures = 0;
                            }
                        }
                        self.metadata.not_before =
                            Some(now + self.config.backoff(self.metadata.failures.max(1)));
                    }
                }
            }
        }
    }

    /// Places parked records whose topic is now known; counts a miss for the others, failing
    /// them with `UnknownTopic` after `retries` misses.
    fn on_metadata(&mut self, snapshot: &ClusterMetadata, now: Instant) {
        let leader_epoch = |topic: &str, partition: u32| {
            let route = snapshot.topics.get(topic)?;
            let partition = route.partition(partition)?;
            partition.endpoint.as_ref()?;
            Some(partition.leader_epoch)
        };
        if self.accumulator.end_backoffs_of_moved_leaders(leader_epoch) {
            // A partition waits for a leader to replace the one its batch failed on: look
            // again soon (one metadata request per `retry_backoff`) rather than at its next
            // retry, so a failover costs the election, not a backoff on top.
            self.metadata.wanted = true;
            self.metadata.not_before = Some(now + self.config.retry_backoff);
        }
        let mut still_missing = false;
        let names: Vec<String> = self.parked.keys().cloned().collect();
        for name in names {
            if let Some(route) = snapshot.topics.get(&name).cloned() {
                if let Some(topic) = self.parked.remove(&name) {
                    for parked in topic.records {
                        self.place(parked, &route, now);
                    }
                }
                continue;
            }
            let retries = self.config.retries;
            if let Some(topic) = self.parked.get_mut(&name) {
                topic.misses += 1;
                if topic.misses > retries {
                    let error = ClientError::UnknownTopic {
                        topic: name.clone(),
                    };
                    debug!(topic = %name, "topic unknown after {retries} metadata refreshes");
                    self.fail_parked(|n| (n == name).then(|| error.clone()));
                } else {
                    still_missing = true;
                }
            }
        }
        if still_missing {
            self.metadata.wanted = true;
            self.metadata.not_before = Some(now + self.config.retry_backoff);
        }
    }

    /// Fails the parked records of every topic for which `error_for` gives an error.
    fn fail_parked(&mut self, error_for: impl Fn(&str) -> Option<ClientError>) {
        let names: Vec<String> = self.parked.keys().cloned().collect();
        for name in names {
            let Some(error) = error_for(&name) else {
                continue;
            };
            if let Some(topic) = self.parked.remove(&name) {
                for parked in topic.records {
                    self.release(parked.reserved_bytes);
                    if let Some(bytes) = parked.fail(error.clone()) {
                        self.pool.give_back(bytes);
                    }
                }
            }
        }
    }

    fn on_batch_error(&mut self, mut batch: ProducerBatch, error: ClientError, now: Instant) {
        batch.attempts += 1;
        if error.invalidates_metadata() {
            self.metadata.wanted = true;
        }
        // Refused because an earlier batch of the partition has not been written yet (it is
        // in flight or waits for its own retry): not this batch's failure, so not bounded by
        // its retries; it ends when the earlier batch succeeds or fails for good.
        let overtook = error.code() == Some(ErrorCode::OutOfOrderSequence)
            && self.accumulator.has_earlier_incomplete(&batch);
        if overtook || (error.is_retriable() && batch.attempts <= self.config.retries) {
            let backoff = self.config.backoff(batch.attempts);
            debug!(
                topic = %batch.topic,
                partition = batch.partition,
                attempt = batch.attempts,
                ?backoff,
                %error,
                "retrying batch"
            );
            // The leader it failed against, when the error says leadership may have moved:
            // a newer leader in the next metadata sends it at once (see `on_metadata`).
            let failed_epoch = error
                .invalidates_metadata()
                .then(|| {
                    self.cluster
                        .cached_route(&batch.topic)
                        .and_then(|route| route.partition(batch.partition).map(|p| p.leader_epoch))
                })
                .flatten();
            self.accumulator.retry(batch, now + backoff, failed_epoch);
            return;
        }
        warn!(
            topic = %batch.topic,
            partition = batch.partition,
            records = batch.record_count(),
            attempts = batch.attempts,
            %error,
            "batch failed"
        );
        self.fail_batch(batch, &error);
    }

    /// Gives up on a batch: its records fail with `error`.
    fn fail_batch(&mut self, batch: ProducerBatch, error: &ClientError) {
        if batch.stamped {
            self.stamped_outstanding = self.stamped_outstanding.saturating_sub(1);
            if !self.epoch_bump_wanted {
                warn!(
                    topic = %batch.topic,
                    partition = batch.partition,
                    "an idempotent batch failed for good: new batches wait for the others, \
                     then the producer epoch is bumped"
                );
            }
            self.epoch_bump_wanted = true;
            self.accumulator.hold_new = true;
        }
        self.accumulator.finished(&batch);
        self.release(batch.reserved_bytes);
        let (topic, partition) = (batch.topic.clone(), batch.partition);
        let prebuilt = batch.prebuilt();
        let bytes = batch.fail(error);
        self.recycle(&topic, partition, prebuilt, bytes);
    }

    /// Bumps the producer epoch once every stamped batch is done after one failed for good
    /// (see `epoch_bump_wanted`): sequences restart at 0 under the new epoch; at the last
    /// epoch a new producer id is asked for instead.
    fn maybe_bump_epoch(&mut self) {
        if !self.epoch_bump_wanted || self.stamped_outstanding > 0 {
            return;
        }
        self.epoch_bump_wanted = false;
        self.accumulator.hold_new = false;
        self.sequences.clear();
        if let ProducerIdState::Ready { id, epoch } = self.producer_id {
            self.producer_id = match epoch.checked_add(1) {
                Some(next) => {
                    debug!(producer_id = id, epoch = next, "producer epoch bumped");
                    ProducerIdState::Ready { id, epoch: next }
                }
                None => ProducerIdState::Wanted,
            };
        }
    }

    /// Asks for a producer id once (idempotent producer), retrying retriable failures.
    fn maybe_init_producer_id(&mut self) {
        if !matches!(self.producer_id, ProducerIdState::Wanted) {
            return;
        }
        self.producer_id = ProducerIdState::Requested;
        let cluster = self.cluster.clone();
        let events = self.events_sender.clone();
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut attempt = 0;
            let result = loop {
                let request = wire::protocol::InitProducerIdRequest {
                    transactional_id: None,
                };
                let answer = match cluster
                    .bootstrap_request(ApiKey::InitProducerId, &request)
                    .await
                {
                    Ok(frame) => crate::connection::decode_body::<
                        wire::protocol::InitProducerIdResponse,
                    >(&frame)
                    .map(|r| (r.producer_id, r.producer_epoch)),
                    Err(error) => Err(error),
                };
                match answer {
                    Err(error) if error.is_retriable() && attempt < config.retries => {
                        attempt += 1;
                        tokio::time::sleep(config.backoff(attempt)).await;
                    }
                    other => break other,
                }
            };
            let _ = events.send(Event::ProducerId(result));
        });
    }

    /// Stamps a batch leaving for the first time with the producer id and the partition's next
    /// sequence number (idempotent producer); retries keep their stamp.
    fn stamp(&mut self, batch: &mut ProducerBatch) -> Result<(), ClientError> {
        let ProducerIdState::Ready { id, epoch } = self.producer_id else {
            return Ok(());
        };
        if batch.stamped {
            return Ok(());
        }
        let header = wire::peek_header(&batch.bytes, wire::limits::BATCH_SIZE_MAX)
            .map_err(ClientError::Batch)?;
        let next = self
            .sequences
            .entry((batch.topic.clone(), batch.partition))
            .or_insert(0);
        wire::stamp_producer(&mut batch.bytes, id, epoch, *next).map_err(ClientError::Batch)?;
        batch.stamped = true;
        self.stamped_outstanding += 1;
        // Sequences wrap from i32::MAX to 0, as the broker expects.
        *next = ((i64::from(*next) + i64::from(header.record_count)) % (i64::from(i32::MAX) + 1))
            as i32;
        Ok(())
    }

    /// Sends every batch that may go now: one produce request per shard endpoint.
    fn dispatch(&mut self, now: Instant) {
        if matches!(
            self.producer_id,
            ProducerIdState::Wanted | ProducerIdState::Requested
        ) {
            return; // batches wait for the producer id
        }
        let batches = self.accumulator.drain(now);
        if batches.is_empty() {
            return;
        }
        let snapshot = self.cluster.snapshot();
        let mut groups: HashMap<Arc<str>, Vec<ProducerBatch>> = HashMap::new();
        for mut batch in batches {
            let stamped = match &self.producer_id {
                ProducerIdState::Failed(error) => Err(error.clone()),
                _ => self.stamp(&mut batch),
            };
            if let Err(error) = stamped {
                self.accumulator.returned(&batch);
                self.fail_batch(batch, &error);
                continue;
            }
            let route = snapshot.topics.get(&*batch.topic);
            if let (0, Some(route)) = (batch.attempts, route) {
                // A batch leaving on its first attempt was cut, by linger or flush here or by
                // size in `place` (which already moved the sticky partition on, so this call
                // then changes nothing): keyless records move on to the next partition.
                self.partitioner
                    .batch_cut(&route.name, batch.partition, route.partition_count());
            }
            let endpoint = match route {
                Some(route) => route.endpoint(batch.partition),
                None => Err(ClientError::UnknownTopic {
                    topic: batch.topic.to_string(),
                }),
            };
            match endpoint {
                Ok(endpoint) => groups.entry(endpoint).or_default().push(batch),
                Err(error) => {
                    self.accumulator.returned(&batch);
                    // Unknown topic here means it vanished from the metadata: retriable
                    // until the refreshes confirm it.
                    let error = match error {
                        ClientError::UnknownTopic { topic } => ClientError::NoLeader {
                            topic,
                            partition: batch.partition,
                        },
                        other => other,
                    };
                    self.on_batch_error(batch, error, now);
                }
            }
        }
        for (endpoint, batches) in groups {
            for batches in split_by_bytes(batches, REQUEST_BATCH_BYTES_MAX) {
                self.send_request(endpoint.clone(), batches);
            }
        }
    }

    /// Starts one produce request carrying `batches` to `endpoint`.
    fn send_request(&mut self, endpoint: Arc<str>, batches: Vec<ProducerBatch>) {
        let cluster = self.cluster.clone();
        let acks = self.config.acks;
        let timeout = self.config.request_timeout;
        // Each request is its own future, polled by this task (no task spawned, no channel
        // hop: the connection's reader wakes this task directly), but the requests to one
        // endpoint are written in dispatch order: each waits until the previous one is on
        // the socket (or has failed), so the broker appends a partition's batches in the
        // order they were cut.
        let (written, written_signal) = oneshot::channel();
        let previous = self.last_written.insert(endpoint.clone(), written_signal);
        self.requests.push(Box::pin(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let outcomes = produce(&cluster, &endpoint, acks, timeout, &batches, written).await;
            match outcomes {
                Ok(outcomes) => batches.into_iter().zip(outcomes).collect(),
                Err(error) => batches
                    .into_iter()
                    .map(|batch| (batch, Err(error.clone())))
                    .collect(),
            }
        }));
    }

    fn check_flush_waiters(&mut self) {
        if self.flush_waiters.is_empty() {
            if self.input_open {
                self.accumulator.flushing = false;
            }
            return;
        }
        let parked_min = self
            .parked
            .values()
            .filter_map(|topic| topic.records.front().map(|p| p.seq))
            .min();
        let min_incomplete = match (self.accumulator.min_incomplete(), parked_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (target, done) in std::mem::take(&mut self.flush_waiters) {
            if min_incomplete.is_none_or(|min| min >= target) {
                let _ = done.send(());
            } else {
                self.flush_waiters.push((target, done));
            }
        }
    }
}

/// The largest batch `route`'s topic accepts.
fn topic_batch_limit(route: &TopicRoute) -> usize {
    match route.config.max_batch_bytes {
        0 => BATCH_SIZE_MAX,
        limit => (limit as usize).min(BATCH_SIZE_MAX),
    }
}

/// `sleep_until` for an optional deadline (the select branch is disabled when `None`).
async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Sends one produce request carrying `batches` (one per partition) to `endpoint` and returns
/// one outcome per batch, in order. An error for the whole request is returned as `Err`.
async fn produce(
    cluster: &Cluster,
    endpoint: &str,
    acks: Acks,
    timeout: Duration,
    batches: &[ProducerBatch],
    written: oneshot::Sender<()>,
) -> Result<Vec<BatchOutcome>, ClientError> {
    let connection = cluster.connection(endpoint).await?;
    let mut request = ProduceRequest {
        acks,
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        topics: Vec::new(),
    };
    for batch in batches {
        let partition = ProducePartition {
            partition: batch.partition,
            records: Records::from_slice(&batch.bytes),
        };
        match request
            .topics
            .iter_mut()
            .find(|t| t.topic.as_str() == &*batch.topic)
        {
            Some(topic) => topic.partitions.push(partition),
            None => request.topics.push(ProduceTopic {
                topic: batch.topic.to_string(),
                partitions: vec![partition],
            }),
        }
    }
    if acks == Acks::None {
        connection.send_oneway(ApiKey::Produce, &request).await?;
        drop(written);
        return Ok(batches.iter().map(|_| Ok(None)).collect());
    }
    let frame = connection
        .request_ordered(ApiKey::Produce, &request, Some(written))
        .await?;
    let response: ProduceResponse = decode_body(&frame)?;
    // One request may carry several batches of the same partition (up to
    // `max_in_flight_per_partition` drained at once); the broker answers each in request
    // order, so the k-th batch of a partition takes the k-th answer for that partition.
    let mut answered: HashMap<(&str, u32), usize> = HashMap::new();
    Ok(batches
        .iter()
        .map(|batch| {
            let nth = answered
                .entry((&*batch.topic, batch.partition))
                .or_default();
            let answer = response
                .topics
                .iter()
                .filter(|t| t.topic.as_str() == &*batch.topic)
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.partition == batch.partition)
                .nth(*nth);
            *nth += 1;
            match answer {
                None => Err(ClientError::Broker {
                    code: wire::protocol::ErrorCode::Unknown,
                    message: format!(
                        "produce response has no answer for {}/{}",
                        batch.topic, batch.partition
                    ),
                }),
                Some(answer) if !answer.error.is_ok() => {
                    Err(ClientError::broker(answer.error.clone()))
                }
                Some(answer) => {
                    u64::try_from(answer.base_offset)
                        .map(Some)
                        .map_err(|_| ClientError::Broker {
                            code: wire::protocol::ErrorCode::Unknown,
                            message: format!(
                                "negative base offset {} for {}/{}",
                                answer.base_offset, batch.topic, batch.partition
                            ),
                        })
                }
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Backoff doubles from `retry_backoff` and stops at `retry_backoff_max`.
    #[test]
    fn backoff_doubles_and_caps() {
        let config = ProducerConfig::default();
        assert_eq!(config.backoff(1), Duration::from_millis(100));
        assert_eq!(config.backoff(2), Duration::from_millis(200));
        assert_eq!(config.backoff(4), Duration::from_millis(800));
        assert_eq!(config.backoff(5), Duration::from_secs(1));
        assert_eq!(config.backoff(60), Duration::from_secs(1));
    }

    /// Out-of-range settings are refused before anything starts.
    #[test]
    fn config_validation() {
        assert!(ProducerConfig::default().validate().is_ok());
        let spinning = ProducerConfig {
            spin_before_park: Duration::from_micros(200),
            ..ProducerConfig::default()
        };
        assert!(spinning.validate().is_ok());
        let spinning_for_seconds = ProducerConfig {
            spin_before_park: Duration::from_secs(1),
            ..ProducerConfig::default()
        };
        assert!(spinning_for_seconds.validate().is_err());
        let bad = ProducerConfig {
            max_in_flight_per_partition: 0,
            ..ProducerConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = ProducerConfig {
            batch_size_bytes: BATCH_SIZE_MAX + 1,
            ..ProducerConfig::default()
        };
        assert!(bad.validate().is_err());
        // Idempotent by default, within the broker's deduplication window; not with acks = 0.
        assert!(ProducerConfig::default().idempotent());
        let deep = ProducerConfig {
            max_in_flight_per_partition: IDEMPOTENT_IN_FLIGHT_MAX + 1,
            ..ProducerConfig::default()
        };
        assert!(deep.validate().is_err());
        let deep = ProducerConfig {
            enable_idempotence: false,
            ..deep
        };
        assert!(deep.validate().is_ok());
        let fire_and_forget = ProducerConfig {
            acks: Acks::None,
            max_in_flight_per_partition: IDEMPOTENT_IN_FLIGHT_MAX + 1,
            ..ProducerConfig::default()
        };
        assert!(!fire_and_forget.idempotent());
        assert!(fire_and_forget.validate().is_ok());
        let never = ProducerConfig {
            metadata_max_age: Duration::ZERO,
            ..ProducerConfig::default()
        };
        assert!(never.validate().is_err());
    }

    /// Sends to an address where nothing listens: the records fail with a retriable error
    /// after the retries, flush returns, and sends after close fail with `Closed`.
    #[tokio::test]
    async fn unreachable_broker_fails_records_after_retries() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener); // nothing listens there now
        let producer = Producer::new(ProducerConfig {
            retries: 2,
            retry_backoff: Duration::from_millis(5),
            retry_backoff_max: Duration::from_millis(10),
            ..ProducerConfig::new(addr)
        })
        .unwrap();
        let pending =
            producer.send(ProducerRecord::new("t", b"v".to_vec()).with_key(b"k".to_vec()));
        let error = tokio::time::timeout(Duration::from_secs(20), pending)
            .await
            .unwrap()
            .unwrap_err();
        assert!(error.is_retriable(), "{error}");
        producer.flush().await.unwrap();
        producer.close().await.unwrap();
        let after = producer.send(ProducerRecord::new("t", b"v".to_vec())).await;
        assert!(matches!(after, Err(ClientError::Closed)));
    }

    /// Requests are split so no frame exceeds the wire limit: runs keep order, stay under
    /// the byte bound, and an oversized batch travels alone.
    #[test]
    fn split_by_bytes_keeps_order_and_bound() {
        let batch = |len: usize, seq: u64| {
            let mut bytes = wire::AlignedVec::<16>::new();
            bytes.resize(len, 0);
            ProducerBatch {
                topic: Arc::from("t"),
                partition: 0,
                bytes,
                completion: crate::accumulator::Completion::Records(Vec::new()),
                reserved_bytes: 0,
                min_seq: seq,
                attempts: 0,
                stamped: false,
            }
        };
        let lens = [40, 50, 20, 200, 10, 10, 90];
        let batches = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| batch(len, i as u64))
            .collect();
        let runs = split_by_bytes(batches, 100);
        let shape: Vec<Vec<u64>> = runs
            .iter()
            .map(|run| run.iter().map(|b| b.min_seq).collect())
            .collect();
        assert_eq!(
            shape,
            vec![vec![0, 1], vec![2], vec![3], vec![4, 5], vec![6]]
        );
        assert!(split_by_bytes(Vec::new(), 100).is_empty());
    }

    /// A record that can never fit is refused at once.
    #[tokio::test]
    async fn oversized_record_is_refused() {
        let producer = Producer::new(ProducerConfig {
            max_buffered_bytes: 4096,
            ..ProducerConfig::new("127.0.0.1:1")
        })
        .unwrap();
        let result = producer
            .send(ProducerRecord::new("t", vec![0u8; 8192]))
            .await;
        assert!(matches!(result, Err(ClientError::RecordTooLarge { .. })));
    }
}
