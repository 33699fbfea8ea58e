//! The per-pipeline `blocking` pool and the fiber stack pool under runtime
//! shutdown, cancellation and sharing.
//!
//! Written by an audit of these paths (third session of 2026-12-07). One
//! test failed when written: `blocking` on a runtime whose blocking pool
//! was shutting down neither ran its closure nor panicked, for good. tokio
//! dropped the refused drainer's task unrun, and its `Slot` gave its place
//! back silently, leaving the job queued with no drainer. Fixed in
//! `bridge::pool` (a refused slot drains what no other drainer would see;
//! loom `pool_refused_drainer_leaves_no_job_behind`):
//! `blocking_when_runtime_pool_shut_down_neither_runs_nor_panics`. The
//! other tests held already and are kept (one pipeline on two runtimes
//! with either shut down while the other queues, stack waiters cancelled,
//! FIFO, a pipeline dropped while requests wait, trim racing acquire).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ok, req, rt, run_child_ok, text};
use suspendware::runtime::Runtime;
use suspendware::{blocking, Next, Pipeline, Request, Response};

const BOUND: Duration = Duration::from_secs(10);

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + BOUND;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// (1) blocking pool: a drainer `Slot` dropped unrun.
// ---------------------------------------------------------------------------

/// A fiber on a tokio runtime whose blocking pool has begun shutting down
/// calls `blocking`. Documented: "# Panics ... with the runtime shutting
/// down before `f` could run". Expected: `blocking` panics (or `f` runs).
/// With the bounded pool, the drainer's `spawn_blocking` is refused, its
/// `Slot` is dropped (active back to 0) but the job stays queued in the
/// pipeline's queue with no drainer: the fiber neither runs `f` nor panics.
#[test]
fn blocking_when_runtime_pool_shut_down_neither_runs_nor_panics() {
    run_child_ok("child_blocking_after_blocking_pool_shutdown");
}

#[test]
#[ignore]
fn child_blocking_after_blocking_pool_shutdown() {
    let entered = Arc::new(AtomicBool::new(false));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let ran = Arc::new(AtomicBool::new(false));
    let outcome = Arc::new(AtomicUsize::new(0)); // 1 = returned, 2 = panicked
    let p = {
        let (entered, go_rx, ran, outcome) =
            (entered.clone(), go_rx.clone(), ran.clone(), outcome.clone());
        Pipeline::builder()
            .blocking_threads(1)
            .stack_idle_timeout(None)
            .sync(move |req: Request, next: &mut Next| -> Response {
                entered.store(true, Ordering::SeqCst);
                // Hold the worker (synchronously) until the test has begun
                // the runtime's shutdown.
                let _ = go_rx.lock().unwrap().recv_timeout(BOUND);
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    blocking(|| ran.store(true, Ordering::SeqCst))
                }));
                outcome.store(if r.is_ok() { 1 } else { 2 }, Ordering::SeqCst);
                next.get_response(req)
            })
            .view(|_req: Request| async { ok("done") })
            .build()
            .unwrap()
    };
    let a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (p2, h2) = (p.clone(), a.handle().clone());
    std::thread::spawn(move || h2.block_on(p2.handle(req("/"))));
    wait_until("middleware entered", || entered.load(Ordering::SeqCst));
    // Sets the blocking pool's shutdown flag and returns at once.
    a.shutdown_background();
    go_tx.send(()).unwrap();
    let end = Instant::now() + BOUND;
    while Instant::now() < end && !ran.load(Ordering::SeqCst) && outcome.load(Ordering::SeqCst) == 0
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        ran.load(Ordering::SeqCst) || outcome.load(Ordering::SeqCst) != 0,
        "blocking() on a shut-down runtime neither ran its closure nor panicked within {BOUND:?}: \
         the job is stranded in the pipeline's queue (ran={}, outcome={})",
        ran.load(Ordering::SeqCst),
        outcome.load(Ordering::SeqCst)
    );
    println!("CHILD-OK");
}

