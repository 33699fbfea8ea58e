//! Micro benches: what one coroutine switch, one fiber lifecycle and one
//! request through K layers cost in each mode.
//!
//! `cargo bench --bench micro` (add `-- --quick` for a fast pass, or a
//! filter such as `-- request/5`). Results are described in BENCHMARKS.md.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corosensei::{Coroutine, Yielder};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use suspendware::stack::{StackPool, DEFAULT_STACK_SIZE};
use suspendware::{Next, Pipeline, Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};

use common::{Flavor, ThreadHold, ViewKind};

const LAYERS: [usize; 3] = [1, 5, 10];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Times `iters` sequential calls of `one` inside one `block_on`, so the
/// runtime's entry cost is not part of the figure.
fn timed_loop<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, mut one: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Response>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(one().await);
        }
        start.elapsed()
    })
}

/// A corosensei coroutine resumed and suspended once: the raw switch pair.
fn raw_switch(c: &mut Criterion) {
    let mut co: Coroutine<(), (), ()> = Coroutine::new(|y: &Yielder<(), ()>, ()| loop {
        y.suspend(());
    });
    c.bench_function("switch/corosensei_resume_suspend", |b| {
        b.iter(|| black_box(co.resume(())))
    });
}

/// One fiber started, run to completion and its stack given back: from the
/// pool, or mapped and unmapped each time.
fn lifecycle(c: &mut Criterion) {
    let pool = StackPool::new(DEFAULT_STACK_SIZE, 4, Duration::ZERO);
    let mut g = c.benchmark_group("fiber_lifecycle");
    g.bench_function("pooled_stack", |b| {
        b.iter(|| suspendware::__bench::fiber_lifecycle_pooled(&pool))
    });
    // The floor: corosensei alone on one reused stack (no pool accounting,
    // no thread-local bookkeeping, no overflow guard registration).
    let mut stack = Some(corosensei::stack::DefaultStack::new(DEFAULT_STACK_SIZE).expect("stack"));
    g.bench_function("corosensei_reused_stack", |b| {
        b.iter(|| {
            let s = stack.take().expect("stack");
            let mut co: Coroutine<(), (), u32, _> =
                Coroutine::with_stack(s, |_: &Yielder<(), ()>, ()| 7);
            black_box(co.resume(()));
            stack = Some(co.into_stack());
        })
    });
    g.bench_function("fresh_mmap_stack", |b| {
        b.iter(|| suspendware::__bench::fiber_lifecycle_fresh(DEFAULT_STACK_SIZE))
    });
    g.finish();
}

/// A pass-through tower layer: the service's future is the inner future
/// (what a hand-written tower middleware compiles to at best).
#[derive(Clone, Copy)]
struct PassLayer;

#[derive(Clone)]
struct Pass<S>(S);

impl<S> tower::Layer<S> for PassLayer {
    type Service = Pass<S>;
    fn layer(&self, inner: S) -> Pass<S> {
        Pass(inner)
    }
}

impl<S: Service<Request, Response = Response>> Service<Request> for Pass<S> {
    type Response = Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, req: Request) -> S::Future {
        self.0.call(req)
    }
}

/// `K` pass-through layers around an instant `service_fn` view.
macro_rules! tower_chain {
    ($($i:literal)*) => {
        ServiceBuilder::new()
            $(.layer({ let _ = $i; PassLayer }))*
            .service(tower::service_fn(|req: Request| async move {
                Ok::<_, Infallible>(ViewKind::Instant.run(req).await)
            }))
    };
}

fn bench_tower<S>(rt: &tokio::runtime::Runtime, iters: u64, mut svc: S) -> Duration
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let ready = svc.ready().await.expect("infallible");
            black_box(ready.call(common::request()).await.expect("infallible"));
        }
        start.elapsed()
    })
}

