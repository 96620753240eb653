//! Helpers for end-to-end tests: start the real `sluice` binary on an ephemeral loopback port
//! with a data directory under target/ (a real disk: O_DIRECT), and speak the protocol over a
//! plain blocking socket.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use wire::protocol::{
    decode_response, encode_request, ApiKey, CreateTopic, CreateTopicsRequest,
    CreateTopicsResponse, Decode, Durability, Encode, FetchPartition, FetchRequest, FetchTopic,
    WireError,
};
use wire::{AlignedVec, BatchIter};

/// A fetch of one partition from `offset`, up to 4 MiB, waiting at most `max_wait_ms`.
pub fn fetch_request(topic: &str, partition: u32, offset: u64, max_wait_ms: u32) -> FetchRequest {
    FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 4 << 20,
        topics: vec![FetchTopic {
            topic: topic.into(),
            partitions: vec![FetchPartition {
                partition,
                fetch_offset: offset,
                max_bytes: 4 << 20,
                current_leader_epoch: None,
            }],
        }],
    }
}

/// Longest wait for a starting broker's readiness line: generous for a loaded machine (a
/// start takes well under a second normally), spent only when the start hangs.
pub const BROKER_START_DEADLINE: Duration = Duration::from_secs(60);

/// A running broker process; killed on drop.
pub struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
    /// The broker's stdout after its readiness line (kept open: a later line must not hit a
    /// closed pipe).
    pub stdout: BufReader<ChildStdout>,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// A fresh data directory on the real disk.
pub fn data_dir() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-data");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(&base).unwrap()
}

impl Broker {
    /// Starts a broker with its own temporary data directory.
    pub fn start(extra: &[&str]) -> Broker {
        let dir = data_dir();
        let path = dir.path().to_path_buf();
        let mut broker = Broker::start_in(&path, extra);
        broker._dir = Some(dir);
        broker
    }

    /// Starts a broker on `data_dir`, waiting for its readiness line.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Broker {
        Broker::start_at(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts a broker on `data_dir` listening on `listen`, waiting up to
    /// [`BROKER_START_DEADLINE`] for its readiness line (then it is killed and the test fails).
    pub fn start_at(data_dir: &Path, listen: &str, extra: &[&str]) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", listen, "--cores", "2", "--log", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = stdout;
            let mut line = String::new();
            let read = stdout.read_line(&mut line).map(|_| line);
            let _ = sender.send((read, stdout));
        });
        let (line, stdout) = match receiver.recv_timeout(BROKER_START_DEADLINE) {
            Ok((read, stdout)) => (read.unwrap(), stdout),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker not listening after {BROKER_START_DEADLINE:?}");
            }
        };
        let addr = line
            .strip_prefix("sluice listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("broker did not start: {line:?}"))
            .parse()
            .unwrap();
        Broker {
            child,
            addr,
            stdout,
            data_dir: data_dir.to_path_buf(),
            _dir: None,
        }
    }

    /// The next line the broker prints on stdout.
    pub fn stdout_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process by pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking protocol connection.
pub struct Conn {
    pub stream: TcpStream,
    correlation_id: u32,
}

impl Conn {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::over(TcpStream::connect(addr).unwrap())
    }

    /// Speaks the protocol over an already connected stream.
    pub fn over(stream: TcpStream) -> Conn {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Conn {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends a request and returns its correlation id.
    pub fn send<T: Encode>(&mut self, api: ApiKey, body: &T) -> u32 {
        self.correlation_id += 1;
        let mut buffer = Vec::new();
        let frame = encode_request(&mut buffer, api, self.correlation_id, body);
        for part in frame.parts() {
            self.stream.write_all(part).unwrap();
        }
        self.correlation_id
    }

    /// Reads one response frame (16-aligned).
    pub fn read_frame(&mut self) -> std::io::Result<AlignedVec<16>> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let len = u32::from_le_bytes(prefix) as usize;
        let mut frame = AlignedVec::<16>::with_capacity(len + 4);
        frame.extend_from_slice(&prefix);
        frame.resize(len + 4, 0);
        self.stream.read_exact(&mut frame[4..])?;
        Ok(frame)
    }

    /// Sends a request and decodes its response.
    pub fn call<T: Encode, R: for<'a> Decode<'a>>(
        &mut self,
        api: ApiKey,
        body: &T,
    ) -> Result<R, WireError> {
        let id = self.send(api, body);
        let frame = self.read_frame().unwrap();
        let (correlation_id, response) = decode_response::<R>(&frame).unwrap();
        assert_eq!(correlation_id, id);
        response
    }

    /// Creates a topic and asserts success.
    pub fn create_topic(&mut self, name: &str, partitions: u32, durability: Option<Durability>) {
        let request = CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 1,
                durability,
                ..Default::default()
            }],
            timeout_ms: 10_000,
        };
        let response: CreateTopicsResponse = self.call(ApiKey::CreateTopics, &request).unwrap();
        assert!(
            response.topics[0].error.is_ok(),
            "{:?}",
            response.topics[0].error
        );
    }
}

/// The base offset of every batch of `topic`/`partition`, in order, read raw with fetches
/// that do not wait: how the producer cut the partition's records into batches. Tests that
/// promise an order check it with this to show that more than one batch was sent.
pub fn batch_base_offsets(addr: SocketAddr, topic: &str, partition: u32) -> Vec<u64> {
    let mut conn = Conn::connect(addr);
    let mut bases = Vec::new();
    let mut offset = 0;
    loop {
        conn.send(ApiKey::Fetch, &fetch_request(topic, partition, offset, 0));
        let frame = conn.read_frame().unwrap();
        let (_, response) = decode_response::<wire::protocol::FetchResponse>(&frame).unwrap();
        let response = response.unwrap();
        let data = &response.topics[0].partitions[0];
        assert!(data.error.is_ok(), "{:?}", data.error);
        let bytes = data.records.as_slice();
        if bytes.is_empty() {
            return bases;
        }
        for batch in BatchIter::new(bytes, wire::limits::BATCH_SIZE_MAX) {
            let batch = batch.unwrap();
            bases.push(batch.base_offset());
            offset = batch.last_offset() + 1;
        }
    }
}

/// A loopback port that was free a moment ago (bound, read, released): for a broker that must
/// come back on the same address after a restart.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Milliseconds since the epoch, the clock record timestamps use.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One consumed record, copied out of the client's zero-copy view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

impl Received {
    /// The value as UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap()
    }
}

/// Polls `consumer` until `count` records arrived or `timeout` passed; returns what arrived
/// (the caller asserts on the count). A poll error fails the test.
pub async fn receive(
    consumer: &mut client::Consumer,
    count: usize,
    timeout: Duration,
) -> Vec<Received> {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let records = consumer
            .poll(left.min(Duration::from_secs(1)))
            .await
            .unwrap_or_else(|e| panic!("poll failed after {} records: {e}", out.len()));
        out.extend(records.iter().map(|r| Received {
            partition: r.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.to_vec(),
        }));
    }
    out
}
