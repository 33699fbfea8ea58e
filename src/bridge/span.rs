//! Spans that stay correct when a fiber suspends.
//!
//! `tracing` keeps the "current span" per OS thread. A guard from
//! `span.enter()` held across `get_response` on a fiber keeps the span
//! entered on the *thread* while the fiber is suspended, so events of every
//! other request that runs on that thread meanwhile are attributed to it
//! (and when the guard drops on resumption, the thread's span stack may be
//! exited out of order). Use [`enter_span`] in sync middleware instead: the
//! span is exited whenever the fiber suspends and re-entered when it
//! resumes. On a held thread (Adapt) it is an ordinary entered span.
//!
//! ```
//! use suspendware::{enter_span, Next, Request, Response};
//! fn audit(req: Request, next: &mut Next) -> Response {
//!     let _g = enter_span(tracing::info_span!("audit"));
//!     next.get_response(req) // other requests' events never land in "audit"
//! }
//! # let _ = audit;
//! ```

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Span;

use crate::coro;
use crate::exec::fiber_locals::FiberLocals;

/// Enters `span` for the rest of the current scope, correctly across fiber
/// suspensions (see the module docs). Outside pipeline code it behaves like
/// `span.entered()`.
pub fn enter_span(span: Span) -> SpanGuard {
    SpanGuard {
        _inner: LayerSpan::enter(span),
        _not_send: std::marker::PhantomData,
    }
}

/// Guard of [`enter_span`]; exits the span when dropped. `!Send`.
pub struct SpanGuard {
    _inner: LayerSpan,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for SpanGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanGuard")
    }
}

/// A span entered for a layer's sync code.
///
/// On a fiber it is exited while the fiber is suspended and re-entered when
/// it resumes, so it never covers another request's code; on a held thread
/// (nothing else runs there) it is an ordinary entered span.
pub(crate) enum LayerSpan {
    /// Disabled span (no subscriber wants it): nothing to do.
    Off,
    /// Pushed on the fiber with this id.
    Fiber(u64, tracing::span::Id),
    /// Entered off-fiber (on a held thread, or outside pipeline code) and
    /// kept in this thread's [`THREAD_SPANS`] with this id.
    Thread(tracing::span::Id),
}

thread_local! {
    /// Spans entered off-fiber by `LayerSpan`s still alive, innermost last.
    /// Held here rather than in the `LayerSpan` (as an `EnteredSpan`), for
    /// two reasons. The subscriber's `exit` and `try_close` are user code
    /// that a cancelled held thread's unwind reaches, where a panic aborts
    /// the process: [`pop_from_thread`] contains them, like the fiber's
    /// hooks. And a `LayerSpan` keeps no field that needs dropping, so its
    /// drop stays a check inlined into each sync layer (an `EnteredSpan`
    /// variant wrapped for containment made it an out-of-line call per
    /// layer: `k5` +45 to +85 instructions per request, `scripts/instr.sh`).
    static THREAD_SPANS: RefCell<Vec<Span>> = const { RefCell::new(Vec::new()) };
}

impl LayerSpan {
    pub(crate) fn enter(span: Span) -> LayerSpan {
        if span.is_disabled() {
            return LayerSpan::Off;
        }
        let mut span = Some(span);
        // One thread-local lookup: push on the running fiber, if any.
        let pushed = FiberLocals::with(|ctx| {
            let span = span.take().expect("span present");
            let id = span.id().expect("an enabled span has an id");
            ctx.push_span(span);
            (ctx.id(), id)
        });
        match pushed {
            Some((fiber, id)) => LayerSpan::Fiber(fiber, id),
            None => push_on_thread(span.take().expect("span present")),
        }
    }
}

impl Drop for LayerSpan {
    // Inline check, out-of-line work: every sync layer drops one of these
    // (usually `Off`), and the fiber-locals lookup would otherwise be
    // inlined into each layer's frame.
    #[inline]
    fn drop(&mut self) {
        match self {
            LayerSpan::Off => {}
            LayerSpan::Fiber(..) => self.pop_from_fiber(),
            LayerSpan::Thread(id) => pop_from_thread(id),
        }
    }
}

/// Enters `span` on this thread (not a fiber) and keeps it in
/// [`THREAD_SPANS`] until its `LayerSpan` drops.
#[inline(never)]
fn push_on_thread(span: Span) -> LayerSpan {
    let id = span.id().expect("an enabled span has an id");
    enter(&span);
    THREAD_SPANS.with(|spans| spans.borrow_mut().push(span));
    LayerSpan::Thread(id)
}

