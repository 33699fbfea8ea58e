//! The stack budget: when `max_stacks` stacks are in use, a request waits
//! (bounded) for one or is answered 503 with the reason — never an abort.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ok, poll_once, req, rt, text, DropCounter};
use http::StatusCode;
use suspendware::stack::StackPool;
use suspendware::{AsyncNext, Next, Pipeline, PipelineBuilder, Request, Response};
use tokio::sync::{mpsc, watch};

/// A pipeline with one sync middleware and a view that holds each request
/// until `gate` turns true; `peak` records the most stacks in use seen by a
/// view.
fn gated(
    builder: PipelineBuilder,
    gate: &watch::Receiver<bool>,
    peak: &Arc<AtomicUsize>,
) -> Pipeline {
    let gate = gate.clone();
    let peak = peak.clone();
    let me: Arc<std::sync::OnceLock<Pipeline>> = Arc::default();
    let me2 = me.clone();
    let p = builder
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(move |req: Request| {
            let mut gate = gate.clone();
            let peak = peak.clone();
            let me = me2.clone();
            async move {
                peak.fetch_max(me.get().unwrap().stack_stats().in_use, Ordering::SeqCst);
                gate.wait_for(|open| *open).await.unwrap();
                ok(req.uri().path())
            }
        })
        .build()
        .unwrap();
    me.set(p.clone()).unwrap();
    p
}

/// Spawns `n` requests on the local set; each sends `(i, response)` when done.
fn spawn_all(p: &Pipeline, n: usize) -> mpsc::UnboundedReceiver<(usize, Response)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for i in 0..n {
        let fut = p.handle(req(&format!("/{i}")));
        let tx = tx.clone();
        tokio::task::spawn_local(async move {
            tx.send((i, fut.await)).unwrap();
        });
    }
    rx
}

#[test]
fn no_wait_budget_answers_the_excess_with_503_at_once() {
    let (open, gate) = watch::channel(false);
    let peak = Arc::new(AtomicUsize::new(0));
    let p = gated(
        Pipeline::builder().max_stacks(4).stack_wait(Duration::ZERO),
        &gate,
        &peak,
    );
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt(), async {
        let mut done = spawn_all(&p, 10);
        // The gate is closed, so the only requests that can finish are the
        // ones refused a stack.
        let mut refused = Vec::new();
        for _ in 0..6 {
            let (i, resp) = done.recv().await.unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "request {i}"
            );
            let body = text(&resp);
            assert!(body.contains("all 4 fiber stacks are in use"), "{body}");
            assert!(
                body.contains("max_stacks"),
                "the 503 says what to raise: {body}"
            );
            refused.push(i);
        }
        let s = p.stack_stats();
        assert_eq!((s.in_use, s.allocated, s.waiting), (4, 4, 0), "{s:?}");
        open.send(true).unwrap();
        let mut served = Vec::new();
        for _ in 0..4 {
            let (i, resp) = done.recv().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(text(&resp), format!("/{i}"));
            served.push(i);
        }
        refused.sort();
        served.sort();
        assert_eq!(served, [0, 1, 2, 3], "first come, first served");
        assert_eq!(refused, [4, 5, 6, 7, 8, 9]);
    });
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    assert!(p.stack_stats().is_whole());

    // Once stacks are back, new requests are admitted again.
    let resp = tokio::task::LocalSet::new().block_on(&rt(), p.handle(req("/later")));
    assert_eq!(resp.status(), StatusCode::OK);
}

#[test]
fn waiting_budget_admits_every_request_as_stacks_come_back() {
    let (open, gate) = watch::channel(false);
    let peak = Arc::new(AtomicUsize::new(0));
    let p = gated(
        Pipeline::builder()
            .max_stacks(4)
            .stack_wait(Duration::from_secs(120)),
        &gate,
        &peak,
    );
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt(), async {
        let mut done = spawn_all(&p, 10);
        // Let every request run until it is parked (4 in the view, 6 waiting
        // for a stack).
        while p.stack_stats().waiting < 6 {
            tokio::task::yield_now().await;
        }
        let s = p.stack_stats();
        assert_eq!((s.in_use, s.waiting), (4, 6), "{s:?}");
        assert!(
            done.try_recv().is_err(),
            "nobody answered while stacks are all in use"
        );
        open.send(true).unwrap();
        let mut served = Vec::new();
        for _ in 0..10 {
            let (i, resp) = done.recv().await.unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "request {i}: {}",
                text(&resp)
            );
            served.push(i);
        }
        served.sort();
        assert_eq!(served, (0..10).collect::<Vec<_>>());
    });
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "never more than max_stacks in use"
    );
    let s = p.stack_stats();
    assert!(s.is_whole(), "{s:?}");
    assert_eq!(
        (s.allocated, s.waiting),
        (4, 0),
        "stacks were reused: {s:?}"
    );
}

