//! One client connection: a reader that frames and dispatches requests in order, and a writer
//! task that sends the responses in the same order (the protocol's guarantee), so a client can
//! pipeline. The two halves use two descriptors of the same socket (dup), so neither waits for
//! the other. Started by [`crate::net::listener`] for every admitted connection.
//!
//! Bounded (see [`crate::net::limits`]): the receive buffer grows only as bytes arrive and
//! within the budgets ([`crate::net::receive_buffer`]); each dispatched request holds a charge
//! of its frame and its largest response until the response is written
//! ([`crate::net::request_charge`]); a frame that does not arrive whole within the request
//! timeout, a response the client does not take within it, and a connection silent for the
//! idle timeout end the connection and give its memory back.
//!
//! Frames are read back to back into one 16-aligned buffer; every frame is a multiple of 16
//! bytes, so each starts aligned and its record batches are validated and appended in place,
//! with no copy before the log's own. Fetch responses leave with vectored sends whose slices
//! point into the log's buffers: batch bytes are not copied on the way out either.
//!
//! Tracing: a `connection` span (shard, peer) covers the connection, and a `request` span
//! (api, correlation id) each request, from its decoding through its handling (the handler's
//! tasks carry it) to its response written, where a debug event gives the whole time taken.
//! Both are at debug level: nothing is logged per request at info.

use std::os::unix::io::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::Task;
use tracing::Instrument;
use wire::protocol::{
    check_frame, decode_request, decode_request_header, ApiKey, ErrorCode, FetchResponse, WireError,
};
use wire::ProtocolError;

use crate::handler::{dispatch, error_frame, Outgoing};
use crate::net::limits::{ConnectionSlot, ShardNet};
use crate::net::receive_buffer::ReceiveBuffer;
use crate::net::request_charge::{
    connection_budget, response_bytes_max, ConnectionBudget, RequestCharge,
};
use crate::services::ShardServices;

/// Requests of one connection in flight at once; reading stops while this many wait for their
/// responses (back-pressure on a client that pipelines too much). Their bytes are bounded
/// separately, by `--max-request-bytes-in-flight`.
const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// A request on its way to the writer: the task resolving to its response, its span, and the
/// budget it holds until its response is written.
struct Pending {
    task: Task<Option<Outgoing>>,
    span: tracing::Span,
    /// When the request was decoded; only taken while its span is enabled (debug logs).
    started: Option<Instant>,
    charge: RequestCharge,
}

impl Pending {
    /// A response that needs no further work (outside any request span).
    fn ready(task: Task<Option<Outgoing>>, charge: RequestCharge) -> Pending {
        Pending {
            task,
            span: tracing::Span::none(),
            started: None,
            charge,
        }
    }
}

/// What a connection's reader and writer share.
struct Connection {
    shard: Rc<ShardServices>,
    net: Rc<ShardNet>,
    budget: ConnectionBudget,
    queue: LocalSender<Pending>,
    client_host: String,
}

/// Serves one connection until the client leaves, idles too long or the shard shuts down;
/// `_slot` keeps its place in the node's connection count until then.
pub async fn serve(
    shard: Rc<ShardServices>,
    net: Rc<ShardNet>,
    stream: TcpStream,
    slot: ConnectionSlot,
) {
    let span = match stream.peer_addr() {
        Ok(peer) => tracing::debug_span!("connection", shard = shard.id, %peer),
        Err(_) => tracing::debug_span!("connection", shard = shard.id),
    };
    let counting = shard.clone();
    counting.probe.connection_opened();
    serve_connection(shard, net, stream, slot)
        .instrument(span)
        .await;
    counting.probe.connection_closed();
}

async fn serve_connection(
    shard: Rc<ShardServices>,
    net: Rc<ShardNet>,
    stream: TcpStream,
    _slot: ConnectionSlot,
) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
    let client_host = peer_addr.map(|a| a.ip().to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    // SAFETY: `dup` returns a new descriptor for the same socket (or -1, checked below), which
    // the new `TcpStream` then owns and closes; the original stays owned by `stream`.
    let writer_fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if writer_fd < 0 {
        tracing::warn!(peer, "dup of a client socket failed; closing it");
        return;
    }
    // SAFETY: `writer_fd` is a fresh, valid socket descriptor that nothing else owns.
    let writer = unsafe { TcpStream::from_raw_fd(writer_fd) };
    // A client that does not take its responses within the request timeout is dropped, which
    // gives back what its requests hold.
    let _ = writer.set_write_timeout(Some(net.request_timeout));
    let budget = connection_budget(net.max_request_bytes_in_flight);
    let (queue, responses) = local_channel::new_bounded(IN_FLIGHT_PER_CONNECTION_MAX);
    let writer_task = glommio::spawn_local(
        write_responses(responses, writer, budget.clone()).instrument(tracing::Span::current()),
    );
    tracing::debug!(shard = shard.id, peer, "connection opened");
    let connection = Connection {
        shard,
        net,
        budget,
        queue,
        client_host,
    };
    if let Err(reason) = read_requests(&connection, stream).await {
        tracing::debug!(
            shard = connection.shard.id,
            peer,
            reason,
            "connection closed"
        );
    }
    drop(connection);
    writer_task.await;
}

