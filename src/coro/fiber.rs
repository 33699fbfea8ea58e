//! One fiber = one corosensei coroutine running a run of sync middleware.
//!
//! ## Protocol between the driver and the fiber
//!
//! The driver (a future, on the executor's stack) calls [`Fiber::resume`]
//! with the `Waker` of its current `poll` and one of:
//!
//! * `Poll` — start the fiber, or continue after a [`Suspend::Pending`];
//! * `Response(r)` — continue after a [`Suspend::Inner`] with the inner
//!   part's response;
//! * `Cancel` — the request was dropped: unwind the fiber (see
//!   [`Fiber::cancel`]).
//!
//! The fiber answers with [`FiberStep::Suspended`] (a [`Suspend`]) or
//! [`FiberStep::Done`] (the segment's response).
//!
//! ## The `CURRENT` pointer
//!
//! `CURRENT` is a thread-local pointer to the [`FiberCtx`] of the fiber that
//! is executing on this thread *right now*, or null. It is set by the fiber
//! itself when it starts and each time a suspension returns, and restored to
//! its previous value by the driver's [`ResumeGuard`] as soon as control
//! comes back to the driver (by suspension, return or unwind). Fibers can
//! nest (sync code inside a fiber may poll a future that drives another
//! pipeline), which is why the guard restores the previous value instead of
//! clearing it.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::task::Waker;

use corosensei::stack::{DefaultStack, Stack};
use corosensei::{Coroutine, CoroutineResult, Yielder};
use tracing::Span;

use super::overflow;
use crate::body::{Request, Response};
use crate::context::RequestCtx;
use crate::panic::Cancelled;

/// What a fiber hands to its driver when it suspends.
// The request is moved by value through the switch; boxing it to shrink the
// enum would cost an allocation per suspension.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Suspend {
    /// `wait()` polled a future that is not ready; resume with `Poll` after
    /// the waker fires.
    Pending,
    /// `get_response` reached the end of the segment: run the inner part of
    /// the pipeline with this request and resume with its response.
    Inner(Request),
}

/// What a suspension point sees when the fiber is resumed.
pub(crate) enum Resumed {
    /// Poll again (after `Suspend::Pending`).
    Poll,
    /// The inner part's response (after `Suspend::Inner`).
    Response(Response),
}

enum Cmd {
    Go(Resumed),
    Cancel,
}

struct Input {
    /// The driver's waker for this `poll`. Valid until the fiber suspends or
    /// returns (see `FiberCtx::waker`).
    waker: NonNull<Waker>,
    cmd: Cmd,
}

/// What [`Fiber::resume`] returns.
pub(crate) enum FiberStep {
    /// The fiber suspended itself.
    Suspended(Suspend),
    /// The fiber's function returned.
    Done(Response),
}

type Co = Coroutine<Input, Suspend, Response, DefaultStack>;

/// Per-fiber state, living in the root frame of the fiber's own stack.
pub(crate) struct FiberCtx {
    yielder: *const Yielder<Input, Suspend>,
    /// The waker of the driver's current `poll`.
    ///
    /// Invariant: points either at the `Waker` borrowed by the
    /// [`Fiber::resume`] call that is currently executing this fiber, or at
    /// the static no-op waker. `suspend` replaces it on every resumption
    /// before any code of the fiber can read it.
    waker: Cell<NonNull<Waker>>,
    /// Spans the pipeline entered on this fiber (innermost last). They are
    /// exited while the fiber is suspended so that another request's code
    /// never runs inside them, and re-entered when it resumes.
    spans: RefCell<Vec<Span>>,
    /// The request this fiber works for (its `RequestLocal` values).
    request: Option<std::sync::Arc<RequestCtx>>,
    /// Index of the innermost layer running on this fiber (for the
    /// watchdog), `usize::MAX` when none.
    active: Cell<usize>,
    _not_send: PhantomData<*const ()>,
}

