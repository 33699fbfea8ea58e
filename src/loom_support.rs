//! Helpers shared by the crate's loom models (`#[cfg(loom)]` unit tests
//! next to the code they check; run them with `.ci/loom.sh`).
//!
//! loom cannot see a coroutine switch, so the models drive the hand-off
//! state machines around it with loom threads: the fiber's side is the
//! thread that polls (or blocks on) the receiver, the pool thread's side the
//! one that sends.

use std::task::{Wake, Waker};

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

/// A waker that counts its wake-ups.
pub(crate) struct CountingWaker(pub(crate) AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub(crate) fn counting_waker() -> (std::sync::Arc<CountingWaker>, Waker) {
    let w = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
    (w.clone(), Waker::from(w))
}

/// A value that counts its drops.
pub(crate) struct Counted {
    pub(crate) value: u32,
    pub(crate) drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}