/// Reads, frames and dispatches requests; `Err` says why the connection ends.
async fn read_requests(connection: &Connection, mut stream: TcpStream) -> Result<(), String> {
    let net = &connection.net;
    let mut buffer = ReceiveBuffer::new(&connection.budget, net);
    // When the partial frame in the buffer must be whole (it is dropped with the connection
    // otherwise); `None` while the buffer holds no partial frame.
    let mut frame_deadline: Option<Instant> = None;
    let mut read_timeout = net.idle_timeout;
    let _ = stream.set_read_timeout(Some(read_timeout));
    loop {
        // Handle every complete frame in the buffer.
        let mut handled_frames = false;
        let partial_frame_bytes = loop {
            let total = match check_frame(buffer.pending(), net.max_frame_bytes) {
                Ok(Some(total)) if total <= buffer.pending().len() => total,
                Ok(partial) => break partial,
                Err(error) => {
                    // Nothing after this can be framed (garbage, or a frame over
                    // --max-frame-bytes): say why, then close.
                    let message = WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("cannot frame the request: {error}"),
                    );
                    let frame = error_frame(0, &message);
                    answer_now(connection, Outgoing::Frame(frame)).await;
                    return Err(error.to_string());
                }
            };
            let frame = &buffer.pending()[..total];
            let room = net
                .max_request_bytes_in_flight
                .saturating_sub(buffer.grown_bytes());
            let task = handle_frame(connection, frame, room).await?;
            buffer.consume(total);
            handled_frames = true;
            connection
                .queue
                .send(task)
                .await
                .map_err(|_| "response writer stopped".to_string())?;
            if connection.shard.shutting_down.get() {
                return Err("shutting down".into());
            }
        };
        buffer.reset_if_empty();
        if handled_frames {
            // The partial frame left (if any) is a new one: its time starts now.
            frame_deadline = None;
        }
        let timeout = if buffer.is_empty() {
            frame_deadline = None;
            net.idle_timeout
        } else {
            let deadline =
                *frame_deadline.get_or_insert_with(|| Instant::now() + net.request_timeout);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("request timed out before its frame arrived whole".into());
            }
            with_deadline(buffer.make_room(partial_frame_bytes), left)
                .await
                .map_err(|()| "request timed out waiting for receive memory".to_string())?
                .map_err(|_| "response writer stopped".to_string())?;
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
                .min(net.idle_timeout)
        };
        if timeout != read_timeout {
            read_timeout = timeout;
            let _ = stream.set_read_timeout(Some(read_timeout));
        }
        let read = stream
            .read(buffer.room())
            .await
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Err(if buffer.is_empty() {
                "client closed".into()
            } else {
                "client closed mid-frame".into()
            });
        }
        buffer.filled(read);
    }
}

/// Queues an answer that needs no handling (an error before closing).
async fn answer_now(connection: &Connection, outgoing: Outgoing) {
    let charge = RequestCharge::none(&connection.budget, &connection.net);
    let task = glommio::spawn_local(async move { Some(outgoing) });
    let _ = connection.queue.send(Pending::ready(task, charge)).await;
}