/// Same stranding, seen from a second runtime sharing the pipeline: after
/// runtime A's refused drainer, the stranded job sits at the head of the
/// queue. A later call on B starts a drainer, which runs A's job first.
/// Checks that B is served and the pool is whole afterwards.
#[test]
fn other_runtime_is_served_after_a_refused_drainer() {
    run_child_ok("child_other_runtime_after_refused_drainer");
}

#[test]
#[ignore]
fn child_other_runtime_after_refused_drainer() {
    let entered = Arc::new(AtomicBool::new(false));
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(Mutex::new(go_rx));
    let ran = Arc::new(AtomicUsize::new(0));
    let p = {
        let (entered, go_rx, ran) = (entered.clone(), go_rx.clone(), ran.clone());
        Pipeline::builder()
            .blocking_threads(1)
            .stack_idle_timeout(None)
            .sync(move |req: Request, next: &mut Next| -> Response {
                if req.uri().path() == "/a" {
                    entered.store(true, Ordering::SeqCst);
                    let _ = go_rx.lock().unwrap().recv_timeout(BOUND);
                }
                let ran = ran.clone();
                blocking(move || {
                    std::thread::sleep(Duration::from_millis(5));
                    ran.fetch_add(1, Ordering::SeqCst);
                });
                next.get_response(req)
            })
            .view(|_req: Request| async { ok("done") })
            .build()
            .unwrap()
    };
    let a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (pa, h2) = (p.clone(), a.handle().clone());
    std::thread::spawn(move || h2.block_on(pa.handle(req("/a"))));
    wait_until("middleware entered", || entered.load(Ordering::SeqCst));
    a.shutdown_background();
    go_tx.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let b = Runtime::builder().workers(1).build().unwrap();
    let h = b.handle();
    let rtc = rt();
    rtc.block_on(async {
        let ds: Vec<_> = (0..4).map(|_| h.dispatch(&p, req("/b"))).collect();
        for d in ds {
            let r = tokio::time::timeout(BOUND, d)
                .await
                .expect("B's request stranded")
                .unwrap();
            assert_eq!(text(&r), "done");
        }
    });
    println!("ran={}", ran.load(Ordering::SeqCst));
    println!("CHILD-OK");
}

/// The reviewer's scenario with suspendware Runtimes: one pipeline, two
/// runtimes, `blocking_threads(1)`. B's request occupies the only slot;
/// A's requests queue behind it; B is shut down with no grace while A's
/// jobs are queued. A's requests must all complete.
#[test]
fn shutting_one_runtime_down_does_not_strand_the_others_queued_jobs() {
    run_child_ok("child_shutdown_one_runtime");
}

#[test]
#[ignore]
fn child_shutdown_one_runtime() {
    let started = Arc::new(AtomicUsize::new(0));
    let p = {
        let started = started.clone();
        Pipeline::builder()
            .blocking_threads(1)
            .stack_idle_timeout(None)
            .sync(move |req: Request, next: &mut Next| -> Response {
                let ms = if req.uri().path() == "/b" { 300 } else { 20 };
                let started = started.clone();
                blocking(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(ms));
                });
                next.get_response(req)
            })
            .view(|_req: Request| async { ok("done") })
            .build()
            .unwrap()
    };
    let a = Runtime::builder().workers(1).build().unwrap();
    let b = Runtime::builder().workers(1).build().unwrap();
    let (ha, hb) = (a.handle(), b.handle());
    let rtc = rt();
    rtc.block_on(async {
        let db = hb.dispatch(&p, req("/b"));
        // Let B's closure start (it holds the only slot).
        let s = started.clone();
        let end = Instant::now() + BOUND;
        while s.load(Ordering::SeqCst) == 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let das: Vec<_> = (0..6).map(|_| ha.dispatch(&p, req("/a"))).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stopper = std::thread::spawn(move || b.shutdown(Duration::ZERO));
        let _ = db.await;
        for d in das {
            let r = tokio::time::timeout(BOUND, d)
                .await
                .expect("A's request stranded after B's shutdown")
                .unwrap();
            assert_eq!(text(&r), "done");
        }
        stopper.join().unwrap();
    });
    drop(a);
    wait_until("stacks whole", || p.stack_stats().is_whole());
    println!("CHILD-OK");
}