/// One request through K pass-through layers around an instant view.
fn per_request(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("request");
    // K=0: building the request and calling the instant view, which every
    // mode below pays too.
    g.bench_with_input(BenchmarkId::new("bare_view", 0), &0, |b, _| {
        b.iter_custom(|n| timed_loop(&rt, n, || ViewKind::Instant.run(common::request())))
    });
    for k in LAYERS {
        let sync = common::pipeline(Flavor::Suspend, k, false, ViewKind::Instant);
        g.bench_with_input(BenchmarkId::new("suspend_sync", k), &k, |b, _| {
            b.iter_custom(|n| timed_loop(&rt, n, || sync.handle(common::request())))
        });
        let asy = common::pipeline(Flavor::Async, k, false, ViewKind::Instant);
        g.bench_with_input(BenchmarkId::new("async_boxed", k), &k, |b, _| {
            b.iter_custom(|n| timed_loop(&rt, n, || asy.handle(common::request())))
        });
        g.bench_with_input(BenchmarkId::new("tower_unboxed", k), &k, |b, &k| {
            b.iter_custom(|n| match k {
                1 => bench_tower(&rt, n, tower_chain!(1)),
                5 => bench_tower(&rt, n, tower_chain!(1 2 3 4 5)),
                10 => bench_tower(&rt, n, tower_chain!(1 2 3 4 5 6 7 8 9 10)),
                _ => unreachable!("no tower chain for k={k}"),
            })
        });
        for (name, flavor) in [
            ("adapt", Flavor::Adapt),
            ("thread_hop_hooks", Flavor::ThreadHop),
            ("suspend_hooks", Flavor::SuspendHooks),
            ("hybrid", Flavor::Hybrid),
            ("alternating_sync_async", Flavor::Alternating),
        ] {
            let p = common::pipeline(flavor, k, false, ViewKind::Instant);
            g.bench_with_input(BenchmarkId::new(name, k), &k, |b, _| {
                b.iter_custom(|n| timed_loop(&rt, n, || p.handle(common::request())))
            });
        }
        let hold = rt.block_on(async { ThreadHold::new(k, false, ViewKind::Instant) });
        g.bench_with_input(
            BenchmarkId::new("thread_hold_spawn_blocking", k),
            &k,
            |b, _| b.iter_custom(|n| timed_loop(&rt, n, || hold.handle(common::request()))),
        );
    }
    g.finish();
}

/// How many times the measuring middleware repeats its operation, and how
/// long that took (the middleware runs on a fiber, so it times itself).
static ITERS: AtomicU64 = AtomicU64::new(0);
static NANOS: AtomicU64 = AtomicU64::new(0);

/// A pipeline whose one sync middleware runs `op` `ITERS` times on its
/// fiber and records the time in `NANOS`.
fn op_pipeline(op: fn()) -> Pipeline {
    Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let n = ITERS.load(Ordering::Relaxed);
            let start = Instant::now();
            for _ in 0..n {
                op();
            }
            NANOS.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            next.get_response(req)
        })
        .view(|req: Request| ViewKind::Instant.run(req))
        .build()
        .expect("bench pipeline builds")
}

fn on_fiber(rt: &tokio::runtime::Runtime, p: &Pipeline, iters: u64) -> Duration {
    ITERS.store(iters, Ordering::Relaxed);
    black_box(rt.block_on(p.handle(common::request())));
    Duration::from_nanos(NANOS.load(Ordering::Relaxed))
}

/// `wait()` and `blocking()` from sync code on a fiber.
fn bridge(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("bridge");
    let ready = op_pipeline(|| {
        black_box(suspendware::wait(std::future::ready(black_box(1u32))));
    });
    g.bench_function("wait_ready_future", |b| {
        b.iter_custom(|n| on_fiber(&rt, &ready, n))
    });
    // Pending once: the fiber suspends, the task is re-polled by the
    // runtime, the driver resumes the fiber (a full suspend/resume cycle).
    let yielding = op_pipeline(|| suspendware::wait(tokio::task::yield_now()));
    g.bench_function("wait_yield_once", |b| {
        b.iter_custom(|n| on_fiber(&rt, &yielding, n))
    });
    let blocking = op_pipeline(|| {
        black_box(suspendware::blocking(|| black_box(1u32)));
    });
    g.bench_function("blocking_round_trip", |b| {
        b.iter_custom(|n| on_fiber(&rt, &blocking, n))
    });
    g.finish();
}

/// The Runtime's cross-thread dispatch: a caller on a multi-thread tokio
/// runtime sends a request to a worker (one worker, K=5 pass-through sync
/// layers, instant view) and awaits the `Send` reply, against the same
/// pipeline run directly on the caller's current-thread runtime.
fn runtime_dispatch(c: &mut Criterion) {
    let workers = suspendware::runtime::Runtime::builder()
        .workers(1)
        .build()
        .expect("suspendware runtime");
    let handle = workers.handle();
    let caller = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("caller runtime");
    let p = common::pipeline(Flavor::Suspend, 5, false, ViewKind::Instant);
    let mut g = c.benchmark_group("runtime");
    g.bench_function("dispatch_k5_one_worker", |b| {
        b.iter_custom(|n| {
            caller.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let resp = handle.dispatch(&p, common::request()).await;
                    black_box(resp.expect("dispatch"));
                }
                start.elapsed()
            })
        })
    });
    let local = runtime();
    g.bench_function("direct_k5_same_thread", |b| {
        b.iter_custom(|n| timed_loop(&local, n, || p.handle(common::request())))
    });
    g.finish();
    drop(workers);
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(2));
    targets = raw_switch, lifecycle, per_request, bridge, runtime_dispatch
}
criterion_main!(micro);
