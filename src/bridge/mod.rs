//! What sync code calls: `wait` and `blocking` (how sync code on a fiber
//! gets at async and blocking work without holding its thread),
//! request-locals ([`local`]) and spans that survive suspension ([`span`]).
//!
//! ## Suspension during an unwind
//!
//! A fiber never suspends while its thread unwinds (a panic, or the
//! cancellation of a dropped request, is passing through its frames): std
//! counts panics per OS thread, so a fiber suspended mid-unwind would make
//! every other request on the thread see `std::thread::panicking()`. So in
//! a destructor that runs during an unwind, `blocking(f)` runs `f` inline
//! and `wait(fut)` blocks the thread until `fut` is ready (as on a held
//! thread in Adapt mode). Cleanup through a database or a blocking client
//! works; the thread is held for as long as the cleanup takes.

pub(crate) mod io;
pub(crate) mod local;
mod park;
pub(crate) mod pool;
pub(crate) mod span;

use std::future::Future;
use std::panic;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::coro::scoped;
use crate::coro::{self, Place};
use crate::exec::fiber_locals::{FiberLocals, Resumed, Suspend};
use crate::exec::request::PipelinePoll;
use crate::loom::sync::Arc;

/// Runs `fut` to completion from sync code on a fiber, suspending the fiber
/// (not the thread) while it is pending.
///
/// The future is polled on the fiber's stack with a waker owned by the
/// fiber, which stays valid across any suspension of the fiber (the future
/// may itself call sync code that calls `wait`). Other requests run on the
/// thread while it waits. If the request is cancelled meanwhile, `fut` is
/// dropped during the unwind.
///
/// On a held thread (Adapt mode) or in a hop (ThreadHop mode) the thread is
/// already the request's: `wait` blocks it on the future (nested `wait`s
/// included), and stops with [`Cancelled`](crate::panic::Cancelled) when the request is
/// cancelled, also in a `wait` after code that caught that `Cancelled`. In a destructor
/// running during an unwind, it blocks the thread too (module docs); a
/// future that needs this thread's own reactor (a tokio timer or socket on
/// a current-thread runtime, as every suspendware worker is) can then never
/// finish, and the thread stays blocked (a warning is logged after a
/// second). Clean up there with [`blocking`], [`sleep`] (which sleeps the
/// thread while unwinding), or a future another thread drives.
///
/// # Panics
/// When called where no suspendware fiber runs (async code, plain threads):
/// that would have to block the thread, so it refuses with a message saying
/// to `.await` instead.
// `#[inline]`: small now that its cold paths are out of line, and generic,
// so it is compiled in the caller's crate; the hint keeps a wait on a
// ready future from costing a call (`bridge/wait_ready_future`: 10.1 ns
// with three out-of-line copies in the bench binary, 4.4 ns inlined;
// BENCHMARKS.md "Fifth round").
#[inline]
pub fn wait<F: Future>(fut: F) -> F::Output {
    let mut slot = pin!(Some(fut));
    let mut fut = Waited(slot.as_mut());
    // The first poll comes before any check of where this runs: on a fiber
    // (the common case) `with_waker` is the one look-up of the running
    // fiber, and a future that is already ready returns without a
    // suspension or a second look-up (`bridge/wait_ready_future` and
    // `benches/instr.rs`, BENCHMARKS.md "Fifth round"). The places that may
    // not suspend are found where they matter: off-fiber, `with_waker`
    // gives `None` without polling; during an unwind, `suspend` refuses and
    // the future is driven to its end on this thread (a wake-up the first
    // poll registered with the fiber's waker only re-polls its task).
    loop {
        let polled = coro::with_waker(|waker| fut.get().poll(&mut Context::from_waker(waker)));
        match polled {
            Some(Poll::Ready(v)) => return v,
            Some(Poll::Pending) => match coro::suspend::<Suspend, Resumed>(Suspend::Pending) {
                Ok(_) => {}
                Err(Place::Unwinding) => return park::block_on(fut.get()),
                Err(_) => crate::panic::off_fiber("wait"),
            },
            None => return wait_off_fiber(fut.get()),
        }
    }
}

/// The future a [`wait`] drives, pinned in its frame.
///
/// Dropped by an unwind (the request was cancelled while `wait` was
/// suspended, or a panic passes), the future's destructor (user code) runs
/// where a panic would abort the process: it is then dropped in place under
/// [`coro::contain`], which logs the panic. After `wait` returns, it drops
/// as any value.
struct Waited<'a, F>(Pin<&'a mut Option<F>>);

