//! Dropping the `handle` future (the client went away) while a fiber is
//! suspended unwinds it: every destructor on its stack runs exactly once,
//! innermost first, the stack returns to the pool, and none of it counts
//! as a panic.

mod common;

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::Duration;

use common::{ok, poll_once, req, rt, text, DropCounter, Events};
use suspendware::panic::Cancelled;
use suspendware::{blocking, wait, AsyncNext, Next, Pipeline, Request, Response};

thread_local! {
    static PANICS_HERE: Cell<usize> = const { Cell::new(0) };
}

/// Counts panic-hook invocations per thread (fibers run on the test's own
/// thread), chaining to the previous hook.
fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS_HERE.with(|c| c.set(c.get() + 1));
            prev(info)
        }));
    });
}

fn panics_here() -> usize {
    PANICS_HERE.with(Cell::get)
}

/// Sync middleware holding a logged drop token across `get_response`.
fn holder(
    c: &DropCounter,
    ev: &Events,
    name: &'static str,
) -> impl Fn(Request, &mut Next) -> Response + Send + Sync {
    let (c, ev) = (c.clone(), ev.clone());
    move |req: Request, next: &mut Next| {
        let t = c.logged(&ev, name);
        let r = next.get_response(req);
        t.touch();
        r
    }
}

/// A view that never answers, holding a logged drop token.
fn pending_view(
    c: &DropCounter,
    ev: &Events,
) -> impl Fn(Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response>>> + Send + Sync
{
    let (c, ev) = (c.clone(), ev.clone());
    move |_req: Request| {
        let t = c.logged(&ev, "view");
        Box::pin(async move {
            let _t = t;
            std::future::pending::<Response>().await
        })
    }
}

#[test]
fn drop_while_suspended_in_get_response_unwinds_every_frame_once() {
    count_panics();
    let ev = Events::new();
    let (outer, inner, view) = (DropCounter::new(), DropCounter::new(), DropCounter::new());
    let p = Pipeline::builder()
        .sync(holder(&outer, &ev, "outer"))
        .sync(holder(&inner, &ev, "inner"))
        .view(pending_view(&view, &ev))
        .build()
        .unwrap();
    let before = panics_here();
    let mut fut = Box::pin(p.handle(req("/")));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(p.stack_stats().in_use, 1);
    assert_eq!((outer.count(), inner.count(), view.count()), (0, 0, 0));

    drop(fut);

    assert_eq!((outer.count(), inner.count(), view.count()), (1, 1, 1));
    assert_eq!(
        ev.take(),
        ["drop view", "drop inner", "drop outer"],
        "innermost first"
    );
    assert_eq!(
        panics_here(),
        before,
        "a cancellation never reaches the panic hook"
    );
    let s = p.stack_stats();
    assert!(s.is_whole(), "{s:?}");
    assert_eq!(s.allocated, 1);
}

#[test]
fn drop_with_two_suspended_fibers_unwinds_both_innermost_first() {
    let ev = Events::new();
    let (s1, a, s2, view) = (
        DropCounter::new(),
        DropCounter::new(),
        DropCounter::new(),
        DropCounter::new(),
    );
    let (ac, aev) = (a.clone(), ev.clone());
    let p = Pipeline::builder()
        .sync(holder(&s1, &ev, "s1"))
        .layer_async(move |req: Request, next: AsyncNext| {
            let t = ac.logged(&aev, "async");
            async move {
                let r = next.run(req).await;
                t.touch();
                r
            }
        })
        .sync(holder(&s2, &ev, "s2"))
        .view(pending_view(&view, &ev))
        .build()
        .unwrap();
    let mut fut = Box::pin(p.handle(req("/")));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(p.stack_stats().in_use, 2, "two fibers suspended");

    drop(fut);

    assert_eq!(
        (s1.count(), a.count(), s2.count(), view.count()),
        (1, 1, 1, 1)
    );
    assert_eq!(ev.take(), ["drop view", "drop s2", "drop async", "drop s1"]);
    let s = p.stack_stats();
    assert!(s.is_whole(), "{s:?}");
    assert_eq!(s.allocated, 2);
}

/// A future that never completes, with a drop token inside.
struct Forever(#[allow(dead_code)] common::DropToken);

impl std::future::Future for Forever {
    type Output = u32;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<u32> {
        std::task::Poll::Pending
    }
}

#[test]
fn drop_while_suspended_in_wait_drops_the_waited_future_and_frames() {
    count_panics();
    let ev = Events::new();
    let (outer, frame, waited, view) = (
        DropCounter::new(),
        DropCounter::new(),
        DropCounter::new(),
        DropCounter::new(),
    );
    let (fc, wc, mev) = (frame.clone(), waited.clone(), ev.clone());
    let p = Pipeline::builder()
        .sync(holder(&outer, &ev, "outer"))
        .sync(move |req: Request, next: &mut Next| {
            let t = fc.logged(&mev, "frame");
            let v = wait(Forever(wc.logged(&mev, "waited")));
            t.touch();
            let mut r = next.get_response(req);
            r.headers_mut().insert("x-v", v.into());
            r
        })
        .view(pending_view(&view, &ev))
        .build()
        .unwrap();
    let before = panics_here();
    let mut fut = Box::pin(p.handle(req("/")));
    assert!(poll_once(fut.as_mut()).is_pending());
    assert_eq!(p.stack_stats().in_use, 1);

    drop(fut);

    assert_eq!((outer.count(), frame.count(), waited.count()), (1, 1, 1));
    assert_eq!(view.count(), 0, "the view was never called");
    assert_eq!(ev.take(), ["drop waited", "drop frame", "drop outer"]);
    assert_eq!(panics_here(), before);
    assert!(p.stack_stats().is_whole());
}

/// A request dropped before its first poll: the fiber never started; the
/// request it would have run (with a token in its extensions) is dropped
/// and the stack returned.
#[test]
fn drop_before_first_poll_releases_stack_and_request() {
    let token = DropCounter::new();
    let ran = Arc::new(AtomicBool::new(false));
    let r2 = ran.clone();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            r2.store(true, Ordering::SeqCst);
            next.get_response(req)
        })
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let mut r = req("/");
    r.extensions_mut().insert(Arc::new(token.token()));
    let fut = p.handle(r);
    drop(fut);
    assert_eq!(token.count(), 1);
    assert!(!ran.load(Ordering::SeqCst));
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
}

