//! What the benches share: the middleware logic, the view, and the chain
//! built in each mode from them, so every mode runs the same work.
//!
//! A layer's logic is `pre` on the way in and `post` on the way out. With
//! `work = false` a layer is a pure pass-through (micro benches measure the
//! framework alone); with `work = true` it reads a request header and appends
//! a response header (the compare harness's "K sync middleware").
#![allow(dead_code)] // each bench uses part of it

use std::future::Future;
use std::hint::black_box;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, HOST};
use suspendware::hooks::{HookMiddleware, RequestHead};
use suspendware::plan::Capabilities;
use suspendware::{
    AsyncNext, Body, LocalBoxFuture, Middleware, Mode, Next, Pipeline, PipelineBuilder, Request,
    Response,
};

/// The header each working layer appends to the response.
pub const X_MW: HeaderName = HeaderName::from_static("x-mw");

/// What the view does before answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    /// Answers at once (the future is ready on first poll).
    Instant,
    /// Yields to the executor once, then answers: every request is really
    /// in flight (suspended) at the same time, with no timer involved.
    Yield,
    /// Awaits a tokio timer of this length.
    Sleep(Duration),
}

impl ViewKind {
    /// The compare harness's view for a delay of `ms`: `0` yields once.
    pub fn from_ms(ms: u64) -> ViewKind {
        if ms == 0 {
            ViewKind::Yield
        } else {
            ViewKind::Sleep(Duration::from_millis(ms))
        }
    }

    /// Runs the view (a `Send` future, so thread-based modes can spawn it).
    pub async fn run(self, req: Request) -> Response {
        match self {
            ViewKind::Instant => {}
            ViewKind::Yield => tokio::task::yield_now().await,
            ViewKind::Sleep(d) => tokio::time::sleep(d).await,
        }
        drop(req);
        Response::new(Body::from("ok"))
    }
}

/// A request as every mode receives it.
pub fn request() -> Request {
    let mut req = Request::new(Body::empty());
    req.headers_mut()
        .insert(HOST, HeaderValue::from_static("bench.local"));
    req
}

/// The inbound half of a layer.
#[inline]
pub fn pre(work: bool, req: &Request) {
    if work {
        black_box(req.headers().get(HOST));
    }
}

/// The outbound half of a layer.
#[inline]
pub fn post(work: bool, resp: &mut Response) {
    if work {
        resp.headers_mut()
            .append(X_MW, HeaderValue::from_static("1"));
    }
}

/// One sync layer around `next`, for the modes that run plain functions.
#[inline]
pub fn sync_layer(work: bool, req: Request, next: impl FnOnce(Request) -> Response) -> Response {
    pre(work, &req);
    let mut resp = next(req);
    post(work, &mut resp);
    resp
}

/// Adds `k` blocking-style layers (suspendware `SyncMiddleware`).
pub fn add_sync_layers(mut b: PipelineBuilder, k: usize, work: bool) -> PipelineBuilder {
    for i in 0..k {
        let mw =
            move |req: Request, next: &mut Next| sync_layer(work, req, |r| next.get_response(r));
        b = b.sync(suspendware::named(format!("sync{i}"), mw));
    }
    b
}

/// Adds `k` boxed async layers (suspendware `AsyncMiddleware`) with the same
/// logic: native async, the floor.
pub fn add_async_layers(mut b: PipelineBuilder, k: usize, work: bool) -> PipelineBuilder {
    for i in 0..k {
        let mw = move |req: Request, next: AsyncNext| async move {
            pre(work, &req);
            let mut resp = next.run(req).await;
            post(work, &mut resp);
            resp
        };
        b = b.layer_async(suspendware::named(format!("async{i}"), mw));
    }
    b
}

/// The same logic as Django-style hook middleware: `pre` in
/// `process_request`, `post` in `process_response`.
pub struct HookLayer {
    work: bool,
}

impl HookMiddleware for HookLayer {
    fn process_request(&self, req: &mut Request) -> Option<Response> {
        pre(self.work, req);
        None
    }
    fn process_response(&self, _head: &RequestHead, mut resp: Response) -> Response {
        post(self.work, &mut resp);
        resp
    }
    fn name(&self) -> &str {
        "hook"
    }
}

/// Adds `k` hook middleware.
pub fn add_hook_layers(mut b: PipelineBuilder, k: usize, work: bool) -> PipelineBuilder {
    for _ in 0..k {
        b = b.hooks(HookLayer { work });
    }
    b
}

/// The same logic as a hybrid (sync and async implementations; the planner
/// picks one per pipeline).
pub struct HybridLayer {
    work: bool,
}

