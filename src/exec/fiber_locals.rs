//! What a request's fiber carries, and the values that cross its switches.
//!
//! The generic fiber of [`crate::coro`] knows nothing of requests; this
//! module gives it the pipeline's meaning: it suspends with [`Suspend`], is
//! resumed with [`Resumed`], returns a `Response`, and carries
//! [`FiberLocals`] (the request's context, the spans entered on it, the
//! layer running on it) as its hooks.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use tracing::Span;

use crate::bridge::pool::BlockingPool;
use crate::bridge::span::{close, enter, exit, take_span};
use crate::coro::{self, Fiber, Hooks};
use crate::exec::active::{self, NO_LAYER};
use crate::exec::chain::Chain;
use crate::exec::request::RequestCtx;

/// A fiber running one sync segment of one request. Its function's
/// response crosses back through [`handoff`], like every request and
/// response that crosses its switches, so it returns `()`.
pub(crate) type RequestFiber = Fiber<Suspend, Resumed, ()>;

/// What a request's fiber hands to its driver when it suspends.
pub(crate) enum Suspend {
    /// `wait()` polled a future that is not ready; resume with `Poll` after
    /// the waker fires.
    Pending,
    /// `get_response` reached the end of the segment: run the inner part of
    /// the pipeline with the request it put in [`handoff`] and resume with
    /// `Response`.
    Inner,
}

/// What a suspension point of a request's fiber sees when resumed.
pub(crate) enum Resumed {
    /// Poll again (after `Suspend::Pending`).
    Poll,
    /// The inner part's response is in [`handoff`] (after `Suspend::Inner`).
    Response,
}

/// The thread's hand-off of requests and responses across a fiber switch.
///
/// A request leaves a fiber at the end of its segment (`get_response` puts
/// it, the driver takes it as soon as the resume returns); the inner part's
/// response comes back (the driver puts it right before the resume,
/// `get_response` takes it as soon as the fiber runs again); and the
/// segment's response leaves when the fiber's function returns. Passed as
/// corosensei's transfer values instead, the 256-byte request and the
/// 144-byte response were copied three or four times per crossing (the
/// yield or return slot, `Input`/`Step`, the matches on both sides) and sat
/// in the suspension frame at the deepest point of every fiber stack and in
/// its root frame; boxed, they cost an allocation per crossing. These
/// thread-locals cost one copy in and one out (BENCHMARKS.md, "Fiber hot
/// path").
///
/// Stacks, not slots: between a put and its take only the switch and the
/// fiber's hooks run, and a hook may call into a tracing subscriber that
/// could, however unlikely, drive another pipeline on this thread; its own
/// puts and takes nest inside ours, so last-in first-out keeps both right.
pub(crate) mod handoff {
    use std::cell::RefCell;

    use crate::body::{Request, Response};

    thread_local! {
        static REQUESTS: RefCell<Vec<Request>> = const { RefCell::new(Vec::new()) };
        static RESPONSES: RefCell<Vec<Response>> = const { RefCell::new(Vec::new()) };
    }

    /// Leaves `req` for the other side of the switch about to happen.
    /// Out of line: the push's temporaries would otherwise sit in
    /// `get_response`'s suspension frame, the deepest point of the stack.
    #[inline(never)]
    pub(crate) fn put_request(req: Request) {
        REQUESTS.with(|r| r.borrow_mut().push(req));
    }

    /// Takes the request the other side of the switch just left.
    ///
    /// # Panics
    /// If none was left (a bug in the fiber protocol).
    pub(crate) fn take_request() -> Request {
        REQUESTS
            .with(|r| r.borrow_mut().pop())
            .expect("suspendware: no request was handed over across the fiber switch")
    }

    /// Leaves `resp` for the other side of the switch about to happen.
    pub(crate) fn put_response(resp: Response) {
        RESPONSES.with(|r| r.borrow_mut().push(resp));
    }

    /// Takes the response the other side of the switch just left. Out of
    /// line for the same reason as [`put_request`].
    ///
    /// # Panics
    /// If none was left (a bug in the fiber protocol).
    #[inline(never)]
    pub(crate) fn take_response() -> Response {
        RESPONSES
            .with(|r| r.borrow_mut().pop())
            .expect("suspendware: no response was handed over across the fiber switch")
    }
}

thread_local! {
    /// Source of fiber ids (unique per thread; fibers never change thread).
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
}

/// A request fiber's own data, in its root frame.
pub(crate) struct FiberLocals {
    /// Tells this fiber's spans from another's (see `LayerSpan`).
    id: u64,
    /// The request this fiber works for (its `RequestLocal` values): the
    /// context shared with the request's other segments, or, when the plan
    /// leaves it to this fiber (`Chain::ctx_on_first_fiber`), made here on
    /// first use. Released by [`Hooks::exiting`].
    ///
    /// A `Cell` (taken and put back), not a `RefCell`: no user code runs
    /// while it is out, and the borrow flag's 8 bytes made this struct, which
    /// sits at the root of every fiber stack, one word larger once `depth`
    /// was added. That moved every frame above it 32 bytes deeper. In the
    /// comparison harness a request that `wait`s on a timer then touched a
    /// third stack page (`suspend_wait`, D = 20: 9.4 -> 10.3-10.7 KiB of RSS
    /// per suspended request), and suspend served 4-8 % fewer requests per
    /// second at N = 10,000 (BENCHMARKS.md, "Final verdicts (issue 13)").
    /// Keep this struct small.
    request: Cell<Option<Arc<RequestCtx>>>,
    /// The pipeline this fiber runs a segment of (its layers, its bounded
    /// pool for `blocking`). The fiber's body borrows it from here rather
    /// than capturing a clone of its own: one reference count fewer per
    /// fiber.
    chain: Arc<Chain>,
    /// Spans the pipeline entered on this fiber (innermost last). They are
    /// exited while the fiber is suspended so that another request's code
    /// never runs inside them, and re-entered when it resumes.
    spans: RefCell<Vec<Span>>,
    /// The innermost layer running on this fiber while it is suspended
    /// (kept for the watchdog's accounting, `crate::exec::active`).
    active: Cell<usize>,
    /// The pipeline depth this fiber runs at (`request::PipelinePoll`):
    /// recorded as it starts and at every resume. Code that runs on it at
    /// another depth (a pipeline it drives inline) does not see its request.
    depth: Cell<u32>,
}