/// A `blocking` closure may borrow the fiber's frames, so a request dropped
/// while its closure runs keeps its fiber (frames intact, stack in use)
/// until the closure returns; the thread's `Reaper` then unwinds it. The
/// thread is not blocked meanwhile: the test itself runs on it.
#[test]
fn drop_while_suspended_in_blocking() {
    let (frame, closure) = (DropCounter::new(), DropCounter::new());
    let (fc, cc) = (frame.clone(), closure.clone());
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(Some(release_rx)));
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let t = fc.token();
            let rx = release_rx.lock().unwrap().take().unwrap();
            let started = started_tx.lock().unwrap().clone();
            let ct = cc.token();
            blocking(move || {
                let _ct = ct;
                started.send(()).unwrap();
                rx.recv().unwrap();
            });
            t.touch();
            next.get_response(req)
        })
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let rt = rt();
    let local = tokio::task::LocalSet::new();
    local.spawn_local(suspendware::runtime::Reaper::new());
    local.block_on(&rt, async {
        let mut fut = Box::pin(p.handle(req("/")));
        assert!(poll_once(fut.as_mut()).is_pending());
        started_rx.recv().unwrap();
        drop(fut); // returns at once: the fiber is kept aside
        assert_eq!(frame.count(), 0, "the fiber unwound while the closure ran");
        assert_eq!(closure.count(), 0, "the closure is still running");
        assert_eq!(p.stack_stats().in_use, 1, "the stack stays in use");
        release_tx.send(()).unwrap();
        for _ in 0..2000 {
            if p.stack_stats().is_whole() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(closure.count(), 1, "the closure finished");
        assert_eq!(frame.count(), 1, "then the fiber unwound");
        assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
    });
}

/// Middleware that catches unwinds sees a [`Cancelled`] payload; re-raising
/// it lets the unwind finish normally.
#[test]
fn catch_unwind_in_middleware_sees_cancelled_and_reraises() {
    let seen = Arc::new(AtomicBool::new(false));
    let (s2, frame) = (seen.clone(), DropCounter::new());
    let fc = frame.clone();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let t = fc.token();
            match catch_unwind(AssertUnwindSafe(|| next.get_response(req))) {
                Ok(r) => r,
                Err(payload) => {
                    s2.store(payload.is::<Cancelled>(), Ordering::SeqCst);
                    t.touch();
                    resume_unwind(payload)
                }
            }
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let mut fut = Box::pin(p.handle(req("/")));
    assert!(poll_once(fut.as_mut()).is_pending());
    drop(fut);
    assert!(seen.load(Ordering::SeqCst), "payload was Cancelled");
    assert_eq!(frame.count(), 1);
    assert!(p.stack_stats().is_whole());
}

/// Even middleware that swallows the cancellation and returns normally
/// gives its stack back; its response goes nowhere.
#[test]
fn middleware_swallowing_the_cancellation_still_releases_the_stack() {
    let frame = DropCounter::new();
    let fc = frame.clone();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let _t = fc.token();
            catch_unwind(AssertUnwindSafe(|| next.get_response(req)))
                .unwrap_or_else(|_| ok("swallowed"))
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let mut fut = Box::pin(p.handle(req("/")));
    assert!(poll_once(fut.as_mut()).is_pending());
    drop(fut);
    assert_eq!(frame.count(), 1);
    assert!(p.stack_stats().is_whole());
}

/// Many cancellations on one thread reuse one stack (none leaked, none
/// forgotten) and the thread serves normally afterwards.
#[test]
fn repeated_cancellation_reuses_the_stack_and_thread_keeps_serving() {
    let frames = DropCounter::new();
    let fc = frames.clone();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let t = fc.token();
            let r = next.get_response(req);
            t.touch();
            r
        })
        .view(|req: Request| async move {
            if req.uri().path() == "/hang" {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            ok("done")
        })
        .build()
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        for _ in 0..200 {
            let mut fut = Box::pin(p.handle(req("/hang")));
            assert!(poll_once(fut.as_mut()).is_pending());
            drop(fut);
        }
        assert_eq!(text(&p.handle(req("/")).await), "done");
    });
    assert_eq!(frames.count(), 201);
    let s = p.stack_stats();
    assert!(s.is_whole(), "{s:?}");
    assert_eq!(s.allocated, 1, "{s:?}");
}