/// Exits and closes the span `id` pushed by [`push_on_thread`] (normally
/// the innermost), the subscriber's calls contained.
#[inline(never)]
fn pop_from_thread(id: &tracing::span::Id) {
    // Taken out first, exited and closed after the borrow ends: the
    // subscriber may enter spans of its own.
    let span = THREAD_SPANS.with(|spans| take_span(&mut spans.borrow_mut(), id));
    if let Some(s) = span {
        exit(&s);
        close(s);
    }
}

/// Takes the span `id` out of `spans` (entered spans, innermost last; the
/// search from the end normally stops at once).
pub(crate) fn take_span(spans: &mut Vec<Span>, id: &tracing::span::Id) -> Option<Span> {
    spans
        .iter()
        .rposition(|s| s.id().as_ref() == Some(id))
        .map(|i| spans.remove(i))
}

impl LayerSpan {
    #[inline(never)]
    fn pop_from_fiber(&mut self) {
        // Only on the fiber that pushed it, and only its own span: a guard
        // that outlived its fiber (leaked, kept in a thread-local) must not
        // pop another fiber's span (its own was dropped when its fiber
        // exited), and guards dropped out of order pop the right spans.
        if let LayerSpan::Fiber(fiber, id) = self {
            FiberLocals::with(|ctx| {
                if ctx.id() == *fiber {
                    ctx.remove_span(id);
                }
            });
        }
    }
}

// Every span enter, exit and close the crate makes goes through these
// three (creating spans and logging events are not cleanup paths): from a
// fiber's hooks (on every switch, and in `resumed` as a cancelled fiber
// resumes, where a panic would replace the cancellation and the cancelled
// request's middleware would run on), from span guards' drops (inside a
// cancellation's unwind, where a panic aborts the process), and from
// [`InSpan`] (the request's, the async layers' and the hops' futures). A
// subscriber is user code; its panic is contained and logged, and only
// that span event is lost.

/// Enters `span` on this thread's subscriber.
pub(crate) fn enter(span: &Span) {
    coro::contain(
        "the tracing subscriber panicked when a span was entered",
        || {
            span.with_subscriber(|(id, dispatch)| dispatch.enter(id));
        },
    );
}

/// Exits `span` on this thread's subscriber.
pub(crate) fn exit(span: &Span) {
    coro::contain(
        "the tracing subscriber panicked when a span was exited",
        || {
            span.with_subscriber(|(id, dispatch)| dispatch.exit(id));
        },
    );
}

/// Drops `span` (its subscriber's `try_close`).
pub(crate) fn close(span: Span) {
    coro::contain(
        "the tracing subscriber panicked when a span was closed",
        move || drop(span),
    );
}

/// A future run inside a span, as `tracing`'s `Instrumented`, with the
/// subscriber's calls contained ([`enter`], [`exit`], [`close`]).
///
/// `Instrumented` enters its span before it drops its future. If the
/// subscriber panicked there, the future was never dropped: a cancelled
/// request's fiber kept its stack for good (`stack_stats` showed it in
/// use), and the panic escaped the response future's drop
/// (`core_cleanup_panics`, case 7).
pub(crate) struct InSpan<F> {
    /// `None` once closed, in the drop.
    span: Option<Span>,
    /// `None` once dropped, in the drop.
    fut: Option<F>,
}

impl<F> InSpan<F> {
    pub(crate) fn new(fut: F, span: Span) -> InSpan<F> {
        InSpan {
            span: Some(span),
            fut: Some(fut),
        }
    }
}

/// Enters `span` until the returned guard drops: `span.enter()` with the
/// subscriber's calls contained (for held threads, whose guard a
/// cancellation's unwind may drop).
pub(crate) fn entered(span: &Span) -> Exit<'_> {
    enter(span);
    Exit(span)
}

/// Exits its span when dropped (also during an unwind).
pub(crate) struct Exit<'a>(&'a Span);

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        exit(self.0);
    }
}

impl<F: Future + Unpin> Future for InSpan<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let (Some(span), Some(fut)) = (&this.span, &mut this.fut) else {
            unreachable!("InSpan polled after its drop began");
        };
        enter(span);
        let _exit = Exit(span);
        Pin::new(fut).poll(cx)
    }
}

impl<F> Drop for InSpan<F> {
    fn drop(&mut self) {
        let Some(span) = self.span.take() else { return };
        if let Some(fut) = self.fut.take() {
            enter(&span);
            let _exit = Exit(&span);
            drop(fut);
        }
        close(span);
    }
}