/// Decodes one frame, charges it (frame bytes plus the most its response can hold, within
/// `room` of the connection's budget) and starts handling it. `Err` when not even the header
/// is readable, or the connection is ending.
async fn handle_frame(
    connection: &Connection,
    frame: &[u8],
    room: usize,
) -> Result<Pending, String> {
    let shard = &connection.shard;
    let decoded = decode_request(frame);
    let header = match &decoded {
        Ok((header, _)) => *header,
        Err(_) => {
            decode_request_header(frame)
                .map_err(|_| "unreadable request header".to_string())?
                .0
        }
    };
    let span = tracing::debug_span!(
        "request",
        api = ?ApiKey::from_u16(header.api_key),
        correlation_id = header.correlation_id
    );
    let started = (!span.is_disabled()).then(Instant::now);
    match decoded {
        Ok((header, request)) => {
            let wanted = frame.len().saturating_add(response_bytes_max(&request));
            let charge = RequestCharge::take(&connection.budget, &connection.net, wanted, room)
                .await
                .map_err(|_| "response writer stopped".to_string())?;
            let task = dispatch(shard, header, request, &connection.client_host)
                .instrument(span.clone())
                .await;
            Ok(Pending {
                task,
                span,
                started,
                charge,
            })
        }
        Err(error) => {
            let code = match error {
                ProtocolError::UnknownApi { .. } | ProtocolError::UnsupportedVersion { .. } => {
                    ErrorCode::UnsupportedVersion
                }
                _ => ErrorCode::InvalidRequest,
            };
            tracing::debug!(parent: &span, shard = shard.id, %error, "bad request");
            let frame = error_frame(
                header.correlation_id,
                &WireError::new(code, error.to_string()),
            );
            let charge = RequestCharge::none(&connection.budget, &connection.net);
            Ok(Pending {
                task: glommio::spawn_local(async move { Some(Outgoing::Frame(frame)) }),
                span,
                started,
                charge,
            })
        }
    }
}

/// Small response frames (produce acknowledgements, metadata, offsets) are gathered into one
/// buffer while their successors are already answered, and leave in one send: a client that
/// pipelines gets several responses per system call. Up to this many bytes are gathered;
/// larger frames and fetch responses are written on their own (their bytes are not copied).
const COALESCE_BYTES_MAX: usize = 64 * 1024;

/// A request whose small response sits in the writer's gather buffer, not yet sent.
struct Gathered {
    span: tracing::Span,
    started: Option<Instant>,
    /// Given back once the gathered bytes are written.
    _charge: RequestCharge,
}

/// The writer's side of a connection: the socket, and the buffers reused from one response
/// to the next (no allocation per response in steady state).
struct ResponseWriter {
    stream: TcpStream,
    /// Encoded fetch headers.
    head: Vec<u8>,
    /// Small frames gathered for one send, at most [`COALESCE_BYTES_MAX`] plus one frame.
    gathered: Vec<u8>,
    /// Their requests, at most [`IN_FLIGHT_PER_CONNECTION_MAX`].
    gathered_requests: Vec<Gathered>,
}

impl ResponseWriter {
    /// Sends the gathered frames, then gives back their requests' charges.
    async fn flush(&mut self) -> std::io::Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.gathered).await;
        self.gathered.clear();
        for request in self.gathered_requests.drain(..) {
            if result.is_ok() {
                if let Some(started) = request.started {
                    let took_us = started.elapsed().as_micros() as u64;
                    tracing::debug!(parent: &request.span, took_us, "response written");
                }
            }
        }
        result
    }

    /// Writes (or gathers) the response of one request, in order after every earlier one.
    async fn respond(
        &mut self,
        outgoing: Option<Outgoing>,
        span: tracing::Span,
        started: Option<Instant>,
        charge: RequestCharge,
    ) -> std::io::Result<()> {
        let Some(outgoing) = outgoing else {
            if let Some(started) = started {
                let took_us = started.elapsed().as_micros() as u64;
                tracing::debug!(parent: &span, took_us, "request done, no response");
            }
            return Ok(());
        };
        if let Outgoing::Frame(bytes) = &outgoing {
            if bytes.len() <= COALESCE_BYTES_MAX {
                self.gathered.extend_from_slice(bytes);
                self.gathered_requests.push(Gathered {
                    span,
                    started,
                    _charge: charge,
                });
                if self.gathered.len() >= COALESCE_BYTES_MAX
                    || self.gathered_requests.len() >= IN_FLIGHT_PER_CONNECTION_MAX
                {
                    self.flush().await?;
                }
                return Ok(());
            }
        }
        self.flush().await?;
        let result = match outgoing {
            Outgoing::Frame(bytes) => self.stream.write_all(&bytes).await,
            Outgoing::Fetch(reply) => {
                let ok = WireError::none();
                let mut response = FetchResponse::default();
                let frame = reply.encode(&mut self.head, &mut response, &ok);
                let parts: Vec<&[u8]> = frame.parts().collect();
                write_parts(&mut self.stream, &parts).await
            }
            Outgoing::ReplicaFetch(reply) => {
                let ok = WireError::none();
                let mut response = wire::protocol::ReplicaFetchResponse::default();
                let frame = reply.encode(&mut self.head, &mut response, &ok);
                let parts: Vec<&[u8]> = frame.parts().collect();
                write_parts(&mut self.stream, &parts).await
            }
        };
        drop(charge);
        if result.is_ok() {
            if let Some(started) = started {
                let took_us = started.elapsed().as_micros() as u64;
                tracing::debug!(parent: &span, took_us, "response written");
            }
        }
        result
    }
}

