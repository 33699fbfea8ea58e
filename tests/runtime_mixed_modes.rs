//! Mixed modes under load: one `Runtime` serves an Adapt pipeline
//! and a Suspend pipeline at the same time, 2,000 concurrent requests
//! dispatched from a multi-thread tokio runtime. Every request gets its own
//! answer (its `RequestLocal` survives the suspensions and thread hand-offs),
//! the Suspend pipeline's stack pool ends whole, and no thread is left
//! blocked: afterwards the Adapt pipeline still admits its full number of
//! requests at once, and the runtime shuts down with nothing cancelled.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use suspendware::runtime::*;
use suspendware::stack::*;
use suspendware::*;

const REQUESTS: usize = 2_000;
const WORKERS: usize = 2;
/// Blocking-pool threads the Adapt pipeline may hold.
const ADAPT_THREADS: usize = 48;
/// Held-thread segments per request of the Adapt pipeline (sync, async,
/// sync, view: two runs of sync layers).
const HELD_SEGMENTS: usize = 2;
/// Requests the Adapt pipeline admits at once: `threads / (segments + 1)`
/// (the admission rule documented in `src/thread/segment.rs`).
const ADAPT_ADMITTED: usize = ADAPT_THREADS / (HELD_SEGMENTS + 1);
const LONG: Duration = Duration::from_secs(60);

static REQ_ID: RequestLocal<Option<usize>> = RequestLocal::new(|| None);

fn id_of(req: &Request) -> usize {
    req.uri().path()[1..]
        .parse()
        .expect("request path is /<id>")
}

fn set_header(resp: &mut Response, name: &'static str, value: String) {
    resp.headers_mut().insert(name, value.parse().unwrap());
}

/// Requests inside a pipeline's view right now, and the most seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the views of both pipelines share.
#[derive(Default)]
struct Shared {
    adapt: Gauge,
    suspend: Gauge,
    /// A view of one pipeline ran while the other had a request in its view.
    overlapped: AtomicBool,
    /// Set for the final phase: Adapt views wait here until all admitted
    /// requests are in.
    barrier: std::sync::OnceLock<Arc<tokio::sync::Barrier>>,
}

fn pipeline(mode: Mode, shared: &Arc<Shared>, pool: Option<StackPool>) -> Pipeline {
    let tag = match mode {
        Mode::Adapt => "adapt",
        _ => "suspend",
    };
    let mut b = Pipeline::builder().mode(mode).adapt_threads(ADAPT_THREADS);
    if let Some(pool) = pool {
        b = b.stack_pool(pool);
    }
    let shared = shared.clone();
    b.sync(named("outer", |req: Request, next: &mut Next| {
        let id = id_of(&req);
        REQ_ID.set(Some(id));
        let got = wait(async move {
            tokio::task::yield_now().await;
            id
        });
        assert_eq!(got, id);
        let mut resp = next.get_response(req);
        set_header(&mut resp, "x-outer-local", format!("{:?}", REQ_ID.get()));
        resp
    }))
    .layer_async(named(
        "between",
        |req: Request, next: AsyncNext| async move {
            tokio::task::yield_now().await;
            let mut resp = next.run(req).await;
            set_header(&mut resp, "x-between", "1".to_owned());
            resp
        },
    ))
    .sync(named("inner", |req: Request, next: &mut Next| {
        // Set by "outer" in another segment of the same request.
        let seen = REQ_ID.get();
        wait(tokio::time::sleep(Duration::from_millis(1)));
        let mut resp = next.get_response(req);
        set_header(
            &mut resp,
            "x-inner-local",
            format!("{seen:?}/{:?}", REQ_ID.get()),
        );
        resp
    }))
    .view(named("view", move |req: Request| {
        let shared = shared.clone();
        async move {
            let (mine, other) = match mode {
                Mode::Adapt => (&shared.adapt, &shared.suspend),
                _ => (&shared.suspend, &shared.adapt),
            };
            mine.enter();
            if other.now.load(Ordering::SeqCst) > 0 {
                shared.overlapped.store(true, Ordering::SeqCst);
            }
            match shared.barrier.get() {
                Some(b) if mode == Mode::Adapt => {
                    b.wait().await;
                }
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
            mine.leave();
            Response::new(format!("{tag} {}", id_of(&req)).into())
        }
    }))
    .build()
    .expect("pipeline builds")
}

fn check(resp: &Response, tag: &str, id: usize) {
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{tag} {id}: {}",
        common::text(resp)
    );
    assert_eq!(common::text(resp), format!("{tag} {id}"));
    let h = |n: &str| common::header(resp, n).unwrap_or_else(|| panic!("{tag} {id}: no {n}"));
    assert_eq!(h("x-outer-local"), format!("Some({id})"), "{tag}");
    assert_eq!(
        h("x-inner-local"),
        format!("Some({id})/Some({id})"),
        "{tag}"
    );
    assert_eq!(h("x-between"), "1");
}

