//! What users build: `Pipeline` and its builder, the middleware and view
//! traits, hook middleware and decorators, the plan (`Mode`, `Exec`,
//! `Capabilities`) and build errors.

pub(crate) mod builder;
pub(crate) mod decorators;
pub(crate) mod error;
pub(crate) mod hooks;
pub(crate) mod middleware;
pub(crate) mod mode;
pub(crate) mod plan;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::bridge::span::InSpan;

use crate::body::{Request, Response};
use crate::exec::chain::Chain;
use crate::exec::fiber_segment::FiberSegmentFuture;
use crate::exec::request::RequestCtx;
use crate::exec::watchdog::StallStats;
use crate::future::LocalBoxFuture;
use crate::pipeline::builder::PipelineBuilder;
use crate::pipeline::mode::Mode;
use crate::pipeline::plan::{Plan, Segment};
use crate::stack::{PoolStats, StackPool};

/// A built middleware chain around a view. Cheap to clone (an `Arc`).
///
/// `Pipeline` is `Send + Sync`, but the future of [`Pipeline::handle`] is
/// not `Send`: fibers never move between threads. Run it on a
/// current-thread runtime, inside a `tokio::task::LocalSet`, or with
/// `spawn_local`.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) chain: Arc<Chain>,
}

impl Pipeline {
    /// Starts a builder.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    pub(crate) fn from_chain(chain: Arc<Chain>) -> Self {
        Pipeline { chain }
    }

    /// Runs one request through the chain.
    ///
    /// The future is `'static` (it holds a clone of the pipeline) and
    /// `!Send`. Dropping it cancels the request: suspended sync middleware is
    /// unwound (its destructors run) and its stack returns to the pool.
    pub fn handle(&self, req: Request) -> ResponseFuture {
        let span = tracing::info_span!("request", method = %req.method(), uri = %req.uri());
        // Made now when segments share it; else the first fiber makes it
        // if its code uses a `RequestLocal` (`Chain::ctx_on_first_fiber`).
        let rctx = (!self.chain.ctx_on_first_fiber).then(RequestCtx::new);
        let inner = if !span.is_disabled() {
            Inner::Traced(InSpan::new(Chain::run_first(&self.chain, req, rctx), span))
        } else if let Some(&Segment::Fiber(layers)) = self.chain.segments.first() {
            // Nobody listens for the request's span: the first segment is
            // held by value, with neither the span's wrapper nor a box (one
            // allocation fewer per request).
            Inner::Fiber(FiberSegmentFuture::new(
                self.chain.clone(),
                0,
                layers,
                req,
                rctx,
            ))
        } else {
            Inner::Boxed(Chain::run_first(&self.chain, req, rctx))
        };
        ResponseFuture { inner }
    }

    /// Counters of the pipeline's stack pool.
    pub fn stack_stats(&self) -> PoolStats {
        self.chain.pool.stats()
    }

    /// Stalls counted by the watchdog, one entry per layer that stalled
    /// (layers outermost first, then any "one of these layers" entries of
    /// runs whose slow layer could not be told apart; see
    /// [`StallStats::layer`]).
    ///
    /// A stall is what the watchdog warns about: a fiber that ran longer
    /// than the threshold ([`PipelineBuilder::watchdog`]) without
    /// suspending, not counting time its thread waited for a CPU. Empty
    /// when the watchdog is off. The hot path stays free of system calls:
    /// counters are only touched when a stall is found.
    pub fn stall_stats(&self) -> Vec<StallStats> {
        self.chain
            .watchdog
            .as_ref()
            .map(|w| w.stats(&self.chain))
            .unwrap_or_default()
    }

    /// The pipeline's stack pool.
    pub fn stack_pool(&self) -> &StackPool {
        &self.chain.pool
    }

    /// Names of the layers, outermost first.
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.chain.entries.iter().map(|e| e.name.as_str())
    }

    /// How many fibers (fiber segments) a request passes through.
    pub fn fiber_segments(&self) -> usize {
        self.chain
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Fiber(_)))
            .count()
    }

    /// The pipeline's mode.
    pub fn mode(&self) -> Mode {
        self.chain.mode
    }

    /// The plan: each layer's execution, the segments, and the switches and
    /// hops a request costs. `Display` prints it.
    pub fn describe(&self) -> &Plan {
        &self.chain.plan
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("layers", &self.layer_names().collect::<Vec<_>>())
            .field("segments", &self.chain.segments)
            .finish()
    }
}

/// The future returned by [`Pipeline::handle`].
///
/// It is `!Send` on purpose: it owns fibers, whose stacks may hold
/// thread-bound values while suspended.
///
/// ```compile_fail
/// use suspendware::{Pipeline, Request, Response};
/// fn must_be_send<T: Send>(_: T) {}
/// let p = Pipeline::builder()
///     .view(|_r: Request| async { Response::new(Default::default()) })
///     .build()
///     .unwrap();
/// must_be_send(p.handle(Request::new(Default::default())));
/// ```
///
/// The pipeline itself is shared freely between threads:
///
/// ```
/// fn send_sync<T: Send + Sync + Clone + 'static>() {}
/// send_sync::<suspendware::Pipeline>();
/// ```
pub struct ResponseFuture {
    inner: Inner,
}

/// What a [`ResponseFuture`] runs.
enum Inner {
    /// The first segment, a fiber segment, by value (no request span).
    Fiber(FiberSegmentFuture),
    /// The first segment of another kind (no request span).
    Boxed(LocalBoxFuture<'static, Response>),
    /// The request's span is enabled: the first segment inside it.
    Traced(InSpan<LocalBoxFuture<'static, Response>>),
}

impl Future for ResponseFuture {
    type Output = Response;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        // One level deeper: polled from another request's sync code (a
        // nested pipeline), its async code does not see that request's
        // `RequestLocal`s (`exec::request::PipelinePoll`).
        let _pipeline = crate::exec::request::PipelinePoll::enter();
        match &mut self.inner {
            Inner::Fiber(f) => Pin::new(f).poll(cx),
            Inner::Boxed(f) => f.as_mut().poll(cx),
            Inner::Traced(f) => Pin::new(f).poll(cx),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
