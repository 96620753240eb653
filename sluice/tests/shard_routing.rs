//! Shard-aware routing of the native client against the real `sluice` binary: data requests
//! (produce, fetch, list offsets) go straight to the listener of the shard that owns the
//! partition, as advertised in the metadata; only metadata and admin requests use the
//! bootstrap address.
//!
//! The client is given the address of a small counting relay in front of the broker's main
//! listener, which records the API of every request that passes through it; the test also
//! reads this process's TCP connections from `/proc` to see which broker ports the client
//! really connected to.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    Admin, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig, ProducerRecord,
    TopicPartition,
};
use common::{Broker, Conn};
use wire::protocol::{decode_request_header, ApiKey, MetadataRequest, MetadataResponse};

/// A TCP relay to `target` that notes the API key of every request frame it forwards.
struct CountingRelay {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Option<ApiKey>>>>,
    /// Local ports of the relay's own connections to the target.
    upstream_ports: Arc<Mutex<HashSet<u16>>>,
}

impl CountingRelay {
    fn start(target: SocketAddr) -> CountingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Option<ApiKey>>>> = Arc::default();
        let upstream_ports: Arc<Mutex<HashSet<u16>>> = Arc::default();
        let (seen, ports) = (requests.clone(), upstream_ports.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let upstream = TcpStream::connect(target).unwrap();
                ports
                    .lock()
                    .unwrap()
                    .insert(upstream.local_addr().unwrap().port());
                let (mut from_broker, mut to_client) =
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_broker, &mut to_client);
                    let _ = to_client.shutdown(Shutdown::Both);
                });
                let seen = seen.clone();
                std::thread::spawn(move || relay_requests(client, upstream, &seen));
            }
        });
        CountingRelay {
            addr,
            requests,
            upstream_ports,
        }
    }

    fn requests(&self) -> Vec<Option<ApiKey>> {
        self.requests.lock().unwrap().clone()
    }
}

/// Forwards request frames one by one, noting each one's API.
fn relay_requests(
    mut client: TcpStream,
    mut upstream: TcpStream,
    seen: &Mutex<Vec<Option<ApiKey>>>,
) {
    loop {
        let mut prefix = [0u8; 4];
        if client.read_exact(&mut prefix).is_err() {
            break;
        }
        let mut frame = prefix.to_vec();
        frame.resize(4 + u32::from_le_bytes(prefix) as usize, 0);
        if client.read_exact(&mut frame[4..]).is_err() {
            break;
        }
        let api = decode_request_header(&frame)
            .ok()
            .and_then(|(header, _)| ApiKey::from_u16(header.api_key));
        seen.lock().unwrap().push(api);
        if upstream.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = upstream.shutdown(Shutdown::Both);
}

/// This process's established IPv4 TCP connections: (local port, remote port) pairs.
fn own_connections() -> Vec<(u16, u16)> {
    let inodes: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let port = |address: &str| u16::from_str_radix(address.split(':').nth(1).unwrap(), 16).unwrap();
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let established = fields[3] == "01";
            let ours = inodes.contains(&fields[9].parse().unwrap());
            (established && ours).then(|| (port(fields[1]), port(fields[2])))
        })
        .collect()
}