/// A bounded wait that runs out answers 503 naming the wait.
#[test]
fn wait_that_runs_out_answers_503() {
    let (open, gate) = watch::channel(false);
    let peak = Arc::new(AtomicUsize::new(0));
    let p = gated(
        Pipeline::builder()
            .max_stacks(2)
            .stack_wait(Duration::from_millis(20)),
        &gate,
        &peak,
    );
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt(), async {
        let mut done = spawn_all(&p, 3);
        let (i, resp) = done.recv().await.unwrap();
        assert_eq!(i, 2);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = text(&resp);
        assert!(
            body.contains("all 2 fiber stacks are in use") && body.contains("20ms"),
            "{body}"
        );
        assert!(body.contains("stack_wait"), "{body}");
        assert_eq!(p.stack_stats().waiting, 0);
        open.send(true).unwrap();
        for _ in 0..2 {
            assert_eq!(done.recv().await.unwrap().1.status(), StatusCode::OK);
        }
    });
    assert!(p.stack_stats().is_whole());
}

/// A request dropped while it waits for a stack leaves no trace.
#[test]
fn dropping_a_request_that_waits_for_a_stack() {
    let token = DropCounter::new();
    let p = Pipeline::builder()
        .max_stacks(1)
        .stack_wait(Duration::from_secs(120))
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    rt().block_on(async {
        let mut first = Box::pin(p.handle(req("/1")));
        assert!(poll_once(first.as_mut()).is_pending());
        let mut r = req("/2");
        r.extensions_mut().insert(Arc::new(token.token()));
        let mut second = Box::pin(p.handle(r));
        assert!(poll_once(second.as_mut()).is_pending());
        let s = p.stack_stats();
        assert_eq!((s.in_use, s.waiting), (1, 1), "{s:?}");
        drop(second);
        assert_eq!(token.count(), 1, "the waiting request was dropped");
        assert_eq!(p.stack_stats().waiting, 0);
        drop(first);
    });
    let s = p.stack_stats();
    assert!(s.is_whole(), "{s:?}");
    assert_eq!(s.allocated, 1);
}

/// Pipelines sharing one pool share its cap.
#[test]
fn shared_pool_caps_all_its_pipelines_together() {
    let pool = StackPool::new(64 * 1024, 1, Duration::ZERO);
    let build = |name: &'static str| {
        Pipeline::builder()
            .stack_pool(pool.clone())
            .sync(|req: Request, next: &mut Next| next.get_response(req))
            .view(move |_req: Request| async move {
                tokio::task::yield_now().await;
                ok(name)
            })
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));
    rt().block_on(async {
        let mut fa = Box::pin(a.handle(req("/")));
        assert!(poll_once(fa.as_mut()).is_pending());
        let rb = b.handle(req("/")).await;
        assert_eq!(
            rb.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "b found a's pool full"
        );
        assert_eq!(text(&fa.await), "a");
        assert_eq!(text(&b.handle(req("/")).await), "b");
    });
    assert!(pool.stats().is_whole());
    assert_eq!(pool.stats().allocated, 1);
}

/// With two fiber segments a request needs two stacks; when the inner
/// segment finds the budget spent, its 503 reaches the outer middleware as
/// an ordinary response.
#[test]
fn inner_segment_503_reaches_outer_middleware() {
    let seen = Arc::new(AtomicUsize::new(0));
    let s2 = seen.clone();
    let p = Pipeline::builder()
        .max_stacks(1)
        .stack_wait(Duration::ZERO)
        .sync(move |req: Request, next: &mut Next| {
            let r = next.get_response(req);
            s2.store(r.status().as_u16() as usize, Ordering::SeqCst);
            r
        })
        .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.load(Ordering::SeqCst), 503);
    assert!(p.stack_stats().is_whole());
}
