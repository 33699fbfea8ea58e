//! `RequestLocal` isolation, and the paths around it: `SyncIo`, the
//! watchdog, decorators.
//!
//! Written by an audit of these paths (third session of 2026-12-07). Four
//! tests failed when written, showing three defects, fixed since
//! (`exec::request::PipelinePoll` and `WithoutRequest`; ARCHITECTURE
//! "Which request code sees"):
//! - `nested_pipeline_async_view_does_not_see_the_outer_requests_local`,
//!   `nested_pipeline_async_middleware_does_not_see_the_outer_requests_local`:
//!   a pipeline driven inline from another request's sync code ran its
//!   async code where the outer request was in scope, reading (and able
//!   to overwrite) its values;
//! - `inner_request_value_destructor_does_not_reach_the_outer_request`: the
//!   destructors of an inner fiber's values reached the outer request
//!   (Adapt, ThreadHop);
//! - `request_local_inside_blocking_is_the_same_in_every_mode`: inside
//!   `blocking`, `NoRequest` in Suspend but the request in Adapt and
//!   ThreadHop.
//!
//! The other tests held already and are kept.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ok, req, rt, text, with_deadline};
use suspendware::{wait, Mode, Next, Pipeline, Request, RequestLocal, Response};

static USER: RequestLocal<String> = RequestLocal::new(|| "init".to_owned());

const LIMIT: Duration = Duration::from_secs(10);

const MODES: [Mode; 3] = [Mode::Suspend, Mode::Adapt, Mode::ThreadHop];

fn run(p: Arc<Pipeline>) -> Response {
    with_deadline(LIMIT, move || rt().block_on(p.handle(req("/"))))
}

/// What async code sees of USER.
fn probe() -> String {
    match USER.try_with(|u| u.clone()) {
        Ok(v) => format!("Ok({v})"),
        Err(_) => "NoRequest".to_owned(),
    }
}

#[test]
fn baseline_top_level_async_view_gets_no_request_in_every_mode() {
    for mode in MODES {
        let p = Pipeline::builder()
            .mode(mode)
            .sync(|req: Request, next: &mut Next| {
                USER.set("outer".into());
                next.get_response(req)
            })
            .view(|_r: Request| async { ok(&probe()) })
            .build()
            .unwrap();
        assert_eq!(text(&run(Arc::new(p))), "NoRequest", "{mode:?}");
    }
}

/// Request B (an inner pipeline's request, run by `wait` inside request A's
/// sync code) must not read request A's request-locals from its async view:
/// the docs say async code gets NoRequest, and per-request state never
/// leaks between requests.
#[test]
fn nested_pipeline_async_view_does_not_see_the_outer_requests_local() {
    let mut seen = Vec::new();
    for mode in MODES {
        let inner = Arc::new(
            Pipeline::builder()
                .view(|_r: Request| async { ok(&probe()) })
                .build()
                .unwrap(),
        );
        let p = Pipeline::builder()
            .mode(mode)
            .sync(move |req: Request, next: &mut Next| {
                USER.set("outer-secret".into());
                let inner_resp = wait(inner.handle(common::req("/inner")));
                let _ = next.get_response(req);
                inner_resp
            })
            .view(|_r: Request| async { ok("unused") })
            .build()
            .unwrap();
        seen.push((mode, text(&run(Arc::new(p)))));
    }
    for (mode, body) in &seen {
        assert_eq!(body, "NoRequest", "{mode:?}: all = {seen:?}");
    }
}

/// Same with an inner pipeline whose async middleware runs before a sync
/// view: the inner async middleware must not see the outer request's value.
#[test]
fn nested_pipeline_async_middleware_does_not_see_the_outer_requests_local() {
    let mut seen = Vec::new();
    for mode in MODES {
        let inner = Arc::new(
            Pipeline::builder()
                .layer_async(suspendware::named(
                    "probe",
                    |req: Request, next: suspendware::AsyncNext| async move {
                        let p = probe();
                        let r = next.run(req).await;
                        ok(&format!("{p}|{}", text(&r)))
                    },
                ))
                .sync_view(|_r: Request| ok(&probe()))
                .build()
                .unwrap(),
        );
        let p = Pipeline::builder()
            .mode(mode)
            .sync(move |req: Request, next: &mut Next| {
                USER.set("outer-secret".into());
                let inner_resp = wait(inner.handle(common::req("/inner")));
                let _ = next.get_response(req);
                inner_resp
            })
            .view(|_r: Request| async { ok("unused") })
            .build()
            .unwrap();
        seen.push((mode, text(&run(Arc::new(p)))));
    }
    for (mode, body) in &seen {
        assert_eq!(body, "NoRequest|Ok(init)", "{mode:?}: all = {seen:?}");
    }
}

