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

use crate::chain::LayerSpan;

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
