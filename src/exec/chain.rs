//! The built chain and how a request walks it.
//!
//! Layers (middleware, then the view as the innermost layer) are grouped
//! into *segments* by [`crate::pipeline::plan`]: a maximal run of fiber layers (one
//! fiber per request), a maximal run of held-thread layers (one blocking
//! thread per request), or a single async layer. The request enters segment
//! 0; each segment hands it to the next:
//!
//! ```text
//! [Fiber a b] -> [Async c] -> [Fiber d view]
//!  fiber #1      executor     fiber #2
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::StatusCode;

use crate::body::{Request, Response};
use crate::bridge::pool::BlockingPool;
use crate::bridge::span::LayerSpan;
use crate::exec::active;
use crate::exec::async_segment::AsyncSegmentFuture;
use crate::exec::boundary::catch_sync;
use crate::exec::fiber_locals::handoff;
use crate::exec::fiber_segment::FiberSegmentFuture;
use crate::exec::next::{Backend, Next};
use crate::exec::request::{self, RequestCtx};
use crate::exec::thread_segment::{AdaptAdmission, ThreadSegmentFuture};
use crate::exec::watchdog::Watchdog;
use crate::future::LocalBoxFuture;
use crate::panic::PanicHandler;
use crate::pipeline::mode::Mode;
use crate::pipeline::plan::{Entry, Plan, Segment};
use crate::stack::StackPool;

/// Everything a request needs, shared by all requests of a pipeline.
pub(crate) struct Chain {
    pub(crate) mode: Mode,
    pub(crate) entries: Vec<Entry>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) plan: Plan,
    pub(crate) pool: StackPool,
    pub(crate) panic_handler: PanicHandler,
    /// Warns about (and counts) fibers that run too long without
    /// suspending; `None` when turned off.
    pub(crate) watchdog: Option<Watchdog>,
    pub(crate) adapt: AdaptAdmission,
    /// Where `blocking` runs closures called from this pipeline's fibers.
    pub(crate) blocking: Arc<BlockingPool>,
    /// All of a request's sync code runs on the first segment's fiber (the
    /// plan is one fiber segment, then at most the async view): the
    /// request's context is then made by that fiber on first use and owned
    /// by it, instead of being allocated and shared per request (see
    /// [`Chain::context_on_first_fiber`]).
    pub(crate) ctx_on_first_fiber: bool,
}

impl Chain {
    /// Whether a plan of `segments` runs all of a request's sync code on its
    /// first segment's fiber: a fiber segment, then nothing or the async
    /// view. `RequestLocal`s are then reached only from that fiber, and a
    /// context shared between segments is not needed. Most pipelines have
    /// this shape (sync middleware around an async view, Suspend mode); for
    /// them a context made per request cost an allocation and six locked
    /// read-modify-writes (two clones, three releases, the allocation's
    /// weak count), used only by requests that touch a `RequestLocal`
    /// (BENCHMARKS.md, "Sixth round (issue 13)").
    pub(crate) fn context_on_first_fiber(entries: &[Entry], segments: &[Segment]) -> bool {
        match segments {
            [Segment::Fiber(_)] => true,
            [Segment::Fiber(_), Segment::Async(i)] => entries[*i].view.is_some(),
            _ => false,
        }
    }