thread_local! {
    static CURRENT: Cell<*const FiberCtx> = const { Cell::new(ptr::null()) };
    /// The layer that was active when the last fiber to run on this thread
    /// suspended (`usize::MAX` if it returned instead).
    static LAST_STOP: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The layer index that was active when the fiber the driver just resumed
/// stopped (`usize::MAX` if it returned).
pub(crate) fn last_stop() -> usize {
    LAST_STOP.with(|c| c.get())
}

/// A coroutine with its stack, running one segment for one request.
///
/// `!Send`: a suspended fiber may hold thread-bound values (see the crate's
/// ARCHITECTURE.md); the driver that owns it never leaves its thread.
pub(crate) struct Fiber {
    /// `None` once the stack has been taken back with [`Fiber::into_stack`].
    co: Option<Co>,
    guard: overflow::GuardRange,
}

impl Fiber {
    /// Creates a fiber that will run `f` on `stack` when first resumed.
    pub(crate) fn new<F>(
        stack: DefaultStack,
        stack_size: usize,
        request: Option<std::sync::Arc<RequestCtx>>,
        f: F,
    ) -> Fiber
    where
        F: FnOnce() -> Response + 'static,
    {
        overflow::install();
        let guard = overflow::GuardRange::at_limit(stack.limit().get(), stack_size);
        let co = Coroutine::with_stack(
            stack,
            move |yielder: &Yielder<Input, Suspend>, first: Input| {
                let ctx = FiberCtx {
                    yielder: yielder as *const _,
                    waker: Cell::new(first.waker),
                    spans: RefCell::new(Vec::new()),
                    request,
                    active: Cell::new(usize::MAX),
                    _not_send: PhantomData,
                };
                match first.cmd {
                    Cmd::Go(_) => {}
                    // `cancel` never resumes a fiber that has not started, so
                    // this is unreachable; answering without running `f` is the
                    // safe reading of it anyway.
                    Cmd::Cancel => panic::resume_unwind(Box::new(Cancelled)),
                }
                CURRENT.with(|c| c.set(&ctx));
                f()
            },
        );
        Fiber {
            co: Some(co),
            guard,
        }
    }

    /// Whether the fiber's function has returned (or unwound out).
    pub(crate) fn is_done(&self) -> bool {
        self.co.as_ref().is_none_or(|c| c.done())
    }

    /// Runs the fiber until it suspends or returns.
    ///
    /// A panic that escapes the fiber's function propagates out of this call
    /// (the fiber is then done and its stack may be reclaimed).
    pub(crate) fn resume(&mut self, waker: &Waker, input: Resumed) -> FiberStep {
        self.resume_raw(Input {
            waker: NonNull::from(waker),
            cmd: Cmd::Go(input),
        })
    }

    fn resume_raw(&mut self, input: Input) -> FiberStep {
        let co = self
            .co
            .as_mut()
            .expect("suspendware: fiber resumed after its stack was taken");
        let _guard = ResumeGuard::enter(self.guard);
        match co.resume(input) {
            CoroutineResult::Yield(s) => FiberStep::Suspended(s),
            CoroutineResult::Return(r) => FiberStep::Done(r),
        }
    }

    /// Unwinds a suspended fiber so that every destructor on its stack runs.
    ///
    /// The fiber is resumed with a cancellation; the suspension point raises
    /// a [`Cancelled`] unwind (never reported as a panic) that travels to the
    /// fiber's root. If user code catches it and suspends again, the
    /// cancellation is repeated a bounded number of times, after which
    /// corosensei's own forced unwind takes over.
    pub(crate) fn cancel(&mut self) {
        let Some(co) = self.co.as_mut() else { return };
        if !co.started() || co.done() {
            if !co.done() {
                // Not started: corosensei drops the captured closure without
                // running it.
                co.force_unwind();
            }
            return;
        }
        for _ in 0..16 {
            let step = panic::catch_unwind(AssertUnwindSafe(|| {
                self.resume_raw(Input {
                    waker: NonNull::from(Waker::noop()),
                    cmd: Cmd::Cancel,
                })
            }));
            match step {
                Ok(FiberStep::Suspended(_)) => continue,
                Ok(FiberStep::Done(_)) => return,
                Err(payload) if payload.is::<Cancelled>() => return,
                Err(payload) => {
                    tracing::error!(
                        panic = %crate::panic::payload_message(&*payload),
                        "a destructor panicked while a cancelled request was unwinding"
                    );
                    return;
                }
            }
        }
        if let Some(co) = self.co.as_mut() {
            co.force_unwind();
        }
    }

    /// Takes the stack back for reuse. Returns `None` if the fiber has not
    /// finished (it is then dropped, which force-unwinds it).
    pub(crate) fn into_stack(mut self) -> Option<DefaultStack> {
        let co = self.co.take()?;
        if co.done() {
            Some(co.into_stack())
        } else {
            drop(co);
            None
        }
    }
}

impl Drop for Fiber {
    fn drop(&mut self) {
        if !self.is_done() {
            self.cancel();
        }
    }
}

/// Restores the thread's fiber pointer and guard range when control returns
/// to the driver, whichever way it returns.
struct ResumeGuard {
    prev_ctx: *const FiberCtx,
    prev_guard: overflow::GuardRange,
}

impl ResumeGuard {
    fn enter(guard: overflow::GuardRange) -> ResumeGuard {
        ResumeGuard {
            prev_ctx: CURRENT.with(|c| c.get()),
            prev_guard: overflow::set_running(guard),
        }
    }
}

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev_ctx));
        overflow::set_running(self.prev_guard);
    }
}

