//! The execution modes the harness compares, and how each one handles a
//! request. Adding a mode is a variant here plus one arm in `Handler::new`
//! (or, for a mode that needs the multi-thread runtime, in `cell.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use suspendware::{Body, Pipeline, Request, Response};
use tower::layer::util::Stack;
use tower::util::{MapRequestLayer, MapResponseLayer};
use tower::{ServiceBuilder, ServiceExt};

use crate::common::{self, run_layers, Flavor, ThreadHold, ViewKind};

/// A way of running K sync middleware around an async view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// suspendware's default: sync middleware on fibers, one thread.
    Suspend,
    /// suspendware with the shape of the `stackful` mode: the same sync
    /// middleware on a fiber, and the view awaited *on the fiber* with
    /// `suspendware::wait` inside a sync view (its future on the fiber
    /// stack, no hand-off of the request and response at the suspension).
    SuspendWait,
    /// The same logic as suspendware *async* middleware (`layer_async`):
    /// no fibers, but suspendware's per-layer machinery (boxed futures,
    /// panic boundary, request context). Called `native_async` before.
    SuspendwareAsync,
    /// The same logic as plain tower middleware (`map_request` +
    /// `map_response` per layer, unboxed futures) in a `ServiceBuilder`
    /// around the view: no suspendware at all, the native floor.
    Tower,
    /// The `stackful` crate (0.1): the same sync chain inside
    /// `stackful::stackful`, the view awaited with `stackful::wait`.
    Stackful,
    /// tokio's `block_in_place` on a multi-thread runtime (default workers,
    /// 512 blocking threads at most): each client task runs the sync chain
    /// in `block_in_place`, the view with `Handle::block_on`.
    BlockInPlace,
    /// One std thread per request running the same sync chain; the view
    /// is driven from that thread with `Handle::block_on` (the runtime's
    /// own thread drives the timers). The classic legacy deployment.
    Threads,
    /// `Mode::Adapt`: each request's sync middleware holds a blocking-pool
    /// thread while the view runs (asgiref's `sync_to_async` model).
    Adapt,
    /// `Mode::ThreadHop` with the same logic as hook middleware: every hook
    /// is its own hop to the blocking pool (Django 3.1's ASGI model).
    ThreadHop,
    /// A hand-made thread-hold chain (`spawn_blocking` + channel), a
    /// cross-check of `Adapt`; not run unless asked for.
    ThreadHold,
    /// Blocking workload (`--blocking-ms B`, see `blocking.rs`): the middle
    /// layer's sleep inline on the fiber (unmodified legacy code).
    BlkInline,
    /// Blocking workload: the sleep in `suspendware::blocking`, the
    /// pipeline's default blocking-pool cap.
    BlkBlocking,
    /// Blocking workload: as `BlkBlocking` with `blocking_threads(64)` set
    /// explicitly.
    BlkThreads64,
    /// Blocking workload: as `BlkBlocking` with `blocking_threads(512)`
    /// (tokio's own cap; close to `blocking` before the cap existed). Not
    /// run unless asked for.
    BlkThreads512,
    /// Blocking workload: the blocking layer added with `sync_on_thread`,
    /// its sleep inline on its own thread.
    BlkOnThread,
    /// Blocking workload: the whole pipeline in `Mode::Adapt`, the sleep
    /// inline on the held thread.
    BlkAdapt,
}

impl Mode {
    /// Every mode, in the order they are reported.
    pub const ALL: &'static [Mode] = &[
        Mode::Suspend,
        Mode::SuspendWait,
        Mode::Tower,
        Mode::Stackful,
        Mode::BlockInPlace,
        Mode::Threads,
        Mode::SuspendwareAsync,
        Mode::Adapt,
        Mode::ThreadHop,
        Mode::ThreadHold,
        Mode::BlkInline,
        Mode::BlkBlocking,
        Mode::BlkThreads64,
        Mode::BlkThreads512,
        Mode::BlkOnThread,
        Mode::BlkAdapt,
    ];

    /// The blocking-workload modes, run when `--blocking-ms` is given
    /// without `--modes`.
    pub const BLOCKING: &'static [Mode] = &[
        Mode::BlkInline,
        Mode::BlkBlocking,
        Mode::BlkThreads64,
        Mode::BlkOnThread,
        Mode::BlkAdapt,
    ];

    /// The modes run when `--modes` is not given.
    pub const DEFAULT: &'static [Mode] = &[
        Mode::Suspend,
        Mode::Tower,
        Mode::Stackful,
        Mode::BlockInPlace,
        Mode::Threads,
        Mode::SuspendwareAsync,
        Mode::Adapt,
        Mode::ThreadHop,
    ];

    /// The name used on the command line and in the outputs.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Suspend => "suspend",
            Mode::SuspendWait => "suspend_wait",
            Mode::SuspendwareAsync => "suspendware_async",
            Mode::Tower => "tower",
            Mode::Stackful => "stackful",
            Mode::BlockInPlace => "block_in_place",
            Mode::Threads => "threads",
            Mode::Adapt => "adapt",
            Mode::ThreadHop => "thread_hop",
            Mode::ThreadHold => "thread_hold",
            Mode::BlkInline => "blk_inline",
            Mode::BlkBlocking => "blk_blocking",
            Mode::BlkThreads64 => "blk_threads64",
            Mode::BlkThreads512 => "blk_threads512",
            Mode::BlkOnThread => "blk_on_thread",
            Mode::BlkAdapt => "blk_adapt",
        }
    }

    /// Parses a name given by `name` (`native_async`, the old name of
    /// `suspendware_async`, is still accepted, e.g. in old `runs.csv`).
    pub fn parse(s: &str) -> Option<Mode> {
        if s == "native_async" {
            return Some(Mode::SuspendwareAsync);
        }
        Mode::ALL.iter().copied().find(|m| m.name() == s)
    }

    /// Whether the cell runs on tokio's multi-thread runtime (with `Send`
    /// client tasks) instead of a current-thread runtime and a `LocalSet`.
    pub fn multi_thread(self) -> bool {
        self == Mode::BlockInPlace
    }
}

