//! An unbounded many-values hand-off: pushes from any thread, one consuming
//! task that awaits them in order.
//!
//! Used for a runtime worker's job queue (every dispatcher pushes, the
//! worker's loop receives) and for Adapt mode's messages from the held
//! thread to the async side (`src/thread/link.rs`).
//!
//! ## Shape and states
//!
//! ```text
//!  QueueTx (shared by &, any thread)          QueueRx (one task)
//!    push ─┐                                  ┌─ poll_recv
//!    close ┼──▶ Mutex<Inner { items: VecDeque, closed, waker }>
//!          └── wake the waker taken out ──────┘  (registered under the lock)
//! ```
//!
//! | state                 | `push`            | `poll_recv`                          |
//! |-----------------------|-------------------|--------------------------------------|
//! | open, items queued    | appends, `Ok`     | `Ready(Some(front))`                 |
//! | open, empty           | appends, wakes    | registers its waker, `Pending`       |
//! | closed, items queued  | `Err(value)`      | `Ready(Some(front))` (drains)        |
//! | closed, empty         | `Err(value)`      | `Ready(None)`, for good              |
//!
//! `closed` goes false → true once: [`QueueTx::close`], the sender's drop,
//! or the receiver's drop (which also drops what was still queued).
//!
//! ## Orderings: why nothing is lost and no wake-up is missed
//!
//! Everything is under one lock, so the critical sections of `push`,
//! `close` and `poll_recv` are totally ordered:
//!
//! * a `push` that returned `Ok` appended its value before any later
//!   `close`, so the receiver (which drains before it reports `None`) gets
//!   it; a `push` after `close` gets its value back. There is no third case:
//!   "accepted but never received" cannot happen while the receiver lives.
//!   (The runtime's shutdown relies on this: `close` is its cut-off.)
//! * a `push`/`close` ordered after a `poll_recv` that returned `Pending`
//!   finds the waker that poll registered and wakes it; one ordered before
//!   it left its value (or the flag) where that poll looks.
//!
//! The waker is taken out under the lock and woken after the lock is
//! released: the woken task may run at once on another thread and would
//! otherwise contend on it.

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::task::{Context, Poll, Waker};

use crate::loom::lock;
use crate::loom::sync::{Arc, Mutex};

/// Creates a queue.
pub(crate) fn queue<T>() -> (QueueTx<T>, QueueRx<T>) {
    let shared = Arc::new(Mutex::new(Inner {
        items: VecDeque::new(),
        closed: false,
        waker: None,
    }));
    (
        QueueTx {
            shared: shared.clone(),
        },
        QueueRx { shared },
    )
}

/// What both halves share, behind one lock.
struct Inner<T> {
    items: VecDeque<T>,
    /// Set once; no push succeeds after it.
    closed: bool,
    /// The receiving task, when its last poll returned `Pending`.
    waker: Option<Waker>,
}

/// The pushing half. Not `Clone`: share it by reference (it is `Sync` for
/// `T: Send`). Dropping it closes the queue.
pub(crate) struct QueueTx<T> {
    shared: Arc<Mutex<Inner<T>>>,
}

impl<T> QueueTx<T> {
    /// Appends `value` and wakes the receiver if it waits. `Err(value)` once
    /// the queue is closed: the value was not queued and is the caller's to
    /// drop (or answer with an error).
    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        let waker = {
            let mut inner = lock(&self.shared);
            if inner.closed {
                return Err(value);
            }
            // Append and take the waker in one critical section: a receiver
            // woken by this push finds the value (module docs).
            inner.items.push_back(value);
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Closes the queue: later pushes fail; the receiver gets what is
    /// queued, then `None`.
    pub(crate) fn close(&self) {
        let waker = {
            let mut inner = lock(&self.shared);
            inner.closed = true;
            inner.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the queue is closed (a snapshot; used by the tests/models).
    #[cfg(any(test, loom))]
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.shared).closed
    }
}

impl<T> Drop for QueueTx<T> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The receiving half, for one task.
pub(crate) struct QueueRx<T> {
    shared: Arc<Mutex<Inner<T>>>,
}

impl<T> QueueRx<T> {
    /// The next value in push order; `Ready(None)` once the queue is closed
    /// and drained. `Pending` registers `cx`'s waker.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut inner = lock(&self.shared);
        if let Some(value) = inner.items.pop_front() {
            return Poll::Ready(Some(value));
        }
        if inner.closed {
            return Poll::Ready(None);
        }
        // Registered under the lock the emptiness was seen under.
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// [`QueueRx::poll_recv`] as a future.
    pub(crate) fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
        poll_fn(|cx| self.poll_recv(cx))
    }
}

impl<T> Drop for QueueRx<T> {
    /// Closes the queue and drops what is queued (outside the lock: the
    /// values' destructors may wake other tasks or push elsewhere).
    fn drop(&mut self) {
        let (items, waker) = {
            let mut inner = lock(&self.shared);
            inner.closed = true;
            (std::mem::take(&mut inner.items), inner.waker.take())
        };
        drop(waker);
        drop(items);
    }
}

impl<T> fmt::Debug for QueueTx<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock(&self.shared);
        f.debug_struct("QueueTx")
            .field("queued", &inner.items.len())
            .field("closed", &inner.closed)
            .finish()
    }
}

impl<T> fmt::Debug for QueueRx<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock(&self.shared);
        f.debug_struct("QueueRx")
            .field("queued", &inner.items.len())
            .field("closed", &inner.closed)
            .finish()
    }
}
