//! The health endpoint of an embedded node (`Config::metrics_listen`): `/ready` and `/live`
//! answer 200 while the node serves; from the moment a shutdown begins `/ready` answers 503
//! (the node stays up while it drains), a scrape then is answered at once even when the shards
//! have already stopped, and once the node has stopped the endpoint is closed.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use broker::{Config, Node, TopicDefaults};

fn config(data_dir: &Path) -> Config {
    Config {
        offsets_partitions: 2,
        offsets_segment_bytes: 1 << 20,
        retention_check: Duration::from_secs(300),
        topic_defaults: TopicDefaults {
            partitions: 1,
            retention_ms: -1,
            durability: wire::Durability::Always,
            segment_bytes: 1 << 20,
            max_batch_bytes: 1 << 20,
        },
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::new(data_dir.to_path_buf(), 2)
    }
}

/// An HTTP/1.0 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Ok((status, body.to_owned()))
}

/// Ready and live while serving; not ready (but still answering, with `sluice_node_ready 0`)
/// once the shutdown began; closed after the node stopped.
#[test]
fn readiness_follows_the_node_life() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let node = Node::start(config(dir.path())).unwrap();
    let addr = node.metrics_addr().unwrap();
    assert_ne!(addr.port(), 0, "the chosen port is reported");

    assert_eq!(http_get(addr, "/ready").unwrap().0, 200);
    assert_eq!(http_get(addr, "/live").unwrap().0, 200);
    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|line| line == "sluice_node_ready 1"),
        "{text}"
    );
    assert_eq!(http_get(addr, "/metrics?x=1").unwrap().0, 200);

    let trigger = node.trigger();
    // The node has not been waited for yet: the endpoint is up and says "not ready".
    trigger.shutdown();
    assert_eq!(http_get(addr, "/ready").unwrap().0, 503);
    let scraped = std::time::Instant::now();
    let (status, text) = http_get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        text.lines().any(|line| line == "sluice_node_ready 0"),
        "{text}"
    );
    assert!(
        scraped.elapsed() < broker::metrics::snapshot::SHARD_SNAPSHOT_TIMEOUT,
        "a stopped shard's closed inbox answers at once, not at the scrape's timeout"
    );

    node.wait().unwrap();
    assert!(http_get(addr, "/ready").is_err(), "closed with the node");
}
