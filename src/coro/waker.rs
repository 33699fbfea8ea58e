//! The waker code on a fiber polls its futures with.
//!
//! A future polled by `wait` may itself suspend the fiber (it calls sync code
//! that calls `wait`, `blocking` or `get_response`). Its `Context` then lives
//! on across the suspension, while the driver's waker it was built from
//! belonged to a `poll` that has returned. So code on a fiber never sees the
//! driver's waker: it sees this one, owned by the fiber, which forwards every
//! wake to the driver's *latest* waker.
//!
//! Cost: nothing for fibers that never poll a future (most only call
//! `get_response`). Otherwise, on each resumption, two pointer comparisons
//! (a lock and a clone only when the driver's waker changed, e.g. the
//! request moved to another task). The forwarder's allocation is
//! recycled: a fiber that ends while nobody else holds its waker leaves the
//! forwarder in a one-place per-thread spare for the next fiber (an
//! allocation and a free per waiting fiber cost ~140 instructions, the
//! reuse two reference-count updates; a spare is unique, so pointing it at
//! a driver's waker and clearing it again take no lock).

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::task::{RawWakerVTable, Wake, Waker};

use crate::loom::sync::Mutex;
use crate::loom::{get_mut, lock};

/// The fiber's forwarding waker, made on first use.
pub(crate) struct ForwardWaker {
    made: OnceCell<Made>,
}

/// A made forwarder, as its fiber holds it.
struct Made {
    fwd: Arc<Forward>,
    /// The waker code on the fiber sees (a handle on `fwd`).
    waker: Waker,
    /// Identity (data, vtable) of the waker `fwd.latest` holds. Only the
    /// fiber's thread writes `latest`, so it knows this without the lock,
    /// and a resumption under the same driver waker (the usual case: a
    /// task's waker does not change) costs two comparisons instead of a
    /// lock and `will_wake`. `latest` keeps that waker alive, so its
    /// address cannot be reused by another waker meanwhile.
    target: Cell<WakerId>,
}

type WakerId = (*const (), *const RawWakerVTable);

fn id(w: &Waker) -> WakerId {
    (w.data(), w.vtable())
}

/// Shared by the fiber and every clone of its waker (which may be woken
/// from any thread, e.g. the blocking pool).
struct Forward {
    latest: Mutex<Waker>,
}

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Wake outside the lock: the driver's waker may run arbitrary code.
        let latest = lock(&self.latest).clone();
        latest.wake();
    }
}

thread_local! {
    /// A forwarder no waker refers to any more, kept for this thread's next
    /// fiber that needs one.
    static SPARE: Cell<Option<Arc<Forward>>> = const { Cell::new(None) };
}

impl ForwardWaker {
    pub(crate) fn new() -> ForwardWaker {
        ForwardWaker {
            made: OnceCell::new(),
        }
    }

    /// The fiber's stable waker; `driver` is the driver's current waker.
    pub(crate) fn get(&self, driver: &Waker) -> &Waker {
        &self
            .made
            .get_or_init(|| {
                let fwd = match SPARE.try_with(Cell::take).ok().flatten() {
                    // The spare is unique (`recycle` keeps only unique
                    // ones, and nothing clones it while it waits): its
                    // waker is set through exclusive access, with no lock.
                    Some(mut fwd) => match Arc::get_mut(&mut fwd) {
                        Some(f) => {
                            get_mut(&mut f.latest).clone_from(driver);
                            fwd
                        }
                        None => Forward::made_for(driver),
                    },
                    None => Forward::made_for(driver),
                };
                Made {
                    waker: Waker::from(fwd.clone()),
                    fwd,
                    target: Cell::new(id(driver)),
                }
            })
            .waker
    }

    /// Points the forwarder at the driver's waker of a new resumption.
    ///
    /// A wake that lands between the fiber's suspension and this call goes
    /// to the previous driver waker; the fiber polls its future again right
    /// after this call, so the readiness behind that wake is not lost.
    #[inline]
    pub(crate) fn refresh(&self, driver: &Waker) {
        if let Some(m) = self.made.get() {
            if m.target.get() != id(driver) {
                m.fwd.point_at(driver);
                m.target.set(id(driver));
            }
        }
    }
}

impl Drop for ForwardWaker {
    #[inline]
    fn drop(&mut self) {
        if let Some(made) = self.made.take() {
            recycle(made);
        }
    }
}

/// Keeps a dropped fiber's forwarder as this thread's spare if nothing
/// else refers to it. Out of line: most fibers never make a forwarder, and
/// their context's drop should pay only the `OnceCell` check.
#[inline(never)]
fn recycle(Made { mut fwd, waker, .. }: Made) {
    drop(waker);
    // Unique now: no clone of the fiber's waker is left anywhere (a clone
    // could only be made from one that still exists), so nobody can wake
    // through it, and the next fiber may take it over. Exclusive access
    // also means the driver's waker is dropped without taking the lock
    // (`Arc::get_mut` is the uniqueness check and the access in one).
    if let Some(f) = Arc::get_mut(&mut fwd) {
        *get_mut(&mut f.latest) = Waker::noop().clone();
        let _ = SPARE.try_with(|s| s.set(Some(fwd)));
    }
}

impl Forward {
    /// A new forwarder pointing at `driver`.
    fn made_for(driver: &Waker) -> Arc<Forward> {
        Arc::new(Forward {
            latest: Mutex::new(driver.clone()),
        })
    }

    /// Out of line: most fibers never make a forwarder, and their resumes
    /// should pay only the `OnceCell` check above.
    ///
    /// The lock covers only the swap. Cloning the new waker and dropping
    /// the old one run the driver's waker code, which may wake this very
    /// forwarder (an old task's last reference, dropped here, drops a future
    /// that wakes a waiter on this fiber): under the lock, that wake would
    /// wait for a lock its own thread holds, forever.
    #[inline(never)]
    fn point_at(&self, driver: &Waker) {
        let new = driver.clone();
        let old = std::mem::replace(&mut *lock(&self.latest), new);
        drop(old);
    }
}
