//! The same chain in every mode gives the same responses and the
//! same order of events; Strict rejects sync middleware by name; Adapt warns.

mod capture;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use suspendware::hooks::*;
use suspendware::plan::*;
use suspendware::*;

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

static USER: RequestLocal<Option<String>> = RequestLocal::new(|| None);

struct Hybrid(Log);
impl Middleware for Hybrid {
    fn capabilities(&self) -> Capabilities {
        Capabilities::BOTH
    }
    fn call_sync(&self, req: Request, next: &mut Next) -> Response {
        push(&self.0, "hybrid>");
        let mut r = next.get_response(req);
        push(&self.0, "<hybrid");
        r.headers_mut().insert("x-hybrid", "1".parse().unwrap());
        r
    }
    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            push(&self.0, "hybrid>");
            let mut r = next.run(req).await;
            push(&self.0, "<hybrid");
            r.headers_mut().insert("x-hybrid", "1".parse().unwrap());
            r
        })
    }
    fn name(&self) -> &str {
        "Hybrid"
    }
}

struct Hooks(Log, &'static str);
impl HookMiddleware for Hooks {
    fn process_request(&self, req: &mut Request) -> Option<Response> {
        push(&self.0, format!("{}.request", self.1));
        if req.uri().path() == "/short" {
            let mut r = Response::new("short".into());
            *r.status_mut() = StatusCode::FORBIDDEN;
            return Some(r);
        }
        None
    }
    fn process_view(&self, _req: &mut Request) -> Option<Response> {
        push(&self.0, format!("{}.view", self.1));
        None
    }
    fn process_exception(&self, _h: &RequestHead, e: &ExceptionInfo) -> Option<Response> {
        push(&self.0, format!("{}.exception({})", self.1, e.message));
        None
    }
    fn process_response(&self, _h: &RequestHead, mut resp: Response) -> Response {
        push(&self.0, format!("{}.response", self.1));
        resp.headers_mut()
            .append("x-hooks", self.1.parse().unwrap());
        resp
    }
    fn name(&self) -> &str {
        self.1
    }
}

fn sync_mw(log: &Log, name: &'static str) -> Named<impl SyncMiddleware> {
    let log = log.clone();
    named(name, move |req: Request, next: &mut Next| {
        push(&log, format!("{name}>"));
        if name == "s1" {
            USER.set(Some(req.uri().path().to_owned()));
        }
        let got = wait(async { 5 });
        let b = blocking(|| 6);
        let mut r = next.get_response(req);
        push(&log, format!("<{name} {got}{b} user={:?}", USER.get()));
        r.headers_mut().append("x-sync", name.parse().unwrap());
        r
    })
}

fn async_mw(log: &Log) -> Named<impl AsyncMiddleware> {
    let log = log.clone();
    named("a", move |req: Request, next: AsyncNext| {
        let log = log.clone();
        async move {
            push(&log, "a>");
            tokio::task::yield_now().await;
            let r = next.run(req).await;
            push(&log, "<a");
            r
        }
    })
}

fn view_body(req: &Request) -> Response {
    if req.uri().path() == "/panic" {
        panic!("view exploded");
    }
    Response::new(format!("view {}", req.uri().path()).into())
}

/// The chain of the issue: sync, hybrid, async, hook, sync, view.
fn chain(mode: Mode, log: &Log, sync_view: bool, with_sync: bool) -> Result<Pipeline, BuildError> {
    let mut b = Pipeline::builder().mode(mode);
    if with_sync {
        b = b.sync(sync_mw(log, "s1"));
    }
    b = b
        .middleware(Hybrid(log.clone()))
        .layer_async(async_mw(log))
        .hooks(Hooks(log.clone(), "k"));
    if with_sync {
        b = b.sync(sync_mw(log, "s2"));
    }
    let l = log.clone();
    if sync_view {
        b = b.sync_view(move |req: Request| {
            push(&l, "view");
            view_body(&req)
        });
    } else {
        b = b.view(move |req: Request| {
            let l = l.clone();
            async move {
                push(&l, "view");
                tokio::time::sleep(Duration::from_millis(1)).await;
                view_body(&req)
            }
        });
    }
    b.build()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Outcome = (u16, String, Vec<String>, Vec<String>);

fn run(p: &Pipeline, log: &Log, path: &str) -> Outcome {
    log.lock().unwrap().clear();
    let req = http::Request::builder()
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let resp = rt().block_on(p.handle(req));
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
        .collect();
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(resp.body().as_bytes()).into_owned(),
        headers,
        log.lock().unwrap().clone(),
    )
}

const PATHS: [&str; 3] = ["/ok", "/short", "/panic"];

#[test]
fn same_chain_same_results_in_every_mode() {
    for sync_view in [false, true] {
        let log: Log = Default::default();
        let reference: Vec<Outcome> = {
            let p = chain(Mode::Suspend, &log, sync_view, true).unwrap();
            PATHS.iter().map(|path| run(&p, &log, path)).collect()
        };
        // Sanity of the reference itself (Django order).
        let ok = &reference[0];
        assert_eq!(ok.0, 200);
        assert_eq!(ok.1, "view /ok");
        assert_eq!(
            ok.3,
            vec![
                "s1>",
                "hybrid>",
                "a>",
                "k.request",
                "s2>",
                "k.view",
                "view",
                "<s2 56 user=Some(\"/ok\")",
                "k.response",
                "<a",
                "<hybrid",
                "<s1 56 user=Some(\"/ok\")"
            ]
        );
        let short = &reference[1];
        assert_eq!(short.0, 403);
        assert_eq!(
            short.3,
            vec![
                "s1>",
                "hybrid>",
                "a>",
                "k.request",
                "k.response",
                "<a",
                "<hybrid",
                "<s1 56 user=Some(\"/short\")"
            ]
        );
        let panicked = &reference[2];
        assert_eq!(panicked.0, 500);
        assert!(
            panicked
                .3
                .contains(&"k.exception(view exploded)".to_string()),
            "{:?}",
            panicked.3
        );

        for mode in [Mode::Adapt, Mode::ThreadHop] {
            let p = chain(mode, &log, sync_view, true).unwrap();
            for (i, path) in PATHS.iter().enumerate() {
                assert_eq!(
                    run(&p, &log, path),
                    reference[i],
                    "mode {mode:?}, path {path}, sync_view {sync_view}"
                );
            }
        }
        // Strict accepts the chain without the sync-only middleware.
        let strict_ref: Vec<Outcome> = {
            let p = chain(Mode::Suspend, &log, sync_view, false).unwrap();
            PATHS.iter().map(|path| run(&p, &log, path)).collect()
        };
        for mode in [Mode::Strict, Mode::Adapt, Mode::ThreadHop] {
            let p = chain(mode, &log, sync_view, false).unwrap();
            for (i, path) in PATHS.iter().enumerate() {
                assert_eq!(
                    run(&p, &log, path),
                    strict_ref[i],
                    "mode {mode:?}, path {path}"
                );
            }
        }
    }
}

#[test]
fn strict_lists_every_sync_middleware() {
    let log: Log = Default::default();
    let err = chain(Mode::Strict, &log, false, true).unwrap_err();
    match &err {
        BuildError::SyncInStrict { names } => assert_eq!(names, &["s1", "s2"]),
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("s1, s2") && msg.contains("Mode::Suspend"),
        "{msg}"
    );
    let err = Pipeline::builder()
        .mode(Mode::Strict)
        .sync_on_thread(named("pinned", |r: Request, n: &mut Next| {
            n.get_response(r)
        }))
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("pinned"), "{err}");
}

