//! One fiber: a corosensei coroutine on a guarded stack, with the protocol
//! between its driver (a future on the executor's stack) and the code on it.
//!
//! ## Protocol
//!
//! The driver calls [`Fiber::resume`] with the `Waker` of its current `poll`
//! and a value of type `R` (what the suspension point returns). The fiber
//! answers with [`Step::Suspended`] (a `Y`, handed over by
//! [`super::suspend`]) or [`Step::Done`] (its function's `T`).
//!
//! ```text
//!  new ──resume(R)──> running ──suspend(Y)──> suspended ──resume(R)──> running ...
//!                        │                        │
//!                        │ returns T / panics     │ cancel(): resume with Cancel, the suspension
//!                        ▼                        │ point raises `Cancelled`, the stack unwinds;
//!                      done <─────────────────────┘ after CANCEL_ATTEMPTS refusals, forced unwind
//! ```
//!
//! A fiber is `!Send` (it may hold thread-bound values across suspensions):
//! it is created, resumed, cancelled and dropped on one thread.

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::NonNull;
use std::task::Waker;

use corosensei::stack::{DefaultStack, Stack};
use corosensei::{Coroutine, CoroutineResult, Yielder};

use super::current::{take_pending, Header, Hooks};
use super::overflow;
use super::scoped::Completion;
use super::unwind::Cancelled;
use super::warm::Warmth;
use crate::loom::sync::Arc;

/// How many times a cancelled fiber may catch its [`Cancelled`] unwind and
/// suspend again before corosensei's forced unwind takes over.
const CANCEL_ATTEMPTS: usize = 16;

/// What the driver sends into the fiber on each resumption.
pub(crate) struct Input<R> {
    /// The driver's waker for this `poll`; valid until the fiber suspends or
    /// returns (see `Header::driver_waker`).
    pub(super) waker: NonNull<Waker>,
    pub(super) cmd: Cmd<R>,
}

pub(crate) enum Cmd<R> {
    /// Continue: the suspension point returns this value.
    Go(R),
    /// The driver gave up on the fiber: unwind it.
    Cancel,
}

/// What [`Fiber::resume`] returns.
pub(crate) enum Step<Y, T> {
    /// The fiber suspended itself with this value.
    Suspended(Y),
    /// The fiber's function returned.
    Done(T),
}

/// How [`Fiber::cancel`] ended.
#[derive(Debug)]
pub(crate) enum Cancel {
    /// The fiber had already finished (or had not started: its function was
    /// dropped unrun).
    Finished,
    /// The `Cancelled` unwind reached the root: every destructor ran.
    Unwound,
    /// The fiber kept catching its cancellation; corosensei's forced unwind
    /// tore it down (destructors ran, but user code saw the unwind twice).
    Forced,
    /// Code on the fiber panicked after catching its cancellation.
    Panicked(Box<dyn Any + Send>),
}

/// Per-fiber context, in the root frame of the fiber's own stack.
#[repr(C)]
struct FiberCtx<H> {
    header: Header,
    hooks: H,
}

type Co<Y, R, T> = Coroutine<Input<R>, Y, T, DefaultStack>;

/// A coroutine with its stack, running `FnOnce() -> T` with suspensions
/// that yield `Y` and are resumed with `R`; `H` is carried for its code.
///
/// `!Send`, because corosensei's `Coroutine` is: a suspended fiber may hold
/// thread-bound values, and its driver never leaves its thread.
pub(crate) struct Fiber<Y: 'static, R: 'static, T: 'static> {
    /// `None` once the stack has been taken back with [`Fiber::into_stack`].
    co: Option<Co<Y, R, T>>,
    guard: overflow::GuardRange,
    /// Where it last suspended: with the stack's bounds in `guard`, what to
    /// warm before a resume when the thread's stacks are cold
    /// (`super::warm`).
    warmth: Warmth,
    /// The scoped job the fiber is suspended on, if any: until it is done,
    /// the fiber's frames are borrowed by another thread, so nothing may
    /// resume, unwind or free the fiber (see `scoped.rs`).
    pending: Option<Arc<Completion>>,
    _types: PhantomData<fn(R) -> (Y, T)>,
}

