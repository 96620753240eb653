//! The native Rust client of Sluice, on tokio: a [`Producer`] with per-partition batching, a
//! [`Consumer`] handing out zero-copy record views, and an [`Admin`] for topics.
//!
//! Place: above `wire` only (never the broker); used by the bench and the `sluice` binary's
//! command line.
//!
//! Everything takes the bootstrap address of a broker as a `host:port` string (several may be
//! given, comma-separated). Connections are opened lazily, kept in a pool per broker shard
//! endpoint, and reopened after a broker restart.
//!
//! # Create a topic
//!
//! ```no_run
//! use client::{Admin, NewTopic};
//!
//! # async fn example() -> Result<(), client::ClientError> {
//! let admin = Admin::new("127.0.0.1:9092")?;
//! admin.create_topic(NewTopic::new("orders", 8).with_retention_ms(7 * 24 * 3600 * 1000)).await?;
//! for topic in admin.list_topics().await? {
//!     println!("{} ({} partitions)", topic.name, topic.partitions.len());
//! }
//! # Ok(()) }
//! ```
//!
//! # Produce
//!
//! [`Producer::send`] enqueues the record at once and returns a future that resolves when the
//! broker acknowledges it. Records with the same key always go to the same partition, so they
//! are consumed in the order they were sent. Batching is tuned with
//! [`ProducerConfig::batch_size_bytes`] and [`ProducerConfig::linger`]: larger batches and a
//! longer linger buy throughput with latency.
//!
//! ```no_run
//! use std::time::Duration;
//! use client::{Acks, Producer, ProducerConfig, ProducerRecord};
//!
//! # async fn example() -> Result<(), client::ClientError> {
//! let producer = Producer::new(ProducerConfig {
//!     acks: Acks::All,
//!     linger: Duration::from_millis(2),
//!     ..ProducerConfig::new("127.0.0.1:9092")
//! })?;
//!
//! // One record: wait for its offset.
//! let record = ProducerRecord::new("orders", b"{\"total\": 42}".to_vec()).with_key(b"user-1".to_vec());
//! let metadata = producer.send(record).await?;
//! println!("stored in {}/{} at offset {:?}", metadata.topic, metadata.partition, metadata.offset);
//!
//! // Many records: enqueue them all, then wait for the acknowledgements together.
//! let mut pending = Vec::new();
//! for i in 0..1000 {
//!     let record = ProducerRecord::new("orders", format!("event {i}").into_bytes());
//!     pending.push(producer.enqueue(record).await?);
//! }
//! for delivery in pending {
//!     delivery.await?;
//! }
//! producer.close().await?;
//! # Ok(()) }
//! ```
//!
//! Records already grouped for one partition go faster through [`Producer::send_batch`]: they
//! borrow their bytes, the calling task encodes them into one record batch (one copy each), and
//! the batch is acknowledged once, its records at consecutive offsets.
//!
//! ```no_run
//! use client::{BatchRecord, Producer, ProducerConfig};
//!
//! # async fn example(values: Vec<Vec<u8>>) -> Result<(), client::ClientError> {
//! let producer = Producer::new(ProducerConfig::new("127.0.0.1:9092"))?;
//! let records = values.iter().map(|value| BatchRecord::new(value).with_key(b"user-1"));
//! let metadata = producer.send_batch("orders", 0, records).await?;
//! println!("{} records from offset {:?}", metadata.record_count, metadata.base_offset);
//! # Ok(()) }
//! ```
//!
//! # Consume
//!
//! A [`Consumer`] reads the partitions it is assigned, from the position set with
//! [`Consumer::seek`] (by default the earliest offset). [`Consumer::poll`] long-polls every
//! shard that owns an assigned partition and returns [`Records`], which own the fetched bytes;
//! each [`ConsumerRecord`] borrows its key and value from them without copying.
//!
//! ```no_run
//! use std::time::Duration;
//! use client::{Consumer, ConsumerConfig, Offset};
//!
//! # async fn example() -> Result<(), client::ClientError> {
//! let mut consumer = Consumer::new(ConsumerConfig::new("127.0.0.1:9092"))?;
//! let partitions = consumer.topic_partitions("orders").await?;
//! consumer.assign(&partitions);
//! for tp in &partitions {
//!     consumer.seek(tp, Offset::Earliest)?;
//! }
//! loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     for record in &records {
//!         println!(
//!             "{}/{}@{}: {}",
//!             record.topic,
//!             record.partition,
//!             record.offset,
//!             String::from_utf8_lossy(record.value)
//!         );
//!     }
//! }
//! # }
//! ```
//!
//! # Consume in a group
//!
//! With a [`GroupConfig`], [`Consumer::subscribe`] shares a topic's partitions with the other
//! members of the group (point-to-point within a group; every group gets every message). The
//! group's committed offsets say where each partition starts; [`GroupConfig::auto_offset_reset`]
//! applies to partitions without one. [`Delivery::AtLeastOnce`] (the default) commits what
//! earlier polls returned, every `auto_commit_interval` and before a rebalance takes a
//! partition away; [`Delivery::AtMostOnce`] commits before `poll` returns the records.
//!
//! ```no_run
//! use std::time::Duration;
//! use client::{Consumer, ConsumerConfig, Delivery, GroupConfig, Offset, RebalanceEvent};
//!
//! # async fn example() -> Result<(), client::ClientError> {
//! let mut group = GroupConfig::new("billing"); // cooperative-sticky, then range
//! group.auto_offset_reset = Offset::Earliest;
//! group.delivery = Delivery::AtLeastOnce;
//! let mut consumer = Consumer::new(ConsumerConfig::new("127.0.0.1:9092").with_group(group))?;
//! consumer.on_rebalance(|event: &RebalanceEvent| println!("rebalance: {event:?}"));
//! consumer.subscribe(&["orders"])?;
//! for _ in 0..100 {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     for record in &records {
//!         println!("{}@{}", record.partition, record.offset);
//!     }
//! }
//! consumer.commit_sync().await?; // or let the auto-commit do it
//! consumer.close().await?; // commits, then leaves the group (a static member just stops)
//! # Ok(()) }
//! ```
//!
//! # Errors and retries
//!
//! Every operation fails with a [`ClientError`]. [`ClientError::is_retriable`] says whether the
//! same operation may succeed later; the producer retries those by itself
//! ([`ProducerConfig::retries`]), the consumer retries its fetches until the poll timeout.
//!
//! # Modules
//!
//! [`connection`] (one pipelined TCP connection), `cluster` (metadata cache, routing to shard
//! endpoints, connection pool), [`partitioner`], `accumulator` (batching), [`producer`],
//! [`batch_send`] (batches built by the caller of `send_batch`),
//! [`records`] (zero-copy views), [`consumer`], [`group`] (consumer-group membership and
//! commits behind [`Consumer::subscribe`]), [`assignor`] (range, round-robin,
//! cooperative-sticky), [`admin`], [`decommission`] (the plan that drains a broker),
//! [`error`].

