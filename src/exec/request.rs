//! The per-request context: state shared by every segment of one request,
//! and how sync code finds the request it runs for (through the running
//! fiber, or the thread-local a held thread or hop sets).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::handoff::Receiver;
use crate::loom::sync::Mutex;
use tokio::sync::OwnedSemaphorePermit;

use super::fiber_locals::FiberLocals;

/// A request-local's value; `None` while lent out.
pub(crate) type Slot = Option<Box<dyn Any + Send>>;

/// Adapt mode's admission permit, taken before a request's first held
/// thread and kept until the request ends (`thread_segment.rs`).
#[derive(Default)]
pub(crate) struct PermitSlot(pub(crate) Mutex<Option<OwnedSemaphorePermit>>);

/// Per-request state shared by every segment of one request.
#[derive(Default)]
pub(crate) struct RequestCtx {
    /// Values of `RequestLocal`s, keyed by the address of the `static`.
    /// `None` while the value is lent out to a `with` closure (the lock is
    /// never held while user code runs).
    pub(crate) locals: Mutex<Vec<(usize, Slot)>>,
    /// Adapt-mode admission permit held for the whole request.
    pub(crate) permit: PermitSlot,
}

impl RequestCtx {
    pub(crate) fn new() -> Arc<RequestCtx> {
        Arc::new(RequestCtx::default())
    }
}

impl Drop for RequestCtx {
    /// The request's `RequestLocal` values drop here, wherever the last
    /// holder of the context lets go of it: a fiber exiting (maybe inside a
    /// cancellation's unwind, where a panic escaping a destructor would
    /// abort the process), a segment future or an `AsyncNext` dropped by
    /// the server's task. A value whose destructor panics is logged and
    /// the others still drop, each on its own, so that not even two failing
    /// destructors make a double panic.
    fn drop(&mut self) {
        // Exclusive access: no lock. A shared-context plan drops one context
        // per request, most often with no value in it: that case returns at
        // once (`segs`: +10 instructions per request against +42 without
        // the check, `scripts/instr.sh`).
        let values = crate::loom::get_mut(&mut self.locals);
        if values.is_empty() {
            return;
        }
        for (_, value) in std::mem::take(values) {
            crate::coro::contain(
                "a RequestLocal value panicked while it was dropped at the end of its request",
                move || drop(value),
            );
        }
    }
}

impl fmt::Debug for RequestCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestCtx")
    }
}

thread_local! {
    /// The request whose sync code runs on this (non-fiber) thread: set by
    /// Adapt-mode thread segments and ThreadHop hops.
    static THREAD_REQUEST: RefCell<Option<Arc<RequestCtx>>> = const { RefCell::new(None) };
}

/// The shared context of a segment that is not the request's first fiber.
///
/// A fiber segment whose plan leaves the context to it
/// ([`Chain::ctx_on_first_fiber`](crate::exec::chain::Chain)) holds `None`;
/// the only segment such a plan has after it is the async view, which takes
/// no context, so this never finds `None`.
pub(crate) fn shared(rctx: Option<&Arc<RequestCtx>>) -> Arc<RequestCtx> {
    rctx.cloned().expect(
        "suspendware bug: a segment needs the request context that the plan left to the first fiber",
    )
}

/// Whether the request a held thread (or hop) works for has been
/// cancelled, as far as this thread has seen.
///
/// ```text
/// None (no signal) ─── stays None
/// Armed(signal) ── signal resolves, seen by a `wait` ──> Fired ─── stays Fired
/// ```
///
/// The signal stays in the thread-local while `wait`s poll it in place
/// (nested ones included), so no unwind out of a `wait` can lose it; and
/// once seen, the cancellation is remembered, so a later `wait` (after
/// user code caught the `Cancelled`) unwinds again at once instead of
/// blocking with no signal.
pub(crate) enum CancelState {
    /// The thread has no cancellation signal (none was given).
    None,
    /// Resolves when the request is cancelled.
    Armed(Receiver<()>),
    /// The request was cancelled.
    Fired,
}

thread_local! {
    /// The cancellation of the request this held thread works for (see
    /// [`ThreadScope::enter`]).
    static THREAD_CANCEL: RefCell<CancelState> = const { RefCell::new(CancelState::None) };
}

/// Marks the current thread as running `ctx`'s sync code until dropped.
pub(crate) struct ThreadScope {
    prev: Option<Arc<RequestCtx>>,
    prev_cancel: CancelState,
    prev_depth: u32,
}

impl ThreadScope {
    /// `cancelled`, when given, resolves when the request is cancelled: a
    /// `wait` on this thread then stops waiting and unwinds it (an Adapt
    /// thread's link gives one, and so does a hop).
    pub(crate) fn enter(ctx: Arc<RequestCtx>, cancelled: Option<Receiver<()>>) -> ThreadScope {
        ThreadScope {
            prev: THREAD_REQUEST.with(|c| c.replace(Some(ctx))),
            prev_depth: THREAD_DEPTH.with(|t| t.replace(DEPTH.with(Cell::get))),
            prev_cancel: THREAD_CANCEL.with(|c| {
                c.replace(match cancelled {
                    Some(signal) => CancelState::Armed(signal),
                    None => CancelState::None,
                })
            }),
        }
    }
}

