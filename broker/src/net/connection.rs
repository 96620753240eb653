//! One client connection: a reader that frames and dispatches requests in order, and a writer
//! task that sends the responses in the same order (the protocol's guarantee), so a client can
//! pipeline. The two halves use two descriptors of the same socket (dup), so neither waits for
//! the other.
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
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::net::TcpStream;
use glommio::Task;
use tracing::Instrument;
use wire::protocol::{
    check_frame, decode_request, decode_request_header, ApiKey, ErrorCode, FetchResponse, WireError,
};
use wire::{AlignedVec, ProtocolError};

use crate::handler::{dispatch, error_frame, Outgoing};
use crate::services::ShardServices;

/// Initial receive buffer of a connection: room for several typical produce frames.
const RECEIVE_BUFFER_BYTES: usize = 1024 * 1024;
/// A buffer grown past this (for a very large frame) is shrunk back once empty, so one huge
/// request does not pin its memory for the connection's lifetime; below it, the buffer stays
/// (reallocating and zeroing it per request cost 6 % of the broker's CPU at 256 KiB frames).
const RECEIVE_BUFFER_KEEP_BYTES: usize = 8 * 1024 * 1024;
/// Requests of one connection in flight at once; reading stops while this many wait for their
/// responses (back-pressure on a client that pipelines too much). 64 x one max frame bounds it.
const IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// A request on its way to the writer: the task resolving to its response, and its span.
struct InFlightRequest {
    task: Task<Option<Outgoing>>,
    span: tracing::Span,
    /// When the request was decoded; only taken while its span is enabled (debug logs).
    started: Option<Instant>,
}

impl InFlightRequest {
    /// A response that needs no further work (outside any request span).
    fn ready(task: Task<Option<Outgoing>>) -> InFlightRequest {
        InFlightRequest {
            task,
            span: tracing::Span::none(),
            started: None,
        }
    }
}

/// Serves one connection until the client leaves, idles too long or the shard shuts down.
pub async fn serve(shard: Rc<ShardServices>, stream: TcpStream) {
    let span = match stream.peer_addr() {
        Ok(peer) => tracing::debug_span!("connection", shard = shard.id, %peer),
        Err(_) => tracing::debug_span!("connection", shard = shard.id),
    };
    let counting = shard.clone();
    counting.probe.connection_opened();
    serve_connection(shard, stream).instrument(span).await;
    counting.probe.connection_closed();
}

async fn serve_connection(shard: Rc<ShardServices>, stream: TcpStream) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr.map(|a| a.to_string()).unwrap_or_default();
    let client_host = peer_addr.map(|a| a.ip().to_string()).unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(shard.config.idle_timeout));
    // SAFETY: `dup` returns a new descriptor for the same socket (or -1, checked below), which
    // the new `TcpStream` then owns and closes; the original stays owned by `stream`.
    let writer_fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if writer_fd < 0 {
        tracing::warn!(peer, "dup of a client socket failed; closing it");
        return;
    }
    // SAFETY: `writer_fd` is a fresh, valid socket descriptor that nothing else owns.
    let writer = unsafe { TcpStream::from_raw_fd(writer_fd) };
    let (queue, responses) = local_channel::new_bounded(IN_FLIGHT_PER_CONNECTION_MAX);
    let writer_task = glommio::spawn_local(
        write_responses(responses, writer).instrument(tracing::Span::current()),
    );
    tracing::debug!(shard = shard.id, peer, "connection opened");
    if let Err(reason) = read_requests(&shard, stream, &queue, &client_host).await {
        tracing::debug!(shard = shard.id, peer, reason, "connection closed");
    }
    drop(queue);
    writer_task.await;
}

