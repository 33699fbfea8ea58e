//! `wait` and `blocking` inside sync middleware: they suspend the fiber,
//! not the runtime thread.

mod capture;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{error_lines, header, ok, req, rt, text, with_deadline};
use http::StatusCode;
use suspendware::{blocking, wait, Next, Pipeline, Request, Response};
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn wait_on_a_tokio_timer_inside_middleware() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            wait(tokio::time::sleep(Duration::from_millis(5)));
            let mut r = next.get_response(req);
            r.headers_mut().insert("x-waited", "yes".parse().unwrap());
            r
        })
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(text(&resp), "v");
    assert_eq!(header(&resp, "x-waited").as_deref(), Some("yes"));
    assert!(p.stack_stats().is_whole());
}

#[test]
fn wait_on_a_future_borrowing_locals_of_the_middleware_frame() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let path = req.uri().path().to_owned();
            let mut seen = Vec::new();
            // The future borrows `path` immutably and `seen` mutably.
            let n = wait(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                seen.push(path.len());
                tokio::task::yield_now().await;
                seen.push(path.matches('/').count());
                path.len() * 10
            });
            let mut r = next.get_response(req);
            r.headers_mut()
                .insert("x-n", n.to_string().parse().unwrap());
            r.headers_mut()
                .insert("x-seen", format!("{seen:?}").parse().unwrap());
            r
        })
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/a/bc")));
    assert_eq!(header(&resp, "x-n").as_deref(), Some("50"));
    assert_eq!(header(&resp, "x-seen").as_deref(), Some("[5, 2]"));
}

#[test]
fn wait_on_a_ready_future_returns_its_value() {
    let p = Pipeline::builder()
        .sync(|_req: Request, _next: &mut Next| ok(&wait(std::future::ready(7)).to_string()))
        .view(|_req: Request| async move { ok("unreachable") })
        .build()
        .unwrap();
    assert_eq!(text(&rt().block_on(p.handle(req("/")))), "7");
}

/// Request A's middleware `wait`s for a value that only request B's view
/// produces. On one runtime thread that completes only if `wait` suspends
/// the fiber instead of blocking the thread.
#[test]
fn wait_suspends_the_fiber_not_the_thread() {
    with_deadline(DEADLINE, || {
        let (tx, rx) = oneshot::channel::<&'static str>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        let tx = Arc::new(Mutex::new(Some(tx)));
        let p = Pipeline::builder()
            .sync(move |req: Request, next: &mut Next| {
                if req.uri().path() == "/a" {
                    let rx = rx.lock().unwrap().take().expect("one /a request");
                    let got = wait(rx).expect("sender kept");
                    return ok(got);
                }
                next.get_response(req)
            })
            .view(move |_req: Request| {
                let tx = tx.clone();
                async move {
                    tokio::task::yield_now().await;
                    tx.lock()
                        .unwrap()
                        .take()
                        .expect("one /b request")
                        .send("from b")
                        .unwrap();
                    ok("b done")
                }
            })
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let (a, b) = local.block_on(&rt(), async {
            let a = tokio::task::spawn_local(p.handle(req("/a")));
            // Let A start and suspend in `wait` before B exists.
            tokio::task::yield_now().await;
            assert_eq!(p.stack_stats().in_use, 1, "A is suspended on its fiber");
            let b = tokio::task::spawn_local(p.handle(req("/b")));
            (a.await.unwrap(), b.await.unwrap())
        });
        assert_eq!(text(&a), "from b");
        assert_eq!(text(&b), "b done");
        assert!(p.stack_stats().is_whole());
    });
}

#[test]
fn blocking_runs_the_closure_on_another_thread() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let here = std::thread::current().id();
            let (there, v) = blocking(|| {
                std::thread::sleep(Duration::from_millis(20));
                (std::thread::current().id(), 41 + 1)
            });
            assert_ne!(here, there, "the closure ran on the blocking pool");
            assert_eq!(
                std::thread::current().id(),
                here,
                "the fiber resumed on its own thread"
            );
            let mut r = next.get_response(req);
            r.headers_mut()
                .insert("x-v", v.to_string().parse().unwrap());
            r
        })
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-v").as_deref(), Some("42"));
    assert!(p.stack_stats().is_whole());
}

