//! 10,000 requests in flight at once, each holding a suspended sync
//! middleware frame, on ONE current-thread runtime, without any extra OS
//! thread.
//!
//! This binary holds a single test on purpose: it reads the process's thread
//! count, which other tests running in parallel would disturb.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{ok, req, rt, text, DropCounter};
use http::StatusCode;
use suspendware::stack::PoolStats;
use suspendware::{Next, Pipeline, Request, Response};

const N: usize = 10_000;

/// `Threads:` from /proc/self/status.
fn os_threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .expect("Threads: line")
        .trim()
        .parse()
        .expect("thread count")
}

#[test]
fn ten_thousand_suspended_requests_share_one_thread() {
    let max_threads = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let peak: Arc<Mutex<Option<PoolStats>>> = Arc::default();
    let pipeline: Arc<OnceLock<Pipeline>> = Arc::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    let frames = DropCounter::new();

    let p = {
        let (max_threads, arrived, peak, pipeline, gate) = (
            max_threads.clone(),
            arrived.clone(),
            peak.clone(),
            pipeline.clone(),
            gate.clone(),
        );
        let frames = frames.clone();
        Pipeline::builder()
            .sync(move |req: Request, next: &mut Next| -> Response {
                // A value on the fiber stack that must survive the suspension.
                let token = frames.token();
                let id = req.uri().path().to_owned();
                let mut resp = next.get_response(req);
                token.touch();
                resp.headers_mut()
                    .insert("x-id", id.trim_start_matches('/').parse().unwrap());
                resp
            })
            .view(move |req: Request| {
                let (max_threads, arrived, peak, pipeline, gate) = (
                    max_threads.clone(),
                    arrived.clone(),
                    peak.clone(),
                    pipeline.clone(),
                    gate.clone(),
                );
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    max_threads.fetch_max(os_threads(), Ordering::SeqCst);
                    // Hold every request here until all N are in flight, so
                    // the peak is exactly N regardless of scheduling.
                    let notified = gate.notified();
                    let n = arrived.fetch_add(1, Ordering::SeqCst) + 1;
                    if n < N {
                        notified.await;
                    } else if n == N {
                        *peak.lock().unwrap() = Some(pipeline.get().unwrap().stack_stats());
                        gate.notify_waiters();
                    }
                    ok(req.uri().path())
                }
            })
            .build()
            .unwrap()
    };
    pipeline.set(p.clone()).unwrap();
    // Measured once the pipeline exists: building it may start the
    // process-wide stack trimmer thread (one per process, not per request).
    let baseline = os_threads();

    let rt = rt();
    let local = tokio::task::LocalSet::new();
    let done = Rc::new(Cell::new(0usize));
    local.block_on(&rt, async {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let fut = p.handle(req(&format!("/{i}")));
                let done = done.clone();
                tokio::task::spawn_local(async move {
                    let resp = fut.await;
                    assert_eq!(resp.status(), StatusCode::OK);
                    assert_eq!(text(&resp), format!("/{i}"));
                    assert_eq!(resp.headers()["x-id"], i.to_string().as_str());
                    done.set(done.get() + 1);
                })
            })
            .collect();
        for h in handles {
            h.await.expect("request task");
        }
    });

    assert_eq!(done.get(), N, "every request completed");
    assert_eq!(arrived.load(Ordering::SeqCst), N);
    assert_eq!(frames.count(), N, "every middleware frame dropped once");
    let peak = peak.lock().unwrap().expect("peak sampled");
    assert_eq!(peak.in_use, N, "all {N} fibers suspended at once: {peak:?}");
    let sampled = max_threads.load(Ordering::SeqCst);
    eprintln!("threads: {baseline} before, at most {sampled} while {N} requests were in flight; peak pool {peak:?}");
    assert!(sampled > 0);
    assert!(
        sampled <= baseline,
        "OS threads grew while requests were in flight: {baseline} before, {sampled} during"
    );
    assert!(os_threads() <= baseline);

    let end = p.stack_stats();
    assert!(end.is_whole(), "{end:?}");
    assert_eq!(end.allocated, N, "stacks stay pooled for reuse: {end:?}");
    // A second wave reuses the pooled stacks instead of mapping new ones.
    let resp = rt.block_on(p.handle(req("/again")));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(p.stack_stats().allocated, N);
}
