//! The waker code on a fiber sees stays valid for as long as that code can
//! observe it: a future polled by `wait` may itself suspend the fiber (it
//! runs sync code that calls `wait`, `blocking` or `get_response`), and the
//! `Context` it was polled with lives on across that suspension.
//!
//! Every test runs the pipeline on `strict_exec`, which hands each poll a
//! fresh waker and counts uses of a waker after its poll returned.

mod common;
mod strict_exec;

use std::time::Duration;

use common::{ok, req, text};
use strict_exec::{block_on, Report, YieldOnce};
use suspendware::{blocking, wait, AsyncNext, Next, Pipeline, Request, Response};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs one request of `pipeline` on the strict executor, inside a tokio
/// runtime's context (for `blocking`'s pool and the timers).
fn run(pipeline: &Pipeline) -> (Response, Report) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _ctx = rt.enter();
    block_on(pipeline.handle(req("/")), LIMIT)
}

/// Sync code that suspends the fiber on a future that is pending once.
fn sync_helper_wait() -> u32 {
    wait(async {
        YieldOnce::new().await;
        1
    })
}

fn yielding_view() -> Pipeline {
    Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let n = wait(async {
                let n = sync_helper_wait();
                YieldOnce::new().await;
                n
            });
            assert_eq!(n, 1);
            next.get_response(req)
        })
        .view(|_req: Request| async move {
            YieldOnce::new().await;
            ok("done")
        })
        .build()
        .unwrap()
}

#[test]
fn plain_pipeline_uses_no_dead_waker() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            wait(YieldOnce::new());
            next.get_response(req)
        })
        .view(|_req: Request| async move {
            YieldOnce::new().await;
            ok("done")
        })
        .build()
        .unwrap();
    let (resp, report) = run(&p);
    assert_eq!(text(&resp), "done");
    assert!(
        report.polls > 2,
        "the executor really re-polled: {report:?}"
    );
    assert_eq!(report.dead_uses, 0, "{report:?}");
}

#[test]
fn wait_nested_inside_a_waited_future() {
    let (resp, report) = run(&yielding_view());
    assert_eq!(text(&resp), "done");
    assert_eq!(report.dead_uses, 0, "{report:?}");
}

#[test]
fn blocking_nested_inside_a_waited_future() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let v = wait(async {
                let v = blocking(|| 41);
                YieldOnce::new().await;
                v + 1
            });
            assert_eq!(v, 42);
            next.get_response(req)
        })
        .view(|_req: Request| async move { ok("done") })
        .build()
        .unwrap();
    let (resp, report) = run(&p);
    assert_eq!(text(&resp), "done");
    assert_eq!(report.dead_uses, 0, "{report:?}");
}

#[test]
fn get_response_nested_inside_a_waited_future() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            wait(async {
                // Suspends the fiber for the async inner part.
                let resp = next.get_response(req);
                YieldOnce::new().await;
                resp
            })
        })
        .layer_async(|req: Request, next: AsyncNext| async move {
            YieldOnce::new().await;
            next.run(req).await
        })
        .view(|_req: Request| async move {
            YieldOnce::new().await;
            ok("done")
        })
        .build()
        .unwrap();
    let (resp, report) = run(&p);
    assert_eq!(text(&resp), "done");
    assert_eq!(report.dead_uses, 0, "{report:?}");
}

#[test]
fn nesting_in_two_fiber_segments_across_an_async_layer() {
    let nested = |req: Request, next: &mut Next| {
        let n = wait(async {
            let n = sync_helper_wait() + blocking(|| 1);
            YieldOnce::new().await;
            n
        });
        assert_eq!(n, 2);
        next.get_response(req)
    };
    let p = Pipeline::builder()
        .sync(nested)
        .layer_async(|req: Request, next: AsyncNext| async move {
            YieldOnce::new().await;
            next.run(req).await
        })
        .sync(nested)
        .view(|_req: Request| async move {
            YieldOnce::new().await;
            ok("done")
        })
        .build()
        .unwrap();
    assert_eq!(p.fiber_segments(), 2);
    let (resp, report) = run(&p);
    assert_eq!(text(&resp), "done");
    assert_eq!(report.dead_uses, 0, "{report:?}");
}

