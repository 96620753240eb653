//! A connection's receive buffer: one 16-aligned buffer that frames are read into back to back
//! (every frame is a multiple of 16 bytes, so each starts aligned and is handled in place).
//! Used by [`crate::net::connection`]'s reader only.
//!
//! It starts at [`RECEIVE_BUFFER_INITIAL_BYTES`] and grows only when it is full of bytes that
//! arrived and hold one incomplete frame: to twice its size, at most the frame's length. So a
//! frame's memory follows its bytes as they arrive (a frame announced at 60 MiB of which 4 MiB
//! arrived holds at most 8 MiB), never its announced length. Every growth is charged first to
//! the connection's budget, then to the shard's receive budget, and waits until both have room
//! (the connection reads nothing meanwhile: TCP back-pressure). The charges are given back
//! when the buffer shrinks to its first size again (once empty: at once above
//! [`RECEIVE_BUFFER_KEEP_BYTES`] or while another connection waits for the shard's budget)
//! and when it is dropped.
//!
//! ```text
//!   bytes: [ handled | pending frames (start..end) | room for the next read (end..) ]
//! ```

use std::rc::Rc;

use wire::AlignedVec;

use crate::net::limits::{
    BudgetClosed, ShardNet, RECEIVE_BUFFER_INITIAL_BYTES, RECEIVE_BUFFER_KEEP_BYTES,
};
use crate::net::request_charge::ConnectionBudget;

/// Frames are multiples of this many bytes, and a buffer's size is too.
const FRAME_ALIGNMENT_BYTES: usize = 16;

/// See the module documentation.
pub struct ReceiveBuffer {
    bytes: AlignedVec<FRAME_ALIGNMENT_BYTES>,
    start: usize,
    end: usize,
    /// Size beyond [`RECEIVE_BUFFER_INITIAL_BYTES`], charged to both budgets.
    grown_bytes: usize,
    connection: ConnectionBudget,
    net: Rc<ShardNet>,
}

impl ReceiveBuffer {
    /// A buffer of the first size (not charged: the connection limit bounds those).
    pub fn new(connection: &ConnectionBudget, net: &Rc<ShardNet>) -> ReceiveBuffer {
        ReceiveBuffer {
            bytes: initial_bytes(),
            start: 0,
            end: 0,
            grown_bytes: 0,
            connection: connection.clone(),
            net: net.clone(),
        }
    }

    /// Bytes received and not yet handled: whole frames, then at most one partial frame.
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks the first `bytes` pending bytes as handled.
    pub fn consume(&mut self, bytes: usize) {
        self.start = (self.start + bytes).min(self.end);
    }

    /// Bytes charged for this buffer's growth (part of the connection's budget).
    pub fn grown_bytes(&self) -> usize {
        self.grown_bytes
    }

    /// Where the next read goes; never empty after [`ReceiveBuffer::make_room`].
    pub fn room(&mut self) -> &mut [u8] {
        &mut self.bytes[self.end..]
    }

    /// Records that `bytes` were read into [`ReceiveBuffer::room`].
    pub fn filled(&mut self, bytes: usize) {
        self.end = (self.end + bytes).min(self.bytes.len());
    }

    /// Once everything pending is handled: starts over at the front, and gives a grown
    /// buffer back when it is very large or another connection waits for the budget.
    pub fn reset_if_empty(&mut self) {
        if !self.is_empty() {
            return;
        }
        self.start = 0;
        self.end = 0;
        if self.grown_bytes > 0
            && (self.bytes.len() > RECEIVE_BUFFER_KEEP_BYTES || self.net.receive_contended())
        {
            self.bytes = initial_bytes();
            self.give_back();
        }
    }

    /// Makes room for the next read: moves the pending bytes to the front, or, when they fill
    /// the buffer (one incomplete frame of `frame_bytes`, if its length is known yet), grows it
    /// once both budgets grant the growth.
    pub async fn make_room(&mut self, frame_bytes: Option<usize>) -> Result<(), BudgetClosed> {
        if self.end < self.bytes.len() {
            return Ok(());
        }
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return Ok(());
        }
        let size = self.bytes.len();
        let wanted = frame_bytes
            .unwrap_or(size * 2)
            .max(size + FRAME_ALIGNMENT_BYTES);
        let grown_size = (size * 2).min(wanted.next_multiple_of(FRAME_ALIGNMENT_BYTES));
        let extra = grown_size - size;
        self.connection
            .acquire(extra as u64)
            .await
            .map_err(|_| BudgetClosed)?;
        if let Err(closed) = self.net.take_receive(extra).await {
            self.connection.signal(extra as u64);
            return Err(closed);
        }
        self.grown_bytes += extra;
        let mut grown = AlignedVec::<FRAME_ALIGNMENT_BYTES>::with_capacity(grown_size);
        grown.extend_from_slice(&self.bytes[..self.end]);
        grown.resize(grown_size, 0);
        self.bytes = grown;
        Ok(())
    }

    fn give_back(&mut self) {
        if self.grown_bytes > 0 {
            self.connection.signal(self.grown_bytes as u64);
            self.net.give_receive(self.grown_bytes);
            self.grown_bytes = 0;
        }
    }
}