/// Whether the calling code runs on a suspendware fiber.
pub(crate) fn in_fiber() -> bool {
    !CURRENT.with(|c| c.get()).is_null()
}

/// Calls `f` with the running fiber's context, or returns `None` off-fiber.
pub(crate) fn with_current<R>(f: impl FnOnce(&FiberCtx) -> R) -> Option<R> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: a non-null `CURRENT` points at the `FiberCtx` in the root frame
    // of the fiber executing on this thread (module docs): it was set by that
    // fiber and is reset by `ResumeGuard` before control leaves the fiber, so
    // the frame is alive for the whole call of `f`, which runs on the fiber.
    unsafe { p.as_ref() }.map(f)
}

/// The waker of the driver's current `poll`, for code running on a fiber.
pub(crate) fn current_waker(ctx: &FiberCtx) -> &Waker {
    // SAFETY: by the invariant on `FiberCtx::waker`, the pointer targets
    // either the static no-op waker or the `&Waker` passed to the `resume`
    // call that is executing this fiber; that borrow outlives every use here,
    // since the returned reference is tied to `ctx`, only reachable from code
    // running on the fiber before it suspends again.
    unsafe { ctx.waker.get().as_ref() }
}

/// Suspends the running fiber, handing `what` to its driver.
///
/// # Panics
/// With a message naming `api` when called off-fiber. Raises a
/// [`Cancelled`] unwind when the request was dropped while suspended.
#[inline(always)] // one frame with its callers' (see `next::suspend_for_inner`)
pub(crate) fn suspend(api: &'static str, what: Suspend) -> Resumed {
    let p = CURRENT.with(|c| c.get());
    if p.is_null() {
        crate::panic::off_fiber(api);
    }
    // SAFETY: as in `with_current`: `p` is the live context of the fiber
    // running this code.
    let ctx = unsafe { &*p };
    ctx.exit_spans();
    LAST_STOP.with(|c| c.set(ctx.active.get()));
    // SAFETY: `yielder` points at the `Yielder` corosensei passed to the
    // fiber's root closure, which outlives the root frame holding `ctx`.
    let yielder = unsafe { &*ctx.yielder };
    let input = yielder.suspend(what);
    // Back on the fiber: claim the thread again.
    CURRENT.with(|c| c.set(p));
    match input.cmd {
        Cmd::Go(r) => {
            ctx.waker.set(input.waker);
            ctx.enter_spans();
            r
        }
        Cmd::Cancel => {
            ctx.waker.set(NonNull::from(Waker::noop()));
            // Destructors run inside the spans they ran in before; the span
            // guards exit them as the unwind passes.
            ctx.enter_spans();
            panic::resume_unwind(Box::new(Cancelled))
        }
    }
}

impl FiberCtx {
    /// Records `pos` as the innermost running layer; returns the previous.
    pub(crate) fn set_active(&self, pos: usize) -> usize {
        self.active.replace(pos)
    }

    /// The request this fiber works for.
    pub(crate) fn request(&self) -> Option<&std::sync::Arc<RequestCtx>> {
        self.request.as_ref()
    }

    /// Enters `span` for the code that runs on this fiber until the matching
    /// [`FiberCtx::pop_span`]; while the fiber is suspended the span is
    /// exited, so it never covers another request's code.
    pub(crate) fn push_span(&self, span: Span) {
        enter(&span);
        self.spans.borrow_mut().push(span);
    }

    /// Exits and forgets the innermost span pushed by `push_span`.
    pub(crate) fn pop_span(&self) {
        if let Some(s) = self.spans.borrow_mut().pop() {
            exit(&s);
        }
    }

    fn exit_spans(&self) {
        for s in self.spans.borrow().iter().rev() {
            exit(s);
        }
    }

    fn enter_spans(&self) {
        for s in self.spans.borrow().iter() {
            enter(s);
        }
    }
}

fn enter(span: &Span) {
    span.with_subscriber(|(id, dispatch)| dispatch.enter(id));
}

fn exit(span: &Span) {
    span.with_subscriber(|(id, dispatch)| dispatch.exit(id));
}

/// A monotonic clock reading in nanoseconds from `CLOCK_MONOTONIC_COARSE`:
/// a vDSO read (no system call, a few ns) with tick resolution (1–4 ms),
/// which is what the fiber watchdog needs for its ~10 ms threshold.
pub(crate) fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE is
    // supported on every Linux this crate targets (since 2.6.32).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