/// The same sync code sees its request's local inside `blocking` in Adapt
/// and ThreadHop (the closure runs inline) but not in Suspend (pool
/// thread): the mode must not change what a request sees.
#[test]
fn request_local_inside_blocking_is_the_same_in_every_mode() {
    let mut seen = Vec::new();
    for mode in MODES {
        let p = Pipeline::builder()
            .mode(mode)
            .sync(|req: Request, next: &mut Next| {
                USER.set("mine".into());
                let v = suspendware::blocking(probe);
                let _ = next.get_response(req);
                ok(&v)
            })
            .view(|_r: Request| async { ok("unused") })
            .build()
            .unwrap();
        seen.push((mode, text(&run(Arc::new(p)))));
    }
    let first = seen[0].1.clone();
    assert!(
        seen.iter().all(|(_, b)| *b == first),
        "modes disagree: {seen:?}"
    );
}

/// Interleaved requests on one thread each keep their own value across
/// suspensions, in every mode.
#[test]
fn interleaved_requests_keep_their_own_values_in_every_mode() {
    for mode in MODES {
        let p = Arc::new(
            Pipeline::builder()
                .mode(mode)
                .adapt_threads(64)
                .sync(|req: Request, next: &mut Next| {
                    let me = req.uri().path().to_owned();
                    USER.set(me.clone());
                    suspendware::sleep(Duration::from_millis(5));
                    assert_eq!(USER.get(), me);
                    let r = next.get_response(req);
                    suspendware::sleep(Duration::from_millis(5));
                    ok(&format!("{}|{}", USER.get(), text(&r)))
                })
                .view(|_r: Request| async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ok(&probe())
                })
                .build()
                .unwrap(),
        );
        let p2 = p.clone();
        let bodies = with_deadline(LIMIT, move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt(), async move {
                let hs: Vec<_> = (0..20)
                    .map(|i| tokio::task::spawn_local(p2.handle(req(&format!("/r{i}")))))
                    .collect();
                let mut out = Vec::new();
                for h in hs {
                    out.push(h.await.unwrap());
                }
                out
            })
        });
        for (i, b) in bodies.iter().enumerate() {
            assert_eq!(text(b), format!("/r{i}|NoRequest"), "{mode:?}");
        }
        assert!(p.stack_stats().is_whole(), "{mode:?}");
    }
}

/// A value's destructor that uses another request-local, as the request
/// ends: it must not reach another request's values (docs: it "finds no
/// request").
struct Peek(Arc<std::sync::Mutex<Vec<String>>>);
impl Drop for Peek {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(probe());
    }
}
static PEEK: RequestLocal<Option<Peek>> = RequestLocal::new(|| None);

#[test]
fn inner_request_value_destructor_does_not_reach_the_outer_request() {
    let mut all = Vec::new();
    for mode in MODES {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        let inner = Arc::new(
            Pipeline::builder()
                .sync(move |req: Request, next: &mut Next| {
                    PEEK.set(Some(Peek(log2.clone())));
                    next.get_response(req)
                })
                .view(|_r: Request| async { ok("inner") })
                .build()
                .unwrap(),
        );
        let p = Pipeline::builder()
            .mode(mode)
            .sync(move |req: Request, next: &mut Next| {
                USER.set("outer-secret".into());
                let r = wait(inner.handle(common::req("/inner")));
                let _ = next.get_response(req);
                r
            })
            .view(|_r: Request| async { ok("unused") })
            .build()
            .unwrap();
        assert_eq!(text(&run(Arc::new(p))), "inner");
        let got = log.lock().unwrap().clone();
        all.push((mode, got));
    }
    for (mode, got) in &all {
        assert!(
            got.iter().all(|s| !s.contains("outer-secret")),
            "{mode:?}: all = {all:?}"
        );
    }
}

/// `const` instead of `static`: each use may be a different promoted
/// constant, so `set` then `get` silently lose the value (or two locals
/// share a slot). Must either work or fail loudly.
#[test]
fn a_const_request_local_is_not_a_silent_wrong_answer() {
    #[allow(clippy::declare_interior_mutable_const)]
    const C: RequestLocal<u32> = RequestLocal::new(|| 0);
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let r = std::panic::catch_unwind(|| {
                C.set(5);
                C.get()
            });
            let _ = next.get_response(req);
            ok(&format!("{r:?}"))
        })
        .view(|_r: Request| async { ok("unused") })
        .build()
        .unwrap();
    let body = text(&run(Arc::new(p)));
    assert!(body == "Ok(5)" || body.starts_with("Err"), "{body}");
}

// ---------------------------------------------------------------- watchdog

fn sleeper(name: &'static str, ms: u64) -> impl suspendware::SyncMiddleware {
    suspendware::named(name, move |req: Request, next: &mut Next| {
        std::thread::sleep(Duration::from_millis(ms));
        next.get_response(req)
    })
}