/// A current-thread runtime and a `LocalSet` to run the `!Send` modes on
/// (every mode but `block_in_place`).
pub fn local_runtime() -> (tokio::runtime::Runtime, tokio::task::LocalSet) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    (rt, tokio::task::LocalSet::new())
}

/// `MODE K D_MS X` (the arguments of `--profile` and `--serve`): a mode
/// that runs on [`local_runtime`], the number of layers, the view's delay,
/// and a fourth number.
pub fn mode_k_d_and<T: std::str::FromStr>(a: &[String]) -> Option<(Mode, usize, u64, T)> {
    let mode = Mode::parse(a.first()?)?;
    if mode.multi_thread() {
        return None;
    }
    Some((
        mode,
        a.get(1)?.parse().ok()?,
        a.get(2)?.parse().ok()?,
        a.get(3)?.parse().ok()?,
    ))
}

type BoxFut = Pin<Box<dyn Future<Output = Response>>>;
type TowerFn = Rc<dyn Fn(Request) -> BoxFut>;

/// What the load generator calls for each request: built inside the child's
/// runtime, used on its thread.
pub enum Handler {
    /// A suspendware pipeline (its futures are `!Send`).
    Pipeline(Pipeline),
    /// The hand-made thread-hold chain.
    ThreadHold(ThreadHold),
    /// A tower `ServiceBuilder` chain (cloned per request, as axum does).
    Tower(TowerFn),
    /// The `stackful` crate around the sync chain.
    Stackful { k: usize, view: ViewKind },
    /// A std thread per request.
    Threads {
        k: usize,
        view: ViewKind,
        rt: tokio::runtime::Handle,
    },
}

impl Handler {
    /// The handler of `mode` for `k` working layers around `view`. Must be
    /// called inside the runtime that will run the requests. Not for
    /// `Mode::BlockInPlace` (see [`block_in_place_request`]). `blocking_ms`
    /// is used by the blocking-workload modes only.
    pub fn new(mode: Mode, k: usize, view: ViewKind, blocking_ms: u64) -> Handler {
        match mode {
            Mode::BlkInline
            | Mode::BlkBlocking
            | Mode::BlkThreads64
            | Mode::BlkThreads512
            | Mode::BlkOnThread
            | Mode::BlkAdapt => {
                Handler::Pipeline(crate::blocking::pipeline(mode, k, blocking_ms, view))
            }
            Mode::Suspend => Handler::Pipeline(common::pipeline(Flavor::Suspend, k, true, view)),
            Mode::SuspendWait => {
                Handler::Pipeline(common::pipeline(Flavor::SuspendWait, k, true, view))
            }
            Mode::SuspendwareAsync => {
                Handler::Pipeline(common::pipeline(Flavor::Async, k, true, view))
            }
            Mode::Adapt => Handler::Pipeline(common::pipeline(Flavor::Adapt, k, true, view)),
            Mode::ThreadHop => {
                Handler::Pipeline(common::pipeline(Flavor::ThreadHop, k, true, view))
            }
            Mode::ThreadHold => Handler::ThreadHold(ThreadHold::new(k, true, view)),
            Mode::Tower => Handler::Tower(tower_chain(k, view)),
            Mode::Stackful => Handler::Stackful { k, view },
            Mode::Threads => Handler::Threads {
                k,
                view,
                rt: tokio::runtime::Handle::current(),
            },
            Mode::BlockInPlace => unreachable!("block_in_place runs on the multi-thread path"),
        }
    }