/// A 4-partition topic on a 2-shard broker: the metadata advertises one listener per shard,
/// distinct from the main one, and places partitions on both shards. A producer, a consumer
/// (including `Latest`/`Earliest` seeks) and the admin's `list_offsets` (a ListOffsets request
/// for sure) and `describe` then do real work through the relay as bootstrap. Checks: the
/// relay saw handshakes and metadata (and the admin's create) but not one produce, fetch or
/// list-offsets request; the client holds connections
/// to both shard listeners; and its only connections to the main port are the relay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_requests_go_to_the_owning_shard() {
    let broker = Broker::start(&[]);
    let relay = CountingRelay::start(broker.addr);
    let bootstrap = relay.addr.to_string();

    let admin = Admin::new(&bootstrap).unwrap();
    admin
        .create_topic(NewTopic::new("routed", 4))
        .await
        .unwrap();

    let mut conn = Conn::connect(broker.addr);
    let metadata: MetadataResponse = conn
        .call(
            ApiKey::Metadata,
            &MetadataRequest {
                topics: Some(vec!["routed".into()]),
            },
        )
        .unwrap();
    let shard_ports: HashMap<u16, u16> = metadata.brokers[0]
        .shards
        .iter()
        .map(|endpoint| (endpoint.shard, endpoint.port))
        .collect();
    assert_eq!(shard_ports.len(), 2, "one endpoint per shard");
    assert!(!shard_ports.values().any(|p| *p == broker.addr.port()));
    assert_ne!(shard_ports[&0], shard_ports[&1]);
    let owners: BTreeSet<u16> = metadata.topics[0]
        .partitions
        .iter()
        .map(|p| p.leader_shard)
        .collect();
    assert_eq!(owners, BTreeSet::from([0, 1]), "partitions on both shards");

    let producer = Producer::new(ProducerConfig::new(&bootstrap)).unwrap();
    let mut pending = Vec::new();
    for i in 0..200u32 {
        let record = ProducerRecord::new("routed", format!("v{i}").into_bytes())
            .with_key(format!("key-{}", i % 13).into_bytes());
        pending.push(producer.enqueue(record).await.unwrap());
    }
    let mut partitions_written = BTreeSet::new();
    for delivery in pending {
        partitions_written.insert(delivery.await.unwrap().partition);
    }
    assert_eq!(partitions_written.len(), 4, "every partition written");

    let mut consumer = Consumer::new(ConsumerConfig {
        fetch_max_wait: Duration::from_millis(100),
        ..ConsumerConfig::new(&bootstrap)
    })
    .unwrap();
    let partitions = consumer.topic_partitions("routed").await.unwrap();
    consumer.assign(&partitions);
    for tp in &partitions {
        consumer.seek(tp, Offset::Earliest).unwrap();
    }
    let read = common::receive(&mut consumer, 200, Duration::from_secs(20)).await;
    assert_eq!(read.len(), 200);
    let tp = TopicPartition::new("routed", 0);
    consumer.seek(&tp, Offset::Latest).unwrap();
    let end = consumer.position(&tp).await.unwrap();
    // The admin's offset lookup is a ListOffsets request (it has no other way to learn an
    // offset), so the bootstrap relay not seeing one below is not vacuous.
    let listed = admin
        .list_offsets(&tp, client::LATEST_TIMESTAMP)
        .await
        .unwrap();
    assert_eq!(listed, end);
    let description = admin.describe_topic("routed").await.unwrap();
    assert_eq!(description.partitions[0].log_end_offset, Some(end));
    let total: u64 = description
        .partitions
        .iter()
        .map(|p| p.log_end_offset.unwrap())
        .sum();
    assert_eq!(total, 200);

    // Read the connections while producer and consumer still hold theirs.
    let connections = own_connections();
    let requests = relay.requests();
    for api in [ApiKey::Handshake, ApiKey::Metadata, ApiKey::CreateTopics] {
        assert!(requests.contains(&Some(api)), "{api:?} via bootstrap");
    }
    for api in [ApiKey::Produce, ApiKey::Fetch, ApiKey::ListOffsets] {
        assert!(
            !requests.contains(&Some(api)),
            "a {api:?} request went to the bootstrap address: {requests:?}"
        );
    }
    for (shard, port) in &shard_ports {
        assert!(
            connections.iter().any(|(_, remote)| remote == port),
            "no connection to shard {shard}'s listener (port {port}): {connections:?}"
        );
    }
    let relay_ports = relay.upstream_ports.lock().unwrap().clone();
    for (local, remote) in &connections {
        if *remote == broker.addr.port() {
            assert!(
                relay_ports.contains(local) || *local == conn.stream.local_addr().unwrap().port(),
                "the client connected to the main port directly (local port {local})"
            );
        }
    }
    producer.close().await.unwrap();
}
