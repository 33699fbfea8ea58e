//! Cancelled requests whose fiber must outlive them for a while.
//!
//! When a request is dropped while its fiber waits for a `blocking` closure
//! that borrows the fiber's frames (`coro::scoped`), the fiber may not be
//! unwound, and its stack may not be reused or unmapped, until the closure
//! returns. The request's driver hands the fiber to this thread's
//! orphanage instead of blocking the thread:
//!
//! ```text
//! drop(request) ─ fiber waits on a scoped job ─> adopt(fiber)
//!                                                  │ reaper registered on this thread?
//!                          yes ────────────────────┤──────────────────── no
//!   kept in ORPHANS; the job's completion wakes    │   the thread waits for the job
//!   the Reaper task (a local task of the worker),  │   (a blocking join: the borrow
//!   which cancels the fiber and returns its stack  │   must stay valid), then cancels
//! ```
//!
//! suspendware's `Runtime` (and so `Server`) runs a [`Reaper`] on every
//! worker; users driving pipelines on their own `LocalSet` spawn one. On
//! threads without one, cancelling such a request waits for the closure:
//! sound, but it holds the thread for the rest of the closure.
//!
//! Stacks of orphans stay counted as in use in their pool until reaped.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::exec::chain::Chain;
use crate::exec::fiber_locals::RequestFiber;
use crate::exec::fiber_segment::return_stack;

struct Orphan {
    chain: Arc<Chain>,
    fiber: RequestFiber,
}

#[derive(Default)]
struct Orphanage {
    orphans: Vec<Orphan>,
    /// Reapers made on this thread and not yet dropped: each one's id and,
    /// once it has been polled, its task's waker. Kept per reaper: with one
    /// shared slot, dropping the reaper polled last left the slot (and the
    /// orphans' completions) pointing at a dead task, and the surviving
    /// reaper never reaped again (`core_failure_paths`).
    reapers: Vec<(u64, Option<Waker>)>,
    next_id: u64,
}

impl Orphanage {
    /// Wakes every live reaper: each polls every orphan (re-registering
    /// their completions with its own waker).
    fn wake_reapers(&self) {
        for w in self.reapers.iter().filter_map(|(_, w)| w.as_ref()) {
            w.wake_by_ref();
        }
    }
}

thread_local! {
    static ORPHANS: RefCell<Orphanage> = RefCell::new(Orphanage::default());
}

/// Takes in a cancelled request's fiber that waits for a scoped job.
pub(crate) fn adopt(chain: Arc<Chain>, fiber: RequestFiber) {
    let orphan = Orphan { chain, fiber };
    let rejected = ORPHANS
        .try_with(|o| {
            let mut o = o.borrow_mut();
            if o.reapers.is_empty() {
                return Some(orphan);
            }
            o.wake_reapers();
            o.orphans.push(orphan);
            None
        })
        .unwrap_or_else(|std::thread::AccessError { .. }| None);
    if let Some(orphan) = rejected {
        tracing::debug!(
            "a cancelled request's blocking closure still borrows its fiber and this thread \
             runs no suspendware reaper: waiting for the closure"
        );
        reap(orphan);
    }
}

/// Cancels the orphan's fiber (joining its job if still running) and
/// returns its stack.
fn reap(orphan: Orphan) {
    return_stack(&orphan.chain, orphan.fiber);
}

/// A local task that finishes, on its thread, cancelled requests whose
/// [`blocking`](crate::blocking) closure still borrowed their fiber: when
/// the closure returns, it unwinds the fiber and returns its stack.
///
/// suspendware's [`Runtime`](crate::runtime::Runtime) (and so the server)
/// runs one on every worker. If you drive pipelines on your own
/// current-thread runtime, spawn one on the `LocalSet` that runs them;
/// without it, dropping such a request waits for its closure.
///
/// ```
/// let local = tokio::task::LocalSet::new();
/// local.spawn_local(suspendware::runtime::Reaper::new());
/// ```
///
/// It never completes; dropping it finishes what is left (waiting for the
/// closures).
#[derive(Debug)]
pub struct Reaper {
    /// Its entry in this thread's `Orphanage::reapers`.
    id: u64,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Reaper {
    /// A reaper for this thread: create it on the thread that will poll
    /// it (as `spawn_local` does). Orphans are kept for it from now on,
    /// even before its first poll.
    pub fn new() -> Reaper {
        let id = ORPHANS.with(|o| {
            let mut o = o.borrow_mut();
            let id = o.next_id;
            o.next_id += 1;
            o.reapers.push((id, None));
            id
        });
        Reaper {
            id,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Default for Reaper {
    fn default() -> Reaper {
        Reaper::new()
    }
}

impl Future for Reaper {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let ready: Vec<Orphan> = ORPHANS.with(|o| {
            let mut o = o.borrow_mut();
            if let Some((_, slot)) = o.reapers.iter_mut().find(|(id, _)| *id == self.id) {
                match slot {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
            }
            let all = std::mem::take(&mut o.orphans);
            let (ready, waiting): (Vec<_>, Vec<_>) = all.into_iter().partition(|orphan| {
                orphan
                    .fiber
                    .scoped_job()
                    .is_none_or(|job| job.poll_done(cx).is_ready())
            });
            o.orphans = waiting;
            ready
        });
        // Outside the borrow: unwinding a fiber runs user destructors.
        for orphan in ready {
            reap(orphan);
        }
        Poll::Pending
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let left = ORPHANS
            .try_with(|o| {
                let mut o = o.borrow_mut();
                o.reapers.retain(|(id, _)| *id != self.id);
                if !o.reapers.is_empty() {
                    // The others take over: woken, each polls the orphans
                    // and their completions wake it from then on.
                    o.wake_reapers();
                    return Vec::new();
                }
                std::mem::take(&mut o.orphans)
            })
            .unwrap_or_default();
        for orphan in left {
            reap(orphan);
        }
    }
}
