//! A one-shot hand-off: one value from one thread to one waiting party,
//! which is either a task (the receiver is a `Future`) or an OS thread
//! ([`Receiver::recv_blocking`]).
//!
//! Used where a result crosses threads towards code that suspended for it:
//! [`crate::blocking`] (a pool thread answers a suspended fiber), the
//! Adapt mode's thread blocked in `get_response`, and the runtime's reply to
//! a dispatch (`src/runtime/reply.rs`). [`queue`] is its many-values
//! sibling (the runtime's job queues, Adapt's thread→async messages).
//!
//! ## Shape
//!
//! ```text
//!            Arc<Shared<T>>
//! Sender ───────────────────── Receiver
//!   send: value ──▶ Mutex<Option<T>>
//!         state |= SENT ──▶ AtomicUsize      ◀── poll / recv_blocking read it
//!         wake ──▶ Mutex<Waiter> + Condvar   ◀── the receiver registers here
//! ```
//!
//! The state word (see [`state`]) records which side has finished; the value
//! and the waiter live behind their own locks, so the code is safe Rust.
//!
//! ## Why no wake-up is lost
//!
//! The sender sets its state bit **before** it locks the waiter slot; the
//! receiver reads the state **while holding** that lock, and registers (or
//! starts waiting on the condvar, which releases the lock atomically) under
//! the same lock. The lock orders the two critical sections:
//!
//! * sender's first: its bit was set before it unlocked, so the receiver's
//!   read under the lock sees it and returns at once;
//! * receiver's first: the waker (or the parked thread) is registered when
//!   the sender takes the lock, and the sender wakes it.
//!
//! The loom models in `tests/loom.rs` check this with the real code.
//!
//! The sender can wait for the receiver to go away
//! ([`Sender::poll_closed`], so a worker stops work nobody awaits): the same
//! rule with the roles swapped — the receiver's drop sets `RX_DROPPED`
//! before it locks `closed_waker`, the sender reads the state under that
//! lock and registers under it.
//!
//! ## Who drops the value
//!
//! Exactly one of [`Sender::send`] and the receiver's drop sees the other's
//! bit (both are read-modify-writes of one atomic, so they are totally
//! ordered): a send that sees `RX_DROPPED` takes its value back and returns
//! it as `Err`; a receiver dropped after `SENT` drops the unclaimed value.

pub(crate) mod queue;
pub(crate) mod state;
pub(crate) mod wait_slot;

#[cfg(all(test, loom))]
mod loom_oneshot;
#[cfg(all(test, loom))]
mod loom_queue;
mod receiver;
mod sender;
#[cfg(all(test, not(loom)))]
mod tests;

use std::fmt;
use std::task::Waker;

use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::{Arc, Condvar, Mutex};

pub(crate) use receiver::Receiver;
pub(crate) use sender::Sender;
use state::State;

/// The error of a receiver whose sender was dropped without sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the sending side of a suspendware hand-off was dropped without sending")
    }
}

impl std::error::Error for Closed {}

/// Creates a one-shot hand-off.
pub(crate) fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: AtomicUsize::new(State::INITIAL.bits()),
        value: Mutex::new(None),
        waiter: Mutex::new(Waiter::None),
        parked: Condvar::new(),
        closed_waker: Mutex::new(None),
    });
    (Sender::new(shared.clone()), Receiver::new(shared))
}

/// State shared by the two halves.
struct Shared<T> {
    /// Bits of [`state`]; each is set once, by its owner, with `fetch_or`.
    state: AtomicUsize,
    /// The value: `Some` from `send` until the receiver takes it (or `send`
    /// takes it back because the receiver is gone).
    value: Mutex<Option<T>>,
    /// Who to wake when the sender finishes. Only ever changed under this
    /// lock, and read by the sender only after it set its state bit.
    waiter: Mutex<Waiter>,
    /// Where [`Receiver::recv_blocking`] parks (paired with `waiter`'s lock).
    parked: Condvar,
    /// The sender's task waiting in [`Sender::poll_closed`]. Changed only
    /// under this lock; read by the receiver's drop after it set
    /// `RX_DROPPED`.
    closed_waker: Mutex<Option<Waker>>,
}

/// The receiver's registration.
enum Waiter {
    /// Nobody registered (yet, or any more).
    None,
    /// A task polled the receiver and is pending.
    Task(Waker),
    /// A thread waits on `Shared::parked`.
    Thread,
}

impl<T> Shared<T> {
    /// Reads the state.
    ///
    /// Acquire: pairs with the Release half of the `fetch_or` that set
    /// `SENT`, so the value stored before it is visible to the lock that
    /// follows (the mutex orders it too; the Acquire keeps the argument local).
    fn load(&self) -> State {
        State::from_bits(self.state.load(Ordering::Acquire))
    }

    /// Sets `bit`, returning the state before.
    ///
    /// AcqRel: Release publishes what this side did before (the stored
    /// value); Acquire makes the other side's earlier writes visible when its
    /// bit is seen (the receiver's drop, before `send` takes its value back).
    fn set(&self, bit: usize) -> State {
        State::from_bits(self.state.fetch_or(bit, Ordering::AcqRel))
    }

    /// Wakes whoever registered. Call only after setting the sender's bit:
    /// see the module docs.
    fn wake_receiver(&self) {
        let waiter = std::mem::replace(&mut *lock(&self.waiter), Waiter::None);
        match waiter {
            Waiter::None => {}
            Waiter::Task(w) => w.wake(),
            // The thread registered and started waiting under the lock we
            // just held, so it is already in the condvar's queue.
            Waiter::Thread => {
                self.parked.notify_one();
            }
        }
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Waiter::None => "None",
            Waiter::Task(_) => "Task",
            Waiter::Thread => "Thread",
        })
    }
}
