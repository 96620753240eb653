//! One TCP connection to one broker endpoint (a broker's main listener or one of its shard
//! listeners), shared by every request for that endpoint.
//!
//! ```text
//!  callers ──request()──▶ [in-flight semaphore] ─▶ register waiter ─▶ writer half (mutex, writev)
//!                                                    (correlation id)        │
//!                                                                            ▼  socket
//!  callers ◀──oneshot──── waiters: corr id → sender ◀── reader task ◀── frames (AlignedVec<16>)
//! ```
//!
//! * **Handshake first**: [`Connection::connect`] sends a `HandshakeRequest` and records which
//!   APIs the broker speaks at [`PROTOCOL_VERSION`]; a request for an API it does not speak fails
//!   with [`ClientError::UnsupportedApi`] before anything is written.
//! * **Pipelining**: any number of tasks may call [`Connection::request`] concurrently; each
//!   request gets a correlation id, its frame is written whole under the writer lock, and the
//!   reader task hands each response to the waiter registered under its id. At most
//!   [`ConnectionConfig::max_in_flight_requests`] requests are outstanding at once.
//! * **Zero-copy both ways**: request frames are written with vectored writes straight from
//!   the caller's buffers (a produce request's record batches are never copied into the frame);
//!   response frames are read into 16-aligned buffers so the batches inside a fetch response can
//!   be read in place. The 4-byte length is checked against the frame limit before anything is
//!   allocated.
//! * **Failure**: any I/O error, an undecodable frame, or a write cut short (a caller dropped
//!   mid-frame) marks the connection dead; every pending request then fails with the retriable
//!   [`ClientError::ConnectionLost`] and later requests fail at once. The pool in `cluster`
//!   replaces dead connections on next use.
//! * **Fire and forget**: a produce with `acks = 0` gets no response from the broker, so
//!   [`Connection::send_oneway`] registers no waiter and completes once the frame is written.

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify, Semaphore};
use tracing::{debug, warn};
use wire::protocol::{
    check_frame, decode_response, decode_response_header, encode_request, ApiKey, Decode, Encode,
    FrameParts, HandshakeRequest, HandshakeResponse, FRAME_SIZE_MAX, LENGTH_PREFIX_SIZE,
    PROTOCOL_VERSION,
};
use wire::AlignedVec;

use crate::error::ClientError;
use crate::spinning_read::SpinningRead;

/// A response frame as read from the socket, length prefix included, 16-aligned in memory.
pub type Frame = AlignedVec<16>;

/// Smallest frame limit accepted: a response header plus an empty error fits in far less, and
/// anything below this is a configuration mistake.
const FRAME_SIZE_MIN: usize = 64;

/// Capacity of the read buffer in front of the socket. Small frames (produce acknowledgements,
/// metadata) are served from it without extra system calls; frames larger than it are read
/// straight into their own aligned buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Longest wait for a response, from the moment the request is issued (including the wait
    /// for an in-flight slot and the write). Must exceed any long-poll wait asked of the broker.
    pub request_timeout: Duration,
    /// Longest wait for the TCP connection and the handshake.
    pub connect_timeout: Duration,
    /// Most requests outstanding on this connection. Bounds the waiters map and the memory of
    /// unread responses: 128 requests of at most `frame_size_max` each.
    pub max_in_flight_requests: usize,
    /// Largest response frame accepted; a larger length prefix kills the connection before any
    /// buffer is allocated. Capped at [`FRAME_SIZE_MAX`].
    pub frame_size_max: usize,
    /// Name sent in the handshake, for the broker's logs.
    pub client_name: String,
    /// How long the connection's reader, finding no response to read, keeps polling the
    /// socket before its task sleeps until the runtime wakes it. Default zero (sleep at once).
    /// See [`ProducerConfig::spin_before_park`](crate::ProducerConfig::spin_before_park).
    pub spin_before_park: Duration,
}

