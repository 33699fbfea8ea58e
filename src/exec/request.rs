//! The per-request context: state shared by every segment of one request,
//! and how sync code finds the request it runs for (through the running
//! fiber, or the thread-local a held thread or hop sets).

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
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

thread_local! {
    /// Resolves when the request this held thread works for is cancelled
    /// (see [`ThreadScope::enter`]); taken while a `wait` blocks on it.
    static THREAD_CANCEL: RefCell<Option<Receiver<()>>> = const { RefCell::new(None) };
}

/// Marks the current thread as running `ctx`'s sync code until dropped.
pub(crate) struct ThreadScope {
    prev: Option<Arc<RequestCtx>>,
    prev_cancel: Option<Receiver<()>>,
}

impl ThreadScope {
    /// `cancelled`, when given, resolves when the request is cancelled: a
    /// `wait` on this thread then stops waiting and unwinds it (an Adapt
    /// thread's link gives one, and so does a hop).
    pub(crate) fn enter(ctx: Arc<RequestCtx>, cancelled: Option<Receiver<()>>) -> ThreadScope {
        ThreadScope {
            prev: THREAD_REQUEST.with(|c| c.replace(Some(ctx))),
            prev_cancel: THREAD_CANCEL.with(|c| c.replace(cancelled)),
        }
    }
}

impl Drop for ThreadScope {
    fn drop(&mut self) {
        let prev = self.prev.take();
        THREAD_REQUEST.with(|c| *c.borrow_mut() = prev);
        let prev_cancel = self.prev_cancel.take();
        THREAD_CANCEL.with(|c| *c.borrow_mut() = prev_cancel);
    }
}

/// Takes this held thread's cancellation signal, if it has one (and no
/// `wait` further out on this thread holds it), for the caller to block on
/// beside its future; [`put_cancel_signal`] gives it back.
pub(crate) fn take_cancel_signal() -> Option<Receiver<()>> {
    THREAD_CANCEL.with(|c| c.borrow_mut().take())
}

/// Gives back a signal taken with [`take_cancel_signal`] that has not
/// resolved.
pub(crate) fn put_cancel_signal(signal: Receiver<()>) {
    THREAD_CANCEL.with(|c| *c.borrow_mut() = Some(signal));
}

/// Whether this thread is held for a request's sync code (an Adapt thread
/// or a hop), where blocking is allowed. Callers check for a fiber first: on
/// a fiber this thread-local belongs to whatever ran the fiber's driver.
pub(crate) fn on_held_thread() -> bool {
    THREAD_REQUEST.with(|c| c.borrow().is_some())
}

/// The request whose sync code runs here (fiber, held thread or hop).
pub(crate) fn current() -> Option<Arc<RequestCtx>> {
    if let Some(ctx) = FiberLocals::with(|f| f.request()) {
        return Some(ctx);
    }
    THREAD_REQUEST.with(|c| c.borrow().clone())
}
