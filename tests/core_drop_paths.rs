//! Panics on the paths that tear a request down must not keep its stack:
//! a destructor of the inner future that panics, and a panic payload whose
//! own destructor panics.

mod common;

use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};

use common::{ok, poll_once, req, rt, text};
use suspendware::{Next, Pipeline, Request, Response};

struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("a destructor that panics");
    }
}

/// A one-stack pool: a leaked slot would turn the next request into a 503.
fn one_stack() -> suspendware::PipelineBuilder {
    Pipeline::builder()
        .max_stacks(1)
        .stack_wait(std::time::Duration::ZERO)
}

#[test]
fn an_inner_future_that_panics_when_dropped_does_not_keep_the_stack() {
    let p = one_stack()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async {
            let _bomb = PanicOnDrop;
            std::future::pending::<()>().await;
            ok("unreached")
        })
        .build()
        .unwrap();
    let rt = rt();
    let dropped = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            let mut f = Box::pin(p.handle(req("/")));
            assert!(poll_once(f.as_mut()).is_pending());
            drop(f);
        })
    }));
    assert!(dropped.is_err(), "the inner future's destructor panicked");
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
    let p2 = one_stack()
        .stack_pool(p.stack_pool().clone())
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async { ok("served") })
        .build()
        .unwrap();
    assert_eq!(text(&rt.block_on(p2.handle(req("/")))), "served");
}

#[test]
fn a_panic_payload_that_panics_when_dropped_is_contained() {
    // During a cancellation, the middleware swallows its `Cancelled` and
    // panics; the panic handler itself panics with a payload whose
    // destructor panics too, so that payload leaves the fiber.
    let p = one_stack()
        .panic_handler(|_info: &suspendware::panic::PanicInfo<'_>| -> Response {
            panic_any(PanicOnDrop)
        })
        .sync(|req: Request, next: &mut Next| -> Response {
            let _ = catch_unwind(AssertUnwindSafe(|| next.get_response(req)));
            panic!("after swallowing the cancellation")
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let rt = rt();
    let dropped = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            let mut f = Box::pin(p.handle(req("/")));
            assert!(poll_once(f.as_mut()).is_pending());
            drop(f);
        })
    }));
    assert!(dropped.is_ok(), "the payload's panic was contained");
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());

    // A payload whose destructor panics on an ordinary request: a 500, and
    // the one stack comes back.
    let q = one_stack()
        .sync(|_req: Request, _next: &mut Next| -> Response { panic_any(PanicOnDrop) })
        .view(|_req: Request| async { ok("unreached") })
        .build()
        .unwrap();
    let resp = rt.block_on(q.handle(req("/")));
    assert_eq!(resp.status(), 500);
    assert!(q.stack_stats().is_whole());
    let resp = rt.block_on(q.handle(req("/")));
    assert_eq!(resp.status(), 500, "the one stack came back: not a 503");
}