#[test]
fn a_pipeline_driven_from_inside_wait_sees_live_wakers() {
    // Sync inside async inside sync: the outer fiber's waited future drives
    // a second pipeline, whose fiber nests its own waits.
    let inner = yielding_view();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let resp = wait(async {
                let r = inner.handle(common::req("/inner")).await;
                YieldOnce::new().await;
                r
            });
            assert_eq!(text(&resp), "done");
            next.get_response(req)
        })
        .view(|_req: Request| async move { ok("outer") })
        .build()
        .unwrap();
    let (resp, report) = run(&p);
    assert_eq!(text(&resp), "outer");
    assert_eq!(report.dead_uses, 0, "{report:?}");
}

#[test]
fn sleep_and_sync_io_nested_inside_a_waited_future() {
    use std::io::{Read, Write};
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let got = wait(async {
                suspendware::sleep(std::time::Duration::from_millis(2));
                let (a, b) = tokio::io::duplex(16);
                let (mut a, mut b) = (
                    suspendware::io::SyncIo::new(a),
                    suspendware::io::SyncIo::new(b),
                );
                a.write_all(b"hi").unwrap();
                let mut buf = [0u8; 2];
                b.read_exact(&mut buf).unwrap();
                YieldOnce::new().await;
                buf
            });
            assert_eq!(&got, b"hi");
            next.get_response(req)
        })
        .view(|_req: Request| async move { ok("done") })
        .build()
        .unwrap();
    let (resp, report) = run(&p);
    assert_eq!(text(&resp), "done");
    assert_eq!(report.dead_uses, 0, "{report:?}");
}

/// Where a future on the fiber parks the waker it was polled with.
static PARKED: std::sync::Mutex<Option<std::task::Waker>> = std::sync::Mutex::new(None);

/// A driver's waker whose last reference, when dropped, wakes the waker
/// parked in `PARKED` (as an old task's last reference drops a future that
/// wakes a waiter).
struct WakesParkedOnDrop;

impl std::task::Wake for WakesParkedOnDrop {
    fn wake(self: std::sync::Arc<Self>) {}
}

impl Drop for WakesParkedOnDrop {
    fn drop(&mut self) {
        if let Some(w) = PARKED.lock().unwrap().take() {
            w.wake();
        }
    }
}

/// Counts wakes of the driver's second waker.
struct Counted(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counted {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Pending once, parking a clone of its waker in `PARKED`.
struct ParkOnce(bool);

impl std::future::Future for ParkOnce {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        *PARKED.lock().unwrap() = Some(cx.waker().clone());
        std::task::Poll::Pending
    }
}

/// The driver's waker changes between two polls, and dropping the old one
/// wakes the fiber's own waker on the same thread. The fiber's forwarder
/// dropped the old waker under its lock, so that wake waited for the lock
/// its own thread held: the executor thread hung for good.
#[test]
fn dropping_the_previous_driver_waker_may_wake_the_fiber() {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::task::{Context, Poll, Waker};

    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ctx = rt.enter();
        let p = Pipeline::builder()
            .sync(|req: Request, next: &mut Next| {
                wait(ParkOnce(false));
                next.get_response(req)
            })
            .view(|_req: Request| async move { ok("done") })
            .build()
            .unwrap();
        let mut fut = Box::pin(p.handle(req("/")));
        let first = Waker::from(Arc::new(WakesParkedOnDrop));
        let pending = fut
            .as_mut()
            .poll(&mut Context::from_waker(&first))
            .is_pending();
        // The fiber's forwarder now holds the only other reference.
        drop(first);
        let counted = Arc::new(Counted(AtomicUsize::new(0)));
        let second = Waker::from(counted.clone());
        let resp = match fut.as_mut().poll(&mut Context::from_waker(&second)) {
            Poll::Ready(resp) => Some(text(&resp)),
            Poll::Pending => None,
        };
        let _ = done.send((pending, resp, counted.0.load(Ordering::SeqCst)));
    });
    let (pending, resp, wakes) = result
        .recv_timeout(LIMIT)
        .expect("the executor thread hung re-pointing the fiber's waker (self-deadlock)");
    assert!(pending, "the first poll suspended in `wait`");
    assert_eq!(resp.as_deref(), Some("done"));
    assert_eq!(
        wakes, 1,
        "the wake from the old waker's drop reached the driver's current waker"
    );
}