/// Longest [`ConnectionConfig::spin_before_park`]: 10 ms, far above the 50–300 µs that pay
/// for a round trip, so a typo (seconds for µs) cannot make every idle connection spin.
pub const SPIN_BEFORE_PARK_MAX: Duration = Duration::from_millis(10);

/// Refuses a `spin_before_park` above [`SPIN_BEFORE_PARK_MAX`] (the producer's, the consumer's
/// and the connection's configs all check it up front).
pub(crate) fn check_spin_before_park(spin: Duration) -> Result<(), ClientError> {
    if spin > SPIN_BEFORE_PARK_MAX {
        return Err(ClientError::Config(format!(
            "spin_before_park must be at most {SPIN_BEFORE_PARK_MAX:?}: each connection burns \
             up to that much CPU every time it goes quiet"
        )));
    }
    Ok(())
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_in_flight_requests: 128,
            frame_size_max: FRAME_SIZE_MAX,
            client_name: "sluice-client".to_owned(),
            spin_before_park: Duration::ZERO,
        }
    }
}

impl ConnectionConfig {
    /// Checks the values; called by every constructor that takes a config.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.max_in_flight_requests == 0 {
            return Err(ClientError::Config(
                "max_in_flight_requests must be at least 1".into(),
            ));
        }
        check_spin_before_park(self.spin_before_park)?;
        if self.frame_size_max < FRAME_SIZE_MIN {
            return Err(ClientError::Config(format!(
                "frame_size_max must be at least {FRAME_SIZE_MIN} bytes"
            )));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ClientError::Config("timeouts must be positive".into()));
        }
        Ok(())
    }
}

/// What the broker said in the handshake.
#[derive(Debug, Clone)]
struct HandshakeInfo {
    broker_id: u32,
    /// `supported[api as usize]`: the broker speaks [`PROTOCOL_VERSION`] of `api`.
    supported: [bool; ApiKey::ALL.len()],
}

/// A pipelined connection to one broker endpoint. Cheap to clone: clones share the socket.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.shared.addr)
            .field("alive", &self.is_alive())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    in_flight: Semaphore,
    next_correlation_id: AtomicU32,
    handshake: OnceLock<HandshakeInfo>,
    config: ConnectionConfig,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Last handle gone: stop the reader task, which closes the read half.
        self.shared.kill("connection dropped".into());
    }
}

/// State shared between the callers and the reader task.
struct Shared {
    addr: String,
    state: Mutex<PendingState>,
    /// Wakes the reader task when the connection is killed from the writer side.
    shutdown: Notify,
}

type Waiter = oneshot::Sender<Result<Frame, ClientError>>;

#[derive(Default)]
struct PendingState {
    /// Why the connection died; `Some` means no new request may register.
    dead: Option<String>,
    waiters: HashMap<u32, Waiter>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        // A panic while holding this lock cannot leave the map inconsistent (every critical
        // section is a single insert/remove/drain), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lost(&self, reason: &str) -> ClientError {
        ClientError::ConnectionLost {
            addr: self.addr.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Registers a waiter for `correlation_id`, unless the connection is dead. Checked under
    /// the same lock `kill` drains under, so no waiter can be registered after the drain.
    fn register(
        &self,
        correlation_id: u32,
    ) -> Result<oneshot::Receiver<Result<Frame, ClientError>>, ClientError> {
        let mut state = self.lock();
        if let Some(reason) = &state.dead {
            return Err(self.lost(reason));
        }
        let (sender, receiver) = oneshot::channel();
        state.waiters.insert(correlation_id, sender);
        Ok(receiver)
    }

    fn check_alive(&self) -> Result<(), ClientError> {
        match &self.lock().dead {
            Some(reason) => Err(self.lost(reason)),
            None => Ok(()),
        }
    }

    fn forget(&self, correlation_id: u32) {
        self.lock().waiters.remove(&correlation_id);
    }

    /// Hands a response to its waiter; responses nobody waits for (timed out, cancelled) are
    /// dropped.
    fn complete(&self, correlation_id: u32, frame: Frame) {
        let waiter = self.lock().waiters.remove(&correlation_id);
        match waiter {
            Some(waiter) => {
                // The caller may have given up in the meantime; nothing to do then.
                let _ = waiter.send(Ok(frame));
            }
            None => debug!(
                addr = %self.addr,
                correlation_id, "response for a request nobody waits for any more"
            ),
        }
    }

    /// Marks the connection dead (first reason wins) and fails every pending request.
    fn kill(&self, reason: String) {
        let (waiters, reason) = {
            let mut state = self.lock();
            let reason = state.dead.get_or_insert(reason).clone();
            (std::mem::take(&mut state.waiters), reason)
        };
        if !waiters.is_empty() {
            debug!(addr = %self.addr, pending = waiters.len(), %reason, "failing pending requests");
        }
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(self.lost(&reason)));
        }
        self.shutdown.notify_one();
    }

    fn is_dead(&self) -> bool {
        self.lock().dead.is_some()
    }
}

