//! `blocking` closures may borrow from the middleware's stack. A request
//! cancelled while such a closure runs keeps its fiber and its stack until
//! the closure returns: the closure keeps writing into its borrowed buffer
//! after the drop, the stack is not reused before it returns, and (on
//! suspendware's `Runtime`) the worker keeps serving meanwhile.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ok, poll_once, req, rt, text};
use suspendware::runtime::Runtime;
use suspendware::{blocking, Next, Pipeline, Request, Response};

const LONG: Duration = Duration::from_secs(20);
const WRITES: usize = 20;

/// A "connection" owned by the middleware's frame and lent to the pool.
struct Conn {
    queries: Vec<String>,
}

impl Conn {
    fn query(&mut self, q: &str) -> usize {
        std::thread::sleep(Duration::from_millis(1));
        self.queries.push(q.to_owned());
        self.queries.len()
    }
}

#[test]
fn a_blocking_closure_borrows_the_middlewares_locals_and_the_request() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let mut conn = Conn {
                queries: Vec::new(),
            };
            let mut seen: Vec<String> = Vec::new();
            let n = blocking(|| {
                seen.extend(req.headers().keys().map(|k| k.to_string()));
                conn.query("SELECT 1")
            });
            assert_eq!(n, 1);
            assert_eq!(conn.queries, ["SELECT 1"]);
            assert_eq!(seen, ["x-probe"]);
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("done") })
        .build()
        .unwrap();
    let mut r = req("/");
    r.headers_mut().insert("x-probe", "1".parse().unwrap());
    let resp = rt().block_on(p.handle(r));
    assert_eq!(text(&resp), "done");
    assert!(p.stack_stats().is_whole());
}

#[test]
fn a_panic_in_a_borrowing_closure_is_the_requests_500() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| -> Response {
            let mut buf = vec![1];
            blocking(|| {
                buf.push(2);
                panic!("in the pool");
            });
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("unreached") })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(resp.status(), 500);
    assert!(p.stack_stats().is_whole());
}

/// Shared between the test and the pipeline's middleware.
#[derive(Default)]
struct Probe {
    started: AtomicBool,
    /// Writes the cancelled request's closure made into its borrowed buffer.
    writes: AtomicUsize,
    /// `writes` as the next request's middleware saw it on entry.
    seen_by_next: AtomicUsize,
    closure_done: AtomicBool,
}

/// One stack: the next request can only run once the orphan's is back.
fn slow_pipeline(probe: &Arc<Probe>) -> Pipeline {
    let probe = probe.clone();
    Pipeline::builder()
        .max_stacks(1)
        .stack_wait(LONG)
        .sync(move |req: Request, next: &mut Next| {
            if req.uri().path() == "/slow" {
                let mut buf: Vec<usize> = Vec::new();
                let probe = &probe;
                blocking(|| {
                    probe.started.store(true, Ordering::SeqCst);
                    for i in 0..WRITES {
                        std::thread::sleep(Duration::from_millis(5));
                        buf.push(i); // into the fiber's frame, after the drop too
                        probe.writes.fetch_add(1, Ordering::SeqCst);
                    }
                    assert_eq!(buf.len(), WRITES);
                    probe.closure_done.store(true, Ordering::SeqCst);
                });
            } else {
                probe
                    .seen_by_next
                    .store(probe.writes.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("done") })
        .build()
        .unwrap()
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn on_the_runtime_a_cancelled_borrowing_request_keeps_its_stack_and_the_worker_serves() {
    let probe = Arc::new(Probe::default());
    let p = slow_pipeline(&probe);
    let other = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async { ok("other") })
        .build()
        .unwrap();
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let handle = runtime.handle();
    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    let slow = mt.spawn(handle.dispatch(&p, req("/slow")));
    wait_for("the closure to start", || {
        probe.started.load(Ordering::SeqCst)
    });
    slow.abort(); // the client went away
    let _ = mt.block_on(slow);

    // The worker is not blocked by the closure: another pipeline's request
    // is served while the closure still writes into the orphaned fiber.
    let resp = mt.block_on(handle.dispatch(&other, req("/other"))).unwrap();
    assert_eq!(text(&resp), "other");
    let during = probe.writes.load(Ordering::SeqCst);
    let stats = p.stack_stats();
    if !probe.closure_done.load(Ordering::SeqCst) {
        assert_eq!(
            stats.in_use, 1,
            "the orphan's stack stays in use: {stats:?}"
        );
    }

    // The next request needs the only stack: it gets it after the closure.
    let resp = mt.block_on(handle.dispatch(&p, req("/next"))).unwrap();
    assert_eq!(text(&resp), "done");
    assert!(probe.closure_done.load(Ordering::SeqCst));
    assert_eq!(
        probe.seen_by_next.load(Ordering::SeqCst),
        WRITES,
        "the stack was reused before the borrowing closure returned"
    );
    eprintln!("writes when the other request was served: {during} of {WRITES}");
    wait_for("the pool to be whole", || p.stack_stats().is_whole());
    let report = runtime.shutdown(LONG);
    assert_eq!(report.worker_panics, 0);
}

#[test]
fn without_a_reaper_cancelling_waits_for_the_borrowing_closure() {
    let probe = Arc::new(Probe::default());
    let p = slow_pipeline(&probe);
    common::with_deadline(LONG, move || {
        let rt = rt();
        rt.block_on(async {
            let mut f = Box::pin(p.handle(req("/slow")));
            assert!(
                poll_once(f.as_mut()).is_pending(),
                "the closure takes 100 ms"
            );
            wait_for("the closure to start", || {
                probe.started.load(Ordering::SeqCst)
            });
            drop(f); // waits for the closure: its borrow must stay valid
        });
        assert!(probe.closure_done.load(Ordering::SeqCst));
        assert_eq!(probe.writes.load(Ordering::SeqCst), WRITES);
        assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
        let resp = rt.block_on(p.handle(req("/next")));
        assert_eq!(text(&resp), "done");
    });
}
