//! The built chain: layers, their grouping into segments, and how a request
//! walks them.
//!
//! A *segment* is either a maximal run of consecutive sync middleware (run on
//! one fiber per request), one async middleware, or the view. The request
//! enters segment 0; each segment hands the request to the next one:
//!
//! ```text
//! [Sync a b] -> [Async c] -> [Sync d] -> [View]
//!  fiber #1      executor     fiber #2    executor
//! ```

use std::sync::Arc;

use tracing::Span;

use crate::body::{Request, Response};
use crate::coro;
use crate::driver::SegmentFuture;
use crate::middleware::{AsyncMiddleware, LocalBoxFuture, SyncMiddleware, View};
use crate::next::{AsyncNext, Next};
use crate::panic::{catch_sync, CatchPanic, PanicHandler};
use crate::stack_pool::StackPool;

/// One middleware of the chain.
pub(crate) enum Layer {
    Sync(Box<dyn SyncMiddleware>),
    Async(Box<dyn AsyncMiddleware>),
}

pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) layer: Layer,
}

/// A step of a request's path through the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Sync middleware `start..end`, on one fiber.
    Sync { start: usize, end: usize },
    /// The async middleware at this index.
    Async(usize),
    /// The view.
    View,
}

/// Groups layers into segments.
pub(crate) fn plan(entries: &[Entry]) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        match entries[i].layer {
            Layer::Async(_) => {
                segments.push(Segment::Async(i));
                i += 1;
            }
            Layer::Sync(_) => {
                let start = i;
                while i < entries.len() && matches!(entries[i].layer, Layer::Sync(_)) {
                    i += 1;
                }
                segments.push(Segment::Sync { start, end: i });
            }
        }
    }
    segments.push(Segment::View);
    segments
}

/// Everything a request needs, shared by all requests of a pipeline.
pub(crate) struct Chain {
    pub(crate) entries: Vec<Entry>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) view: Box<dyn View>,
    pub(crate) view_name: String,
    pub(crate) pool: StackPool,
    pub(crate) panic_handler: PanicHandler,
}

impl Chain {
    /// The future that runs segment `seg` (and, through it, all inner ones).
    pub(crate) fn run_segment(
        chain: &Arc<Chain>,
        seg: usize,
        req: Request,
    ) -> LocalBoxFuture<'static, Response> {
        match chain.segments[seg] {
            Segment::Sync { start, end } => {
                Box::pin(SegmentFuture::new(chain.clone(), seg, start, end, req))
            }
            Segment::Async(i) => {
                let chain = chain.clone();
                Box::pin(async move {
                    let entry = &chain.entries[i];
                    let Layer::Async(mw) = &entry.layer else {
                        unreachable!("plan put a sync layer in an async segment")
                    };
                    let span = tracing::debug_span!("middleware", name = %entry.name, kind = "async");
                    let next = AsyncNext::new(chain.clone(), seg + 1);
                    let fut = tracing::Instrument::instrument(mw.call(req, next), span);
                    CatchPanic::new(Box::pin(fut), &chain.panic_handler, &entry.name).await
                })
            }
            Segment::View => {
                let chain = chain.clone();
                Box::pin(async move {
                    let fut = chain.view.call(req);
                    CatchPanic::new(fut, &chain.panic_handler, &chain.view_name).await
                })
            }
        }
    }

    /// Calls sync middleware `pos` (of a segment ending at `end`) on the
    /// current fiber, inside its span, turning a panic into a response.
    pub(crate) fn call_sync(&self, pos: usize, end: usize, req: Request) -> Response {
        let entry = &self.entries[pos];
        let Layer::Sync(mw) = &entry.layer else {
            unreachable!("plan put an async layer in a sync segment")
        };
        let span = tracing::debug_span!("middleware", name = %entry.name, kind = "sync");
        let _span = FiberSpan::enter(span);
        let mut next = Next::new(self, pos + 1, end);
        catch_sync(&self.panic_handler, &entry.name, || mw.call(req, &mut next))
    }
}

/// A span entered on the current fiber: exited while the fiber is suspended
/// and re-entered when it resumes, so it never covers another request.
struct FiberSpan;

impl FiberSpan {
    fn enter(span: Span) -> FiberSpan {
        coro::with_current(|ctx| ctx.push_span(span));
        FiberSpan
    }
}

impl Drop for FiberSpan {
    fn drop(&mut self) {
        coro::with_current(|ctx| ctx.pop_span());
    }
}
