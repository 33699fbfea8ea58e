//! `blocking` on a pipeline's bounded pool (`PipelineBuilder::blocking_threads`):
//! the cap on closures running at once, the threads the process holds, FIFO
//! admission, panics, and inline runs on held threads.
//!
//! The tests take one lock: the first reads the process's thread count,
//! which the others' threads would disturb.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{ok, panic_message, req, rt, text, with_deadline};
use suspendware::{blocking, Mode, Next, Pipeline, Request, Response};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// This binary's tests: libtest names each test's thread after it.
const TESTS: &[&str] = &[
    "two_thousand_blocking_calls_run_sixteen_at_a_time_on_sixteen_threads",
    "a_panic_in_the_closure_is_reraised_and_frees_its_slot",
    "closures_run_on_the_pool_threads_on_a_fiber_and_inline_on_held_threads",
];

/// The process's threads, less this binary's test threads.
fn os_threads() -> usize {
    common::threads_except_tests(TESTS)
}

const N: usize = 2_000;
const CAP: usize = 16;

#[derive(Default)]
struct Probe {
    /// Order in which requests called `blocking` (on the runtime thread).
    arrived: AtomicUsize,
    /// Order in which closures started (on pool threads).
    started: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    max_threads: AtomicUsize,
    /// Per arrival index: how many closures had started before it did.
    start_rank: Mutex<Vec<usize>>,
}

#[test]
fn two_thousand_blocking_calls_run_sixteen_at_a_time_on_sixteen_threads() {
    let _serial = serial();
    with_deadline(Duration::from_secs(120), || {
        let probe = Arc::new(Probe {
            start_rank: Mutex::new(vec![usize::MAX; N]),
            ..Probe::default()
        });
        let p = {
            let probe = probe.clone();
            Pipeline::builder()
                .blocking_threads(CAP)
                // No trimmer thread: the count below is the pool's alone.
                .stack_idle_timeout(None)
                .sync(move |req: Request, next: &mut Next| -> Response {
                    let me = probe.arrived.fetch_add(1, Ordering::SeqCst);
                    let pr = probe.clone();
                    blocking(move || {
                        let rank = pr.started.fetch_add(1, Ordering::SeqCst);
                        pr.start_rank.lock().unwrap()[me] = rank;
                        let now = pr.running.fetch_add(1, Ordering::SeqCst) + 1;
                        pr.max_running.fetch_max(now, Ordering::SeqCst);
                        pr.max_threads.fetch_max(os_threads(), Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(5));
                        pr.running.fetch_sub(1, Ordering::SeqCst);
                    });
                    next.get_response(req)
                })
                .view(|_req: Request| async { ok("done") })
                .build()
                .unwrap()
        };
        // Counted after the build: it starts the process's watchdog ticker
        // thread (once per process), which is no thread of the pool's.
        let baseline = os_threads();
        let started = std::time::Instant::now();
        let done = rt().block_on(async {
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let handles: Vec<_> = (0..N)
                        .map(|i| tokio::task::spawn_local(p.handle(req(&format!("/{i}")))))
                        .collect();
                    let mut done = 0;
                    for h in handles {
                        let resp = h.await.expect("request task");
                        assert_eq!(text(&resp), "done");
                        done += 1;
                    }
                    done
                })
                .await
        });
        let elapsed = started.elapsed();
        assert_eq!(done, N);
        let max_threads = probe.max_threads.load(Ordering::SeqCst);
        eprintln!(
            "blocking pool: {N} x 5 ms with {CAP} threads in {elapsed:?} (ideal {:?}); \
             threads: baseline {baseline}, max {max_threads}; max running {}",
            Duration::from_millis(5) * (N / CAP) as u32,
            probe.max_running.load(Ordering::SeqCst)
        );
        assert_eq!(probe.max_running.load(Ordering::SeqCst), CAP);
        // The runtime thread is the baseline's; the pool adds CAP at most.
        assert!(
            max_threads <= baseline + CAP + 2,
            "threads went from {baseline} to {max_threads} (cap {CAP})"
        );
        // FIFO admission: when request i's closure starts, every earlier
        // request has been admitted, and at most CAP - 1 of those can be
        // admitted yet not started, so at least i - (CAP - 1) closures
        // started before it.
        let ranks = probe.start_rank.lock().unwrap();
        for (i, &rank) in ranks.iter().enumerate() {
            assert_ne!(rank, usize::MAX, "request {i}'s closure never ran");
            assert!(
                rank + CAP > i,
                "request {i} started after only {rank} closures: admission was not FIFO"
            );
        }
    });
}

