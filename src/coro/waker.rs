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
//! request moved to another task). A wake on the fiber's own thread (the
//! fiber's code waking itself, a wake tokio deferred to the end of the
//! task's poll, a timer or I/O event handled by the same worker) wakes the
//! target in place, by reference: one thread-local address and two plain
//! stores of a flag more than waking the target directly. Only a wake from
//! another thread takes the lock and clones the target. The forwarder's
//! allocation is recycled: a fiber that ends while nobody else holds its
//! waker leaves the forwarder in a one-place per-thread spare for the next
//! fiber (an allocation and a free per waiting fiber cost ~140
//! instructions, the reuse two reference-count updates; a spare is unique,
//! so pointing it at a driver's waker and clearing it again take no lock).
//!
//! Who touches `latest`, the forwarding target:
//!
//! | who | how | excluded by |
//! |---|---|---|
//! | the owner (the fiber's thread), re-pointing it | writes, under the lock | the lock (other threads); `waking` (its own in-place wake) |
//! | the owner, waking | reads, no lock | nothing to exclude: it is the only writer, and not writing |
//! | another thread, waking | reads (clones), under the lock | the lock (the owner's writes) |
//! | the owner, with the only handle (`get` on the spare, `recycle`) | writes, no lock | uniqueness: nobody else can reach it |
//!
//! Fibers never leave their thread and the spare is per thread, so the
//! thread that makes a forwarder is the only one that ever writes it.

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::task::{RawWakerVTable, Wake, Waker};

use crate::loom::cell::UnsafeCell;
use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicBool, Ordering::Relaxed};
use crate::loom::sync::Mutex;
use crate::loom::thread_token;

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
/// from any thread, e.g. the blocking pool). Access rules: module docs.
struct Forward {
    /// [`thread_token`] of the thread that made it: the only writer of
    /// `latest`. (A token of an exited thread may be reused, but that thread
    /// wrote its last before exiting; the new one only ever reads.)
    owner: usize,
    /// The owner is waking `latest` in place. Touched by the owner only (an
    /// atomic so that `Forward` is `Sync`; `Relaxed`: one thread's program
    /// order is all it needs).
    waking: AtomicBool,
    /// Held by the owner while it writes `latest` and by other threads while
    /// they clone it.
    lock: Mutex<()>,
    /// The driver's latest waker.
    latest: UnsafeCell<Waker>,
}

// SAFETY: `latest` is the only field that is not `Sync`. Every access to it
// follows the module's table: writes happen on the owner thread only, under
// `lock` or with the only handle; other threads only read, under `lock`;
// the owner reads without the lock, which overlaps no write since it is the
// only writer and `waking` stops it from writing while it reads in place.
// `Waker` is `Send + Sync`.
unsafe impl Sync for Forward {}

impl Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.owner == thread_token() && !self.waking.load(Relaxed) {
            return self.wake_in_place();
        }
        // Another thread (or a wake nested in the owner's in-place wake):
        // clone under the lock, wake outside it (the driver's waker may run
        // arbitrary code, even code that wakes this forwarder again).
        let latest = {
            let _held = lock(&self.lock);
            // SAFETY: under the lock, which the only writer holds to write.
            self.latest.with(|p| unsafe { (*p).clone() })
        };
        latest.wake();
    }
}

impl Forward {
    /// On the owner thread: wakes `latest` by reference, no lock, no clone.
    ///
    /// The driver's waker runs arbitrary code meanwhile. A wake of this
    /// forwarder from it sees `waking` and takes the locked path (reading is
    /// fine); a re-point from it (the driver's waker resumed the fiber
    /// under a different waker) would have to write what is being read, so
    /// `point_at` refuses it.
    fn wake_in_place(&self) {
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(false, Relaxed);
            }
        }
        self.waking.store(true, Relaxed);
        let _done = Done(&self.waking);
        // SAFETY: on the owner thread, the only writer of `latest`; it does
        // not write while `waking` is set (`point_at` checks it, and
        // `get`/`recycle` write only with the only handle, while the caller
        // of this wake holds one), so nothing writes until `_done` clears it.
        self.latest.with(|p| unsafe { (*p).wake_by_ref() });
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
                            // SAFETY: `get_mut` proved the handle unique.
                            f.latest.with_mut(|p| unsafe { (*p).clone_from(driver) });
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
        // SAFETY: `get_mut` proved the handle unique.
        f.latest.with_mut(|p| unsafe { *p = Waker::noop().clone() });
        let _ = SPARE.try_with(|s| s.set(Some(fwd)));
    }
}

impl Forward {
    /// A new forwarder pointing at `driver`, owned by the calling thread.
    fn made_for(driver: &Waker) -> Arc<Forward> {
        Arc::new(Forward {
            owner: thread_token(),
            waking: AtomicBool::new(false),
            lock: Mutex::new(()),
            latest: UnsafeCell::new(driver.clone()),
        })
    }

    /// Out of line: most fibers never make a forwarder, and their resumes
    /// should pay only the `OnceCell` check above.
    ///
    /// The lock covers only the swap. Cloning the new waker and dropping
    /// the old one run the driver's waker code, which may wake this very
    /// forwarder (an old task's last reference, dropped here, drops a future
    /// that wakes a waiter on this fiber). Outside the swap, such a wake
    /// reads a whole waker, and the locked path it may take (nested in an
    /// in-place wake) finds the lock free instead of held by its own thread.
    ///
    /// # Panics
    /// When called from inside this forwarder's in-place wake: the driver's
    /// waker resumed the fiber under a different waker from its `wake`
    /// (an executor that polls a task from its waker). The waker being read
    /// cannot be replaced under it.
    #[inline(never)]
    fn point_at(&self, driver: &Waker) {
        assert!(
            !self.waking.load(Relaxed),
            "suspendware: a fiber was resumed from inside its driver's wake, under \
             another waker; executors must not poll a task from its waker's wake"
        );
        let new = driver.clone();
        let old = {
            let _held = lock(&self.lock);
            // SAFETY: on the owner thread (`refresh` runs on the fiber),
            // under the lock, not inside an in-place read (checked above;
            // the clone above may have run one, but it has returned).
            self.latest
                .with_mut(|p| unsafe { std::mem::replace(&mut *p, new) })
        };
        drop(old);
    }
}

#[cfg(all(test, loom))]
#[path = "loom_waker.rs"]
mod loom_waker;
