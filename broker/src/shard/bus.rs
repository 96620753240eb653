//! The cross-shard bus: one inbox per shard, the only way shards talk. Part of the shard layer,
//! so it knows nothing of what travels on it: a message is a work item, a closure built by the
//! sender (a request handler, the topic admin, the node) that the receiving shard's pump runs
//! against that shard's context `C` (defined by the layer above: the per-shard services). The
//! closure owns `Send` data; replies come back on a one-slot channel ([`reply_channel`]).
//!
//! Bounded in bytes, not messages: every message declares the payload it carries (record
//! bytes, a fetch's results are on the reply side), and each inbox admits at most
//! [`Bus::inbox_budget_bytes`] of payload at once. A sender whose message does not fit waits
//! (back-pressure) until the pump has taken enough out; a message larger than the whole budget
//! waits for the inbox to be empty and is then admitted alone, so nothing deadlocks. The budget
//! is a semaphore of byte permits (tokio's, which is runtime-agnostic: it wakes glommio tasks
//! on any shard); a message's permits are released when the pump takes it out of the inbox.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default payload bytes an inbox holds at once (flag `--shard-inbox-bytes`). 64 MiB = one
/// maximum-size frame (64 MiB) forwarded whole, or 256 forwarded 256 KiB produce batches: enough
/// to keep an owner shard busy while senders queue, small next to the 24 GiB of a node, and per
/// shard at most `shards x 64 MiB` in all.
pub const SHARD_INBOX_BYTES_DEFAULT: u32 = 64 << 20;

/// The future of a work item, running on the receiving shard (not `Send`: it stays there).
pub type LocalBoxFuture = Pin<Box<dyn Future<Output = ()>>>;

/// A unit of work for another shard: built by the sender, run by the receiver's pump.
pub type WorkItem<C> = Box<dyn FnOnce(Rc<C>) -> LocalBoxFuture + Send>;

/// A work item in an inbox, holding its share of the inbox's byte budget.
pub struct Envelope<C> {
    work: WorkItem<C>,
    _budget: Option<OwnedSemaphorePermit>,
}

impl<C> Envelope<C> {
    /// Takes the work out, releasing the bytes it held in the inbox.
    pub fn open(self) -> WorkItem<C> {
        self.work
    }
}

/// A shard's receiving end.
pub type Inbox<C> = flume::Receiver<Envelope<C>>;

/// A one-shot reply channel.
pub type Reply<T> = flume::Sender<T>;

/// Creates a reply channel and its receiving end.
pub fn reply_channel<T>() -> (Reply<T>, flume::Receiver<T>) {
    flume::bounded(1)
}

/// One shard's inbox as senders see it.
struct InboxSender<C> {
    sender: flume::Sender<Envelope<C>>,
    budget: Arc<Semaphore>,
}

/// Senders to every shard's inbox. Cheap to clone; `Send`.
pub struct Bus<C> {
    inboxes: Arc<Vec<InboxSender<C>>>,
    inbox_budget_bytes: u32,
}

impl<C> Clone for Bus<C> {
    fn clone(&self) -> Self {
        Bus {
            inboxes: self.inboxes.clone(),
            inbox_budget_bytes: self.inbox_budget_bytes,
        }
    }
}

