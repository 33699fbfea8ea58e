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

use tracing::Span;

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
    Thread(#[allow(dead_code)] tracing::span::EnteredSpan),
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
            None => LayerSpan::Thread(span.take().expect("span present").entered()),
        }
    }
}

impl Drop for LayerSpan {
    // Inline check, out-of-line work: every sync layer drops one of these
    // (usually `Off`), and the fiber-locals lookup would otherwise be
    // inlined into each layer's frame.
    #[inline]
    fn drop(&mut self) {
        if let LayerSpan::Fiber(..) = self {
            self.pop_from_fiber();
        }
    }
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
