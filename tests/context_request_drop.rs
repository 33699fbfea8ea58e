//! A request's `RequestLocal` values drop when the request ends: when its
//! response is ready, or when the request is cancelled while its fiber is
//! suspended. Pipelines whose sync code all runs on one fiber leave the
//! request's context to that fiber (made on first use, released as the
//! fiber exits, so on a cancellation during the fiber's unwind, where a
//! panic escaping a destructor would abort the process: it is caught and
//! logged). Other pipelines share one context between their segments, and
//! whichever segment ends last drops it, with the same care. Both shapes
//! are checked, and neither blocks a thread or keeps a stack.

mod capture;
mod common;

use std::pin::pin;
use std::task::Poll;

use common::{ok, poll_once, req, rt, DropCounter, DropToken};
use suspendware::{AsyncNext, Next, Pipeline, Request, RequestLocal, Response};

static TOKEN: RequestLocal<Option<DropToken>> = RequestLocal::new(|| None);
static BOMB: RequestLocal<Option<Bomb>> = RequestLocal::new(|| None);
static BOMB2: RequestLocal<Option<Bomb>> = RequestLocal::new(|| None);

/// A request-local value whose destructor panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("request-local destructor failed");
    }
}

/// The pipeline's shape.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Sync layers, then the async view: one fiber holds all sync code.
    OneFiber,
    /// Sync, async, sync, view: two fibers share the request's context.
    Shared,
}

/// The outer layer stores a token (and, with `bomb`, two panicking values:
/// dropped together, a second panic during the first's unwind would abort);
/// in the shared shape an inner sync layer checks it sees the token. The
/// view never answers when `hang`.
fn pipeline(shape: Shape, drops: &DropCounter, bomb: bool, hang: bool) -> Pipeline {
    let drops = drops.clone();
    let mut b = Pipeline::builder().sync(move |req: Request, next: &mut Next| {
        TOKEN.set(Some(drops.token()));
        if bomb {
            BOMB.set(Some(Bomb));
            BOMB2.set(Some(Bomb));
        }
        next.get_response(req)
    });
    if let Shape::Shared = shape {
        b = b
            .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            .sync(|req: Request, next: &mut Next| {
                assert!(
                    TOKEN.with(|t| t.is_some()),
                    "the inner fiber sees the outer fiber's value"
                );
                next.get_response(req)
            });
    }
    b.view(move |_req: Request| async move {
        if hang {
            std::future::pending::<()>().await;
        }
        ok("done")
    })
    .build()
    .unwrap()
}

/// How many value destructors' panics `logs` reports.
fn logged_panics(logs: &str) -> usize {
    logs.matches("a RequestLocal value panicked while it was dropped")
        .count()
}

/// Runs one request to its response.
fn complete(p: &Pipeline) -> Response {
    rt().block_on(p.handle(req("/")))
}

/// Starts one request, lets it reach its (never-answering) view, and drops
/// it there.
fn cancel_in_view(p: &Pipeline) {
    let rt = rt();
    rt.block_on(async {
        let mut fut = pin!(p.handle(req("/")));
        assert!(matches!(poll_once(fut.as_mut()), Poll::Pending));
        // Several polls: in the shared shape the request crosses an async
        // layer and a second fiber before it waits in the view.
        for _ in 0..4 {
            tokio::task::yield_now().await;
            assert!(poll_once(fut.as_mut()).is_pending());
        }
    });
}

/// The request's values have dropped `n` times in all, and every stack
/// is back in the pool.
fn assert_ended(p: &Pipeline, drops: &DropCounter, n: usize, shape: Shape) {
    assert_eq!(
        drops.count(),
        n,
        "{shape:?}: each request's value dropped once"
    );
    assert!(
        p.stack_stats().is_whole(),
        "{shape:?}: {:?}",
        p.stack_stats()
    );
}

