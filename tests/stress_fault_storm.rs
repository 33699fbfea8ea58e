//! Fault storms on the real pipeline: thousands of requests that panic or
//! are cancelled while suspended, with every destructor, stack and blocking
//! thread accounted for.
//!
//! `cargo test --test fault_storm` (add `--release` for speed; both are
//! fast enough for CI). The stack-budget storm lives in its own binary
//! (`tests/stack_budget.rs`) because the budget is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};

use http::StatusCode;
use suspendware::{blocking, named, wait, AsyncNext, Next, Pipeline, Request, Response};
use tokio::task::JoinHandle;

/// Panics raised on purpose carry this prefix; the panic hook keeps quiet
/// about them (10,000 backtraces would drown a real failure).
const PLANNED: &str = "storm: planned panic";

fn quiet_planned_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.starts_with(PLANNED) {
                default(info);
            }
        }));
    });
}

fn runtime(blocking_threads: usize) -> Rt {
    Rt(Some(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(blocking_threads)
            .thread_name("storm-pool")
            .build()
            .unwrap(),
    ))
}

/// A runtime whose drop joins its blocking threads, so that a thread left
/// blocked hangs the test, except while a failed assertion unwinds: then
/// the runtime is shut down in the background so the failure is reported.
struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().unwrap()
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        let rt = self.0.take().unwrap();
        if std::thread::panicking() {
            rt.shutdown_background();
        } else {
            drop(rt);
        }
    }
}

fn request(id: u64) -> Request {
    let mut req = Request::new(Default::default());
    req.headers_mut().insert("x-id", id.into());
    req
}

fn id_of(req: &Request) -> u64 {
    req.headers()["x-id"].to_str().unwrap().parse().unwrap()
}

/// Appends `mark` to the response's `x-trail` header (outermost last).
fn mark(mut resp: Response, mark: &str) -> Response {
    let trail = match resp.headers().get("x-trail") {
        Some(v) => format!("{},{mark}", v.to_str().unwrap()),
        None => mark.to_owned(),
    };
    resp.headers_mut().insert("x-trail", trail.parse().unwrap());
    resp
}

// ------------------------------------------------------------ panic storm

/// The layers of the panic-storm pipeline, outermost first; index 4 is the
/// view.
const LAYERS: [&str; 5] = ["s0", "s1", "a2", "s3", "view"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Normal,
    /// Panics before calling the inner part (for the view: in the sync part
    /// of its call, before the future exists).
    Before,
    /// Panics after the inner part answered (for the view: after an await).
    After,
}

/// One call in three panics: a fixed hash of `(id, layer)` picks the
/// calls (deterministic, so the expected answer is known), alternating
/// before/after. About 13% of requests ((2/3)^5) see no panic at all.
fn fate(id: u64, layer: usize) -> Fate {
    let h = mix(id * LAYERS.len() as u64 + layer as u64);
    match (h % 3, (h / 3) % 2) {
        (0, 0) => Fate::Before,
        (0, _) => Fate::After,
        _ => Fate::Normal,
    }
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn planned_panic(id: u64, layer: usize) -> ! {
    std::panic::panic_any(format!("{PLANNED} in {} for request {id}", LAYERS[layer]))
}

/// What a plain synchronous interpreter of the chain answers: status, body,
/// trail of layers that marked the response on its way out.
fn expected(id: u64) -> (StatusCode, String, String) {
    let before = (0..LAYERS.len()).find(|&l| fate(id, l) == Fate::Before);
    let (mut status, mut body, start) = match before {
        Some(k) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("panic in {}", LAYERS[k]),
            k,
        ),
        None if fate(id, 4) == Fate::After => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "panic in view".to_owned(),
            4,
        ),
        None => (StatusCode::OK, format!("view {id}"), 4),
    };
    let mut trail: Vec<&str> = Vec::new();
    for l in (0..start).rev() {
        match fate(id, l) {
            Fate::Normal => trail.push(LAYERS[l]),
            Fate::After => {
                status = StatusCode::INTERNAL_SERVER_ERROR;
                body = format!("panic in {}", LAYERS[l]);
                trail.clear();
            }
            Fate::Before => unreachable!("the first Before layer is `start`"),
        }
    }
    (status, body, trail.join(","))
}