/// Removes the waiter when a request is abandoned (timeout, caller dropped).
struct WaiterGuard<'a> {
    shared: &'a Shared,
    correlation_id: u32,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.correlation_id);
    }
}

/// Kills the connection if a frame write is abandoned half-way, since the byte stream would
/// otherwise continue in the middle of a frame.
struct PoisonOnDrop<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for PoisonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .kill("a request was cancelled in the middle of writing its frame".into());
        }
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`), performs the handshake and starts the reader task.
    /// Must be called inside a tokio runtime.
    pub async fn connect(addr: &str, config: ConnectionConfig) -> Result<Connection, ClientError> {
        config.validate()?;
        let timeout = config.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ClientError::io(addr, e)),
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: addr.to_owned(),
                    timeout,
                })
            }
        };
        // We batch ourselves; Nagle would only add latency to small requests.
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::io(addr, e))?;
        let (reader, writer) = stream.into_split();
        let reader = SpinningRead::new(reader, config.spin_before_park);
        let connection = Connection::start(addr, reader, writer, config);
        match tokio::time::timeout(timeout, connection.handshake()).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ClientError::Timeout {
                    addr: addr.to_owned(),
                    timeout,
                })
            }
        }
        debug!(addr, broker_id = ?connection.broker_id(), "connected");
        Ok(connection)
    }

    /// Starts a connection over an already-open byte stream, without a handshake (tests drive
    /// it with in-memory streams).
    pub(crate) fn start<R, W>(addr: &str, reader: R, writer: W, config: ConnectionConfig) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Arc::new(Shared {
            addr: addr.to_owned(),
            state: Mutex::new(PendingState::default()),
            shutdown: Notify::new(),
        });
        let frame_size_max = config.frame_size_max;
        tokio::spawn(read_loop(
            BufReader::with_capacity(READ_BUFFER_BYTES, reader),
            shared.clone(),
            frame_size_max,
        ));
        Connection {
            inner: Arc::new(Inner {
                shared,
                writer: tokio::sync::Mutex::new(Box::new(writer)),
                in_flight: Semaphore::new(config.max_in_flight_requests),
                next_correlation_id: AtomicU32::new(1),
                handshake: OnceLock::new(),
                config,
            }),
        }
    }

    async fn handshake(&self) -> Result<(), ClientError> {
        let request = HandshakeRequest {
            client_name: self.inner.config.client_name.clone(),
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let frame = self.request(ApiKey::Handshake, &request).await?;
        let response: HandshakeResponse = decode_body(&frame)?;
        let mut supported = [false; ApiKey::ALL.len()];
        for range in &response.api_versions {
            if let Some(api) = ApiKey::from_u16(range.api_key) {
                supported[api as usize] =
                    (range.min_version..=range.max_version).contains(&PROTOCOL_VERSION);
            }
        }
        let missing: Vec<ApiKey> = ApiKey::ALL
            .into_iter()
            .filter(|api| *api != ApiKey::Handshake && !supported[*api as usize])
            .collect();
        if !missing.is_empty() {
            warn!(
                addr = %self.inner.shared.addr,
                ?missing,
                version = PROTOCOL_VERSION,
                "broker does not speak this protocol version of some APIs"
            );
        }
        let _ = self.inner.handshake.set(HandshakeInfo {
            broker_id: response.broker_id,
            supported,
        });
        Ok(())
    }

    /// The endpoint this connection talks to.
    pub fn addr(&self) -> &str {
        &self.inner.shared.addr
    }

    /// The broker id from the handshake.
    pub fn broker_id(&self) -> Option<u32> {
        self.inner.handshake.get().map(|h| h.broker_id)
    }

    /// False once the connection has died; a dead connection never comes back.
    pub fn is_alive(&self) -> bool {
        !self.inner.shared.is_dead()
    }

    /// Sends a request and waits for its response frame (decode it with [`decode_body`]).
    ///
    /// Fails with [`ClientError::Timeout`] after the configured request timeout, with
    /// [`ClientError::ConnectionLost`] if the connection dies meanwhile.
    pub async fn request<T: Encode + Sync>(
        &self,
        api: ApiKey,
        body: &T,
    ) -> Result<Frame, ClientError> {
        self.request_ordered(api, body, None).await
    }

    /// [`Connection::request`] with its own timeout instead of the configured one: for requests
    /// the broker may hold for long (a `JoinGroup` waits for a whole rebalance).
    pub async fn request_with_timeout<T: Encode + Sync>(
        &self,
        api: ApiKey,
        body: &T,
        timeout: Duration,
    ) -> Result<Frame, ClientError> {
        match tokio::time::timeout(timeout, self.exchange(api, body, true, None)).await {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(self.inner.shared.lost("no response frame")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr().to_owned(),
                timeout,
            }),
        }
    }

    /// [`Connection::request`], firing `written` once the request frame is on the socket (or
    /// dropping it unfired if the request fails before that). Callers in different tasks use
    /// it to write their requests in a chosen order while their responses are still awaited
    /// concurrently (the producer does, so that a partition's batches are appended in order).
    pub(crate) async fn request_ordered<T: Encode + Sync>(
        &self,
        api: ApiKey,
        body: &T,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Frame, ClientError> {
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, self.exchange(api, body, true, written)).await {
            Ok(Ok(Some(frame))) => Ok(frame),
            Ok(Ok(None)) => Err(self.inner.shared.lost("no response frame")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr().to_owned(),
                timeout,
            }),
        }
    }

    /// Sends a request the broker does not answer (produce with `acks = 0`); completes once the
    /// frame is written to the socket.
    pub async fn send_oneway<T: Encode + Sync>(
        &self,
        api: ApiKey,
        body: &T,
    ) -> Result<(), ClientError> {
        let timeout = self.inner.config.request_timeout;
        match tokio::time::timeout(timeout, self.exchange(api, body, false, None)).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(ClientError::Timeout {
                addr: self.addr().to_owned(),
                timeout,
            }),
        }
    }

    fn check_api(&self, api: ApiKey) -> Result<(), ClientError> {
        match self.inner.handshake.get() {
            Some(info) if api != ApiKey::Handshake && !info.supported[api as usize] => {
                Err(ClientError::UnsupportedApi {
                    addr: self.addr().to_owned(),
                    api,
                    version: PROTOCOL_VERSION,
                })
            }
            _ => Ok(()),
        }
    }

    async fn exchange<T: Encode + Sync>(
        &self,
        api: ApiKey,
        body: &T,
        expect_response: bool,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<Option<Frame>, ClientError> {
        self.check_api(api)?;
        let shared = &*self.inner.shared;
        let _permit = self
            .inner
            .in_flight
            .acquire()
            .await
            .map_err(|_| ClientError::Closed)?;
        let correlation_id = self
            .inner
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed);
        let (receiver, _guard) = if expect_response {
            let receiver = shared.register(correlation_id)?;
            (
                Some(receiver),
                Some(WaiterGuard {
                    shared,
                    correlation_id,
                }),
            )
        } else {
            shared.check_alive()?;
            (None, None)
        };

        let mut buffer = Vec::new();
        let frame = encode_request(&mut buffer, api, correlation_id, body);
        {
            let mut writer = self.inner.writer.lock().await;
            // Another writer may have killed the connection while we waited for the lock.
            shared.check_alive()?;
            let mut poison = PoisonOnDrop {
                shared,
                armed: true,
            };
            let result = write_frame(&mut **writer, &frame).await;
            poison.armed = false;
            if let Err(e) = result {
                shared.kill(format!("write failed: {e}"));
                return Err(ClientError::io(shared.addr.clone(), e));
            }
        }
        if let Some(written) = written {
            let _ = written.send(());
        }

        match receiver {
            None => Ok(None),
            Some(receiver) => match receiver.await {
                Ok(result) => result.map(Some),
                Err(_) => Err(shared.lost("reader task stopped")),
            },
        }
    }
}

/// Decodes a response frame's body, turning a top-level broker error into
/// [`ClientError::Broker`].
pub fn decode_body<'a, T: Decode<'a>>(frame: &'a [u8]) -> Result<T, ClientError> {
    let (_, body) = decode_response::<T>(frame)?;
    body.map_err(ClientError::broker)
}

/// Writes every part of a frame with vectored writes: the owned head and the borrowed batches
/// go out in as few system calls as the socket allows, and nothing is copied.
async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    frame: &FrameParts<'_>,
) -> std::io::Result<()> {
    let parts: Vec<&[u8]> = frame.parts().collect();
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|part| IoSlice::new(part)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let written = writer.write_vectored(remaining).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    writer.flush().await
}

/// Reads one frame: the 4-byte length, checked against `frame_size_max` before anything is
/// allocated, then the rest into a 16-aligned buffer (so record batches inside it can be
/// accessed in place). `Ok(None)` on a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    addr: &str,
    frame_size_max: usize,
) -> Result<Option<Frame>, ClientError> {
    let mut prefix = [0u8; LENGTH_PREFIX_SIZE];
    let mut filled = 0;
    while filled < prefix.len() {
        let read = reader
            .read(&mut prefix[filled..])
            .await
            .map_err(|e| ClientError::io(addr, e))?;
        if read == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(ClientError::io(
                addr,
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        }
        filled += read;
    }
    let total = check_frame(&prefix, frame_size_max)?.unwrap_or(LENGTH_PREFIX_SIZE);
    let mut frame = FRAME_POOL.take(total);
    frame.extend_from_slice(&prefix);
    read_uninit(reader, &mut frame, total)
        .await
        .map_err(|e| ClientError::io(addr, e))?;
    Ok(Some(frame))
}

/// Reads until `frame` holds `total` bytes, straight into its spare capacity: a fetch
/// response of megabytes is not zero-filled first only to be overwritten.
async fn read_uninit<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame: &mut Frame,
    total: usize,
) -> std::io::Result<()> {
    frame.reserve(total.saturating_sub(frame.len()));
    while frame.len() < total {
        let filled = std::future::poll_fn(|cx| {
            let len = frame.len();
            // SAFETY: `reserve` above made the capacity at least `total`, so the
            // `total - len` bytes after `len` are allocated (uninitialised) memory of `frame`,
            // borrowed mutably here and nowhere else; `ReadBuf::uninit` never reads them, it
            // only records how many the reader initialised.
            let spare = unsafe {
                std::slice::from_raw_parts_mut(
                    frame
                        .as_mut_ptr()
                        .add(len)
                        .cast::<std::mem::MaybeUninit<u8>>(),
                    total - len,
                )
            };
            let mut buf = tokio::io::ReadBuf::uninit(spare);
            match std::pin::Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(buf.filled().len())),
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
        .await?;
        if filled == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: the reader initialised `filled` bytes right after `len` (`ReadBuf` counts
        // only bytes written through it), and `len + filled <= total <= capacity`.
        unsafe { frame.set_len(frame.len() + filled) };
    }
    Ok(())
}

/// Smallest frame worth recycling: below this, the allocator's own free lists are as fast.
const FRAME_RECYCLE_MIN: usize = READ_BUFFER_BYTES;

/// Most bytes of spare frames the pool keeps: a consumer's fetch responses (a few MiB each)
/// come back when their `Records` drop and serve the next responses, so steady state neither
/// allocates nor page-faults per fetch. Bounded at 64 MiB: a frame given back beyond it is
/// freed.
const FRAME_POOL_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Spare response buffers of every connection of the process, taken once per large frame
/// read and given back once per frame dropped (its lock is never taken per record).
pub(crate) static FRAME_POOL: FramePool = FramePool {
    state: Mutex::new(PoolState {
        frames: Vec::new(),
        bytes: 0,
    }),
};

/// See [`FRAME_POOL`].
pub(crate) struct FramePool {
    state: Mutex<PoolState>,
}

struct PoolState {
    frames: Vec<Frame>,
    /// Sum of the capacities of `frames`, at most [`FRAME_POOL_BYTES_MAX`].
    bytes: usize,
}

impl FramePool {
    /// An empty frame with room for `len` bytes: a spare one if `len` is large enough to be
    /// worth it and one fits, else a new one.
    pub(crate) fn take(&self, len: usize) -> Frame {
        if len >= FRAME_RECYCLE_MIN {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = state.frames.iter().position(|f| f.capacity() >= len) {
                let mut frame = state.frames.swap_remove(at);
                state.bytes -= frame.capacity();
                drop(state);
                frame.clear();
                return frame;
            }
        }
        Frame::with_capacity(len)
    }

    /// Keeps `frame` for a later [`FramePool::take`], or frees it if it is small or the pool
    /// is full.
    pub(crate) fn give_back(&self, frame: Frame) {
        let capacity = frame.capacity();
        if capacity < FRAME_RECYCLE_MIN {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.bytes + capacity <= FRAME_POOL_BYTES_MAX {
            state.bytes += capacity;
            state.frames.push(frame);
        }
    }
}

/// The reader task: reads frames until the stream ends, fails or the connection is killed,
/// dispatching each response to its waiter by correlation id.
async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    shared: Arc<Shared>,
    frame_size_max: usize,
) {
    // One registration for the connection's life: a fresh `notified()` per frame would lock
    // the `Notify`'s waiter list twice per response.
    let shutdown = shared.shutdown.notified();
    tokio::pin!(shutdown);
    let reason = loop {
        let frame = tokio::select! {
            biased;
            frame = read_frame(&mut reader, &shared.addr, frame_size_max) => frame,
            _ = shutdown.as_mut() => break "connection closed".to_owned(),
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break "closed by the broker".to_owned(),
            Err(e) => break e.to_string(),
        };
        match decode_response_header(&frame) {
            Ok((correlation_id, _)) => shared.complete(correlation_id, frame),
            Err(e) => break format!("undecodable response header: {e}"),
        }
    };
    debug!(addr = %shared.addr, %reason, "connection reader stopped");
    shared.kill(reason);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wire::protocol::{
        decode_request, encode_response, ListOffsetsRequest, ListOffsetsResponse, Request,
        WireError,
    };

    fn config() -> ConnectionConfig {
        ConnectionConfig {
            request_timeout: Duration::from_secs(5),
            ..ConnectionConfig::default()
        }
    }

    /// Reads one request frame from the fake broker's side of the stream.
    async fn read_request<R: AsyncRead + Unpin>(reader: &mut R) -> Vec<u8> {
        read_frame(reader, "test", FRAME_SIZE_MAX)
            .await
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// A length prefix above the limit is refused from the four bytes alone: no buffer of
    /// that size is allocated, the read fails with `FrameTooLarge`.
    #[tokio::test]
    async fn read_frame_refuses_absurd_lengths() {
        let bytes = u32::MAX.to_le_bytes();
        let err = read_frame(&mut &bytes[..], "test", FRAME_SIZE_MAX)
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            ClientError::Protocol(wire::ProtocolError::FrameTooLarge { .. })
        ));
        // A configured lower limit applies too.
        let bytes = 2000u32.to_le_bytes();
        assert!(read_frame(&mut &bytes[..], "test", 1024).await.is_err());
        // Clean end of stream between frames, and a truncated frame.
        assert!(read_frame(&mut &[][..], "test", 1024)
            .await
            .unwrap()
            .is_none());
        let mut truncated = 12u32.to_le_bytes().to_vec();
        truncated.extend_from_slice(&[1, 2, 3]);
        let result = read_frame(&mut &truncated[..], "test", 1024).await;
        assert!(matches!(result, Err(ClientError::Io { .. })), "{result:?}");
    }

    /// Frames land 16-aligned in memory whatever the reader's buffering.
    #[tokio::test]
    async fn read_frame_is_aligned() {
        let mut buffer = Vec::new();
        let error = WireError::none();
        let body = ListOffsetsResponse::default();
        let frame = encode_response(&mut buffer, 3, &error, Some(&body)).to_vec();
        let mut stream = Vec::new();
        stream.push(0u8); // misalign the source on purpose
        stream.extend_from_slice(&frame);
        let mut source = &stream[1..];
        let read = read_frame(&mut source, "test", FRAME_SIZE_MAX)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&read[..], &frame[..]);
        assert_eq!(read.as_ptr() as usize % 16, 0);
    }

    /// A large frame arriving in small pieces is read whole into uninitialised capacity
    /// (no zero fill), byte for byte; its buffer goes back to the pool and serves the next
    /// large frame; a stream cut inside the frame is an error.
    #[tokio::test]
    async fn large_frames_are_read_in_pieces_and_recycled() {
        // Frames are multiples of 16 bytes, length prefix included.
        let len = FRAME_RECYCLE_MIN * 3 + 12;
        let mut frame = (len as u32).to_le_bytes().to_vec();
        frame.extend((0..len).map(|i| (i % 251) as u8));
        let (mut writer, mut reader) = tokio::io::duplex(1000);
        let sent = frame.clone();
        let writing = tokio::spawn(async move {
            for piece in sent.chunks(777) {
                writer.write_all(piece).await.unwrap();
            }
            writer
        });
        let read = read_frame(&mut reader, "test", FRAME_SIZE_MAX)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&read[..], &frame[..]);
        assert_eq!(read.as_ptr() as usize % 16, 0);
        let address = read.as_ptr();
        let pool = FramePool {
            state: Mutex::new(PoolState {
                frames: Vec::new(),
                bytes: 0,
            }),
        };
        pool.give_back(read);
        let again = pool.take(len);
        assert_eq!(again.as_ptr(), address, "the spare buffer is reused");
        assert!(again.is_empty());
        // Small frames are not kept.
        pool.give_back(Frame::with_capacity(16));
        assert_eq!(pool.state.lock().unwrap().frames.len(), 0);
        let mut writer = writing.await.unwrap();
        let cut_short = frame[..frame.len() - 10].to_vec();
        tokio::spawn(async move {
            // The reader may stop reading early; the write's outcome does not matter then.
            let _ = writer.write_all(&cut_short).await;
        });
        let cut = read_frame(&mut reader, "test", FRAME_SIZE_MAX).await;
        assert!(matches!(cut, Err(ClientError::Io { .. })), "{cut:?}");
    }

    /// Responses arriving out of order reach the right callers; an absurd frame from the peer
    /// then kills the connection and fails what is still pending with a retriable error.
    #[tokio::test]
    async fn pipelining_and_death() {
        let (client_side, broker_side) = tokio::io::duplex(64 * 1024);
        let (client_read, client_write) = tokio::io::split(client_side);
        let (mut broker_read, mut broker_write) = tokio::io::split(broker_side);
        let connection = Connection::start("fake:1", client_read, client_write, config());

        let request = ListOffsetsRequest::default();
        let first = {
            let connection = connection.clone();
            let request = request.clone();
            tokio::spawn(async move { connection.request(ApiKey::ListOffsets, &request).await })
        };
        let corr_first = {
            let frame = read_request(&mut broker_read).await;
            let (header, decoded) = decode_request(&frame).unwrap();
            assert!(matches!(decoded, Request::ListOffsets(_)));
            header.correlation_id
        };
        let second = {
            let connection = connection.clone();
            tokio::spawn(async move { connection.request(ApiKey::ListOffsets, &request).await })
        };
        let corr_second = decode_request(&read_request(&mut broker_read).await)
            .unwrap()
            .0
            .correlation_id;
        assert_ne!(corr_first, corr_second);

        // Answer the second first.
        let mut buffer = Vec::new();
        let ok = WireError::none();
        let body = ListOffsetsResponse::default();
        let answer = encode_response(&mut buffer, corr_second, &ok, Some(&body)).to_vec();
        broker_write.write_all(&answer).await.unwrap();
        let frame = second.await.unwrap().unwrap();
        assert_eq!(
            decode_body::<ListOffsetsResponse>(&frame).unwrap(),
            ListOffsetsResponse::default()
        );
        assert!(connection.is_alive());

        // Now an absurd length: the first request fails, retriably, and the connection is dead.
        broker_write
            .write_all(&(u32::MAX - 1).to_le_bytes())
            .await
            .unwrap();
        let err = first.await.unwrap().unwrap_err();
        assert!(matches!(err, ClientError::ConnectionLost { .. }), "{err}");
        assert!(err.is_retriable());
        assert!(!connection.is_alive());
        let again = connection
            .request(ApiKey::ListOffsets, &ListOffsetsRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(again, ClientError::ConnectionLost { .. }));
    }

    /// A request with no answer times out, and its late answer is dropped harmlessly.
    #[tokio::test]
    async fn timeout_then_late_answer() {
        let (client_side, broker_side) = tokio::io::duplex(64 * 1024);
        let (client_read, client_write) = tokio::io::split(client_side);
        let (mut broker_read, mut broker_write) = tokio::io::split(broker_side);
        let connection = Connection::start(
            "fake:1",
            client_read,
            client_write,
            ConnectionConfig {
                request_timeout: Duration::from_millis(50),
                ..ConnectionConfig::default()
            },
        );
        let err = connection
            .request(ApiKey::ListOffsets, &ListOffsetsRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }));
        let corr = decode_request(&read_request(&mut broker_read).await)
            .unwrap()
            .0
            .correlation_id;
        let mut buffer = Vec::new();
        let ok = WireError::none();
        let body = ListOffsetsResponse::default();
        let answer = encode_response(&mut buffer, corr, &ok, Some(&body)).to_vec();
        broker_write.write_all(&answer).await.unwrap();
        // A later request is answered normally: frames are read in order, so the late answer
        // was read (and dropped) first without harming the connection.
        let next_request = ListOffsetsRequest::default();
        let next = connection.request_with_timeout(
            ApiKey::ListOffsets,
            &next_request,
            Duration::from_secs(60),
        );
        let broker = async {
            let corr = decode_request(&read_request(&mut broker_read).await)
                .unwrap()
                .0
                .correlation_id;
            let mut buffer = Vec::new();
            let answer = encode_response(&mut buffer, corr, &ok, Some(&body)).to_vec();
            broker_write.write_all(&answer).await.unwrap();
        };
        let (answered, ()) = tokio::join!(next, broker);
        answered.unwrap();
        assert!(connection.is_alive());
    }

    /// Fire-and-forget requests register no waiter and complete once written.
    #[tokio::test]
    async fn oneway_needs_no_answer() {
        let (client_side, broker_side) = tokio::io::duplex(64 * 1024);
        let (client_read, client_write) = tokio::io::split(client_side);
        let (mut broker_read, _broker_write) = tokio::io::split(broker_side);
        let connection = Connection::start("fake:1", client_read, client_write, config());
        connection
            .send_oneway(ApiKey::ListOffsets, &ListOffsetsRequest::default())
            .await
            .unwrap();
        let frame = read_request(&mut broker_read).await;
        assert!(decode_request(&frame).is_ok());
        assert!(connection.inner.shared.lock().waiters.is_empty());
    }
}
