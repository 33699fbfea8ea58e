//! Live heap per in-flight request (`scripts/heap_inflight.sh`).
//!
//! Holds N requests of a suspendware pipeline (K sync layers, an async view
//! that waits on a `Notify`) in flight on one `LocalSet`, then prints the
//! heap they keep, per request, and the live allocations by size. With
//! `SZ=<bytes>`, prints a backtrace of the first allocation of that size
//! class made while the requests start (who owns it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use suspendware::{Body, Next, Pipeline, Request, Response};

/// The system allocator, counting live bytes and live allocations per
/// 16-byte size class.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static CLASSES: [AtomicIsize; 128] = [const { AtomicIsize::new(0) }; 128];
static TRACE_CLASS: AtomicUsize = AtomicUsize::new(usize::MAX);
static TRACING: AtomicBool = AtomicBool::new(false);

fn class(size: usize) -> usize {
    (size / 16).min(127)
}

// SAFETY: forwards every call to `System` unchanged; the counters are
// atomics and allocate nothing (the backtrace path is guarded against
// re-entry and runs once).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        CLASSES[class(l.size())].fetch_add(1, Relaxed);
        if class(l.size()) == TRACE_CLASS.load(Relaxed) && !TRACING.swap(true, Relaxed) {
            TRACE_CLASS.store(usize::MAX, Relaxed);
            eprintln!(
                "allocation of {} bytes at:\n{}",
                l.size(),
                std::backtrace::Backtrace::force_capture()
            );
        }
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        CLASSES[class(l.size())].fetch_sub(1, Relaxed);
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The comparison harness's layer: read a header, add one to the response.
fn layer(req: Request, next: &mut Next) -> Response {
    std::hint::black_box(req.headers().get(http::header::HOST));
    let mut resp = next.get_response(req);
    resp.headers_mut()
        .append("x-mw", http::HeaderValue::from_static("1"));
    resp
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let k: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let gate = Arc::new(tokio::sync::Notify::new());
        let g = gate.clone();
        let mut b = Pipeline::builder();
        for _ in 0..k {
            b = b.sync(layer);
        }
        let p = b
            .view(move |req: Request| {
                let g = g.clone();
                async move {
                    g.notified().await;
                    drop(req);
                    Response::new(Body::from("ok"))
                }
            })
            .build()
            .expect("pipeline");
        let mut handles = Vec::with_capacity(n);
        let base = LIVE.load(Relaxed);
        let before: Vec<isize> = CLASSES.iter().map(|c| c.load(Relaxed)).collect();
        if let Some(sz) = std::env::var("SZ").ok().and_then(|v| v.parse().ok()) {
            TRACE_CLASS.store(class(sz), Relaxed);
        }
        for _ in 0..n {
            let p = p.clone();
            handles.push(tokio::task::spawn_local(async move {
                let mut req = Request::new(Body::empty());
                req.headers_mut().insert(
                    http::header::HOST,
                    http::HeaderValue::from_static("bench.local"),
                );
                std::hint::black_box(p.handle(req).await);
            }));
        }
        // Let every request reach the view and wait there.
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        let ours = (handles.capacity() * std::mem::size_of_val(&handles[0])) as isize;
        let live = LIVE.load(Relaxed) - base - ours;
        println!(
            "{n} requests in flight, {k} sync layers: {} bytes of heap per request",
            live / n as isize
        );
        println!("live allocations by size (classes with at least one per ten requests):");
        for (i, c) in CLASSES.iter().enumerate() {
            let d = c.load(Relaxed) - before[i];
            if d.abs() * 10 >= n as isize {
                println!(
                    "  {:>5}..{:<5} bytes: {:+.2} per request",
                    i * 16,
                    i * 16 + 15,
                    d as f64 / n as f64
                );
            }
        }
        // The requests are left waiting: exiting ends them.
        std::process::exit(0);
    });
}
