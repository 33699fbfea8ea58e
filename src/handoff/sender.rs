//! The sending half.

use std::fmt;
use std::task::{Context, Poll};

use super::state::{SENT, TX_DROPPED};
use super::Shared;
use crate::loom::lock;
use crate::loom::sync::Arc;

/// Sends one value to the [`super::Receiver`]. Dropping it unsent closes the
/// hand-off (the receiver gets [`super::Closed`]).
pub(crate) struct Sender<T> {
    /// `None` once `send` ran (so `Drop` knows the channel is not closed).
    shared: Option<Arc<Shared<T>>>,
}

impl<T> Sender<T> {
    pub(super) fn new(shared: Arc<Shared<T>>) -> Self {
        Sender {
            shared: Some(shared),
        }
    }

    /// Hands `value` to the receiver and wakes it. `Err(value)` when the
    /// receiver was dropped: the value is returned to the caller, who drops
    /// it (on its own thread).
    pub(crate) fn send(mut self, value: T) -> Result<(), T> {
        let shared = self
            .shared
            .take()
            .expect("suspendware: hand-off Sender used after send");
        // 1. store the value, 2. publish SENT, 3. wake: the receiver looks
        // for the value only after it saw SENT, and registered wakers are
        // read only after SENT is set (module docs).
        *lock(&shared.value) = Some(value);
        let prev = shared.set(SENT);
        if prev.is_rx_dropped() {
            // The receiver's drop saw no SENT, so it left the value alone.
            let value = lock(&shared.value).take();
            return Err(value.expect("suspendware: hand-off value taken by a dropped receiver"));
        }
        shared.wake_receiver();
        Ok(())
    }

    /// `Ready` once the receiver is dropped (nobody wants the value any
    /// more); otherwise registers `cx`'s waker to be woken by that drop.
    pub(crate) fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shared = self
            .shared
            .as_ref()
            .expect("suspendware: hand-off Sender used after send");
        let mut slot = lock(&shared.closed_waker);
        // Read under the lock, register under it: a receiver dropped after
        // this read finds the waker (module docs).
        if shared.load().is_rx_dropped() {
            return Poll::Ready(());
        }
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let prev = shared.set(TX_DROPPED);
            if !prev.is_rx_dropped() {
                shared.wake_receiver();
            }
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("sent", &self.shared.is_none())
            .finish()
    }
}