/// Mirror: A's requests occupy/queue, A shut down while B's jobs queue.
#[test]
fn shutting_down_the_runtime_owning_the_drainer_while_others_queue() {
    run_child_ok("child_shutdown_drainer_owner");
}

#[test]
#[ignore]
fn child_shutdown_drainer_owner() {
    let p = Pipeline::builder()
        .blocking_threads(1)
        .stack_idle_timeout(None)
        .sync(move |req: Request, next: &mut Next| -> Response {
            blocking(|| std::thread::sleep(Duration::from_millis(30)));
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("done") })
        .build()
        .unwrap();
    let a = Runtime::builder().workers(1).build().unwrap();
    let b = Runtime::builder().workers(1).build().unwrap();
    let (ha, hb) = (a.handle(), b.handle());
    let rtc = rt();
    rtc.block_on(async {
        let das: Vec<_> = (0..4).map(|_| ha.dispatch(&p, req("/a"))).collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let dbs: Vec<_> = (0..6).map(|_| hb.dispatch(&p, req("/b"))).collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let stopper = std::thread::spawn(move || a.shutdown(Duration::ZERO));
        for d in das {
            let _ = d.await;
        }
        for d in dbs {
            let r = tokio::time::timeout(BOUND, d)
                .await
                .expect("B's request stranded after A's shutdown")
                .unwrap();
            assert_eq!(text(&r), "done");
        }
        stopper.join().unwrap();
    });
    drop(b);
    wait_until("stacks whole", || p.stack_stats().is_whole());
    println!("CHILD-OK");
}

// ---------------------------------------------------------------------------
// (2) stack pool
// ---------------------------------------------------------------------------

fn gated_pipeline(max: usize, wait: Duration) -> (Pipeline, tokio::sync::watch::Sender<bool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let p = Pipeline::builder()
        .max_stacks(max)
        .stack_wait(wait)
        .stack_idle_timeout(None)
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(move |req: Request| {
            let mut rx = rx.clone();
            async move {
                if req.uri().path() == "/hold" {
                    let _ = rx.wait_for(|v| *v).await;
                }
                ok(req.uri().path())
            }
        })
        .build()
        .unwrap();
    (p, tx)
}

/// A waiter cancelled while waiting for a stack is removed; the next waiter
/// gets the freed stack (not a 503), and the pool ends whole.
#[test]
fn cancelled_stack_waiter_does_not_swallow_the_freed_stack() {
    common::with_deadline(Duration::from_secs(30), || {
        let (p, tx) = gated_pipeline(1, Duration::from_secs(5));
        let rt = rt();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let holder = tokio::task::spawn_local(p.handle(req("/hold")));
            tokio::time::sleep(Duration::from_millis(20)).await;
            let w1 = tokio::task::spawn_local(p.handle(req("/w1")));
            tokio::time::sleep(Duration::from_millis(20)).await;
            let w2 = tokio::task::spawn_local(p.handle(req("/w2")));
            tokio::time::sleep(Duration::from_millis(20)).await;
            w1.abort();
            let _ = w1.await;
            tx.send(true).unwrap();
            let r = holder.await.unwrap();
            assert_eq!(r.status(), 200);
            let r = tokio::time::timeout(BOUND, w2)
                .await
                .expect("w2 hung")
                .unwrap();
            assert_eq!(r.status(), 200, "w2 got {}", r.status());
        });
        drop(rt);
        wait_until("stacks whole", || p.stack_stats().is_whole());
    });
}

