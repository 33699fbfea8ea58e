//! One task waiting until a condition that other threads make true.
//!
//! Used by a runtime worker's drain at shutdown: it waits until its
//! in-flight count is 0, and whoever takes the count to 0 notifies it.
//!
//! ## Protocol
//!
//! * The notifier makes the condition true (an atomic write) **before** it
//!   calls [`WaitSlot::notify`].
//! * The waiter checks the condition **under the slot's lock**, and
//!   registers its waker under the same lock ([`WaitSlot::poll_until`]).
//!
//! The lock orders `notify` and the check: a `notify` after the check
//! finds the waker; one before it released the lock after the write, so
//! the check (which acquires that lock) sees the write. No permit is kept:
//! a notification nobody waits for is dropped, and the next check sees the
//! condition directly.
//!
//! One waiter at a time (a second one would replace the first's waker).

use std::fmt;
use std::task::{Context, Poll, Waker};

use crate::loom::lock;
use crate::loom::sync::Mutex;

/// A single-waiter wake-up slot; see the module docs.
pub(crate) struct WaitSlot {
    waker: Mutex<Option<Waker>>,
}

impl WaitSlot {
    /// An empty slot.
    pub(crate) fn new() -> WaitSlot {
        WaitSlot {
            waker: Mutex::new(None),
        }
    }

    /// `Ready` when `done()` holds; otherwise registers `cx`'s waker and
    /// returns `Pending`. `done` is called under the slot's lock.
    pub(crate) fn poll_until(&self, cx: &mut Context<'_>, done: impl FnOnce() -> bool) -> Poll<()> {
        let mut slot = lock(&self.waker);
        if done() {
            return Poll::Ready(());
        }
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Wakes the waiter, if one registered. Call after making the
    /// condition true.
    pub(crate) fn notify(&self) {
        let waker = lock(&self.waker).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Default for WaitSlot {
    fn default() -> Self {
        WaitSlot::new()
    }
}

impl fmt::Debug for WaitSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitSlot")
            .field("waiting", &lock(&self.waker).is_some())
            .finish()
    }
}