/// A sync middleware of the storm: suspends in `wait` (s0, s1) or in
/// `blocking` (s3) before calling on, so panics happen on fibers that have
/// been suspended and resumed.
fn storm_sync(layer: usize) -> impl Fn(Request, &mut Next) -> Response + Send + Sync + 'static {
    move |req: Request, next: &mut Next| {
        let id = id_of(&req);
        if layer == 3 {
            // The Before panic of s3 happens on a blocking-pool thread and is
            // re-raised here by `blocking`.
            let doubled = blocking(move || {
                if fate(id, 3) == Fate::Before {
                    planned_panic(id, 3);
                }
                id * 2
            });
            assert_eq!(doubled, id * 2);
        } else {
            wait(tokio::task::yield_now());
            if fate(id, layer) == Fate::Before {
                planned_panic(id, layer);
            }
        }
        let resp = next.get_response(req);
        if fate(id, layer) == Fate::After {
            planned_panic(id, layer);
        }
        mark(resp, LAYERS[layer])
    }
}

fn panic_storm_pipeline() -> Pipeline {
    Pipeline::builder()
        .sync(named("s0", storm_sync(0)))
        .sync(named("s1", storm_sync(1)))
        .layer_async(named("a2", |req: Request, next: AsyncNext| {
            let id = id_of(&req);
            if fate(id, 2) == Fate::Before {
                planned_panic(id, 2); // in the sync part of the call
            }
            async move {
                let resp = next.run(req).await;
                if fate(id, 2) == Fate::After {
                    planned_panic(id, 2);
                }
                mark(resp, "a2")
            }
        }))
        .sync(named("s3", storm_sync(3)))
        .view(named("view", |req: Request| {
            let id = id_of(&req);
            if fate(id, 4) == Fate::Before {
                planned_panic(id, 4); // before the future exists
            }
            async move {
                tokio::task::yield_now().await;
                if fate(id, 4) == Fate::After {
                    planned_panic(id, 4);
                }
                Response::new(format!("view {id}").into())
            }
        }))
        .panic_handler(|info| {
            assert!(
                info.message.starts_with(PLANNED),
                "unplanned panic: {}",
                info.message
            );
            let mut r = Response::new(format!("panic in {}", info.location).into());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
        .build()
        .unwrap()
}

/// 10,000 requests, every third middleware or view call panics (before or
/// after calling on, on fibers, on the blocking pool, in async code): each
/// request gets exactly the reference interpreter's answer, and no fiber
/// stack is left in use.
#[test]
fn panic_storm() {
    quiet_planned_panics();
    const REQUESTS: u64 = 10_000;
    const WAVE: u64 = 1_000;
    let pipeline = panic_storm_pipeline();
    let rt = runtime(8);
    let local = tokio::task::LocalSet::new();
    let (mut ok, mut failed) = (0, 0);
    local.block_on(&rt, async {
        for wave in 0..REQUESTS / WAVE {
            let handles: Vec<(u64, JoinHandle<Response>)> = (wave * WAVE..(wave + 1) * WAVE)
                .map(|id| (id, tokio::task::spawn_local(pipeline.handle(request(id)))))
                .collect();
            for (id, h) in handles {
                let resp = h
                    .await
                    .expect("a request's future panicked instead of answering");
                let (status, body, trail) = expected(id);
                let got_trail = resp
                    .headers()
                    .get("x-trail")
                    .map(|v| v.to_str().unwrap().to_owned());
                assert_eq!(resp.status(), status, "request {id}");
                assert_eq!(
                    std::str::from_utf8(resp.body().as_bytes()).unwrap(),
                    body,
                    "request {id}"
                );
                assert_eq!(got_trail.unwrap_or_default(), trail, "request {id}");
                if status == StatusCode::OK {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
        }
    });
    let stats = pipeline.stack_stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert!(stats.is_whole(), "stacks leaked: {stats:?}");
    assert_eq!(ok + failed, REQUESTS);
    // Both kinds of answers were really exercised, and roughly one call in
    // three panicked (87% of requests meet at least one panic).
    assert!(ok > 500 && failed > 5_000, "ok {ok}, failed {failed}");
    eprintln!("panic storm: {ok} answered 200, {failed} answered 500");
}

// ------------------------------------------------------ cancellation storm

#[derive(Default)]
struct Counters {
    guards_made: AtomicUsize,
    guards_dropped: AtomicUsize,
    /// Requests that reached their suspension point.
    suspended: AtomicUsize,
    blocking_started: AtomicUsize,
    blocking_finished: AtomicUsize,
    payloads_made: AtomicUsize,
    payloads_dropped: AtomicUsize,
    /// Payload drops that happened on a blocking-pool thread.
    payloads_dropped_on_pool: AtomicUsize,
}

/// Counts its drop; one lives in each frame of each request.
struct Guard(Arc<Counters>);

impl Guard {
    fn new(c: &Arc<Counters>) -> Guard {
        c.guards_made.fetch_add(1, Ordering::SeqCst);
        Guard(c.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.guards_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a `blocking()` closure returns; counts where it is dropped.
struct Payload {
    id: u64,
    counters: Arc<Counters>,
}

impl Drop for Payload {
    fn drop(&mut self) {
        self.counters
            .payloads_dropped
            .fetch_add(1, Ordering::SeqCst);
        if std::thread::current().name() == Some("storm-pool") {
            self.counters
                .payloads_dropped_on_pool
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A gate that blocking-pool threads wait at until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

fn cancel_storm_pipeline(
    c: &Arc<Counters>,
    gate: &Arc<Gate>,
    views: tokio::sync::watch::Receiver<bool>,
) -> Pipeline {
    let (c0, c1, c2, c3) = (c.clone(), c.clone(), c.clone(), c.clone());
    let gate = gate.clone();
    Pipeline::builder()
        .sync(named("outer", move |req: Request, next: &mut Next| {
            let _g = Guard::new(&c0);
            mark(next.get_response(req), "outer")
        }))
        .sync(named("blocker", move |req: Request, next: &mut Next| {
            let _g = Guard::new(&c1);
            let id = id_of(&req);
            if id.is_multiple_of(2) {
                let (c, gate) = (c1.clone(), gate.clone());
                c1.suspended.fetch_add(1, Ordering::SeqCst);
                let p = blocking(move || {
                    c.blocking_started.fetch_add(1, Ordering::SeqCst);
                    gate.pass();
                    c.payloads_made.fetch_add(1, Ordering::SeqCst);
                    c.blocking_finished.fetch_add(1, Ordering::SeqCst);
                    Payload { id, counters: c }
                });
                assert_eq!(p.id, id);
            }
            mark(next.get_response(req), "blocker")
        }))
        .layer_async(named("async", move |req: Request, next: AsyncNext| {
            let c = c2.clone();
            async move {
                let _g = Guard::new(&c);
                mark(next.run(req).await, "async")
            }
        }))
        .view(named("view", move |req: Request| {
            let c = c3.clone();
            let mut open = views.clone();
            async move {
                let _g = Guard::new(&c);
                let id = id_of(&req);
                if id % 2 == 1 {
                    c.suspended.fetch_add(1, Ordering::SeqCst);
                }
                open.wait_for(|o| *o)
                    .await
                    .expect("the test keeps the sender");
                Response::new(format!("ok {id}").into())
            }
        }))
        .build()
        .unwrap()
}

/// Polls other tasks until `done()` holds. Bounded by a number of rounds
/// (minutes at worst, it asserts nothing about speed): a stuck request fails
/// the test instead of hanging it.
async fn settle(what: &str, mut done: impl FnMut() -> bool) {
    for round in 0..1_000_000u32 {
        if done() {
            return;
        }
        if round % 100 == 99 {
            // Let blocking-pool threads (unwinding, finishing) get a core.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    panic!("{what} never happened");
}

/// 10,000 requests suspend (half in `blocking()` on a gate the pool threads
/// block at, half in an async view waiting for a signal); half of them are
/// dropped while suspended. Those waiting in the async view unwind at once;
/// those waiting for a `blocking` closure (which may borrow their frames)
/// keep their fiber and stack until the closure returns, and the thread's
/// `Reaper` unwinds them then. Then the gates open. Every guard on every
/// fiber and future is dropped; every blocking closure runs to its end;
/// the payloads of cancelled requests go back to their fiber; the
/// live half answers correctly; the pool is whole.
#[test]
fn cancellation_storm() {
    const REQUESTS: u64 = 10_000;
    let counters = Arc::new(Counters::default());
    let gate = Arc::new(Gate::default());
    let (open_views, views) = tokio::sync::watch::channel(false);
    let pipeline = cancel_storm_pipeline(&counters, &gate, views);
    let cancelled = |id: u64| (id / 2).is_multiple_of(2); // 0,1 cancelled; 2,3 live; ...
    let rt = runtime(16);
    let local = tokio::task::LocalSet::new();
    local.spawn_local(suspendware::runtime::Reaper::new());
    local.block_on(&rt, async {
        let handles: Vec<(u64, JoinHandle<Response>)> = (0..REQUESTS)
            .map(|id| (id, tokio::task::spawn_local(pipeline.handle(request(id)))))
            .collect();
        let c = &counters;
        settle("all requests suspending", || {
            c.suspended.load(Ordering::SeqCst) == REQUESTS as usize
        })
        .await;
        assert_eq!(pipeline.stack_stats().in_use, REQUESTS as usize);

        let (dropped, live): (Vec<_>, Vec<_>) =
            handles.into_iter().partition(|(id, _)| cancelled(*id));
        for (_, h) in &dropped {
            h.abort();
        }
        for (id, h) in dropped {
            let e = h.await.expect_err("an aborted request must not answer");
            assert!(e.is_cancelled(), "request {id}: {e}");
        }
        // The cancelled requests waiting in the view unwound: their stacks
        // are back, their guards gone. Those waiting for a blocking closure
        // (even ids) keep their fiber, frames and stack until it returns.
        let in_blocking = REQUESTS as usize / 4;
        let stats = pipeline.stack_stats();
        assert_eq!(stats.in_use, live.len() + in_blocking, "{stats:?}");
        let made = c.guards_made.load(Ordering::SeqCst);
        let dropped_guards = c.guards_dropped.load(Ordering::SeqCst);
        // outer + blocker on every request, async + view on the odd ones.
        assert_eq!(made, (REQUESTS * 2 + REQUESTS / 2 * 2) as usize);
        assert_eq!(
            dropped_guards,
            REQUESTS as usize / 4 * 4,
            "guards of cancelled requests that were not in a blocking closure"
        );

        gate.open();
        open_views.send(true).unwrap();
        for (id, h) in live {
            let resp = h.await.expect("a live request's future panicked");
            assert_eq!(resp.status(), StatusCode::OK, "request {id}");
            assert_eq!(resp.body().as_bytes(), format!("ok {id}").as_bytes());
            assert_eq!(resp.headers()["x-trail"], "async,blocker,outer");
        }
        // Blocking closures of cancelled requests finish after their
        // request is gone; the reaper then unwinds their fibers.
        settle("all blocking closures finishing", || {
            c.payloads_dropped.load(Ordering::SeqCst) == REQUESTS as usize / 2
        })
        .await;
        settle("every orphaned fiber reaped", || {
            pipeline.stack_stats().in_use == 0
        })
        .await;
    });
    drop(local);
    // Dropping the runtime joins its blocking threads: none is left
    // blocked at the gate.
    drop(rt);

    let c = &counters;
    let half = REQUESTS as usize / 2;
    assert_eq!(c.blocking_started.load(Ordering::SeqCst), half);
    assert_eq!(c.blocking_finished.load(Ordering::SeqCst), half);
    assert_eq!(c.payloads_made.load(Ordering::SeqCst), half);
    assert_eq!(c.payloads_dropped.load(Ordering::SeqCst), half);
    // Requests with even ids used blocking(); half of those were cancelled,
    // and their payloads went back to their fiber (dropped as it unwound),
    // never on the pool thread.
    assert_eq!(c.payloads_dropped_on_pool.load(Ordering::SeqCst), 0);
    assert_eq!(
        c.guards_made.load(Ordering::SeqCst),
        c.guards_dropped.load(Ordering::SeqCst)
    );
    let stats = pipeline.stack_stats();
    assert!(stats.is_whole() && stats.in_use == 0, "{stats:?}");
}

/// Adapt mode: the sync layers run on a held blocking-pool thread that
/// blocks in `get_response` (in the hand-off's `recv_blocking`) while the
/// async view waits. Half of each round's requests are dropped there: the
/// reply sender is dropped, the thread unwinds (every guard on it drops)
/// and returns to the pool; the other half answer. Dropping the runtime at
/// the end joins the pool, so a thread left blocked would hang the test.
#[test]
fn adapt_cancellation_storm() {
    use suspendware::Mode;
    const ROUNDS: u64 = 20;
    const PER_ROUND: u64 = 32; // = admission limit: 64 threads / (1 segment + 1)
    let c = Arc::new(Counters::default());
    let rt = runtime(64);
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        for round in 0..ROUNDS {
            let (open, views) = tokio::sync::watch::channel(false);
            let (c0, c1, c2) = (c.clone(), c.clone(), c.clone());
            let pipeline = Pipeline::builder()
                .mode(Mode::Adapt)
                .adapt_threads(64)
                .sync(move |req: Request, next: &mut Next| {
                    let _g = Guard::new(&c0);
                    mark(next.get_response(req), "outer")
                })
                .sync(move |req: Request, next: &mut Next| {
                    let _g = Guard::new(&c1);
                    mark(next.get_response(req), "inner")
                })
                .view(move |req: Request| {
                    let (c, mut views) = (c2.clone(), views.clone());
                    async move {
                        let _g = Guard::new(&c);
                        c.suspended.fetch_add(1, Ordering::SeqCst);
                        views.wait_for(|o| *o).await.expect("sender kept");
                        Response::new(format!("ok {}", id_of(&req)).into())
                    }
                })
                .build()
                .unwrap();
            let first = round * PER_ROUND;
            let handles: Vec<(u64, JoinHandle<Response>)> = (first..first + PER_ROUND)
                .map(|id| (id, tokio::task::spawn_local(pipeline.handle(request(id)))))
                .collect();
            let target = ((round + 1) * PER_ROUND) as usize;
            settle("all Adapt requests in the view", || {
                c.suspended.load(Ordering::SeqCst) == target
            })
            .await;
            let (dropped, live): (Vec<_>, Vec<_>) =
                handles.into_iter().partition(|(id, _)| id % 2 == 0);
            for (_, h) in &dropped {
                h.abort();
            }
            for (_, h) in dropped {
                assert!(h.await.expect_err("aborted").is_cancelled());
            }
            open.send(true).unwrap();
            for (id, h) in live {
                let resp = h.await.expect("a live Adapt request panicked");
                assert_eq!(resp.body().as_bytes(), format!("ok {id}").as_bytes());
                assert_eq!(resp.headers()["x-trail"], "inner,outer");
            }
            // Cancelled threads unwind on their own time: wait for their
            // guards (3 per request: outer, inner, view).
            let made = ((round + 1) * PER_ROUND * 3) as usize;
            settle("every guard of the round dropped", || {
                c.guards_dropped.load(Ordering::SeqCst) == made
            })
            .await;
        }
    });
    drop(local);
    drop(rt);
    assert_eq!(
        c.guards_made.load(Ordering::SeqCst),
        (ROUNDS * PER_ROUND * 3) as usize
    );
    assert_eq!(
        c.guards_made.load(Ordering::SeqCst),
        c.guards_dropped.load(Ordering::SeqCst)
    );
}
