//! Listeners: one acceptor thread per listening socket, off the shards.
//!
//! Every listen address is bound once by the node (no SO_REUSEPORT: the address belongs to
//! this process alone). Its acceptor thread blocks in `accept(2)` and hands each connection to
//! a shard through the bus: the main port's connections go to the shards in turn, a shard
//! port's to that shard. The shard then serves the connection on its own executor.
//!
//! Why a thread and not the shards' io_uring: a pending io_uring accept holds a reference to
//! the listening socket, and after a kill -9 the kernel tears a ring down asynchronously, so
//! the dead process's listener would go on accepting (and then resetting) connections for a
//! moment after its death, while a restarted broker cannot bind. A listener that only a plain
//! thread uses is closed with the process: a client that connects after a restart reaches
//! the new broker or is refused, never reset by the old one.
//!
//! Handing over blocks while the target shard's inbox is full: a node that cannot keep up
//! stops accepting, and the kernel's backlog (then the clients' SYN retries) holds the rest.

use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::os::unix::io::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::net::TcpStream;

use crate::services::ServiceBus;

/// Pause after an accept error other than a closed listener (out of descriptors, a connection
/// reset before accept): long enough not to spin on a persistent error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Which shard serves the connections of one listener.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Every shard in turn (the main port).
    EveryShard,
    /// This shard (its own port, advertised in metadata).
    Shard(usize),
}

/// The running acceptor threads of a node; [`Acceptors::stop`] closes them.
#[derive(Clone, Default)]
pub struct Acceptors {
    inner: Arc<AcceptorsInner>,
}

#[derive(Default)]
struct AcceptorsInner {
    stopping: AtomicBool,
    /// The listening sockets and their threads. Touched at start and stop only.
    running: Mutex<Vec<(socket2::Socket, JoinHandle<()>)>>,
}

impl Acceptors {
    /// Starts accepting on `listener` (bound and listening), in a thread named after `name`.
    pub fn spawn(
        &self,
        listener: socket2::Socket,
        addr: SocketAddr,
        target: Target,
        bus: ServiceBus,
        name: &str,
    ) -> std::io::Result<()> {
        // Blocking: the thread sleeps in accept(2) until a client comes or stop() shuts the
        // socket down.
        listener.set_nonblocking(false)?;
        let accepting = listener.try_clone()?;
        let stopping = self.inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sluice-accept-{name}"))
            .spawn(move || accept_loop(accepting, addr, target, bus, &stopping.stopping))?;
        self.inner
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((listener, thread));
        Ok(())
    }

    /// Stops accepting on every listener and joins the threads. Idempotent.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let running = std::mem::take(
            &mut *self
                .inner
                .running
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (socket, _) in &running {
            // Wakes the thread blocked in accept(2) (it returns EINVAL on a shut-down socket).
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        for (_, thread) in running {
            let _ = thread.join();
        }
    }
}

/// Accepts until the listener is shut down, handing every connection to its shard.
fn accept_loop(
    listener: socket2::Socket,
    addr: SocketAddr,
    target: Target,
    bus: ServiceBus,
    stopping: &AtomicBool,
) {
    let mut next_shard = 0usize;
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(error) => {
                if error.raw_os_error() == Some(libc::EINVAL) {
                    // Shut down by stop(), or never listening: nothing more will come.
                    return;
                }
                tracing::warn!(%addr, %error, "accept failed");
                std::thread::sleep(ACCEPT_ERROR_PAUSE);
                continue;
            }
        };
        let shard = match target {
            Target::Shard(shard) => shard,
            Target::EveryShard => {
                let shard = next_shard % bus.shards();
                next_shard = next_shard.wrapping_add(1);
                shard
            }
        };
        let stream: StdTcpStream = socket.into();
        if hand_over(&bus, shard, stream).is_err() {
            // The shard has stopped: the node is going down.
            return;
        }
    }
}

/// Sends a connection to `shard`, which serves it (or drops it when shutting down).
fn hand_over(
    bus: &ServiceBus,
    shard: usize,
    stream: StdTcpStream,
) -> Result<(), crate::shard::bus::BusClosed> {
    let _ = stream.set_nodelay(true);
    bus.run_on_blocking(shard, 0, move |services| async move {
        if services.shutting_down.get() {
            return;
        }
        // SAFETY: the descriptor comes from a connection this function owns (`into_raw_fd`
        // gives up that ownership), so the glommio stream is its only owner and closes it.
        let stream = unsafe { TcpStream::from_raw_fd(stream.into_raw_fd()) };
        glommio::spawn_local(crate::net::connection::serve(services, stream)).detach();
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A thread blocked in accept(2) on a socket returns once the socket is shut down, which
    /// is how [`Acceptors::stop`] ends its threads.
    #[test]
    fn shutdown_wakes_a_blocked_accept() {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(8).unwrap();
        let accepting = socket.try_clone().unwrap();
        // Whether the shutdown lands before or during the accept, the accept ends with EINVAL.
        let thread = std::thread::spawn(move || accepting.accept().map(|_| ()));
        socket.shutdown(std::net::Shutdown::Both).unwrap();
        let result = thread.join().unwrap();
        assert_eq!(
            result.err().and_then(|e| e.raw_os_error()),
            Some(libc::EINVAL)
        );
    }
}
