//! The receiving half: a future, or a blocking call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::state::{State, RX_DROPPED};
use super::{Closed, Shared, Waiter};
use crate::loom::sync::Arc;
use crate::loom::{condvar_wait, lock};

/// Receives the value of a [`super::Sender`]: `.await` it (a `Future`), or
/// call [`Receiver::recv_blocking`] from a thread that may block.
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    pub(super) fn new(shared: Arc<Shared<T>>) -> Self {
        Receiver { shared }
    }

    /// Blocks the calling OS thread until the value arrives or the sender is
    /// dropped.
    pub(crate) fn recv_blocking(self) -> Result<T, Closed> {
        let shared = &*self.shared;
        let mut waiter = lock(&shared.waiter);
        loop {
            // Read under the waiter lock: see the module docs.
            if let Some(out) = self.outcome(shared.load()) {
                return out;
            }
            *waiter = Waiter::Thread;
            // Releases the lock while parked; wakes spuriously too, hence
            // the loop.
            waiter = condvar_wait(&shared.parked, waiter);
        }
    }

    /// The answer if the sender has finished, without waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Result<T, Closed>> {
        self.outcome(self.shared.load())
    }

    /// The answer, if the sender has finished.
    fn outcome(&self, state: State) -> Option<Result<T, Closed>> {
        if state.is_sent() {
            let value = lock(&self.shared.value).take();
            Some(Ok(value.expect("suspendware: hand-off state says SENT but the value is gone (Receiver polled after it returned Ready?)")))
        } else if state.is_tx_dropped() {
            Some(Err(Closed))
        } else {
            None
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, Closed>> {
        let this = self.get_mut();
        let shared = &*this.shared;
        let mut waiter = lock(&shared.waiter);
        // Read under the waiter lock, then register under it: a sender that
        // finishes after this read finds the waker (module docs).
        if let Some(out) = this.outcome(shared.load()) {
            return Poll::Ready(out);
        }
        match &*waiter {
            Waiter::Task(w) if w.will_wake(cx.waker()) => {}
            _ => *waiter = Waiter::Task(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let prev = self.shared.set(RX_DROPPED);
        if prev.is_sent() {
            // `send` finished before us and will not look at the value
            // again: drop it here rather than with the last `Arc`.
            drop(lock(&self.shared.value).take());
        }
        // Release the task's waker now; the sender may outlive us by long.
        drop(std::mem::replace(
            &mut *lock(&self.shared.waiter),
            Waiter::None,
        ));
        // After `RX_DROPPED` is set (module docs): a sender in
        // `poll_closed` either saw the bit or left its waker here.
        let closed = lock(&self.shared.closed_waker).take();
        if let Some(w) = closed {
            w.wake();
        }
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("state", &self.shared.load())
            .finish()
    }
}
