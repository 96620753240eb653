//! The read half of a connection that, finding nothing to read, keeps polling the socket for a
//! while before it lets its task sleep ([`ConnectionConfig::spin_before_park`]).
//!
//! Why: with one request in flight, most of a round trip's cost on a virtual machine is the
//! wake-up of the sleeping reader (the kernel's inter-processor interrupt, the scheduler, the
//! runtime's `epoll_wait`): 60 µs of client CPU per round trip on the 2-core machine of
//! `bench/results`, against a few µs for the `recv` itself. A reader that polls the socket for
//! a few tens of µs after each response finds the next one already there and never sleeps,
//! at the price of that much CPU each time the connection goes quiet. It pays when the
//! client has a core to itself; on shared cores the spin takes CPU the broker needs.
//!
//! How: tokio learns that a socket is readable only when its driver polls `epoll`, which a busy
//! runtime does every few dozen task polls. So while spinning, each poll tries a non-blocking
//! `recv` on the socket itself and, finding nothing, wakes its own task so the runtime polls it
//! again after the other ready tasks. The runtime's own readiness stays correct: data read this
//! way only makes tokio's next read attempt find the socket empty, which it already handles.
//!
//! [`ConnectionConfig::spin_before_park`]: crate::connection::ConnectionConfig::spin_before_park

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;

/// A TCP read half that spins up to `spin` before it parks; see the module documentation.
pub(crate) struct SpinningRead {
    half: OwnedReadHalf,
    spin: Duration,
    /// When the current run of empty polls began; `None` while data keeps coming.
    idle_since: Option<Instant>,
    /// Reads served by polling the socket directly (tests check that the spin path runs).
    reads_while_spinning: u64,
}

impl SpinningRead {
    /// `spin` zero: a plain read half that parks at once.
    pub(crate) fn new(half: OwnedReadHalf, spin: Duration) -> Self {
        SpinningRead {
            half,
            spin,
            idle_since: None,
            reads_while_spinning: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn reads_while_spinning(&self) -> u64 {
        self.reads_while_spinning
    }

    /// One non-blocking `recv` into the unfilled part of `buf`.
    fn recv_now(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
        let socket = SockRef::from(self.half.as_ref());
        // SAFETY: `recv` only writes into the slice (never reads it, never de-initialises a
        // byte), and we tell `buf` below about exactly the `received` bytes it wrote.
        let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
        // The socket is non-blocking (tokio made it so): an empty one answers `WouldBlock`.
        let received = socket.recv(unfilled)?;
        // SAFETY: the kernel initialised the first `received` bytes of the unfilled part.
        unsafe { buf.assume_init(received) };
        buf.advance(received);
        Ok(received)
    }
}

impl AsyncRead for SpinningRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.half).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.idle_since = None;
                return Poll::Ready(result);
            }
            // Out of tokio's cooperative budget, the pending read above asked the runtime to
            // run others first: yield as asked rather than read past the budget, or a reader
            // that always finds data would never let the other tasks of its runtime run.
            Poll::Pending
                if this.spin.is_zero()
                    || buf.remaining() == 0
                    || !tokio::task::coop::has_budget_remaining() =>
            {
                return Poll::Pending
            }
            Poll::Pending => {}
        }
        let now = Instant::now();
        let since = *this.idle_since.get_or_insert(now);
        if now.duration_since(since) >= this.spin {
            // Spun long enough: park. The pending read above registered the waker with the
            // driver, which wakes us when the socket turns readable.
            return Poll::Pending;
        }
        match this.recv_now(buf) {
            Ok(_) => {
                this.idle_since = None;
                this.reads_while_spinning += 1;
                Poll::Ready(Ok(()))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing yet: let the runtime run its other tasks, then poll us again.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair(spin: Duration) -> (SpinningRead, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (read, _write) = client.unwrap().into_split();
        // The write half is dropped: an `OwnedWriteHalf` shuts down writing only.
        (SpinningRead::new(read, spin), accepted.unwrap().0)
    }

    /// Data sent while the reader spins is read by the spin path, in order, byte for byte.
    /// The reader runs as a spawned task, as a connection's reader does (the future of
    /// `block_on` itself is woken differently).
    #[tokio::test(flavor = "current_thread")]
    async fn data_arriving_while_spinning_is_read_by_the_spin() {
        let (mut reader, mut peer) = pair(Duration::from_secs(10)).await;
        let reading = tokio::spawn(async move {
            let mut received = Vec::new();
            while received.len() < 150 {
                let mut chunk = [0u8; 64];
                let read = reader.read(&mut chunk).await.unwrap();
                assert!(read > 0);
                received.extend_from_slice(&chunk[..read]);
            }
            (reader, received)
        });
        for round in 0u8..50 {
            tokio::time::sleep(Duration::from_micros(200)).await;
            peer.write_all(&[round; 3]).await.unwrap();
        }
        let (mut reader, received) = reading.await.unwrap();
        let expected: Vec<u8> = (0u8..50).flat_map(|round| [round; 3]).collect();
        assert_eq!(received, expected);
        assert!(
            reader.reads_while_spinning() > 0,
            "a 10 s spin never read from the socket itself"
        );
        drop(peer);
        let mut rest = [0u8; 8];
        assert_eq!(reader.read(&mut rest).await.unwrap(), 0, "end of stream");
    }

    /// Once its spin is over, the reader parks and is woken by the runtime like a plain one;
    /// with no spin it never reads the socket itself.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reader_parks_after_its_spin() {
        for spin in [Duration::ZERO, Duration::from_micros(50)] {
            let (mut reader, mut peer) = pair(spin).await;
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                peer.write_all(b"late").await.unwrap();
                peer
            });
            let mut chunk = [0u8; 16];
            let read = reader.read(&mut chunk).await.unwrap();
            assert_eq!(&chunk[..read], b"late");
            // The bytes came 30 ms later, long after any spin: the parked reader was woken by
            // the runtime and read them through tokio, not by polling the socket itself.
            assert_eq!(reader.reads_while_spinning(), 0, "spin {spin:?}");
            drop(writer.await.unwrap());
        }
    }
}