impl<Y: 'static, R: 'static, T: 'static> Fiber<Y, R, T> {
    /// Creates a fiber that will run `f` on `stack` when first resumed, with
    /// `hooks` reachable by its code (`super::with_hooks`) and passed to `f`
    /// (so what `f` needs and the hooks hold is captured once).
    pub(crate) fn new<H, F>(stack: DefaultStack, hooks: H, f: F) -> Self
    where
        H: Hooks,
        F: FnOnce(&H) -> T + 'static,
    {
        overflow::install();
        let guard = overflow::GuardRange::of_stack(stack.limit().get(), stack.base().get());
        let warmth = Warmth::new();
        let f = Unstarted(Some(f));
        let co = Coroutine::with_stack(stack, move |y: &Yielder<Input<R>, Y>, first: Input<R>| {
            let ctx = FiberCtx {
                header: Header::new(y, first.waker),
                hooks,
            };
            ctx.header.attach(&ctx.hooks);
            ctx.header.claim();
            // Dropped before `ctx`: clears `CURRENT` and releases the hooks'
            // contents while the context is still whole.
            let _exit = ExitGuard(&ctx.header);
            match first.cmd {
                Cmd::Go(_) => f.take()(&ctx.hooks),
                // `cancel` never resumes a fiber that has not started; if it
                // did, unwinding without running `f` is the safe reading.
                Cmd::Cancel => panic::resume_unwind(Box::new(Cancelled)),
            }
        });
        Fiber {
            co: Some(co),
            guard,
            warmth,
            pending: None,
            _types: PhantomData,
        }
    }

    /// Its stack's bounds and where it last suspended (`limit`, `at`, `base`).
    #[cfg(test)]
    pub(crate) fn suspension_bounds(&self) -> (usize, usize, usize) {
        (
            self.guard.usable_from(),
            self.warmth.suspended_at(),
            self.guard.base(),
        )
    }

    /// Whether the fiber's function has returned (or unwound out).
    pub(crate) fn is_done(&self) -> bool {
        self.co.as_ref().is_none_or(|c| c.done())
    }

    /// Runs the fiber until it suspends or returns.
    ///
    /// A panic that escapes the fiber's function propagates out of this call
    /// (the fiber is then done and its stack may be reclaimed).
    pub(crate) fn resume(&mut self, waker: &Waker, value: R) -> Step<Y, T> {
        self.resume_raw(Input {
            waker: NonNull::from(waker),
            cmd: Cmd::Go(value),
        })
    }

    fn resume_raw(&mut self, input: Input<R>) -> Step<Y, T> {
        self.join_scoped();
        let co = self
            .co
            .as_mut()
            .expect("suspendware: fiber resumed after its stack was taken");
        self.warmth
            .before_resume(self.guard.usable_from(), self.guard.base());
        let step = {
            let _guard = ResumeGuard::enter(self.guard);
            co.resume(input)
        };
        self.pending = take_pending();
        match step {
            CoroutineResult::Yield(y) => {
                self.warmth.after_suspension();
                Step::Suspended(y)
            }
            CoroutineResult::Return(t) => Step::Done(t),
        }
    }

    /// The scoped job this suspended fiber waits for, while it is not done:
    /// until then the fiber must be neither resumed nor ended (doing either
    /// blocks the thread until the job is done).
    pub(crate) fn scoped_job(&self) -> Option<&Arc<Completion>> {
        self.pending.as_ref().filter(|c| !c.is_done())
    }

    /// Blocks until a pending scoped job is done (the fallback that keeps
    /// its borrows valid when the driver did not wait itself).
    fn join_scoped(&mut self) {
        if let Some(c) = self.pending.take() {
            c.wait();
        }
    }

    /// Unwinds a suspended fiber so that every destructor on its stack runs.
    ///
    /// The fiber is resumed with a cancellation; the suspension point raises
    /// a [`Cancelled`] unwind that travels to the fiber's root. If code on it
    /// catches the unwind and suspends again, the cancellation is repeated
    /// up to [`CANCEL_ATTEMPTS`] times, then corosensei's forced unwind takes
    /// over, under the same [`ResumeGuard`] as every resumption.
    pub(crate) fn cancel(&mut self) -> Cancel {
        let Some(co) = self.co.as_mut() else {
            return Cancel::Finished;
        };
        if co.done() {
            return Cancel::Finished;
        }
        if !co.started() {
            // corosensei drops the captured function without running it.
            co.force_unwind();
            return Cancel::Finished;
        }
        for _ in 0..CANCEL_ATTEMPTS {
            let step = panic::catch_unwind(AssertUnwindSafe(|| {
                self.resume_raw(Input {
                    waker: NonNull::from(Waker::noop()),
                    cmd: Cmd::Cancel,
                })
            }));
            match step {
                Ok(Step::Suspended(_)) => continue,
                Ok(Step::Done(_)) => return Cancel::Finished,
                Err(p) if p.is::<Cancelled>() => return Cancel::Unwound,
                Err(p) => return Cancel::Panicked(p),
            }
        }
        self.join_scoped();
        let _guard = ResumeGuard::enter(self.guard);
        let co = self.co.as_mut().expect("checked above");
        match panic::catch_unwind(AssertUnwindSafe(|| co.force_unwind())) {
            Ok(()) => Cancel::Forced,
            Err(p) => Cancel::Panicked(p),
        }
    }

    /// Takes the stack back for reuse, cancelling the fiber first if it has
    /// not finished. `None` if it still could not be finished (the stack is
    /// then dropped, which unmaps it).
    pub(crate) fn into_stack(mut self) -> Option<DefaultStack> {
        self.join_scoped();
        if !self.is_done() {
            // The caller's own `cancel` reports outcomes when they matter;
            // here only the stack's fate is decided.
            self.cancel().discard();
        }
        let co = self.co.take()?;
        co.done().then(|| co.into_stack())
    }
}