mod accumulator;
pub mod admin;
pub mod assignor;
pub mod batch_send;
#[doc(hidden)]
pub mod bench_support;
mod cluster;
pub mod connection;
pub mod consumer;
pub mod decommission;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;
pub mod records;
mod spinning_read;

pub use admin::{
    Admin, AdminConfig, ClusterDescription, CommittedOffset, GroupDescription, GroupLag,
    GroupListing, MemberDescription, NewTopic, PartitionDescription, PartitionLag, Reassignment,
    TopicDescription,
};
pub use assignor::{Assignment, AssignorKind, MemberSubscription};
pub use batch_send::{BatchDelivery, BatchMetadata, BatchRecord};
/// Values and keys of [`ProducerRecord`]s (re-exported, so callers need not depend on `bytes`).
pub use bytes::Bytes;
pub use cluster::TopicPartition;
pub use connection::{Connection, ConnectionConfig};
pub use consumer::{Consumer, ConsumerConfig, Offset};
pub use decommission::{plan_decommission, PartitionPlacement, PlanError, PlannedMove};
pub use error::ClientError;
pub use group::{Delivery, GroupConfig, GroupMetadata, RebalanceEvent};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    DEFAULT_METADATA_MAX_AGE, IDEMPOTENT_IN_FLIGHT_MAX,
};
pub use records::{ConsumerRecord, Headers, Records, RecordsIter, Tags};
pub use wire::protocol::{
    ClusterBroker, ControllerVoter, ErrorCode, TopicConfig, TopicMetadata, CONSUMER_OFFSETS_TOPIC,
    EARLIEST_TIMESTAMP, LATEST_TIMESTAMP,
};
/// Wire types that appear in this crate's API.
pub use wire::Durability;

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    /// Producers and admins are shared across tasks; a consumer and its records move
    /// between them.
    #[test]
    fn thread_safety() {
        send_sync::<Producer>();
        send_sync::<Admin>();
        send_sync::<Records>();
        send_sync::<ClientError>();
        send::<Consumer>();
        send::<DeliveryFuture>();
    }
}