/// Waiters that have waited past the pool's starvation mark (50 ms) are
/// served in order of arrival when the single stack is freed repeatedly.
///
/// The first request holds the stack for 150 ms, so every waiter has queued
/// before the first release. (This test first held it 10 ms, which asserted
/// more than the pool promises: for its first 50 ms a waiter competes with
/// requests that arrive meanwhile, and on a loaded CI machine the last
/// arrival took the stack first. The in-order rule is what is checked here;
/// `stack::pool`'s unit test `starving_waiters_are_served_in_order_before_newcomers`
/// checks that newcomers queue behind, on paused time.)
#[test]
fn stack_waiters_are_served_in_order_once_starving() {
    common::with_deadline(Duration::from_secs(30), || {
        let order = Arc::new(Mutex::new(Vec::new()));
        let p = {
            let order = order.clone();
            Pipeline::builder()
                .max_stacks(1)
                .stack_wait(Duration::from_secs(5))
                .stack_idle_timeout(None)
                .sync(move |req: Request, next: &mut Next| {
                    let path = req.uri().path().to_owned();
                    let hold = if path == "/0" { 150 } else { 10 };
                    order.lock().unwrap().push(path);
                    suspendware::sleep(Duration::from_millis(hold));
                    next.get_response(req)
                })
                .view(|_req: Request| async { ok("x") })
                .build()
                .unwrap()
        };
        let rt = rt();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let mut hs = Vec::new();
            for i in 0..6 {
                hs.push(tokio::task::spawn_local(p.handle(req(&format!("/{i}")))));
                // Arrivals (and so the moments each waiter queues) at least
                // 5 ms apart.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for h in hs {
                let r = tokio::time::timeout(BOUND, h).await.expect("hung").unwrap();
                assert_eq!(r.status(), 200);
            }
        });
        let got = order.lock().unwrap().clone();
        let want: Vec<String> = (0..6).map(|i| format!("/{i}")).collect();
        assert_eq!(got, want);
        drop(rt);
        wait_until("stacks whole", || p.stack_stats().is_whole());
    });
}

/// The pipeline (all handles) dropped while requests wait for a stack:
/// the waiters still end (served or 503) and nothing hangs.
#[test]
fn pipeline_dropped_while_requests_wait_for_a_stack() {
    common::with_deadline(Duration::from_secs(30), || {
        let (p, tx) = gated_pipeline(1, Duration::from_secs(5));
        let rt = rt();
        tokio::task::LocalSet::new().block_on(&rt, async {
            let holder = tokio::task::spawn_local(p.handle(req("/hold")));
            tokio::time::sleep(Duration::from_millis(20)).await;
            let ws: Vec<_> = (0..3)
                .map(|i| tokio::task::spawn_local(p.handle(req(&format!("/w{i}")))))
                .collect();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let stats_before = p.stack_stats();
            drop(p);
            tx.send(true).unwrap();
            let _ = holder.await.unwrap();
            for w in ws {
                let r = tokio::time::timeout(BOUND, w)
                    .await
                    .expect("waiter hung")
                    .unwrap();
                assert!(r.status() == 200 || r.status() == 503, "{}", r.status());
            }
            let _ = stats_before;
        });
    });
}

/// Two pipelines with their own small pools, racing trims with acquires
/// across two threads; both end whole and every request is served.
#[test]
fn trim_racing_acquire_on_two_pipelines() {
    common::with_deadline(Duration::from_secs(60), || {
        let mk = || {
            Pipeline::builder()
                .max_stacks(4)
                .stack_wait(Duration::from_secs(5))
                .stack_idle_timeout(Some(Duration::from_millis(1)))
                .sync(|req: Request, next: &mut Next| next.get_response(req))
                .view(|_req: Request| async {
                    tokio::task::yield_now().await;
                    ok("x")
                })
                .build()
                .unwrap()
        };
        let ps = [mk(), mk()];
        let bad = Arc::new(AtomicUsize::new(0));
        let ths: Vec<_> = (0..4)
            .map(|i| {
                let p = ps[i % 2].clone();
                let bad = bad.clone();
                std::thread::spawn(move || {
                    let rt = rt();
                    tokio::task::LocalSet::new().block_on(&rt, async {
                        for _ in 0..200 {
                            let hs: Vec<_> = (0..6)
                                .map(|_| tokio::task::spawn_local(p.handle(req("/"))))
                                .collect();
                            for h in hs {
                                if h.await.unwrap().status() != 200 {
                                    bad.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    });
                })
            })
            .collect();
        for t in ths {
            t.join().unwrap();
        }
        assert_eq!(bad.load(Ordering::SeqCst), 0);
        for p in &ps {
            wait_until("stacks whole", || p.stack_stats().is_whole());
        }
    });
}