#[test]
fn neither_capable_is_a_build_error() {
    struct Nothing;
    impl Middleware for Nothing {
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                sync: false,
                async_: false,
            }
        }
        fn name(&self) -> &str {
            "Nothing"
        }
    }
    let err = Pipeline::builder()
        .middleware(Nothing)
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::NoCapability { ref name } if name == "Nothing"),
        "{err}"
    );
}

#[test]
fn adapt_warns_once_per_adapted_middleware() {
    let log: Log = Default::default();
    let (out, built) = capture::capture(|| chain(Mode::Adapt, &log, false, true));
    built.unwrap();
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("adapted"))
        .collect();
    // s1, the hook middleware k (its hooks run on the held thread too), s2.
    assert_eq!(warnings.len(), 3, "{out}");
    for (w, name) in warnings.iter().zip(["s1", "k", "s2"]) {
        assert!(w.contains(&format!("middleware={name} ")), "{w}");
    }
    assert!(
        warnings[0].contains("one OS thread per in-flight request"),
        "{out}"
    );
    // Suspend adapts nothing.
    let (out, _) = capture::capture(|| chain(Mode::Suspend, &log, false, true));
    assert!(!out.contains("adapted"), "{out}");
}

#[test]
fn plan_of_a_mixed_chain_counts_switches() {
    let pass = |n: &'static str| named(n, |r: Request, next: &mut Next| next.get_response(r));
    let log: Log = Default::default();
    let p = Pipeline::builder()
        .sync(pass("s1"))
        .sync(pass("s2"))
        .layer_async(named("a", |r: Request, n: AsyncNext| async move {
            n.run(r).await
        }))
        .middleware(Hybrid(log.clone()))
        .sync(pass("s3"))
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap();
    let plan = p.describe();
    // server→[s1 s2] fiber→a→[Hybrid s3] fiber→view: 4 boundaries.
    assert_eq!(plan.boundaries, 4, "{plan}");
    assert_eq!(plan.switches(), 8);
    assert_eq!(
        plan.layers[3],
        ("Hybrid".to_string(), Exec::Fiber),
        "hybrid follows its sync inner neighbour"
    );
    assert_eq!(plan.segments.len(), 4, "{plan}");
    assert_eq!(p.fiber_segments(), 2);
    let text = plan.to_string();
    assert!(
        text.contains("segment 3 (sync on fiber)") && text.contains("8 switches"),
        "{text}"
    );

    // With an async neighbour the hybrid goes async: one fewer fiber.
    let p = Pipeline::builder()
        .sync(pass("s1"))
        .middleware(Hybrid(log))
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap();
    assert_eq!(p.describe().layers[1].1, Exec::Async);
    assert_eq!(p.describe().boundaries, 2);
}

