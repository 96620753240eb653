//! The idempotent producer on the broker side: a retried batch whose acknowledgement was lost
//! is answered with its original offsets and written once; gaps and old epochs are refused; the
//! state survives a restart and a kill -9 because it is rebuilt from the log.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Broker, Conn};
use wire::protocol::{
    decode_response, ApiKey, Durability, ErrorCode, FetchResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsPartition, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopic, ProducePartition, ProducePartitionResponse, ProduceRequest, ProduceResponse,
    ProduceTopic, Records, LATEST_TIMESTAMP,
};
use wire::{BatchBuilder, BatchIter};

fn batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&str]) -> wire::AlignedVec<16> {
    let mut builder = BatchBuilder::new().with_producer(producer_id, epoch, sequence);
    for value in values {
        builder.push(1_700_000_000_000, None, value.as_bytes(), &[], None);
    }
    builder.build().unwrap()
}

fn produce_request(records: &[u8]) -> ProduceRequest<'_> {
    ProduceRequest {
        acks: wire::Acks::All,
        timeout_ms: 5000,
        topics: vec![ProduceTopic {
            topic: "idem".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records: Records::from_slice(records),
            }],
        }],
    }
}

fn produce(conn: &mut Conn, records: &[u8]) -> ProducePartitionResponse {
    let response: ProduceResponse = conn
        .call(ApiKey::Produce, &produce_request(records))
        .unwrap();
    response.topics[0].partitions[0].clone()
}

fn log_end(conn: &mut Conn) -> i64 {
    let request = ListOffsetsRequest {
        topics: vec![ListOffsetsTopic {
            topic: "idem".into(),
            partitions: vec![ListOffsetsPartition {
                partition: 0,
                timestamp: LATEST_TIMESTAMP,
            }],
        }],
    };
    let response: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, &request).unwrap();
    response.topics[0].partitions[0].offset
}

fn values(conn: &mut Conn) -> Vec<String> {
    let request = common::fetch_request("idem", 0, 0, 0);
    conn.send(ApiKey::Fetch, &request);
    let frame = conn.read_frame().unwrap();
    let (_, response) = decode_response::<FetchResponse>(&frame).unwrap();
    let response = response.unwrap();
    let mut out = Vec::new();
    for batch in BatchIter::new(
        response.topics[0].partitions[0].records.as_slice(),
        wire::limits::BATCH_SIZE_MAX,
    ) {
        for record in batch.unwrap().records().unwrap().iter() {
            out.push(String::from_utf8(record.value_bytes().to_vec()).unwrap());
        }
    }
    out
}

/// A produce is written, its answer lost (the client drops the connection before reading it),
/// the client retries on a new connection: the retry gets the original offsets and nothing is
/// written twice. Then: a gap is refused, after a SIGTERM restart and after a kill -9 the
/// rebuilt state still recognises retries, and once a newer epoch wrote, the old epoch is
/// refused.
#[test]
fn retries_after_a_lost_acknowledgement_write_nothing_twice() {
    let dir = common::data_dir();
    let mut broker = Broker::start_in(dir.path(), &[]);
    let mut admin = Conn::connect(broker.addr);
    admin.create_topic("idem", 1, Some(Durability::Always));
    let ids: InitProducerIdResponse = admin
        .call(
            ApiKey::InitProducerId,
            &InitProducerIdRequest {
                transactional_id: None,
            },
        )
        .unwrap();
    let other: InitProducerIdResponse = admin
        .call(
            ApiKey::InitProducerId,
            &InitProducerIdRequest {
                transactional_id: None,
            },
        )
        .unwrap();
    assert_ne!(
        ids.producer_id, other.producer_id,
        "producer ids are unique"
    );
    let pid = ids.producer_id;

    let first = batch(pid, 0, 0, &["a", "b", "c"]);
    let mut lost = Conn::connect(broker.addr);
    lost.send(ApiKey::Produce, &produce_request(&first));
    // Wait until the broker has written it, then drop the connection without reading the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while log_end(&mut admin) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first batch was never written"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(lost);
    let mut retry = Conn::connect(broker.addr);
    let answer = produce(&mut retry, &first);
    assert!(answer.error.is_ok(), "{:?}", answer.error);
    assert_eq!(answer.base_offset, 0, "the retry gets the original offsets");
    assert_eq!(values(&mut retry), ["a", "b", "c"], "written once");

    let second = batch(pid, 0, 3, &["d"]);
    assert_eq!(produce(&mut retry, &second).base_offset, 3);
    let gap = batch(pid, 0, 10, &["x"]);
    assert_eq!(
        produce(&mut retry, &gap).error.code,
        ErrorCode::OutOfOrderSequence
    );

    // A graceful restart, then a crash: the state is rebuilt from the log both times.
    assert!(broker.terminate().success());
    let mut broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    assert_eq!(
        produce(&mut conn, &second).base_offset,
        3,
        "retry after restart"
    );
    let third = batch(pid, 0, 4, &["e", "f"]);
    assert_eq!(produce(&mut conn, &third).base_offset, 4);
    broker.kill();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut conn = Conn::connect(broker.addr);
    assert_eq!(
        produce(&mut conn, &third).base_offset,
        4,
        "retry after kill -9"
    );
    assert_eq!(
        produce(&mut conn, &first).base_offset,
        0,
        "an old batch still in the window"
    );
    assert_eq!(values(&mut conn), ["a", "b", "c", "d", "e", "f"]);
    // Batches of producers without ids are never deduplicated.
    let plain = batch(-1, -1, -1, &["z"]);
    assert_eq!(produce(&mut conn, &plain).base_offset, 6);
    assert_eq!(produce(&mut conn, &plain).base_offset, 7);
    // A newer epoch of the producer id starts over at sequence 0, and from then on the old
    // epoch is refused (a newer instance took over).
    let newer = batch(pid, 1, 0, &["g"]);
    assert_eq!(produce(&mut conn, &newer).base_offset, 8);
    let stale = batch(pid, 0, 6, &["h"]);
    assert_eq!(
        produce(&mut conn, &stale).error.code,
        ErrorCode::InvalidProducerEpoch
    );
    assert_eq!(log_end(&mut conn), 9, "nothing written for the old epoch");
}