impl FiberLocals {
    pub(crate) fn new(request: Option<Arc<RequestCtx>>, chain: Arc<Chain>) -> FiberLocals {
        FiberLocals {
            id: NEXT_ID.with(|c| c.replace(c.get().wrapping_add(1))),
            request: Cell::new(request),
            chain,
            spans: RefCell::new(Vec::new()),
            active: Cell::new(NO_LAYER),
            depth: Cell::new(0),
        }
    }

    /// Calls `f` with the running request fiber's locals, or `None` off-fiber.
    pub(crate) fn with<R>(f: impl FnOnce(&FiberLocals) -> R) -> Option<R> {
        coro::with_hooks(f)
    }

    /// This fiber's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The pipeline depth this fiber runs at.
    #[inline]
    pub(crate) fn depth(&self) -> u32 {
        self.depth.get()
    }

    /// Records the pipeline depth the fiber runs at now (as it starts).
    #[inline]
    pub(crate) fn enter_depth(&self) {
        self.depth.set(super::request::depth());
    }

    /// The request this fiber works for (its context is made on the first
    /// call if the fiber owns it).
    pub(crate) fn request(&self) -> Arc<RequestCtx> {
        let ctx = self.request.take().unwrap_or_default();
        self.request.set(Some(ctx.clone()));
        ctx
    }

    /// The pipeline this fiber runs a segment of.
    pub(crate) fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The pipeline's blocking pool.
    pub(crate) fn blocking_pool(&self) -> &Arc<BlockingPool> {
        &self.chain.blocking
    }

    /// Enters `span` for the code that runs on this fiber until the matching
    /// [`FiberLocals::remove_span`]; while the fiber is suspended the span is
    /// exited, so it never covers another request's code.
    pub(crate) fn push_span(&self, span: Span) {
        enter(&span);
        self.spans.borrow_mut().push(span);
    }

    /// Exits and forgets the span `id` pushed by `push_span` (normally the
    /// innermost: the search from the end stops at once).
    pub(crate) fn remove_span(&self, id: &tracing::span::Id) {
        // Taken out first, exited and dropped after the borrow ends: a
        // subscriber's `exit`/`try_close` may call back into this fiber.
        let span = take_span(&mut self.spans.borrow_mut(), id);
        if let Some(s) = span {
            exit(&s);
            close(s);
        }
    }
}

impl Hooks for FiberLocals {
    #[inline]
    fn suspending(&self) {
        for s in self.spans.borrow().iter().rev() {
            exit(s);
        }
        self.active.set(active::stop());
    }

    fn resumed(&self) {
        self.enter_depth();
        active::resume_in(self.active.get());
        // Destructors run by a cancellation run inside the spans they ran in
        // before; the span guards exit them as the unwind passes.
        for s in self.spans.borrow().iter() {
            enter(s);
        }
    }

    fn exiting(&self) {
        active::stop();
        // Taken out first: the fiber no longer holds it when any value's
        // destructor runs (one that uses a `RequestLocal` finds no request:
        // `CURRENT` is cleared).
        // When the fiber owned the context, the request's values drop here,
        // on the fiber, and on a cancellation inside its unwind, where a
        // panic escaping a destructor would abort the process:
        // `RequestCtx`'s drop catches and logs one.
        let request = self.request.take();
        drop(request);
        if self.spans.borrow().is_empty() {
            return;
        }
        // Spans whose guards outlived the fiber (leaked, or kept elsewhere):
        // taken out and dropped while the context is whole and `CURRENT` no
        // longer points at it.
        let left = std::mem::take(&mut *self.spans.borrow_mut());
        for s in left.into_iter().rev() {
            exit(&s);
            close(s);
        }
    }
}

#[cfg(all(test, not(loom), target_pointer_width = "64"))]
mod tests {
    use super::FiberLocals;

    /// `FiberLocals` sits at the root of every fiber stack, so each byte it
    /// grows by moves every frame of every request deeper. One more word
    /// (a `RefCell` flag beside the pipeline depth) cost a third stack page
    /// to requests that `wait` on a timer (see the `request` field). Make
    /// room inside these nine words before raising the bound, and measure
    /// with `compare --stack-depth 5` and the harness's RSS per request.
    #[test]
    fn fiber_locals_stay_within_nine_words() {
        assert!(
            std::mem::size_of::<FiberLocals>() <= 72,
            "FiberLocals grew to {} bytes",
            std::mem::size_of::<FiberLocals>()
        );
    }
}
