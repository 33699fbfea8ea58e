//! Blocking the thread on a future: what `wait` does on a fiber that must
//! not suspend (its thread is unwinding).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// After this long blocked, say so once (the future may need this very
/// thread's reactor, which cannot run while the thread waits here).
const SLOW: Duration = Duration::from_secs(1);

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` to completion on this thread, parking between polls.
///
/// std's `Wake` trait makes this a dozen lines; an executor crate would add
/// a dependency for no more than that.
pub(super) fn block_on<F: Future>(fut: F) -> F::Output {
    block_on_inner(fut, true)
}

/// [`block_on`] without the warning about unwinding fibers: for a `wait`
/// nested in another on a held thread, whose future may well take long.
pub(super) fn block_on_quiet<F: Future>(fut: F) -> F::Output {
    block_on_inner(fut, false)
}

fn block_on_inner<F: Future>(fut: F, warn_when_slow: bool) -> F::Output {
    let mut fut = pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let start = Instant::now();
    let mut warned = false;
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park_timeout(SLOW);
        if warn_when_slow && !warned && start.elapsed() >= SLOW {
            warned = true;
            tracing::warn!(
                "a destructor on an unwinding fiber has blocked its thread for over {SLOW:?} in \\
                 suspendware::wait(..): while a panic or a cancellation unwinds a fiber, wait \\
                 blocks instead of suspending, and a future that needs this thread's own timers \\
                 or sockets cannot finish here; clean up through suspendware::blocking(..) or \\
                 a future driven by another thread"
            );
        }
    }
}