impl<F> Waited<'_, F> {
    #[inline(always)]
    fn get(&mut self) -> Pin<&mut F> {
        self.0
            .as_mut()
            .as_pin_mut()
            .expect("the waited future is present until `wait` returns")
    }
}

impl<F> Drop for Waited<'_, F> {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() && self.0.is_some() {
            coro::contain(
                "a future passed to `wait` panicked while it was dropped by an unwind (its \
                 request was cancelled, or a panic passed)",
                || {
                    // Dropped as its pipeline would be (it may be another
                    // request's, driven inline here: see `PipelinePoll`).
                    let _pipeline = PipelinePoll::enter();
                    self.0.set(None)
                },
            );
        }
    }
}

/// [`wait`] where no suspendware fiber runs: a thread held for the
/// request (Adapt mode, a ThreadHop hop) blocks on the future; anywhere
/// else this would block an executor's thread, so it refuses.
///
/// An Adapt thread or a hop also waits for its request's cancellation: when
/// the request is dropped (a client gone, a runtime shutting down), the
/// wait stops, `fut` is dropped and the thread unwinds with
/// [`crate::panic::Cancelled`], as `get_response` does. Without that, a thread
/// blocked on a future that never finishes stayed held for good, and
/// `Runtime::shutdown` never returned (`core_failure_paths`).
///
/// The signal is polled in place in the thread's request scope
/// ([`request::poll_cancelled`](crate::exec::request::poll_cancelled)), so a
/// `wait` nested in another's future watches it too, a panic out of `fut`
/// cannot lose it, and a `wait` after user code caught the `Cancelled`
/// unwinds again at once instead of blocking for good
/// (`held_thread_paths`).
#[cold]
fn wait_off_fiber<F: Future>(mut fut: Pin<&mut F>) -> F::Output {
    use crate::exec::request;
    if !request::on_held_thread() {
        crate::panic::off_fiber("wait");
    }
    // While the thread unwinds (a destructor during the cancellation's own
    // unwind: the signal has fired), raising `Cancelled` again would abort
    // the process: the future is simply driven to its end.
    if std::thread::panicking() {
        return block_here(fut);
    }
    match request::cancelled() {
        None => return block_here(fut),
        Some(true) => panic::resume_unwind(Box::new(crate::panic::Cancelled)),
        Some(false) => {}
    }
    let out = block_here(std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        request::poll_cancelled(cx).map(|()| None)
    }));
    match out {
        Some(v) => v,
        None => panic::resume_unwind(Box::new(crate::panic::Cancelled)),
    }
}