#[test]
fn watchdog_counts_a_stall_that_ends_in_a_panic() {
    let p = Arc::new(
        Pipeline::builder()
            .watchdog(Some(Duration::from_millis(20)))
            .sync(suspendware::named(
                "ok_outer",
                |req: Request, next: &mut Next| next.get_response(req),
            ))
            .sync(suspendware::named(
                "boom",
                |_req: Request, _next: &mut Next| -> Response {
                    std::thread::sleep(Duration::from_millis(80));
                    panic!("boom")
                },
            ))
            .view(|_r: Request| async { ok("unused") })
            .build()
            .unwrap(),
    );
    let resp = run(p.clone());
    assert_eq!(resp.status(), 500);
    let stats = p.stall_stats();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].layer, "boom", "{stats:?}");
    assert_eq!(stats[0].count, 1, "{stats:?}");
    assert!(p.stack_stats().is_whole());
}

/// The outer pipeline's watchdog must not name an outer layer that never
/// ran during the stall because an inner pipeline's layer index leaked in.
#[test]
fn nested_watchdogs_name_layers_of_their_own_pipeline() {
    let inner = Arc::new(
        Pipeline::builder()
            .watchdog(Some(Duration::from_millis(20)))
            .sync(suspendware::named(
                "inner_a",
                |req: Request, next: &mut Next| next.get_response(req),
            ))
            .sync(sleeper("inner_sleeper", 80))
            .view(|_r: Request| async { ok("inner") })
            .build()
            .unwrap(),
    );
    let inner2 = inner.clone();
    let outer = Arc::new(
        Pipeline::builder()
            .watchdog(Some(Duration::from_millis(20)))
            .sync(suspendware::named(
                "outer_caller",
                move |req: Request, next: &mut Next| {
                    let r = wait(inner2.handle(common::req("/inner")));
                    let _ = next.get_response(req);
                    r
                },
            ))
            .sync(suspendware::named(
                "outer_innocent",
                |req: Request, next: &mut Next| next.get_response(req),
            ))
            .view(|_r: Request| async { ok("outer") })
            .build()
            .unwrap(),
    );
    assert_eq!(text(&run(outer.clone())), "inner");
    let is = inner.stall_stats();
    let os = outer.stall_stats();
    eprintln!("inner {is:?}\nouter {os:?}");
    assert_eq!(is.len(), 1, "{is:?}");
    assert_eq!(is[0].layer, "inner_sleeper");
    assert!(
        os.iter().all(|s| s.layer != "outer_innocent"),
        "outer blames a layer that had not run yet: {os:?}"
    );
}

// ---------------------------------------------------------------- SyncIo

#[test]
fn syncio_off_fiber_panics_with_advice() {
    use std::io::Read;
    let (a, _b) = tokio::io::duplex(64);
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt().block_on(async move {
            let mut s = suspendware::io::SyncIo::new(a);
            let mut buf = [0u8; 4];
            let _ = s.read(&mut buf);
        })
    }))
    .expect_err("must panic");
    let msg = common::panic_message(&*err);
    assert!(msg.contains("SyncIo"), "{msg}");
    assert!(msg.contains("await"), "{msg}");
}

#[test]
fn syncio_inside_blocking_panics_with_advice_not_a_hang() {
    let p = Arc::new(
        Pipeline::builder()
            .sync(|req: Request, next: &mut Next| {
                use std::io::Read;
                let (a, _b) = tokio::io::duplex(64);
                let mut s = suspendware::io::SyncIo::new(a);
                let r = suspendware::blocking(move || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut buf = [0u8; 4];
                        s.read(&mut buf).map(|_| ())
                    }))
                    .map_err(|e| common::panic_message(&*e))
                });
                let _ = next.get_response(req);
                ok(&format!("{r:?}"))
            })
            .view(|_r: Request| async { ok("unused") })
            .build()
            .unwrap(),
    );
    let body = text(&run(p));
    assert!(body.starts_with("Err") && body.contains("SyncIo"), "{body}");
}

