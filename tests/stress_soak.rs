//! Soak: 1,000,000 requests through a suspending pipeline; memory must come
//! back to the warm baseline.
//!
//! Ignored by default (about 10 s in release on 2 cores). Run:
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_REQUESTS=200000` runs a shorter soak.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use suspendware::{blocking, wait, AsyncNext, Next, Pipeline, Request, Response};
use tokio::sync::Semaphore;

/// Requests in flight at once.
const IN_FLIGHT: usize = 1_000;
const WARMUP: usize = 50_000;

fn pipeline(blocking_calls: &Arc<AtomicUsize>) -> Pipeline {
    let calls = blocking_calls.clone();
    Pipeline::builder()
        // A sync middleware that suspends twice: in `wait`, and (every 16th
        // request) in `blocking`, then decorates the response.
        .sync(move |req: Request, next: &mut Next| {
            let id: u64 = req.headers()["x-id"].to_str().unwrap().parse().unwrap();
            wait(tokio::task::yield_now());
            if id.is_multiple_of(16) {
                let calls = calls.clone();
                let v = blocking(move || {
                    calls.fetch_add(1, Ordering::Relaxed);
                    id + 1
                });
                assert_eq!(v, id + 1);
            }
            let mut resp = next.get_response(req);
            resp.headers_mut().insert("x-sync", "1".parse().unwrap());
            resp
        })
        .layer_async(|req: Request, next: AsyncNext| async move {
            let mut resp = next.run(req).await;
            resp.headers_mut().insert("x-async", "1".parse().unwrap());
            resp
        })
        // A second fiber per request.
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|req: Request| async move {
            tokio::task::yield_now().await;
            let id = req.headers()["x-id"].to_str().unwrap().to_owned();
            Response::new(format!("soak {id}").into())
        })
        .build()
        .unwrap()
}

/// Resident set size in bytes (`/proc/self/statm`).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Peak resident set size in bytes (`VmHWM`).
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

/// Runs requests `from..to`, at most `IN_FLIGHT` at once, checking each.
async fn run(pipeline: &Pipeline, from: usize, to: usize) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for id in from..to {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let mut req = Request::new(Default::default());
        req.headers_mut().insert("x-id", id.into());
        let fut = pipeline.handle(req);
        tasks.spawn_local(async move {
            let resp = fut.await;
            drop(permit);
            assert_eq!(resp.status(), StatusCode::OK, "request {id}");
            assert_eq!(resp.body().as_bytes(), format!("soak {id}").as_bytes());
            assert!(
                resp.headers().contains_key("x-sync") && resp.headers().contains_key("x-async")
            );
        });
        while let Some(done) = tasks.try_join_next() {
            done.expect("a request task panicked");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a request task panicked");
    }
}

#[test]
#[ignore = "soak: 1,000,000 requests; run with --release -- --ignored --nocapture"]
fn soak_million_requests_rss_returns_to_baseline() {
    let total: usize = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let blocking_calls = Arc::new(AtomicUsize::new(0));
    let pipeline = pipeline(&blocking_calls);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();

    local.block_on(&rt, run(&pipeline, 0, WARMUP));
    let baseline = rss();
    let warm_stats = pipeline.stack_stats();

    let start = Instant::now();
    local.block_on(&rt, run(&pipeline, WARMUP, WARMUP + total));
    let elapsed = start.elapsed();
    let after = rss();
    let stats = pipeline.stack_stats();

    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "soak: {total} requests in {:.1} s ({:.0} req/s), {IN_FLIGHT} in flight, {} blocking() calls",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        blocking_calls.load(Ordering::Relaxed),
    );
    eprintln!(
        "soak: RSS warm baseline {:.1} MiB, after {:.1} MiB ({:+.2}%), peak {:.1} MiB",
        mib(baseline),
        mib(after),
        (after as f64 / baseline as f64 - 1.0) * 100.0,
        mib(peak_rss()),
    );
    eprintln!("soak: stacks after warm-up {warm_stats:?}, after soak {stats:?}");

    assert!(stats.is_whole() && stats.in_use == 0, "{stats:?}");
    assert!(
        stats.allocated <= 2 * IN_FLIGHT,
        "the pool grew past the concurrency: {stats:?}"
    );
    assert!(
        after as f64 <= baseline as f64 * 1.10,
        "RSS grew more than 10%: {baseline} -> {after} bytes"
    );
}
