//! A single-threaded "something changed" signal (shard-local; the broker uses it too): tasks
//! wait until a condition of theirs holds,
//! whoever changes the state calls [`Signal::notify_all`]. Shard-local, so no atomics and no
//! locks; one `Vec` of wakers reused forever.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Wakes every waiting task on each change; each re-checks its own condition.
#[derive(Default)]
pub struct Signal {
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Wakes all tasks waiting in [`Signal::wait_until`].
    pub fn notify_all(&self) {
        let woken: Vec<Waker> = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in woken {
            waker.wake();
        }
    }

    /// Resolves once `condition` returns true; re-evaluated after every notification.
    pub async fn wait_until(&self, mut condition: impl FnMut() -> bool) {
        poll_fn(|cx| {
            if condition() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}
