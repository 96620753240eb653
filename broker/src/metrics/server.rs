//! The HTTP side of the metrics endpoint: a `tiny_http` server on threads of its own (never a
//! shard's), answering `GET /metrics` (Prometheus text), `GET /ready` and `GET /live`. Started
//! and stopped by the node ([`crate::node`]); every answer that needs the shards asks them
//! through the bus ([`super::snapshot`]), so the shards never share state with this thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Header, Method, Request, Response, Server};

use super::{encode, snapshot, Readiness};
use crate::services::ServiceBus;

/// Longest wait for every shard to run a no-op work item before `/live` says 503. A shard's
/// pump takes a work item within microseconds unless the shard is blocked; 2 s tolerates a
/// shard busy with a long synchronous step (opening many logs at start) without flapping.
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Content type of the Prometheus text format the encoder writes.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running metrics endpoint; stops (and joins its thread) when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and starts answering on a thread named `sluice-metrics`.
    pub fn start(
        addr: SocketAddr,
        bus: ServiceBus,
        readiness: Arc<Readiness>,
        net: Arc<crate::net::limits::NetStats>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        let server =
            Arc::new(Server::from_listener(listener, None).map_err(std::io::Error::other)?);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    answer(request, &bus, &readiness, &net);
                }
            })?;
        tracing::info!(addr = %bound, "metrics endpoint listening");
        Ok(MetricsServer {
            addr: bound,
            server,
            thread: Some(thread),
        })
    }

    /// The bound address (the port chosen, when the configuration said 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one HTTP request.
fn answer(
    request: Request,
    bus: &ServiceBus,
    readiness: &Readiness,
    net: &crate::net::limits::NetStats,
) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    let response = match (request.method(), path.as_str()) {
        (Method::Get, "/metrics") => {
            let ready = readiness.ready.load(Ordering::Acquire);
            match encode::encode_text(
                snapshot::gather(bus, snapshot::NetSnapshot::read(net)),
                ready,
            ) {
                Ok(text) => text_response(200, text, PROMETHEUS_TEXT),
                Err(_) => text_response(500, "encoding the metrics failed\n".into(), "text/plain"),
            }
        }
        (Method::Get, "/ready") => {
            if readiness.ready.load(Ordering::Acquire) {
                text_response(200, "ready\n".into(), "text/plain")
            } else {
                text_response(503, "not ready\n".into(), "text/plain")
            }
        }
        (Method::Get, "/live") => {
            if snapshot::all_shards_answer(bus, LIVE_TIMEOUT) {
                text_response(200, "live\n".into(), "text/plain")
            } else {
                text_response(503, "a shard does not answer\n".into(), "text/plain")
            }
        }
        (Method::Get, _) => {
            text_response(404, "try /metrics, /ready or /live\n".into(), "text/plain")
        }
        _ => text_response(405, "GET only\n".into(), "text/plain"),
    };
    if let Err(error) = request.respond(response) {
        tracing::debug!(%error, path, "writing a metrics response failed");
    }
}

fn text_response(
    status: u16,
    body: String,
    content_type: &str,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let response = Response::from_string(body).with_status_code(status);
    match Header::from_bytes("Content-Type", content_type) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}
