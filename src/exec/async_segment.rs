//! The future of one async layer (an async middleware, or the async view)
//! within a request: the layer's own future, its span when one listens, and
//! its panic boundary.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::body::{Request, Response};
use crate::bridge::span::InSpan;
use crate::exec::boundary::to_response;
use crate::exec::chain::Chain;
use crate::exec::next::AsyncNext;
use crate::exec::request::{self, RequestCtx};
use crate::future::{ArcBorrowing, LocalBoxFuture};
use crate::pipeline::plan::Entry;

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
    /// Calls layer `entry` (segment `seg`) with the request `req` returns;
    /// its `next` leads to segment `seg + 1`.
    ///
    /// The request comes from a function, called as the layer is: a fiber
    /// segment passes [`handoff::take_request`](crate::exec::fiber_locals::handoff::take_request),
    /// so the request goes from the hand-off straight into the layer's
    /// call. Passed by value, the 256-byte request was copied five times on
    /// its way there (the hand-off's `Option`, `expect`, the argument, the
    /// closure's capture; BENCHMARKS.md, "Sixth round (issue 13)").
    ///
    /// The view gets no `next` (it has no inner part): building one would
    /// clone the chain's and the request context's `Arc`s only to drop them
    /// unused, four locked read-modify-writes per request that cost about
    /// 8 ns each in time, far more than their instruction count says
    /// (BENCHMARKS.md, "Sixth round (issue 13)").
    #[inline]
    pub(crate) fn new(
        chain: Arc<Chain>,
        seg: usize,
        entry: usize,
        req: impl FnOnce() -> Request + 'static,
        rctx: Option<&Arc<RequestCtx>>,
    ) -> Self {
        let fut = if chain.entries[entry].view.is_some() {
            ArcBorrowing::new(chain, move |chain: &Chain| {
                call(chain, entry, move |e| {
                    // First: the request must leave its source even if the
                    // rest panics.
                    let req = req();
                    // Set when the pipeline was built; a chain never changes.
                    let view = e.view.as_deref().expect("the view's entry holds the view");
                    view.call(req)
                })
            })
        } else {
            let next = AsyncNext::new(chain.clone(), seg + 1, request::shared(rctx));
            ArcBorrowing::new(chain, move |chain: &Chain| {
                call(chain, entry, move |e| e.mw.call_async(req(), next))
            })
        };
        AsyncSegmentFuture { fut, entry }
    }
}

/// The layer's future: instrumented only when a subscriber listens at
/// DEBUG (the check is a static and a relaxed load; the instrumented
/// wrapper costs an allocation), and a ready response if the call panicked
/// before its future existed (the sync part of a closure).
#[inline]
fn call<'a>(
    chain: &'a Chain,
    entry: usize,
    layer: impl FnOnce(&'a Entry) -> LocalBoxFuture<'a, Response>,
) -> LocalBoxFuture<'a, Response> {
    let e = &chain.entries[entry];
    match panic::catch_unwind(AssertUnwindSafe(|| layer(e))) {
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
        Box::pin(InSpan::new(fut, span))
    }
}

impl Future for AsyncSegmentFuture {
    type Output = Response;

    /// Polls the layer's future inside the layer's panic boundary. Once it
    /// has answered (or panicked), its drop runs here too, inside the same
    /// boundary: a destructor that panics after the layer answered (a value
    /// its `async` block still held) is the layer failing, and outer layers
    /// get the handler's response. Dropped later by whoever holds this
    /// segment, that panic escaped every boundary: the request's future
    /// ended in a panic and the client got no response (`core_failure_paths`).
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = &mut *self;
        // One boundary for both: a panic from the drop drops the response
        // with the closure's frame and answers as a panic from the poll.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let polled = Pin::new(&mut this.fut).poll(cx);
            if polled.is_ready() {
                this.fut.drop_future();
            }
            polled
        }));
        match outcome {
            Ok(polled) => polled,
            Err(payload) => {
                let chain = this.fut.owner();
                let resp = to_response(&chain.panic_handler, chain.name(this.entry), payload);
                // The future that panicked (if the poll did) goes now; a
                // second panic from its drop changes nothing for the
                // response.
                crate::coro::contain(
                    "an async layer's future panicked while it was dropped after it had panicked",
                    || this.fut.drop_future(),
                );
                Poll::Ready(resp)
            }
        }
    }
}