    /// Segment 0's future, boxed. `rctx` is `None` when the plan leaves the
    /// request's context to the first fiber ([`Chain::ctx_on_first_fiber`]).
    pub(crate) fn run_first(
        chain: &Arc<Chain>,
        req: Request,
        rctx: Option<Arc<RequestCtx>>,
    ) -> LocalBoxFuture<'static, Response> {
        match chain.segments.first() {
            Some(&Segment::Fiber(layers)) => {
                Box::pin(FiberSegmentFuture::new(chain.clone(), 0, layers, req, rctx))
            }
            _ => Chain::run_segment(chain, 0, req, request::shared(rctx.as_ref())),
        }
    }

    /// The future that runs segment `seg` (and, through it, all inner ones).
    pub(crate) fn run_segment(
        chain: &Arc<Chain>,
        seg: usize,
        req: Request,
        rctx: Arc<RequestCtx>,
    ) -> LocalBoxFuture<'static, Response> {
        let Some(segment) = chain.segments.get(seg).copied() else {
            return Box::pin(async move { view_called_next() });
        };
        match segment {
            Segment::Fiber(layers) => Box::pin(FiberSegmentFuture::new(
                chain.clone(),
                seg,
                layers,
                req,
                Some(rctx),
            )),
            Segment::Thread(layers) => Box::pin(ThreadSegmentFuture::new(
                chain.clone(),
                seg,
                layers,
                req,
                rctx,
            )),
            Segment::Async(i) => {
                let chain = chain.clone();
                // Lazy, as futures are: the layer is called at the first
                // poll, inside whatever span polls it. An `async` block
                // keeps what it captures in its state for its whole life:
                // the request (256 bytes) is boxed so that its memory goes
                // at the first poll.
                let req = Box::new(req);
                Box::pin(async move {
                    AsyncSegmentFuture::new(chain, seg, i, move || *req, Some(&rctx)).await
                })
            }
        }
    }

    /// The future of segment `seg` as the inner part of a fiber segment
    /// holds it: an async layer (most often the view) by value, with
    /// neither the lazy `async` block nor the request's box of
    /// [`Chain::run_segment`] (two allocations and two copies of the request
    /// per request; BENCHMARKS.md, "Fourth round (issue 13)"); other
    /// segments boxed.
    ///
    /// An async layer is called here, not at the first poll: only for a
    /// caller that polls the result at once, in the same poll of the same
    /// task (the fiber segment's loop), where the two are the same.
    ///
    /// The request is the one the fiber just left in the hand-off
    /// ([`handoff::take_request`]); it is taken here, by the segment as it
    /// starts (see [`AsyncSegmentFuture::new`] for why not before).
    #[inline]
    pub(crate) fn inner_segment(
        chain: &Arc<Chain>,
        seg: usize,
        rctx: Option<&Arc<RequestCtx>>,
    ) -> SegmentFuture {
        match chain.segments.get(seg) {
            Some(&Segment::Async(i)) => SegmentFuture::Async(AsyncSegmentFuture::new(
                chain.clone(),
                seg,
                i,
                handoff::take_request,
                rctx,
            )),
            _ => SegmentFuture::Boxed(Chain::run_segment(
                chain,
                seg,
                handoff::take_request(),
                request::shared(rctx),
            )),
        }
    }

    /// Calls sync layer `pos` (of a segment ending at `end`) on the current
    /// fiber or held thread, inside its span, turning a panic into a
    /// response.
    ///
    /// Always inlined (into `Next::get_response`, itself inlined into the
    /// calling layer, and into the fiber's body): first one frame per sync
    /// layer instead of two for suspendware's part, 1,584 → 1,280 bytes per
    /// layer in the comparison harness's probe (BENCHMARKS.md, "After the
    /// hot-path changes"), then one for the layer and suspendware together,
    /// 1,520 → 1,216 ("Third round (issue 13)"); the cold paths it could
    /// reach (span construction, panic conversion, the end-of-segment
    /// suspension) are out of line, so the merged frame stays small.
    #[inline(always)]
    pub(crate) fn call_sync(
        &self,
        pos: usize,
        end: usize,
        req: Request,
        backend: Backend<'_>,
    ) -> Response {
        let entry = &self.entries[pos];
        // The level check first (a static and one relaxed load): with no
        // subscriber, or none at DEBUG, a layer skips the out-of-line span
        // construction and its callsite-interest lookup (~30 instructions
        // per layer, BENCHMARKS.md "Where suspend's per-request time goes").
        let _span = if tracing::level_enabled!(tracing::Level::DEBUG) {
            sync_layer_span(&entry.name)
        } else {
            LayerSpan::Off
        };
        let _active = ActiveLayer::enter(pos);
        let mut next = Next::new(self, pos + 1, end, backend);
        catch_sync(&self.panic_handler, &entry.name, || {
            entry.mw.call_sync(req, &mut next)
        })
    }

    /// Name of layer `i`.
    pub(crate) fn name(&self, i: usize) -> &str {
        &self.entries[i].name
    }
}

/// The future of an inner segment (see [`Chain::inner_segment`]).
pub(crate) enum SegmentFuture {
    /// An async layer, unboxed.
    Async(AsyncSegmentFuture),
    /// A fiber or held-thread segment, or the view's missing inner part.
    Boxed(LocalBoxFuture<'static, Response>),
}

impl Future for SegmentFuture {
    type Output = Response;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match self.get_mut() {
            SegmentFuture::Async(f) => Pin::new(f).poll(cx),
            SegmentFuture::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

/// The span of a sync layer. Out of line: the `span!` machinery needs a
/// few hundred bytes of locals, which would otherwise sit in every layer's
/// frame on the fiber stack even when tracing is off.
#[inline(never)]
fn sync_layer_span(name: &str) -> LayerSpan {
    LayerSpan::enter(tracing::debug_span!("middleware", name = %name, exec = "sync"))
}

fn view_called_next() -> Response {
    tracing::error!("the view called get_response/next: there is nothing inside the view");
    let mut r = Response::new("internal server error: the view called next\n".into());
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// Layer `pos` runs on this thread (for the watchdog: see
/// [`crate::exec::active`]) until dropped.
struct ActiveLayer {
    pos: usize,
    outer: usize,
}

impl ActiveLayer {
    #[inline(always)]
    fn enter(pos: usize) -> ActiveLayer {
        ActiveLayer {
            pos,
            outer: active::enter(pos),
        }
    }
}

impl Drop for ActiveLayer {
    #[inline(always)]
    fn drop(&mut self) {
        active::leave(self.pos, self.outer);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::{AsyncNext, Mode, Next, Pipeline, Request, Response};

    fn sync(req: Request, next: &mut Next) -> Response {
        next.get_response(req)
    }

    async fn view(_req: Request) -> Response {
        Response::new("v".into())
    }

    /// Which plans leave the request's context to their first fiber: only
    /// those where no other segment runs sync code or passes a context on.
    #[test]
    fn the_context_is_left_to_the_first_fiber_only_when_no_other_segment_needs_it() {
        let owned = |p: Pipeline| p.chain.ctx_on_first_fiber;
        let b = || Pipeline::builder().sync(sync);
        assert!(
            owned(b().view(view).build().unwrap()),
            "sync layers, async view"
        );
        assert!(
            owned(
                b().sync_view(|_r: Request| Response::new("s".into()))
                    .build()
                    .unwrap()
            ),
            "sync layers and a sync view: one fiber"
        );
        let async_mw = |req: Request, next: AsyncNext| async move { next.run(req).await };
        assert!(
            !owned(
                b().layer_async(async_mw)
                    .sync(sync)
                    .view(view)
                    .build()
                    .unwrap()
            ),
            "two fibers share the context"
        );
        assert!(
            !owned(b().layer_async(async_mw).view(view).build().unwrap()),
            "an async layer after the fiber carries the context on"
        );
        assert!(
            !owned(Pipeline::builder().view(view).build().unwrap()),
            "no fiber"
        );
        for mode in [Mode::Adapt, Mode::ThreadHop] {
            assert!(
                !owned(b().mode(mode).view(view).build().unwrap()),
                "{mode:?}: held threads and hops get the shared context"
            );
        }
    }
}