impl Drop for ReceiveBuffer {
    fn drop(&mut self) {
        self.give_back();
    }
}

fn initial_bytes() -> AlignedVec<FRAME_ALIGNMENT_BYTES> {
    let mut bytes = AlignedVec::with_capacity(RECEIVE_BUFFER_INITIAL_BYTES);
    bytes.resize(RECEIVE_BUFFER_INITIAL_BYTES, 0);
    bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::pin::pin;

    use futures_lite::future::poll_once;

    use super::*;
    use crate::net::request_charge::connection_budget;

    const KIB: usize = 1024;

    fn run(test: impl std::future::Future<Output = ()> + 'static) {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(test);
    }

    /// Fills the buffer's room completely, as a read of that many bytes would.
    fn fill(buffer: &mut ReceiveBuffer) {
        let room = buffer.room().len();
        buffer.filled(room);
    }

    /// The buffer grows only once full of arrived bytes, to twice its size at most (never to
    /// the frame's announced length), charging both budgets; dropping it gives all back.
    #[test]
    fn grows_with_arrived_bytes_not_with_the_announced_length() {
        run(async {
            let net = Rc::new(ShardNet::for_tests(1 << 20, 1 << 20));
            let connection = connection_budget(1 << 20);
            let mut buffer = ReceiveBuffer::new(&connection, &net);
            let announced = 1 << 20;
            buffer.filled(100);
            buffer.make_room(Some(announced)).await.unwrap();
            assert_eq!(buffer.grown_bytes(), 0, "room left: no growth");
            fill(&mut buffer);
            buffer.make_room(Some(announced)).await.unwrap();
            assert_eq!(
                buffer.grown_bytes(),
                16 * KIB,
                "doubled, not grown to 1 MiB"
            );
            assert_eq!(buffer.room().len(), 16 * KIB);
            assert_eq!(net.stats().receive_buffer_bytes(), 16 * KIB);
            assert_eq!(connection.available(), (1 << 20) - 16 * KIB as u64);
            fill(&mut buffer);
            buffer.make_room(Some(40 * KIB)).await.unwrap();
            assert_eq!(
                buffer.grown_bytes(),
                24 * KIB,
                "capped at the frame's length"
            );
            drop(buffer);
            assert_eq!(net.stats().receive_buffer_bytes(), 0);
            assert_eq!(connection.available(), 1 << 20);
        });
    }

    /// A growth the shard's budget cannot grant waits (the connection reads nothing) until
    /// another connection gives its buffer back.
    #[test]
    fn growth_waits_for_the_shard_budget() {
        run(async {
            let net = Rc::new(ShardNet::for_tests(64 * KIB, 1 << 20));
            let (first_budget, second_budget) =
                (connection_budget(1 << 20), connection_budget(1 << 20));
            let mut second = ReceiveBuffer::new(&second_budget, &net);
            fill(&mut second);
            second.make_room(None).await.unwrap();
            let mut first = ReceiveBuffer::new(&first_budget, &net);
            for _ in 0..2 {
                fill(&mut first);
                first.make_room(None).await.unwrap();
            }
            assert_eq!(net.stats().receive_buffer_bytes(), 64 * KIB);
            fill(&mut second);
            {
                let mut waiting = pin!(second.make_room(None));
                assert!(
                    poll_once(waiting.as_mut()).await.is_none(),
                    "the budget is spent"
                );
                assert!(net.receive_contended());
                drop(first);
                waiting.await.unwrap();
            }
            assert!(!net.receive_contended());
            assert_eq!(net.stats().receive_buffer_bytes(), 48 * KIB);
            // A wait given up (a timed-out frame) is no longer counted as waiting.
            fill(&mut second);
            let mut given_up = Box::pin(second.make_room(None));
            assert!(poll_once(given_up.as_mut()).await.is_none());
            assert!(net.receive_contended());
            drop(given_up);
            assert!(!net.receive_contended());
        });
    }

    /// An emptied grown buffer is kept for the next frames, unless another connection waits
    /// for the budget: then it is given back and the waiter proceeds.
    #[test]
    fn an_empty_grown_buffer_is_given_back_when_others_wait() {
        run(async {
            let net = Rc::new(ShardNet::for_tests(16 * KIB, 1 << 20));
            let (first_budget, second_budget) =
                (connection_budget(1 << 20), connection_budget(1 << 20));
            let mut first = ReceiveBuffer::new(&first_budget, &net);
            fill(&mut first);
            first.make_room(None).await.unwrap();
            let pending = first.pending().len();
            first.consume(pending);
            first.reset_if_empty();
            assert_eq!(first.grown_bytes(), 16 * KIB, "kept while nobody waits");
            let mut second = ReceiveBuffer::new(&second_budget, &net);
            fill(&mut second);
            let mut waiting = pin!(second.make_room(None));
            assert!(
                poll_once(waiting.as_mut()).await.is_none(),
                "the budget is spent"
            );
            first.reset_if_empty();
            assert_eq!(first.grown_bytes(), 0, "given back to the waiter");
            assert_eq!(first.room().len(), RECEIVE_BUFFER_INITIAL_BYTES);
            waiting.await.unwrap();
            assert_eq!(net.stats().receive_buffer_bytes(), 16 * KIB);
        });
    }
}