impl<C: 'static> Bus<C> {
    /// Creates the inboxes of `shards` shards, each admitting `inbox_budget_bytes` of payload
    /// at once; returns the bus and each shard's inbox.
    pub fn new(shards: usize, inbox_budget_bytes: u32) -> (Bus<C>, Vec<Inbox<C>>) {
        let inbox_budget_bytes = inbox_budget_bytes.max(1);
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| {
                // Unbounded in messages: the byte budget bounds it (a message without payload
                // is a small closure; at most one per request in flight on the sending shard).
                let (sender, receiver) = flume::unbounded();
                let budget = Arc::new(Semaphore::new(inbox_budget_bytes as usize));
                (InboxSender { sender, budget }, receiver)
            })
            .unzip();
        (
            Bus {
                inboxes: Arc::new(inboxes),
                inbox_budget_bytes,
            },
            receivers,
        )
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Payload bytes one inbox admits at once.
    pub fn inbox_budget_bytes(&self) -> u32 {
        self.inbox_budget_bytes
    }

    /// How full `shard`'s inbox is now (for the metrics endpoint; readable from any thread).
    pub fn inbox_depth(&self, shard: usize) -> Option<InboxDepth> {
        let inbox = self.inboxes.get(shard)?;
        let budget = self.inbox_budget_bytes as usize;
        Some(InboxDepth {
            messages: inbox.sender.len(),
            payload_bytes: budget.saturating_sub(inbox.budget.available_permits()),
        })
    }

    /// Has `shard` run `work` (with its context), once `payload_bytes` fit in its inbox. Waits
    /// while they do not (back-pressure); fails only when that shard is gone.
    pub async fn run_on<F, Fut>(
        &self,
        shard: usize,
        payload_bytes: usize,
        work: F,
    ) -> Result<(), BusClosed>
    where
        F: FnOnce(Rc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let inbox = self.inboxes.get(shard).ok_or(BusClosed)?;
        let budget = if payload_bytes == 0 {
            None
        } else {
            let permits = self.permits_for(payload_bytes);
            Some(
                inbox
                    .budget
                    .clone()
                    .acquire_many_owned(permits)
                    .await
                    .map_err(|_| BusClosed)?,
            )
        };
        inbox
            .sender
            .send_async(Envelope {
                work: boxed(work),
                _budget: budget,
            })
            .await
            .map_err(|_| BusClosed)
    }

    /// Like [`Bus::run_on`], from a thread outside the shards (start-up, signal handling):
    /// blocks while the payload does not fit.
    pub fn run_on_blocking<F, Fut>(
        &self,
        shard: usize,
        payload_bytes: usize,
        work: F,
    ) -> Result<(), BusClosed>
    where
        F: FnOnce(Rc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        futures_lite::future::block_on(self.run_on(shard, payload_bytes, work))
    }

    /// Permits (bytes) a payload takes: all of the budget at most, so an oversized message
    /// waits for an empty inbox instead of forever.
    fn permits_for(&self, payload_bytes: usize) -> u32 {
        u32::try_from(payload_bytes)
            .unwrap_or(u32::MAX)
            .min(self.inbox_budget_bytes)
    }
}

fn boxed<C, F, Fut>(work: F) -> WorkItem<C>
where
    F: FnOnce(Rc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    Box::new(move |context| Box::pin(work(context)) as LocalBoxFuture)
}

/// How full one inbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxDepth {
    /// Work items waiting for the pump.
    pub messages: usize,
    /// Payload bytes they hold of the inbox's budget.
    pub payload_bytes: usize,
}

/// The receiving shard has stopped.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the target shard has stopped")]
pub struct BusClosed;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A sender waits while its payload does not fit, and goes on once the pump takes
    /// messages out; a payload larger than the whole budget is admitted into an empty inbox.
    #[test]
    fn byte_budget_applies_back_pressure_without_deadlock() {
        let (bus, mut inboxes) = Bus::<()>::new(1, 100);
        let inbox = inboxes.remove(0);
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        bus.run_on_blocking(0, 60, move |_| async move {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        // 60 + 60 > 100: the second send must wait for the first to leave the inbox.
        let sender_bus = bus.clone();
        let counter = ran.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            sender_bus
                .run_on_blocking(0, 60, move |_| async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            // Larger than the budget: admitted once the inbox is empty.
            sender_bus.run_on_blocking(0, 1000, |_| async {}).unwrap();
            done_tx.send(()).unwrap();
        });
        assert!(
            done_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the later messages must wait for room"
        );
        assert_eq!(inbox.len(), 1, "60 + 60 bytes do not fit a 100-byte inbox");
        for _ in 0..3 {
            let work = inbox.recv_timeout(Duration::from_secs(10)).unwrap().open();
            futures_lite::future::block_on(work(Rc::new(())));
        }
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        sender.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }
}