thread_local! {
    /// How many [`block_here`] calls are blocking this thread (nested
    /// `wait`s on a held thread).
    static BLOCKING_HERE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Blocks this held thread until `fut` is done. The outermost call uses
/// tokio's `Handle::block_on`, which enters the runtime's context; a nested
/// one (a `wait` inside the future of another) is already inside it, and
/// tokio refuses a `block_on` there ("Cannot start a runtime from within a
/// runtime"), so it parks the thread itself. Either way the runtime's own
/// thread drives the timers and sockets the future waits for.
fn block_here<F: Future>(fut: F) -> F::Output {
    struct Depth(u32);
    impl Drop for Depth {
        fn drop(&mut self) {
            BLOCKING_HERE.with(|d| d.set(self.0));
        }
    }
    let outer = BLOCKING_HERE.with(|d| d.replace(d.get() + 1));
    let _depth = Depth(outer);
    if outer == 0 {
        tokio::runtime::Handle::current().block_on(fut)
    } else {
        park::block_on_quiet(fut)
    }
}

/// Runs a blocking function on tokio's blocking pool while the fiber is
/// suspended, and returns its result. A panic in `f` is re-raised here.
///
/// `f` may borrow from the caller's stack, in the spirit of
/// `std::thread::scope`: `&mut conn`, `&req.headers()`, a `&mut Vec` to
/// fill. Only `Send` is required (the closure and its result cross to a
/// pool thread and back), not `'static`:
///
/// ```
/// # use suspendware::{Next, Request, Response};
/// fn count_headers(req: Request, next: &mut Next) -> Response {
///     let mut seen = Vec::new();
///     let n = suspendware::blocking(|| {
///         seen.extend(req.headers().keys().map(|k| k.to_string())); // borrows
///         seen.len()
///     });
///     assert_eq!(n, seen.len());
///     next.get_response(req)
/// }
/// # let _ = count_headers;
/// ```
///
/// This is sound because the fiber stays suspended until `f` has returned.
/// If the request is cancelled while `f` runs, the fiber is neither unwound
/// nor its stack reused until `f` returns: on suspendware's `Runtime` and
/// `Server` the worker keeps serving meanwhile (a reaper task finishes the
/// cancellation when `f` returns); elsewhere the cancelling thread waits
/// for `f`. The fiber's stack counts as in use in its pool until then.
///
/// At most [`PipelineBuilder::blocking_threads`](crate::PipelineBuilder::blocking_threads)
/// closures of one pipeline (default
/// [`DEFAULT_BLOCKING_THREADS`](crate::PipelineBuilder::DEFAULT_BLOCKING_THREADS))
/// run at once, so the pipeline occupies at most that many blocking
/// threads; further calls queue in FIFO order, their fibers suspended
/// (holding no thread). On a fiber that no pipeline made, `f` goes straight
/// to `spawn_blocking`.
///
/// On a held thread (Adapt) or in a hop (ThreadHop) `f` simply runs inline,
/// and so it does in a destructor running during an unwind (module docs).
///
/// # Panics
/// When called off-fiber (see [`wait`]) or outside a tokio runtime; with
/// the runtime shutting down before `f` could run.
pub fn blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    match coro::place() {
        Place::Fiber => {}
        Place::Unwinding => return f(),
        Place::Off => {
            if crate::exec::request::on_held_thread() {
                // Adapt/ThreadHop: already on a blocking-pool thread. The
                // closure runs as it would on a pool thread from a fiber:
                // with no request (its `RequestLocal`s, `wait`, `sleep` and
                // `blocking` refuse with advice), so that the mode changes
                // where it runs, not what it sees (`request_local_isolation`).
                let _no_request = crate::exec::request::WithoutRequest::enter();
                return f();
            }
            crate::panic::off_fiber("blocking");
        }
    }
    let handle = tokio::runtime::Handle::try_current().unwrap_or_else(|_| {
        panic!("suspendware::blocking() needs a tokio runtime: run the pipeline inside one")
    });
    let pool = FiberLocals::with(|l| l.blocking_pool().clone());
    let spawn = |job: scoped::Job| {
        let work: Box<dyn FnOnce() + Send> = Box::new(move || job.run());
        match &pool {
            Some(pool) => pool.submit(&handle, work),
            // The JoinHandle is not needed: the job completes its
            // `Completion` when it has run or when it is dropped unrun.
            None => drop(handle.spawn_blocking(work)),
        }
    };
    let park = |done: &Arc<scoped::Completion>| {
        wait(std::future::poll_fn(|cx| done.poll_done(cx)));
    };
    match scoped::run(f, spawn, park) {
        Some(Ok(v)) => v,
        Some(Err(payload)) => panic::resume_unwind(payload),
        None => panic!("suspendware::blocking(): the runtime shut down before the closure ran"),
    }
}

/// Suspends the fiber (not its thread) for `duration`: the blocking-style
/// `std::thread::sleep` for sync code on a fiber. Other requests run on the
/// thread meanwhile.
///
/// On a held thread (Adapt) or in a hop (ThreadHop) it sleeps that thread
/// (through [`wait`]). In a destructor running during an unwind it sleeps
/// the thread with `std::thread::sleep`: the fiber may not suspend then,
/// and a tokio timer could never fire, because on a current-thread runtime
/// (every suspendware `Runtime` and `Server` worker) only this thread
/// drives it. Needs the tokio runtime's timer (`enable_time`/`enable_all`).
///
/// # Panics
/// When called off-fiber (see [`wait`]): use `tokio::time::sleep(..).await`
/// in async code.
pub fn sleep(duration: Duration) {
    match coro::place() {
        Place::Off if !crate::exec::request::on_held_thread() => crate::panic::off_fiber("sleep"),
        Place::Unwinding => std::thread::sleep(duration),
        // A held thread or a hop unwinding (its request cancelled): a tokio
        // timer here would fail once the runtime stops, which a stopping
        // worker does right after dropping the cancelled requests, and that
        // failure would be a panic inside a destructor during the unwind:
        // an abort (`held_thread_paths`).
        Place::Off if std::thread::panicking() => std::thread::sleep(duration),
        _ => wait(tokio::time::sleep(duration)),
    }
}