/// Reads, frames and dispatches requests; `Err` says why the connection ends.
async fn read_requests(
    shard: &Rc<ShardServices>,
    mut stream: TcpStream,
    queue: &local_channel::LocalSender<InFlightRequest>,
    client_host: &str,
) -> Result<(), String> {
    let max_frame = shard.config.max_frame_bytes;
    let mut buffer = AlignedVec::<16>::with_capacity(RECEIVE_BUFFER_BYTES);
    buffer.resize(RECEIVE_BUFFER_BYTES, 0);
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        // Handle every complete frame in the buffer.
        loop {
            let total = match check_frame(&buffer[start..end], max_frame) {
                Ok(Some(total)) => total,
                Ok(None) => break,
                Err(error) => {
                    // Nothing after this can be framed: say why, then close.
                    let message = WireError::new(
                        ErrorCode::InvalidRequest,
                        format!("cannot frame the request: {error}"),
                    );
                    let frame = error_frame(0, &message);
                    let _ = queue
                        .send(InFlightRequest::ready(glommio::spawn_local(async move {
                            Some(Outgoing::Frame(frame))
                        })))
                        .await;
                    return Err(error.to_string());
                }
            };
            if end - start < total {
                if total > buffer.len() {
                    let size = total.next_power_of_two().min(max_frame.max(total));
                    let mut grown = AlignedVec::<16>::with_capacity(size);
                    grown.extend_from_slice(&buffer[start..end]);
                    grown.resize(size, 0);
                    buffer = grown;
                    end -= start;
                    start = 0;
                } else if start + total > buffer.len() {
                    buffer.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                break;
            }
            let task = handle_frame(shard, &buffer[start..start + total], client_host).await;
            start += total;
            match task {
                Some(task) => queue
                    .send(task)
                    .await
                    .map_err(|_| "response writer stopped".to_string())?,
                None => return Err("unreadable request header".into()),
            }
            if shard.shutting_down.get() {
                return Err("shutting down".into());
            }
        }
        if start == end {
            start = 0;
            end = 0;
            if buffer.len() > RECEIVE_BUFFER_KEEP_BYTES {
                buffer = AlignedVec::<16>::with_capacity(RECEIVE_BUFFER_BYTES);
                buffer.resize(RECEIVE_BUFFER_BYTES, 0);
            }
        } else if end == buffer.len() {
            buffer.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let read = stream
            .read(&mut buffer[end..])
            .await
            .map_err(|e| e.to_string())?;
        if read == 0 {
            return Err(if start == end {
                "client closed".into()
            } else {
                "client closed mid-frame".into()
            });
        }
        end += read;
    }
}

/// Decodes one frame and starts handling it. `None` when not even the header is readable.
async fn handle_frame(
    shard: &Rc<ShardServices>,
    frame: &[u8],
    client_host: &str,
) -> Option<InFlightRequest> {
    let decoded = decode_request(frame);
    let header = match &decoded {
        Ok((header, _)) => *header,
        Err(_) => decode_request_header(frame).ok()?.0,
    };
    let span = tracing::debug_span!(
        "request",
        api = ?ApiKey::from_u16(header.api_key),
        correlation_id = header.correlation_id
    );
    let started = (!span.is_disabled()).then(Instant::now);
    let task = match decoded {
        Ok((header, request)) => {
            dispatch(shard, header, request, client_host)
                .instrument(span.clone())
                .await
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
            glommio::spawn_local(async move { Some(Outgoing::Frame(frame)) })
        }
    };
    Some(InFlightRequest {
        task,
        span,
        started,
    })
}

/// Writes responses in request order until the reader is done and the queue is empty.
async fn write_responses(responses: LocalReceiver<InFlightRequest>, mut stream: TcpStream) {
    let mut head = Vec::new();
    while let Some(request) = responses.recv().await {
        let InFlightRequest {
            task,
            span,
            started,
        } = request;
        let Some(outgoing) = task.instrument(span.clone()).await else {
            if let Some(started) = started {
                tracing::debug!(parent: &span, took_us = started.elapsed().as_micros() as u64, "request done, no response");
            }
            continue;
        };
        let result = match outgoing {
            Outgoing::Frame(bytes) => stream.write_all(&bytes).await,
            Outgoing::Fetch(reply) => {
                let ok = WireError::none();
                let mut response = FetchResponse::default();
                let frame = reply.encode(&mut head, &mut response, &ok);
                let parts: Vec<&[u8]> = frame.parts().collect();
                write_parts(&mut stream, &parts).await
            }
        };
        if let Err(error) = result {
            tracing::debug!(parent: &span, %error, "writing a response failed");
            return;
        }
        if let Some(started) = started {
            let took_us = started.elapsed().as_micros() as u64;
            tracing::debug!(parent: &span, took_us, "response written");
        }
    }
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