impl Middleware for HybridLayer {
    fn capabilities(&self) -> Capabilities {
        Capabilities::BOTH
    }
    fn call_sync(&self, req: Request, next: &mut Next<'_>) -> Response {
        sync_layer(self.work, req, |r| next.get_response(r))
    }
    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            pre(self.work, &req);
            let mut resp = next.run(req).await;
            post(self.work, &mut resp);
            resp
        })
    }
    fn name(&self) -> &str {
        "hybrid"
    }
}

/// How a pipeline's middleware is written and run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Sync middleware, suspended on fibers (the default `Mode::Suspend`).
    Suspend,
    /// Sync middleware on a fiber, and the view awaited on that fiber with
    /// `suspendware::wait` from a sync view (the `stackful` crate's shape).
    SuspendWait,
    /// The same logic as async middleware.
    Async,
    /// Sync middleware in `Mode::Adapt` (a blocking-pool thread held per
    /// request while the view runs).
    Adapt,
    /// Hook middleware in `Mode::ThreadHop` (each hook one hop to the
    /// blocking pool, Django 3.1's model).
    ThreadHop,
    /// Hook middleware in `Mode::Suspend` (hooks run on the fiber).
    SuspendHooks,
    /// Hybrid middleware (sync + async implementations), default mode.
    Hybrid,
    /// Sync and async middleware alternating (sync first), default mode:
    /// the worst case for switches, one fiber per sync layer.
    Alternating,
}

/// `k` layers of `flavor` around the view.
pub fn pipeline(flavor: Flavor, k: usize, work: bool, view: ViewKind) -> Pipeline {
    pipeline_with_stack(flavor, k, work, view, None)
}

/// [`pipeline`] with a fiber stack size (bytes; `None`: the default).
pub fn pipeline_with_stack(
    flavor: Flavor,
    k: usize,
    work: bool,
    view: ViewKind,
    stack: Option<usize>,
) -> Pipeline {
    let mut b = Pipeline::builder();
    if let Some(bytes) = stack {
        b = b.stack_size(bytes);
    }
    let b = match flavor {
        Flavor::Suspend | Flavor::SuspendWait => add_sync_layers(b, k, work),
        Flavor::Async => add_async_layers(b, k, work),
        Flavor::Adapt => add_sync_layers(b, k, work).mode(Mode::Adapt),
        Flavor::ThreadHop => add_hook_layers(b, k, work).mode(Mode::ThreadHop),
        Flavor::SuspendHooks => add_hook_layers(b, k, work),
        Flavor::Hybrid => (0..k).fold(b, |b, _| b.middleware(HybridLayer { work })),
        Flavor::Alternating => (0..k).fold(b, |b, i| {
            if i % 2 == 0 {
                add_sync_layers(b, 1, work)
            } else {
                add_async_layers(b, 1, work)
            }
        }),
    };
    let b = if flavor == Flavor::SuspendWait {
        b.sync_view(move |req: Request| suspendware::wait(view.run(req)))
    } else {
        b.view(move |req: Request| view.run(req))
    };
    b.build().expect("bench pipeline builds")
}

/// The thread-hold baseline (the asgiref / `spawn_blocking` model):
/// each request's `k` sync layers run on one blocking-pool thread, which
/// blocks on a channel while the async view runs on the runtime.
///
/// A hand-made cross-check of `Mode::Adapt` (no admission control, no
/// request context): it must be created inside a tokio runtime (it keeps
/// the runtime's handle to spawn the view).
#[derive(Clone, Debug)]
pub struct ThreadHold {
    k: usize,
    work: bool,
    view: ViewKind,
    rt: tokio::runtime::Handle,
}

impl ThreadHold {
    /// `k` layers around `view`, on the current runtime's blocking pool.
    pub fn new(k: usize, work: bool, view: ViewKind) -> ThreadHold {
        ThreadHold {
            k,
            work,
            view,
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Handles one request (a `Send` future).
    pub fn handle(&self, req: Request) -> impl Future<Output = Response> + Send + 'static {
        let this = self.clone();
        async move {
            let task = tokio::task::spawn_blocking(move || {
                let mut inner = |req: Request| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    let view = this.view;
                    this.rt.spawn(async move {
                        let _ = tx.send(view.run(req).await);
                    });
                    rx.blocking_recv().expect("the view task was dropped")
                };
                run_layers(this.k, this.work, req, &mut inner)
            });
            task.await.expect("thread-hold task panicked")
        }
    }
}

pub fn run_layers(
    left: usize,
    work: bool,
    req: Request,
    inner: &mut dyn FnMut(Request) -> Response,
) -> Response {
    if left == 0 {
        return inner(req);
    }
    sync_layer(work, req, |r| run_layers(left - 1, work, r, inner))
}