#[test]
fn adapt_and_suspend_pipelines_under_load_on_one_runtime() {
    common::with_deadline(Duration::from_secs(120), || {
        let shared = Arc::new(Shared::default());
        let pool = StackPool::new(DEFAULT_STACK_SIZE, 4_096, LONG);
        let suspend = pipeline(Mode::Suspend, &shared, Some(pool.clone()));
        let adapt = pipeline(Mode::Adapt, &shared, None);
        assert_eq!(suspend.fiber_segments(), 2);
        assert_eq!(adapt.fiber_segments(), 0);

        let runtime = Runtime::builder().workers(WORKERS).build().unwrap();
        let handle = runtime.handle();
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();

        // Phase 1: 2,000 requests at once, alternating between the pipelines.
        let answers = mt.block_on(async {
            let tasks: Vec<_> = (0..REQUESTS)
                .map(|id| {
                    let p = if id % 2 == 0 { &suspend } else { &adapt };
                    let fut = handle.dispatch(p, common::req(&format!("/{id}")));
                    tokio::spawn(fut)
                })
                .collect();
            let mut answers = Vec::with_capacity(REQUESTS);
            for t in tasks {
                answers.push(t.await.expect("task").expect("dispatch"));
            }
            answers
        });
        for (id, resp) in answers.iter().enumerate() {
            check(resp, if id % 2 == 0 { "suspend" } else { "adapt" }, id);
        }
        assert!(
            shared.overlapped.load(Ordering::SeqCst),
            "the two pipelines never had requests in their views at the same time"
        );
        assert!(shared.suspend.peak.load(Ordering::SeqCst) > 1);
        // Admission control held: never more Adapt requests inside than permits.
        let adapt_peak = shared.adapt.peak.load(Ordering::SeqCst);
        assert!(
            1 < adapt_peak && adapt_peak <= ADAPT_ADMITTED,
            "{adapt_peak}"
        );
        let stats = pool.stats();
        eprintln!(
            "peak in view: suspend {}, adapt {adapt_peak} (admitted {ADAPT_ADMITTED}); stacks allocated {}",
            shared.suspend.peak.load(Ordering::SeqCst),
            stats.allocated
        );
        assert!(
            stats.is_whole(),
            "Suspend stack pool after the load: {stats:?}"
        );
        assert!(
            stats.allocated > 1,
            "fibers were suspended at once: {stats:?}"
        );

        // Phase 2: every Adapt permit and held thread came back. The views
        // of exactly `ADAPT_ADMITTED` requests wait for each other, so this
        // completes only if all of them are admitted at once.
        let barrier = Arc::new(tokio::sync::Barrier::new(ADAPT_ADMITTED));
        assert!(shared.barrier.set(barrier).is_ok());
        let answers = mt.block_on(async {
            let tasks: Vec<_> = (0..ADAPT_ADMITTED)
                .map(|k| {
                    let id = REQUESTS + k;
                    tokio::spawn(handle.dispatch(&adapt, common::req(&format!("/{id}"))))
                })
                .collect();
            let mut answers = Vec::new();
            for t in tasks {
                answers.push(t.await.expect("task").expect("dispatch"));
            }
            answers
        });
        for (k, resp) in answers.iter().enumerate() {
            check(resp, "adapt", REQUESTS + k);
        }
        assert_eq!(shared.adapt.peak.load(Ordering::SeqCst), ADAPT_ADMITTED);
        // And the Suspend pipeline still serves beside it.
        let resp = mt
            .block_on(handle.dispatch(&suspend, common::req("/7")))
            .unwrap();
        check(&resp, "suspend", 7);
        assert!(pool.stats().is_whole());
        drop(mt);

        // Phase 3: nothing is in flight, so nothing is cancelled; the
        // workers' runtimes (and their blocking pools) shut down.
        let report = runtime.shutdown(LONG);
        assert_eq!(report.cancelled, 0, "{report:?}");
        assert_eq!(report.worker_panics, 0, "{report:?}");
        assert!(pool.stats().is_whole());
    });
}