/// A request blocked in a SyncIo read whose peer never writes is
/// cancelled: every destructor runs and every stack/thread comes back.
#[test]
fn syncio_read_cancelled_in_every_mode_leaks_nothing() {
    for mode in MODES {
        let drops = common::DropCounter::new();
        let d2 = drops.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started_tx = std::sync::Mutex::new(started_tx);
        let p = Arc::new(
            Pipeline::builder()
                .mode(mode)
                .sync(move |req: Request, next: &mut Next| {
                    use std::io::Read;
                    let _tok = d2.token();
                    let (a, b) = tokio::io::duplex(64);
                    let mut s = suspendware::io::SyncIo::new(a);
                    let _ = started_tx.lock().unwrap().send(());
                    let mut buf = [0u8; 4];
                    let _ = s.read(&mut buf);
                    drop(b);
                    next.get_response(req)
                })
                .view(|_r: Request| async { ok("unused") })
                .build()
                .unwrap(),
        );
        let p2 = p.clone();
        with_deadline(LIMIT, move || {
            rt().block_on(async move {
                let r = tokio::time::timeout(Duration::from_millis(100), p2.handle(req("/"))).await;
                assert!(r.is_err());
                // Held threads unwind asynchronously; give them a bounded while.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
                while (!p2.stack_stats().is_whole() || drops.count() < 1)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert_eq!(drops.count(), 1, "{mode:?}: token not dropped");
                assert!(
                    p2.stack_stats().is_whole(),
                    "{mode:?}: {:?}",
                    p2.stack_stats()
                );
            })
        });
        assert!(started_rx.try_recv().is_ok(), "{mode:?}: never started");
    }
}

// ---------------------------------------------------------------- Strict / decorators

#[test]
fn strict_rejects_sync_middleware_naming_it_with_advice() {
    let err = Pipeline::builder()
        .mode(Mode::Strict)
        .sync(suspendware::named(
            "legacy_auth",
            |req: Request, next: &mut Next| next.get_response(req),
        ))
        .view(|_r: Request| async { ok("x") })
        .build()
        .expect_err("strict must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("legacy_auth") && msg.contains("Mode::Suspend"),
        "{msg}"
    );
}

#[test]
fn decorated_views_answer_405_with_allow_in_every_mode() {
    use suspendware::decorators::{require_get, require_http_methods};
    for mode in [Mode::Suspend, Mode::Adapt, Mode::ThreadHop, Mode::Strict] {
        for sync_view in [false, true] {
            let b = Pipeline::builder().mode(mode);
            let b = if sync_view {
                b.sync_view(require_http_methods(
                    &[http::Method::GET, http::Method::PUT],
                    |_r: Request| ok(&probe()),
                ))
            } else {
                b.view(require_get(|_r: Request| async { ok(&probe()) }))
            };
            let p = b.build().unwrap();
            let rq = http::Request::builder()
                .method(http::Method::POST)
                .uri("/")
                .body(Default::default())
                .unwrap();
            let resp = with_deadline(LIMIT, move || rt().block_on(p.handle(rq)));
            assert_eq!(resp.status(), 405, "{mode:?} {sync_view}");
            let allow = common::header(&resp, "allow").unwrap();
            let want = if sync_view { "GET, PUT" } else { "GET" };
            assert_eq!(allow, want, "{mode:?}");
        }
    }
}

// ---------------------------------------------------------------- hooks

struct HookLocal;
impl suspendware::hooks::HookMiddleware for HookLocal {
    fn process_request(&self, req: &mut Request) -> Option<Response> {
        USER.set(req.uri().path().to_owned());
        None
    }
    fn process_view(&self, req: &mut Request) -> Option<Response> {
        assert_eq!(USER.get(), req.uri().path());
        None
    }
    fn process_response(
        &self,
        head: &suspendware::hooks::RequestHead,
        mut resp: Response,
    ) -> Response {
        let _ = head;
        let v = USER.get();
        resp.headers_mut()
            .insert("x-user", http::HeaderValue::from_str(&v).unwrap());
        resp
    }
}

/// A value set in one hook is seen by the request's later hooks (each a
/// separate hop in ThreadHop/Strict), with interleaved requests.
#[test]
fn hook_values_persist_across_hops_in_every_mode() {
    for mode in [Mode::Suspend, Mode::Adapt, Mode::ThreadHop, Mode::Strict] {
        let p = Arc::new(
            Pipeline::builder()
                .mode(mode)
                .adapt_threads(64)
                .hooks(HookLocal)
                .view(|_r: Request| async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ok(&probe())
                })
                .build()
                .unwrap(),
        );
        let p2 = p.clone();
        let out = with_deadline(LIMIT, move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt(), async move {
                let hs: Vec<_> = (0..10)
                    .map(|i| tokio::task::spawn_local(p2.handle(req(&format!("/h{i}")))))
                    .collect();
                let mut out = Vec::new();
                for h in hs {
                    let r = h.await.unwrap();
                    out.push((r.status().as_u16(), common::header(&r, "x-user"), text(&r)));
                }
                out
            })
        });
        for (i, (st, u, body)) in out.iter().enumerate() {
            assert_eq!(*st, 200, "{mode:?} {out:?}");
            assert_eq!(
                u.as_deref(),
                Some(format!("/h{i}").as_str()),
                "{mode:?} {out:?}"
            );
            assert_eq!(body, "NoRequest", "{mode:?}");
        }
        assert!(p.stack_stats().is_whole());
    }
}