#[test]
fn values_drop_when_the_response_is_ready() {
    for shape in [Shape::OneFiber, Shape::Shared] {
        let drops = DropCounter::new();
        let p = pipeline(shape, &drops, false, false);
        assert_eq!(common::text(&complete(&p)), "done", "{shape:?}");
        assert_ended(&p, &drops, 1, shape);
    }
}

#[test]
fn values_drop_when_a_suspended_request_is_cancelled() {
    for shape in [Shape::OneFiber, Shape::Shared] {
        let drops = DropCounter::new();
        let p = pipeline(shape, &drops, false, true);
        cancel_in_view(&p);
        assert_ended(&p, &drops, 1, shape);
    }
}

/// In the one-fiber shape the fiber owns the context, so the values drop
/// on the fiber: during its cancellation unwind when the request is
/// dropped, where a panic escaping the destructor would abort the process.
#[test]
fn a_panicking_value_destructor_is_logged_and_the_process_keeps_serving() {
    let drops = DropCounter::new();
    let p = pipeline(Shape::OneFiber, &drops, true, true);
    let (logs, ()) = capture::capture(|| cancel_in_view(&p));
    assert_ended(&p, &drops, 1, Shape::OneFiber);
    assert!(
        logged_panics(&logs) == 2 && logs.contains("request-local destructor failed"),
        "each panic is logged with its message:\n{logs}"
    );

    // Completed: the values drop as the fiber returns, and the same holds.
    let p = pipeline(Shape::OneFiber, &drops, true, false);
    let (logs, resp) = capture::capture(|| complete(&p));
    assert_eq!(common::text(&resp), "done");
    assert_eq!(logged_panics(&logs), 2, "{logs}");
    assert_ended(&p, &drops, 2, Shape::OneFiber);

    // The pipeline still serves.
    assert_eq!(common::text(&complete(&p)), "done");
}

/// The context is made when sync code first asks for it, once per request:
/// consecutive requests on the same (reused) fiber stack each start from
/// the initial value, two layers of one request share it, and a request
/// whose code never asks runs as well.
#[test]
fn each_request_starts_with_fresh_values() {
    static COUNT: RequestLocal<u32> = RequestLocal::new(|| 0);
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let before = COUNT.with(|c| {
                *c += 1;
                *c
            });
            assert_eq!(before, 1, "a value left by an earlier request");
            next.get_response(req)
        })
        .sync(|req: Request, next: &mut Next| {
            assert_eq!(COUNT.get(), 1, "the outer layer's value");
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("done") })
        .build()
        .unwrap();
    let rt = rt();
    for _ in 0..3 {
        let resp = rt.block_on(p.handle(req("/")));
        assert_eq!(common::text(&resp), "done");
    }
    // A request whose code never asks for a context.
    let plain = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async { ok("plain") })
        .build()
        .unwrap();
    assert_eq!(common::text(&rt.block_on(plain.handle(req("/")))), "plain");
}

/// In the shared shape the context's last holder may be any segment (a
/// segment future, an async layer's `AsyncNext`, the fiber that exits
/// last); wherever the values drop, a panicking destructor is logged and
/// neither escapes into the server's task nor aborts the process.
#[test]
fn a_panicking_value_destructor_in_a_shared_context_is_logged_too() {
    let drops = DropCounter::new();
    let p = pipeline(Shape::Shared, &drops, true, true);
    let (logs, ()) = capture::capture(|| cancel_in_view(&p));
    assert_ended(&p, &drops, 1, Shape::Shared);
    assert!(
        logged_panics(&logs) == 2 && logs.contains("request-local destructor failed"),
        "cancelled: each panic is logged with its message:\n{logs}"
    );

    let p = pipeline(Shape::Shared, &drops, true, false);
    let (logs, resp) = capture::capture(|| complete(&p));
    assert_eq!(common::text(&resp), "done");
    assert_eq!(logged_panics(&logs), 2, "completed: {logs}");
    assert_ended(&p, &drops, 2, Shape::Shared);
    assert_eq!(common::text(&complete(&p)), "done", "still serving");
}
