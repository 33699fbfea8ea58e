//! The future of one async layer (an async middleware, or the async view)
//! within a request: the layer's own future, its span when one listens, and
//! its panic boundary.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::Instrument;

use crate::body::{Request, Response};
use crate::exec::boundary::to_response;
use crate::exec::chain::Chain;
use crate::exec::next::AsyncNext;
use crate::exec::request::RequestCtx;
use crate::future::{ArcBorrowing, LocalBoxFuture};

/// Async layer `entry` running for one request.
///
/// A named future rather than an `async` block: the block would keep its
/// captures (the chain, the 256-byte request, the `AsyncNext`) in a heap
/// state of its own beside the layer's boxed future, and needed the request
/// boxed besides; this holds only the layer's future and the chain it
/// borrows (BENCHMARKS.md, "Fourth round (issue 13)"). Unpin, so a fiber
/// segment holds its inner async layer by value.
pub(crate) struct AsyncSegmentFuture {
    fut: ArcBorrowing<Chain, Response>,
    entry: usize,
}

impl AsyncSegmentFuture {
    /// Calls layer `entry` (segment `seg`) with `req`; its `next` leads to
    /// segment `seg + 1`.
    #[inline]
    pub(crate) fn new(
        chain: Arc<Chain>,
        seg: usize,
        entry: usize,
        req: Request,
        rctx: Arc<RequestCtx>,
    ) -> Self {
        let next = AsyncNext::new(chain.clone(), seg + 1, rctx);
        let fut = ArcBorrowing::new(chain, move |chain: &Chain| call(chain, entry, req, next));
        AsyncSegmentFuture { fut, entry }
    }
}

/// The layer's future: instrumented only when a subscriber listens at
/// DEBUG (the check is a static and a relaxed load; the instrumented
/// wrapper costs an allocation), and a ready response if the call panicked
/// before its future existed (the sync part of a closure).
#[inline]
fn call(
    chain: &Chain,
    entry: usize,
    req: Request,
    next: AsyncNext,
) -> LocalBoxFuture<'_, Response> {
    let e = &chain.entries[entry];
    match panic::catch_unwind(AssertUnwindSafe(|| e.mw.call_async(req, next))) {
        Ok(fut) if tracing::level_enabled!(tracing::Level::DEBUG) => instrumented(fut, &e.name),
        Ok(fut) => fut,
        Err(p) => {
            let resp = to_response(&chain.panic_handler, &e.name, p);
            Box::pin(std::future::ready(resp))
        }
    }
}

/// `fut` inside the layer's span. Out of line: tracing's span machinery
/// stays off the path where nobody listens.
#[inline(never)]
fn instrumented<'a>(fut: LocalBoxFuture<'a, Response>, name: &str) -> LocalBoxFuture<'a, Response> {
    let span = tracing::debug_span!("middleware", name = %name, exec = "async");
    if span.is_disabled() {
        fut
    } else {
        Box::pin(fut.instrument(span))
    }
}

impl Future for AsyncSegmentFuture {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = &mut *self;
        match panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx))) {
            Ok(p) => p,
            Err(payload) => {
                let chain = this.fut.owner();
                Poll::Ready(to_response(
                    &chain.panic_handler,
                    chain.name(this.entry),
                    payload,
                ))
            }
        }
    }
}
