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
//! `get_response`). Otherwise one allocation per fiber, and on each
//! resumption a lock and a `will_wake` comparison (a clone only when the
//! driver's waker changed, e.g. the request moved to another task).

use std::cell::OnceCell;
use std::sync::Arc;
use std::task::{Wake, Waker};

use crate::loom::lock;
use crate::loom::sync::Mutex;

/// The fiber's forwarding waker, made on first use.
pub(crate) struct ForwardWaker {
    made: OnceCell<(Arc<Forward>, Waker)>,
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
                let fwd = Arc::new(Forward {
                    latest: Mutex::new(driver.clone()),
                });
                (fwd.clone(), Waker::from(fwd))
            })
            .1
    }

    /// Points the forwarder at the driver's waker of a new resumption.
    ///
    /// A wake that lands between the fiber's suspension and this call goes
    /// to the previous driver waker; the fiber polls its future again right
    /// after this call, so the readiness behind that wake is not lost.
    #[inline]
    pub(crate) fn refresh(&self, driver: &Waker) {
        if let Some((fwd, _)) = self.made.get() {
            fwd.point_at(driver);
        }
    }
}

impl Forward {
    /// Out of line: most fibers never make a forwarder, and their resumes
    /// should pay only the `OnceCell` check above.
    #[inline(never)]
    fn point_at(&self, driver: &Waker) {
        let mut latest = lock(&self.latest);
        if !latest.will_wake(driver) {
            latest.clone_from(driver);
        }
    }
}