/// Writes responses in request order until the reader is done and the queue is empty; each
/// request's charge is given back once its response is written. Responses already done when
/// their turn comes are gathered and sent together (see [`COALESCE_BYTES_MAX`]); the writer
/// never waits for a request while it holds gathered bytes. Closes the connection's budget
/// when it stops, so a reader waiting for room ends too.
async fn write_responses(
    responses: LocalReceiver<Pending>,
    stream: TcpStream,
    budget: ConnectionBudget,
) {
    let mut writer = ResponseWriter {
        stream,
        head: Vec::new(),
        gathered: Vec::new(),
        gathered_requests: Vec::with_capacity(IN_FLIGHT_PER_CONNECTION_MAX),
    };
    if let Err(error) = write_all_responses(&responses, &mut writer).await {
        tracing::debug!(%error, "writing a response failed");
    }
    budget.close();
}

async fn write_all_responses(
    responses: &LocalReceiver<Pending>,
    writer: &mut ResponseWriter,
) -> std::io::Result<()> {
    loop {
        // Nothing gathered here: waiting is free.
        let Some(request) = responses.recv().await else {
            return Ok(());
        };
        let outgoing = request.task.instrument(request.span.clone()).await;
        writer
            .respond(outgoing, request.span, request.started, request.charge)
            .await?;
        // Gather whatever is already answered behind it, without waiting.
        loop {
            let Some(next) = futures_lite::future::poll_once(responses.recv()).await else {
                break;
            };
            let Some(mut request) = next else {
                writer.flush().await?;
                return Ok(());
            };
            let outgoing = match futures_lite::future::poll_once(&mut request.task).await {
                Some(outgoing) => outgoing,
                None => {
                    // Not answered yet: send what is gathered before waiting for it.
                    writer.flush().await?;
                    (&mut request.task).instrument(request.span.clone()).await
                }
            };
            writer
                .respond(outgoing, request.span, request.started, request.charge)
                .await?;
        }
        writer.flush().await?;
    }
}

/// `future`'s output, or `Err(())` if it did not finish within `timeout`.
async fn with_deadline<F: std::future::Future>(
    future: F,
    timeout: Duration,
) -> Result<F::Output, ()> {
    let expired = async {
        glommio::timer::sleep(timeout).await;
        Err(())
    };
    futures_lite::future::or(async { Ok(future.await) }, expired).await
}

/// Most slices handed to one `sendmsg`: enough for a fetch response of dozens of batches,
/// far below the kernel's IOV_MAX (1024).
const IOVECS_PER_SEND_MAX: usize = 64;

/// Writes the parts of a frame with vectored sends straight from their buffers (no staging
/// copy of record bytes). Like glommio's own sends, each step first tries a non-blocking
/// `sendmsg`; when the socket buffer is full, the current part goes through glommio's io_uring
/// write, which waits for room.
async fn write_parts(stream: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    let (mut index, mut offset) = (0usize, 0usize);
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(IOVECS_PER_SEND_MAX.min(parts.len()));
    while index < parts.len() {
        iovecs.clear();
        for (i, part) in parts[index..].iter().take(IOVECS_PER_SEND_MAX).enumerate() {
            let skip = if i == 0 { offset } else { 0 };
            iovecs.push(libc::iovec {
                iov_base: part[skip..].as_ptr() as *mut libc::c_void,
                iov_len: part.len() - skip,
            });
        }
        // SAFETY: an all-zero msghdr is valid; we then point it at `iovecs`, whose entries
        // point into `parts`, all of which outlive this call. sendmsg only reads them.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = iovecs.as_mut_ptr();
        message.msg_iovlen = iovecs.len() as _;
        // SAFETY: `fd` is this connection's open socket and `message` is valid (see above).
        let sent = unsafe { libc::sendmsg(fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if sent < 0 {
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    stream.write_all(&parts[index][offset..]).await?;
                    index += 1;
                    offset = 0;
                    continue;
                }
                _ => return Err(error),
            }
        }
        if sent == 0 {
            // Nothing taken although there was room: let glommio write (and report) it.
            stream.write_all(&parts[index][offset..]).await?;
            index += 1;
            offset = 0;
            continue;
        }
        let mut sent = sent as usize;
        while sent > 0 && index < parts.len() {
            let left = parts[index].len() - offset;
            if sent >= left {
                sent -= left;
                index += 1;
                offset = 0;
            } else {
                offset += sent;
                sent = 0;
            }
        }
        while index < parts.len() && parts[index].len() == offset {
            index += 1;
            offset = 0;
        }
    }
    Ok(())
}