impl Drop for ThreadScope {
    fn drop(&mut self) {
        // Swapped out, then dropped once no borrow is held: dropping the
        // last reference to the request's context runs its values'
        // destructors, which may look the request up again
        // (`RequestLocal::try_with`, `wait`), and would find this
        // thread-local still borrowed (`held_thread_paths`).
        THREAD_DEPTH.with(|t| t.set(self.prev_depth));
        let request = THREAD_REQUEST.with(|c| c.replace(self.prev.take()));
        let prev_cancel = std::mem::replace(&mut self.prev_cancel, CancelState::None);
        let cancel = THREAD_CANCEL.with(|c| c.replace(prev_cancel));
        drop(cancel);
        drop(request);
    }
}

/// Whether this thread's request has a cancellation signal that has not
/// been seen to fire (`Some(false)`), has been cancelled (`Some(true)`),
/// or has no signal (`None`).
pub(crate) fn cancelled() -> Option<bool> {
    THREAD_CANCEL.with(|c| match &*c.borrow() {
        CancelState::None => None,
        CancelState::Armed(_) => Some(false),
        CancelState::Fired => Some(true),
    })
}

/// Polls this thread's cancellation signal in place: `Ready` once the
/// request is cancelled (and from then on), `Pending` until then or when
/// the thread has none. Registers `cx`'s waker with the signal, replacing
/// the one a `wait` further out registered; that one re-polls (and
/// re-registers) when the inner `wait` has returned into its future.
pub(crate) fn poll_cancelled(cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
    use std::task::Poll;
    THREAD_CANCEL.with(|c| {
        let mut state = c.borrow_mut();
        match &mut *state {
            CancelState::Armed(signal) => match std::pin::Pin::new(signal).poll(cx) {
                Poll::Ready(_) => {
                    *state = CancelState::Fired;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            CancelState::Fired => Poll::Ready(()),
            CancelState::None => Poll::Pending,
        }
    })
}

/// Whether this thread is held for a request's sync code (an Adapt thread
/// or a hop), where blocking is allowed. Callers check for a fiber first: on
/// a fiber this thread-local belongs to whatever ran the fiber's driver.
pub(crate) fn on_held_thread() -> bool {
    THREAD_REQUEST.with(|c| c.borrow().is_some())
}

/// The request whose sync code runs here (fiber, held thread or hop).
/// `None` in code of a pipeline polled since that scope began (see
/// [`PipelinePoll`]).
pub(crate) fn current() -> Option<Arc<RequestCtx>> {
    let depth = DEPTH.with(Cell::get);
    match FiberLocals::with(|f| (f.depth() == depth).then(|| f.request())) {
        Some(Some(ctx)) => return Some(ctx),
        // The running fiber's request is out of scope: this is the async
        // code of a pipeline its sync code drives (`wait(inner.handle(..))`).
        Some(None) => return None,
        None => {}
    }
    if THREAD_DEPTH.with(Cell::get) != depth {
        return None;
    }
    THREAD_REQUEST.with(|c| c.borrow().clone())
}

thread_local! {
    /// How many pipeline futures are being polled (or dropped) on this
    /// thread, one inside another ([`PipelinePoll`]).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// [`DEPTH`] when this thread's `THREAD_REQUEST` was set.
    static THREAD_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// The current [`DEPTH`]: what a fiber records as it runs (see
/// [`FiberLocals::enter_depth`]).
#[inline]
pub(crate) fn depth() -> u32 {
    DEPTH.with(Cell::get)
}

/// This held thread (or hop) runs code that has no request, until dropped:
/// a `blocking` closure, run inline here as it would run on a pool thread
/// from a fiber.
pub(crate) struct WithoutRequest {
    prev: Option<Arc<RequestCtx>>,
    prev_cancel: CancelState,
}

impl WithoutRequest {
    pub(crate) fn enter() -> WithoutRequest {
        WithoutRequest {
            prev: THREAD_REQUEST.with(|c| c.borrow_mut().take()),
            prev_cancel: THREAD_CANCEL.with(|c| c.replace(CancelState::None)),
        }
    }
}

impl Drop for WithoutRequest {
    fn drop(&mut self) {
        let prev_cancel = std::mem::replace(&mut self.prev_cancel, CancelState::None);
        THREAD_CANCEL.with(|c| *c.borrow_mut() = prev_cancel);
        let prev = self.prev.take();
        // Nothing was set meanwhile (every scope restores what it found).
        THREAD_REQUEST.with(|c| *c.borrow_mut() = prev);
    }
}

/// A pipeline's future is being polled (or dropped) on this thread until
/// dropped.
///
/// A request's scope (its fiber, or its held thread or hop) records the
/// depth it runs at; `current` sees its request only at that depth. When
/// sync code drives another pipeline inline (`wait(inner.handle(req))`),
/// that pipeline's async layers and view run on the outer fiber or held
/// thread one level deeper, and find no request, as async code does
/// anywhere. Before, they found the outer request's `RequestLocal`s, to
/// read and to overwrite, and so did the destructors of the inner fibers'
/// values (`request_local_isolation`). The inner pipeline's own fibers
/// record the deeper level as they run, so they see their own request.
/// Costs one thread-local increment and decrement per poll.
pub(crate) struct PipelinePoll(());

impl PipelinePoll {
    #[inline]
    pub(crate) fn enter() -> PipelinePoll {
        DEPTH.with(|d| d.set(d.get() + 1));
        PipelinePoll(())
    }
}

impl Drop for PipelinePoll {
    #[inline]
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}