/// Request A's blocking closure waits for a message that request B's view
/// sends: the runtime thread must stay free while A's closure runs.
#[test]
fn blocking_suspends_the_fiber_not_the_thread() {
    with_deadline(DEADLINE, || {
        let (tx, rx) = mpsc::channel::<u32>();
        let rx = Arc::new(Mutex::new(Some(rx)));
        let tx = Mutex::new(tx);
        let p = Pipeline::builder()
            .sync(move |req: Request, next: &mut Next| {
                if req.uri().path() == "/a" {
                    let rx = rx.lock().unwrap().take().expect("one /a request");
                    let v = blocking(move || rx.recv().expect("b sends"));
                    return ok(&v.to_string());
                }
                next.get_response(req)
            })
            .view(move |_req: Request| {
                tx.lock().unwrap().send(99).unwrap();
                async move { ok("b done") }
            })
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let (a, b) = local.block_on(&rt(), async {
            let a = tokio::task::spawn_local(p.handle(req("/a")));
            tokio::task::yield_now().await;
            let b = tokio::task::spawn_local(p.handle(req("/b")));
            (a.await.unwrap(), b.await.unwrap())
        });
        assert_eq!(text(&a), "99");
        assert_eq!(text(&b), "b done");
        assert!(p.stack_stats().is_whole());
    });
}

#[test]
fn panic_in_a_blocking_closure_becomes_a_500_with_an_error_log() {
    let outer_saw = Arc::new(AtomicUsize::new(0));
    let os = outer_saw.clone();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let r = next.get_response(req);
            os.store(r.status().as_u16() as usize, Ordering::SeqCst);
            r
        })
        .sync(suspendware::named(
            "legacy",
            |_req: Request, _next: &mut Next| -> Response {
                blocking(|| -> u32 { panic!("legacy driver exploded") });
                unreachable!("blocking re-raises the closure's panic")
            },
        ))
        .view(|_req: Request| async move { ok("unreachable") })
        .build()
        .unwrap();
    let rt = rt();
    let (logs, resp) = capture::capture(|| rt.block_on(p.handle(req("/"))));
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        outer_saw.load(Ordering::SeqCst),
        500,
        "outer middleware saw the 500"
    );
    let errors = error_lines(&logs);
    assert!(
        errors
            .iter()
            .any(|l| l.contains("legacy driver exploded") && l.contains("legacy")),
        "no error event naming the panic: {errors:?}"
    );
    assert!(p.stack_stats().is_whole());

    // The runtime and pipeline keep working.
    let p2 = Pipeline::builder()
        .sync(|_req: Request, _next: &mut Next| ok(&blocking(|| 5).to_string()))
        .view(|_req: Request| async move { ok("unreachable") })
        .build()
        .unwrap();
    assert_eq!(text(&rt.block_on(p2.handle(req("/")))), "5");
}

/// `wait` and `blocking` in a sync middleware that sits in the second fiber
/// segment (behind async middleware) work the same way.
#[test]
fn wait_and_blocking_in_an_inner_segment() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .layer_async(
            |req: Request, next: suspendware::AsyncNext| async move { next.run(req).await },
        )
        .sync(|req: Request, next: &mut Next| {
            let a = wait(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                2
            });
            let b = blocking(|| 3);
            let mut r = next.get_response(req);
            r.headers_mut()
                .insert("x-ab", (a * b).to_string().parse().unwrap());
            r
        })
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    assert_eq!(p.fiber_segments(), 2);
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(header(&resp, "x-ab").as_deref(), Some("6"));
    assert!(p.stack_stats().is_whole());
}