#[test]
fn adapt_does_not_deadlock_at_5000_through_5_layers() {
    let mut b = Pipeline::builder().mode(Mode::Adapt);
    for i in 0..5 {
        b = b.sync(named(format!("layer{i}"), |r: Request, n: &mut Next| {
            n.get_response(r)
        }));
    }
    let p = b
        .view(|_r: Request| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Response::new("ok".into())
        })
        .build()
        .unwrap();
    let done = rt().block_on(tokio::task::LocalSet::new().run_until(async {
        let handles: Vec<_> = (0..5000)
            .map(|_| tokio::task::spawn_local(p.handle(Request::new(Body::empty()))))
            .collect();
        let mut ok = 0;
        for h in handles {
            if h.await.unwrap().status() == StatusCode::OK {
                ok += 1;
            }
        }
        ok
    }));
    assert_eq!(done, 5000);
}

#[test]
fn sync_on_thread_keeps_its_own_thread_in_suspend_mode() {
    thread_local! {
        static MINE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let runtime_thread = std::thread::current().id();
    let p = Pipeline::builder()
        .sync(named("fiber", |r: Request, n: &mut Next| n.get_response(r)))
        .sync_on_thread(named("pinned", move |r: Request, n: &mut Next| {
            assert_ne!(
                std::thread::current().id(),
                runtime_thread,
                "runs on a held thread"
            );
            let tag = r.uri().path().len() as u32;
            MINE.with(|m| m.set(tag));
            let me = std::thread::current().id();
            let resp = n.get_response(r);
            assert_eq!(
                std::thread::current().id(),
                me,
                "same thread after get_response"
            );
            assert_eq!(MINE.with(|m| m.get()), tag, "thread-local intact");
            resp
        }))
        .view(|_r: Request| async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Response::new("ok".into())
        })
        .build()
        .unwrap();
    let plan = p.describe();
    assert_eq!(plan.layers[0].1, Exec::Fiber);
    assert_eq!(plan.layers[1].1, Exec::Thread);
    let statuses = rt().block_on(tokio::task::LocalSet::new().run_until(async {
        let hs: Vec<_> = ["/a", "/bb", "/ccc"]
            .iter()
            .map(|u| {
                let req = http::Request::builder()
                    .uri(*u)
                    .body(Body::empty())
                    .unwrap();
                tokio::task::spawn_local(p.handle(req))
            })
            .collect();
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await.unwrap().status());
        }
        out
    }));
    assert_eq!(statuses, [StatusCode::OK; 3]);
}

/// ThreadHop holds no thread while the view runs: 600 requests through hook
/// middleware can all be inside the view at once (a barrier of 600 opens),
/// more than the blocking pool could hold if each kept a thread (Adapt
/// admits 512 / 2 = 256 here).
#[test]
fn thread_hop_holds_no_thread_while_the_view_runs() {
    struct Noop;
    impl HookMiddleware for Noop {
        fn process_request(&self, _r: &mut Request) -> Option<Response> {
            None
        }
        fn process_response(&self, _h: &RequestHead, r: Response) -> Response {
            r
        }
    }
    const N: usize = 600;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let p = Pipeline::builder()
        .mode(Mode::ThreadHop)
        .hooks(Noop)
        .view(move |_r: Request| {
            let b = barrier.clone();
            async move {
                b.wait().await;
                Response::new("ok".into())
            }
        })
        .build()
        .unwrap();
    let ok = rt().block_on(tokio::task::LocalSet::new().run_until(async {
        let hs: Vec<_> = (0..N)
            .map(|_| tokio::task::spawn_local(p.handle(Request::new(Body::empty()))))
            .collect();
        let all = async {
            let mut ok = 0;
            for h in hs {
                if h.await.unwrap().status() == StatusCode::OK {
                    ok += 1;
                }
            }
            ok
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("the barrier never opened: hops held threads while the view ran")
    }));
    assert_eq!(ok, N);
}
