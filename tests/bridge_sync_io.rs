//! Blocking-style I/O on fibers: `suspendware::io::SyncIo` under a real,
//! unmodified sync client (tungstenite's websocket client, generic over
//! `Read + Write`) and `suspendware::sleep`, without extra threads.
//!
//! The tests take one lock: the first reads the process's thread count,
//! which the others' threads would disturb.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{ok, panic_message, req, rt, text, with_deadline};
use futures_util::{SinkExt, StreamExt};
use suspendware::io::SyncIo;
use suspendware::{Mode, Next, Pipeline, Request, Response};
use tungstenite::Message;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// This binary's tests: libtest names each test's thread after it.
const TESTS: &[&str] = &[
    "a_thousand_sync_websocket_clients_share_one_thread",
    "sync_io_and_sleep_block_the_held_thread_in_adapt_mode",
    "sleep_suspends_the_fiber_not_the_thread",
    "sleep_and_sync_io_off_fiber_panic_with_advice",
];

/// The process's threads, less this binary's test threads.
fn os_threads() -> usize {
    common::threads_except_tests(TESTS)
}

/// A websocket echo server on 127.0.0.1, as tasks of the current runtime.
async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::task::spawn_local(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::task::spawn_local(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Sync middleware speaking websocket through tungstenite's blocking client.
fn ws_client(addr: SocketAddr, max_threads: Arc<AtomicUsize>) -> Pipeline {
    Pipeline::builder()
        .stack_idle_timeout(None)
        .sync(move |req: Request, next: &mut Next| -> Response {
            let id = req.uri().path().to_owned();
            let tcp = suspendware::wait(tokio::net::TcpStream::connect(addr)).expect("connect");
            let (mut ws, _) =
                tungstenite::client::client(format!("ws://{addr}/"), SyncIo::new(tcp))
                    .expect("websocket handshake");
            ws.send(Message::text(format!("hello {id}"))).expect("send");
            let echo = ws.read().expect("read").into_text().expect("text");
            max_threads.fetch_max(os_threads(), Ordering::SeqCst);
            ws.close(None).expect("close");
            let mut resp = next.get_response(req);
            *resp.body_mut() = echo.as_str().to_owned().into();
            resp
        })
        .view(|_req: Request| async { ok("") })
        .build()
        .unwrap()
}

#[test]
fn a_thousand_sync_websocket_clients_share_one_thread() {
    const N: usize = 1_000;
    let _serial = serial();
    with_deadline(Duration::from_secs(120), || {
        let max_threads = Arc::new(AtomicUsize::new(0));
        let mut baseline = 0;
        rt().block_on(tokio::task::LocalSet::new().run_until(async {
            let addr = echo_server().await;
            let p = ws_client(addr, max_threads.clone());
            // Counted after the build: it starts the process's watchdog
            // ticker thread (once per process), which SyncIo does not add.
            // `build` returns once that thread runs under its own name (a
            // new thread first carries its creator's, this test thread's,
            // which `os_threads` leaves out: CI once saw it appear later).
            baseline = os_threads();
            let handles: Vec<_> = (0..N)
                .map(|i| tokio::task::spawn_local(p.handle(req(&format!("/{i}")))))
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                let resp = h.await.expect("request task");
                assert_eq!(text(&resp), format!("hello /{i}"));
            }
        }));
        let max = max_threads.load(Ordering::SeqCst);
        eprintln!("SyncIo: {N} websocket clients; threads: baseline {baseline}, max {max}");
        // At most the baseline: a thread left over from another test may
        // exit meanwhile, never may one be added.
        assert!(max > 0, "threads were sampled");
        assert!(
            max <= baseline,
            "SyncIo must not add threads: baseline {baseline}, max {max}"
        );
    });
}

#[test]
fn sync_io_and_sleep_block_the_held_thread_in_adapt_mode() {
    let _serial = serial();
    with_deadline(Duration::from_secs(30), || {
        rt().block_on(tokio::task::LocalSet::new().run_until(async {
            let addr = echo_server().await;
            let p = Pipeline::builder()
                .mode(Mode::Adapt)
                .sync(move |req: Request, next: &mut Next| -> Response {
                    suspendware::sleep(Duration::from_millis(1));
                    let tcp =
                        suspendware::wait(tokio::net::TcpStream::connect(addr)).expect("connect");
                    let (mut ws, _) =
                        tungstenite::client::client(format!("ws://{addr}/"), SyncIo::new(tcp))
                            .expect("handshake");
                    ws.send(Message::text("held")).expect("send");
                    let echo = ws.read().expect("read").into_text().expect("text");
                    let mut resp = next.get_response(req);
                    *resp.body_mut() = echo.as_str().to_owned().into();
                    resp
                })
                .view(|_req: Request| async { ok("") })
                .build()
                .unwrap();
            assert_eq!(text(&p.handle(req("/")).await), "held");
        }));
    });
}

#[test]
fn sleep_suspends_the_fiber_not_the_thread() {
    const N: usize = 1_000;
    let _serial = serial();
    with_deadline(Duration::from_secs(60), || {
        let asleep = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let p = {
            let (asleep, most) = (asleep.clone(), most.clone());
            Pipeline::builder()
                .sync(move |req: Request, next: &mut Next| -> Response {
                    let now = asleep.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    suspendware::sleep(Duration::from_millis(50));
                    asleep.fetch_sub(1, Ordering::SeqCst);
                    next.get_response(req)
                })
                .view(|_req: Request| async { ok("up") })
                .build()
                .unwrap()
        };
        rt().block_on(tokio::task::LocalSet::new().run_until(async {
            let handles: Vec<_> = (0..N)
                .map(|_| tokio::task::spawn_local(p.handle(req("/"))))
                .collect();
            for h in handles {
                assert_eq!(text(&h.await.unwrap()), "up");
            }
        }));
        // All N were asleep at once on the one runtime thread.
        assert_eq!(most.load(Ordering::SeqCst), N);
    });
}

#[test]
fn sleep_and_sync_io_off_fiber_panic_with_advice() {
    let _serial = serial();
    let p = std::panic::catch_unwind(|| suspendware::sleep(Duration::from_millis(1)))
        .expect_err("sleep off-fiber must panic");
    let msg = panic_message(&*p);
    assert!(msg.contains("tokio::time::sleep"), "{msg}");

    let p = std::panic::catch_unwind(|| {
        use std::io::Write;
        let mut io = SyncIo::new(tokio::io::sink());
        let _ = io.write(b"x");
    })
    .expect_err("SyncIo off-fiber must panic");
    let msg = panic_message(&*p);
    assert!(msg.contains("outside a suspendware fiber"), "{msg}");
}