#[test]
fn a_panic_in_the_closure_is_reraised_and_frees_its_slot() {
    let _serial = serial();
    with_deadline(Duration::from_secs(30), || {
        let p = Pipeline::builder()
            .blocking_threads(1)
            .sync(|req: Request, next: &mut Next| -> Response {
                let caught = std::panic::catch_unwind(|| blocking(|| panic!("boom in the pool")));
                let msg = panic_message(&*caught.expect_err("the panic comes back"));
                assert!(msg.contains("boom in the pool"), "{msg}");
                // The only slot was freed: this one runs.
                let n = blocking(|| 41 + 1);
                let mut resp = next.get_response(req);
                *resp.body_mut() = format!("{n}").into();
                resp
            })
            .view(|_req: Request| async { ok("") })
            .build()
            .unwrap();
        let resp = rt().block_on(p.handle(req("/")));
        assert_eq!(text(&resp), "42");
    });
}

#[test]
fn closures_run_on_the_pool_threads_on_a_fiber_and_inline_on_held_threads() {
    let _serial = serial();
    with_deadline(Duration::from_secs(30), || {
        for (mode, pool) in [(Mode::Suspend, true), (Mode::Adapt, false)] {
            let p = Pipeline::builder()
                .mode(mode)
                .sync(|req: Request, next: &mut Next| -> Response {
                    let here = std::thread::current().id();
                    let (name, there) = blocking(|| {
                        let t = std::thread::current();
                        (t.name().unwrap_or("").to_owned(), t.id())
                    });
                    let mut resp = next.get_response(req);
                    let inline = if here == there { "inline" } else { "pool" };
                    *resp.body_mut() = format!("{inline} {name}").into();
                    resp
                })
                .view(|_req: Request| async { ok("") })
                .build()
                .unwrap();
            let resp = rt().block_on(p.handle(req("/")));
            if pool {
                // A thread of the runtime's blocking pool.
                assert!(
                    text(&resp).starts_with("pool tokio-"),
                    "{mode:?}: {}",
                    text(&resp)
                );
            } else {
                assert!(
                    text(&resp).starts_with("inline"),
                    "{mode:?}: {}",
                    text(&resp)
                );
            }
        }
    });
}

#[test]
fn a_request_cancelled_while_queued_still_runs_its_closure_to_its_end() {
    let _serial = serial();
    with_deadline(Duration::from_secs(30), || {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate_rx));
        let ran: Arc<Mutex<Vec<String>>> = Arc::default();
        let p = {
            let (gate, ran) = (gate.clone(), ran.clone());
            Pipeline::builder()
                .blocking_threads(1)
                .sync(move |req: Request, next: &mut Next| -> Response {
                    let id = req.uri().path().to_owned();
                    let (gate, ran) = (gate.clone(), ran.clone());
                    blocking(move || {
                        ran.lock().unwrap().push(id.clone());
                        if id == "/a" {
                            // Holds the only slot until the test opens the gate.
                            gate.lock().unwrap().recv().unwrap();
                        }
                    });
                    next.get_response(req)
                })
                .view(|_req: Request| async { ok("done") })
                .build()
                .unwrap()
        };
        // A cancelled request whose closure has not returned keeps its
        // fiber until it has; the reaper finishes it without blocking.
        let local = tokio::task::LocalSet::new();
        local.spawn_local(suspendware::runtime::Reaper::new());
        rt().block_on(local.run_until(async {
            let a = tokio::task::spawn_local(p.handle(req("/a")));
            while ran.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
            let b = tokio::task::spawn_local(p.handle(req("/b")));
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            b.abort();
            assert!(b.await.unwrap_err().is_cancelled());
            gate_tx.send(()).unwrap();
            assert_eq!(text(&a.await.unwrap()), "done");
            // "/c" is queued behind "/b", whose request is gone.
            assert_eq!(text(&p.handle(req("/c")).await), "done");
        }));
        // "/b" was cancelled while queued behind "/a": its closure still ran
        // (the contract of `blocking`: every closure runs to its end), in
        // FIFO order, before "/c".
        assert_eq!(*ran.lock().unwrap(), ["/a", "/b", "/c"]);
    });
}