    /// Starts one request.
    pub fn handle(&self, req: Request) -> BoxFut {
        match self {
            Handler::Pipeline(p) => Box::pin(p.handle(req)),
            Handler::ThreadHold(h) => Box::pin(h.handle(req)),
            Handler::Tower(t) => t(req),
            &Handler::Stackful { k, view } => {
                Box::pin(CatchPanic(Box::pin(stackful::stackful(move || {
                    run_layers(k, true, req, &mut |r| stackful::wait(view.run(r)))
                }))))
            }
            Handler::Threads { k, view, rt } => thread_per_request(*k, *view, rt.clone(), req),
        }
    }

    /// The pipeline, when there is one (for its stack-pool counters).
    pub fn pipeline(&self) -> Option<&Pipeline> {
        match self {
            Handler::Pipeline(p) => Some(p),
            _ => None,
        }
    }
}

/// A response with `status` (the client counts anything but 200 as an error).
fn status(code: http::StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

/// A panic while polling becomes a 500 (the `stackful` crate panics when it
/// cannot map a stack, e.g. at the `vm.max_map_count` limit).
struct CatchPanic(BoxFut);

impl Future for CatchPanic {
    type Output = Response;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(_) => Poll::Ready(status(http::StatusCode::INTERNAL_SERVER_ERROR)),
        }
    }
}

/// `Mode::Threads`: a new std thread (default 2 MiB stack) runs the sync
/// chain; it waits for the view with `Handle::block_on` and sends the
/// response back. If the thread cannot be spawned (thread or map limits),
/// the request fails with 503 after 1 ms (no busy loop of failures).
fn thread_per_request(
    k: usize,
    view: ViewKind,
    rt: tokio::runtime::Handle,
    req: Request,
) -> BoxFut {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().spawn(move || {
        let resp = run_layers(k, true, req, &mut |r| rt.block_on(view.run(r)));
        let _ = tx.send(resp);
    });
    match spawned {
        Ok(_detached) => Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| status(http::StatusCode::INTERNAL_SERVER_ERROR))
        }),
        Err(_) => Box::pin(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            status(http::StatusCode::SERVICE_UNAVAILABLE)
        }),
    }
}

/// `Mode::BlockInPlace`: the sync chain inside `block_in_place` on the
/// calling worker thread (which hands its core to another thread), the
/// view driven with `Handle::block_on`. Must run in a task of a
/// multi-thread runtime.
pub async fn block_in_place_request(k: usize, view: ViewKind, req: Request) -> Response {
    tokio::task::block_in_place(move || {
        let rt = tokio::runtime::Handle::current();
        run_layers(k, true, req, &mut |r| rt.block_on(view.run(r)))
    })
}

fn tower_pre(req: Request) -> Request {
    common::pre(true, &req);
    req
}

fn tower_post(mut resp: Response) -> Response {
    common::post(true, &mut resp);
    resp
}

type WorkLayer =
    Stack<MapRequestLayer<fn(Request) -> Request>, MapResponseLayer<fn(Response) -> Response>>;

/// One working layer as plain tower middleware: read a request header on
/// the way in, append a response header on the way out; both unboxed.
fn work_layer() -> WorkLayer {
    Stack::new(
        MapRequestLayer::new(tower_pre as fn(Request) -> Request),
        MapResponseLayer::new(tower_post as fn(Response) -> Response),
    )
}

/// `k` working tower layers around the view, built with `ServiceBuilder`;
/// one box per request at the top (as every mode's handler has).
macro_rules! tower_chain {
    ($view:expr; $($i:literal)*) => {{
        let view: ViewKind = $view;
        let svc = ServiceBuilder::new()
            $(.layer({ let _ = $i; work_layer() }))*
            .service(tower::service_fn(move |req: Request| async move {
                Ok::<_, Infallible>(view.run(req).await)
            }));
        erase(svc)
    }};
}

fn erase<S>(svc: S) -> TowerFn
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + 'static,
    S::Future: 'static,
{
    Rc::new(move |req: Request| -> BoxFut {
        let svc = svc.clone();
        Box::pin(async move {
            match svc.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        })
    })
}

/// The tower chain for `k` in 0..=10 (tower chains are types, so each K
/// is its own instantiation).
fn tower_chain(k: usize, view: ViewKind) -> TowerFn {
    match k {
        0 => tower_chain!(view;),
        1 => tower_chain!(view; 1),
        2 => tower_chain!(view; 1 2),
        3 => tower_chain!(view; 1 2 3),
        4 => tower_chain!(view; 1 2 3 4),
        5 => tower_chain!(view; 1 2 3 4 5),
        6 => tower_chain!(view; 1 2 3 4 5 6),
        7 => tower_chain!(view; 1 2 3 4 5 6 7),
        8 => tower_chain!(view; 1 2 3 4 5 6 7 8),
        9 => tower_chain!(view; 1 2 3 4 5 6 7 8 9),
        10 => tower_chain!(view; 1 2 3 4 5 6 7 8 9 10),
        _ => panic!("tower mode: --k {k} not supported (0..=10)"),
    }
}
