//! The legacy example app served in-process on 127.0.0.1:0 by the
//! thread-per-core server, driven by a real HTTP client.

#[allow(dead_code)]
#[path = "../examples/legacy_app/mod.rs"]
mod app;
mod http_client;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, COOKIE};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use suspendware::server::Server;
use suspendware::{Mode, Pipeline, Request, Response};

use http_client::{client, send, set_cookie, tokio_mt};

fn app_server(workers: usize, mode: Mode) -> Server {
    let state = app::AppState::default();
    let cfg = app::AppConfig {
        view_delay: Duration::from_millis(1),
        mode,
    };
    let pipeline = app::pipeline(&state, &cfg).unwrap();
    Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(workers)
        .serve(|_| pipeline.clone())
        .unwrap()
}

const MODES: [Mode; 3] = [Mode::Suspend, Mode::Adapt, Mode::ThreadHop];

#[test]
fn each_middleware_sets_its_headers() {
    for mode in MODES {
        each_middleware_sets_its_headers_in(mode);
    }
}

fn each_middleware_sets_its_headers_in(mode: Mode) {
    let server = app_server(2, mode);
    let r =
        tokio_mt().block_on(async { send(&client(), &server, Method::GET, "/", &[], "").await });
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "hello, anonymous\n");
    // SecurityMiddleware
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["referrer-policy"], "same-origin");
    assert_eq!(r.headers["cross-origin-opener-policy"], "same-origin");
    // XFrameOptionsMiddleware
    assert_eq!(r.headers["x-frame-options"], "DENY");
    // SessionMiddleware
    assert_eq!(r.headers["vary"], "Cookie");
    // CsrfViewMiddleware hands out a token
    let token = set_cookie(&r.headers, "csrftoken").expect("csrftoken cookie");
    assert_eq!(token.len(), 32);
    // Timing
    let ms: f64 = r.headers["x-render-ms"]
        .to_str()
        .unwrap()
        .parse()
        .expect("X-Render-MS is a number");
    assert!(ms >= 0.0);
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn session_cookie_round_trip() {
    let server = app_server(2, Mode::Suspend);
    tokio_mt().block_on(async {
        let c = client();
        let first = send(&c, &server, Method::GET, "/visits", &[], "").await;
        assert_eq!(first.body, "visits: 1\n");
        let key = set_cookie(&first.headers, "sessionid")
            .expect("sessionid cookie after a session change");
        let cookie = format!("sessionid={key}");
        let second = send(
            &c,
            &server,
            Method::GET,
            "/visits",
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(second.body, "visits: 2\n");
        assert_eq!(
            set_cookie(&second.headers, "sessionid").as_deref(),
            Some(key.as_str()),
            "same session key"
        );
        let third = send(
            &c,
            &server,
            Method::GET,
            "/visits",
            &[("cookie", &cookie)],
            "",
        )
        .await;
        assert_eq!(third.body, "visits: 3\n");
        // Another client (no cookie) has its own session.
        let other = send(&c, &server, Method::GET, "/visits", &[], "").await;
        assert_eq!(other.body, "visits: 1\n");
        assert_ne!(set_cookie(&other.headers, "sessionid").unwrap(), key);
        // A request that does not change the session sets no session cookie.
        let me = send(&c, &server, Method::GET, "/me", &[("cookie", &cookie)], "").await;
        assert!(set_cookie(&me.headers, "sessionid").is_none());
    });
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn csrf_rejects_unsafe_methods_without_a_token_and_login_authenticates() {
    for mode in MODES {
        csrf_and_login_in(mode);
    }
}

fn csrf_and_login_in(mode: Mode) {
    let server = app_server(2, mode);
    tokio_mt().block_on(async {
        let c = client();
        let no_token = send(&c, &server, Method::POST, "/login", &[], "username=alice").await;
        assert_eq!(no_token.status, StatusCode::FORBIDDEN);
        assert!(no_token.body.contains("CSRF verification failed"));

        let token = set_cookie(
            &send(&c, &server, Method::GET, "/", &[], "").await.headers,
            "csrftoken",
        )
        .unwrap();
        let cookie = format!("csrftoken={token}");
        let wrong = send(
            &c,
            &server,
            Method::POST,
            "/login",
            &[("cookie", &cookie), ("x-csrftoken", "nope")],
            "username=alice",
        )
        .await;
        assert_eq!(wrong.status, StatusCode::FORBIDDEN);

        let ok = send(
            &c,
            &server,
            Method::POST,
            "/login",
            &[("cookie", &cookie), ("x-csrftoken", &token)],
            "username=alice",
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
        assert_eq!(ok.body, "logged in as alice\n");
        let session =
            set_cookie(&ok.headers, "sessionid").expect("login stores the user in the session");

        // AuthenticationMiddleware finds the user from the session.
        let cookies = format!("{cookie}; sessionid={session}");
        let me = send(
            &c,
            &server,
            Method::GET,
            "/me",
            &[(COOKIE.as_str(), &cookies)],
            "",
        )
        .await;
        assert_eq!(me.body, "user alice (id 1)\n");
        let home = send(
            &c,
            &server,
            Method::GET,
            "/",
            &[(COOKIE.as_str(), &cookies)],
            "",
        )
        .await;
        assert_eq!(home.body, "hello, alice\n");
        let anon = send(&c, &server, Method::GET, "/me", &[], "").await;
        assert_eq!(anon.body, "anonymous\n");
    });
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn method_decorator_answers_405_with_allow() {
    let server = app_server(1, Mode::Suspend);
    let r = tokio_mt()
        .block_on(async { send(&client(), &server, Method::GET, "/login", &[], "").await });
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers[ALLOW], "POST");
    // The outer middleware still decorated the 405.
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert!(r.headers.contains_key("x-render-ms"));
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn async_lookup_view_answers() {
    let server = app_server(1, Mode::Suspend);
    tokio_mt().block_on(async {
        let c = client();
        let bob = send(&c, &server, Method::GET, "/users/bob", &[], "").await;
        assert_eq!(
            (bob.status, bob.body.as_str()),
            (StatusCode::OK, "bob has id 2\n")
        );
        let zed = send(&c, &server, Method::GET, "/users/zed", &[], "").await;
        assert_eq!(zed.status, StatusCode::NOT_FOUND);
    });
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn request_bodies_over_the_limit_get_413() {
    let state = app::AppState::default();
    let pipeline = app::pipeline(
        &state,
        &app::AppConfig {
            view_delay: Duration::ZERO,
            mode: Mode::Suspend,
        },
    )
    .unwrap();
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(1)
        .body_limit(16)
        .serve(|_| pipeline.clone())
        .unwrap();
    let r = tokio_mt().block_on(async {
        send(
            &client(),
            &server,
            Method::POST,
            "/login",
            &[],
            &"x".repeat(17),
        )
        .await
    });
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    server.shutdown(Duration::from_secs(10));
}

/// 2,000 requests with a 50 ms view, all inside the server at once on ONE
/// worker thread: the view counts requests inside it and waits at a barrier
/// until all 2,000 have arrived, so the test can only pass if every
/// request's sync middleware is suspended (not holding the thread) while
/// the others run.
#[test]
fn two_thousand_concurrent_requests_on_one_worker_all_complete() {
    const N: usize = 2_000;
    // Client and server ends of 2,000 connections live in this process.
    if let Some(limit) = open_files_limit() {
        assert!(
            limit >= 2 * N as u64 + 200,
            "this test needs `ulimit -n` of at least {} (it is {limit})",
            2 * N + 200
        );
    }
    let state = app::AppState::default();
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let (inside_v, peak_v, barrier_v) = (inside.clone(), peak.clone(), barrier.clone());
    let pipeline = app::middleware(Pipeline::builder(), &state)
        .view(move |_req: Request| {
            let (inside, peak, barrier) = (inside_v.clone(), peak_v.clone(), barrier_v.clone());
            async move {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                barrier.wait().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                Response::new("done".into())
            }
        })
        .build()
        .unwrap();
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(1)
        .serve(|_| pipeline.clone())
        .unwrap();
    let addr = server.local_addr();
    let rt = tokio_mt();
    let results = rt.block_on(async {
        let c = client();
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move {
                    let req = http::Request::get(format!("http://{addr}/"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let resp = c.request(req).await.expect("request failed");
                    let ok = resp.status() == StatusCode::OK
                        && resp.headers().contains_key("x-render-ms");
                    ok && resp.into_body().collect().await.unwrap().to_bytes() == "done"
                })
            })
            .collect();
        let all = async {
            let mut ok = 0;
            for t in tasks {
                ok += usize::from(t.await.unwrap());
            }
            ok
        };
        tokio::time::timeout(Duration::from_secs(120), all).await
    });
    let ok = results.unwrap_or_else(|_| {
        panic!(
            "timed out: only {} of {N} requests reached the view at once",
            inside.load(Ordering::SeqCst)
        )
    });
    assert_eq!(ok, N, "every request answered 200 with X-Render-MS");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        N,
        "all requests were in flight inside the server at once"
    );
    let report = server.shutdown(Duration::from_secs(10));
    assert_eq!(report.stats.served, N);
    assert_eq!(pipeline.stack_stats().in_use, 0);
    assert!(
        pipeline.stack_stats().allocated >= N,
        "each suspended request held its own fiber stack"
    );
}

#[test]
fn shutdown_with_requests_in_flight_completes_them() {
    const N: usize = 20;
    let state = app::AppState::default();
    let entered = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let entered_v = entered.clone();
    let pipeline = app::middleware(Pipeline::builder(), &state)
        .view(move |_req: Request| {
            let (entered, mut gate) = (entered_v.clone(), gate_rx.clone());
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                Response::new("finished".into())
            }
        })
        .build()
        .unwrap();
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(2)
        .serve(|_| pipeline.clone())
        .unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let rt = tokio_mt();
    let c = client();
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let c = c.clone();
            rt.spawn(async move {
                let req = http::Request::get(format!("http://{addr}/"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = c
                    .request(req)
                    .await
                    .expect("in-flight request must be answered");
                (
                    resp.status(),
                    resp.into_body().collect().await.unwrap().to_bytes(),
                )
            })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < N {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stopper = std::thread::spawn(move || server.shutdown(Duration::from_secs(30)));
    while !handle.is_stopping() {
        std::thread::yield_now();
    }
    // The server stops accepting (every worker's listener closes) while the
    // requests are still held in the view.
    let mut refused = false;
    for _ in 0..2_000 {
        if std::net::TcpStream::connect(addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        refused,
        "the server still accepts connections during shutdown"
    );
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "every request is still held in the view"
    );
    gate_tx.send(true).unwrap();
    for t in tasks {
        let (status, body) = rt.block_on(t).unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"finished"[..]));
    }
    let report = stopper.join().unwrap();
    assert_eq!(report.stats.served, N);
    assert_eq!(report.stats.cancelled, 0);
    assert_eq!(report.runtime.cancelled, 0);
}

#[test]
fn shutdown_deadline_cancels_stuck_requests_and_unwinds_their_middleware() {
    const N: usize = 5;
    struct DropMark(Arc<AtomicUsize>);
    impl Drop for DropMark {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let state = app::AppState::default();
    let (entered, unwound) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (entered_m, unwound_m) = (entered.clone(), unwound.clone());
    let pipeline = app::middleware(Pipeline::builder(), &state)
        .sync(move |req: Request, next: &mut suspendware::Next| {
            let _mark = DropMark(unwound_m.clone());
            entered_m.fetch_add(1, Ordering::SeqCst);
            next.get_response(req)
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(1)
        .serve(|_| pipeline.clone())
        .unwrap();
    let addr = server.local_addr();
    let rt = tokio_mt();
    let c = client();
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let c = c.clone();
            let req = http::Request::get(format!("http://{addr}/"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            rt.spawn(async move { c.request(req).await.map(|r| r.status()) })
        })
        .collect();
    while entered.load(Ordering::SeqCst) < N {
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = server.shutdown(Duration::from_millis(100));
    assert_eq!((report.stats.served, report.stats.cancelled), (0, N));
    assert_eq!(
        report.runtime.cancelled, 1,
        "the worker's accept loop was still waiting for its connections"
    );
    assert_eq!(
        unwound.load(Ordering::SeqCst),
        N,
        "every suspended middleware frame was dropped"
    );
    assert_eq!(pipeline.stack_stats().in_use, 0);
    for t in tasks {
        assert!(
            rt.block_on(t).unwrap().is_err(),
            "the client sees the connection closed"
        );
    }
}

/// The soft `RLIMIT_NOFILE` from `/proc/self/limits` (Linux only).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