impl<Y: 'static, R: 'static, T: 'static> Drop for Fiber<Y, R, T> {
    fn drop(&mut self) {
        if !self.is_done() {
            self.cancel().discard();
        }
    }
}

impl Cancel {
    /// Drops the outcome; a panic payload is dropped without letting its own
    /// destructor's panic escape.
    pub(crate) fn discard(self) {
        if let Cancel::Panicked(p) = self {
            super::unwind::drop_payload(p);
        }
    }
}

/// A fiber's function (and all it captured, e.g. the request), until the
/// fiber starts.
///
/// A fiber dropped before it starts has corosensei drop its closure on the
/// driver's stack. A panic escaping that drop would leave the coroutine
/// half torn down, and corosensei would drop the same closure again (a
/// double drop, SIGSEGV in `core_cleanup_panics`) when the fiber is
/// cancelled again or dropped. So the function is dropped under
/// [`contain`](super::contain), which logs the panic. (The hooks need no
/// such care: the crate's own, `FiberLocals`, hold no user value whose drop
/// is not already contained.) Only the function is wrapped: wrapping the
/// hooks too moved them once more per request (`k5` +94 instructions,
/// `scripts/instr.sh`).
struct Unstarted<F>(Option<F>);

impl<F> Unstarted<F> {
    /// The function, as the fiber starts. (Through `ManuallyDrop`: this,
    /// emptied, needs no drop, and its `Drop` is not inlined.)
    #[inline(always)]
    fn take(self) -> F {
        let mut this = std::mem::ManuallyDrop::new(self);
        this.0.take().expect("a fiber starts once")
    }
}

impl<F> Drop for Unstarted<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            super::contain(
                "a value held by a request whose fiber never started panicked while it was \
                 dropped",
                move || drop(f),
            );
        }
    }
}

/// In the fiber's root frame: runs when its function returns or unwinds out.
struct ExitGuard<'a>(&'a Header);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        self.0.exit();
    }
}

/// Restores the thread's fiber pointer and guard range when control returns
/// to the driver, whichever way it returns.
struct ResumeGuard {
    prev: super::current::Saved,
    prev_guard: overflow::GuardRange,
}

impl ResumeGuard {
    fn enter(guard: overflow::GuardRange) -> ResumeGuard {
        ResumeGuard {
            prev: super::current::save(),
            prev_guard: overflow::set_running(guard),
        }
    }
}

impl Drop for ResumeGuard {
    fn drop(&mut self) {
        super::current::restore(self.prev);
        overflow::set_running(self.prev_guard);
    }
}
