//! `wait` and `blocking`: how sync code on a fiber gets at async and
//! blocking work without holding its thread.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::task::{Context, Poll};

use crate::coro::{self, Suspend};
use crate::handoff::{self, Closed};

/// Runs `fut` to completion from sync code on a fiber, suspending the fiber
/// (not the thread) while it is pending.
///
/// The future is polled on the fiber's stack with the driver's waker; other
/// requests run on the thread while it waits. If the request is cancelled
/// meanwhile, `fut` is dropped during the unwind.
///
/// On a held thread (Adapt mode) or in a hop (ThreadHop mode) the thread is
/// already the request's: `wait` blocks it on the future.
///
/// # Panics
/// When called where no suspendware fiber runs (async code, plain threads):
/// that would have to block the thread, so it refuses with a message saying
/// to `.await` instead.
pub fn wait<F: Future>(fut: F) -> F::Output {
    if !coro::in_fiber() {
        if crate::context::on_held_thread() {
            // Adapt/ThreadHop: this thread is already held for the request.
            return tokio::runtime::Handle::current().block_on(fut);
        }
        crate::panic::off_fiber("wait");
    }
    let mut fut = pin!(fut);
    loop {
        let polled = coro::with_current(|ctx| {
            let mut cx = Context::from_waker(coro::current_waker(ctx));
            fut.as_mut().poll(&mut cx)
        });
        match polled {
            Some(Poll::Ready(v)) => return v,
            Some(Poll::Pending) => {
                coro::suspend("wait", Suspend::Pending);
            }
            None => crate::panic::off_fiber("wait"),
        }
    }
}

/// Runs a blocking function on tokio's blocking pool while the fiber is
/// suspended, and returns its result. A panic in `f` is re-raised here.
///
/// `f` must be `Send + 'static`: if the request is cancelled, the fiber
/// unwinds at once while the pool thread may still be running `f` (its
/// result is then discarded).
///
/// On a held thread (Adapt) or in a hop (ThreadHop) `f` simply runs inline.
///
/// # Panics
/// When called off-fiber (see [`wait`]) or outside a tokio runtime.
pub fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    if !coro::in_fiber() {
        if crate::context::on_held_thread() {
            // Adapt/ThreadHop: already on a blocking-pool thread.
            return f();
        }
        crate::panic::off_fiber("blocking");
    }
    let handle = tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
        panic!("suspendware::blocking() needs a tokio runtime: run the pipeline inside one")
    });
    let (tx, rx) = handoff::oneshot::<std::thread::Result<R>>();
    // The JoinHandle is not needed: the result (or the panic) comes back
    // through the hand-off, and dropping the handle detaches the task.
    drop(handle.spawn_blocking(move || {
        let out = panic::catch_unwind(AssertUnwindSafe(f));
        // Err: the request was cancelled and its fiber dropped the receiver;
        // the result (or panic payload) is dropped here, on the pool thread.
        drop(tx.send(out));
    }));
    match wait(rx) {
        Ok(Ok(v)) => v,
        Ok(Err(payload)) => panic::resume_unwind(payload),
        // The closure was dropped unrun (its sender with it).
        Err(Closed) => panic!("suspendware::blocking(): the runtime shut down while the task ran"),
    }
}
