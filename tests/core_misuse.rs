//! Misuse is refused with messages that say what to do: `wait`/`blocking`
//! off-fiber, builder errors, and the `Send` boundaries that keep fibers on
//! their thread.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use common::{ok, panic_message, req, rt, text};
use http::StatusCode;
use suspendware::stack::MIN_STACK_SIZE;
use suspendware::{
    blocking, wait, AsyncNext, BuildError, Next, Pipeline, Request, Response, ResponseFuture,
};

fn caught<R>(f: impl FnOnce() -> R) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(p) => panic_message(&*p),
    }
}

fn assert_wait_hint(msg: &str) {
    assert!(msg.contains("wait()"), "{msg}");
    assert!(msg.contains("outside a suspendware fiber"), "{msg}");
    assert!(
        msg.contains(".await"),
        "message should say to await instead: {msg}"
    );
}

fn assert_blocking_hint(msg: &str) {
    assert!(msg.contains("blocking()"), "{msg}");
    assert!(msg.contains("outside a suspendware fiber"), "{msg}");
    assert!(
        msg.contains("spawn_blocking"),
        "message should point at spawn_blocking: {msg}"
    );
}

#[test]
fn wait_on_a_plain_thread_panics_with_advice() {
    let msg = caught(|| wait(std::future::ready(1)));
    assert_wait_hint(&msg);
    // Also with a future that would never complete: it must refuse, not block.
    let msg = caught(|| wait(std::future::pending::<()>()));
    assert_wait_hint(&msg);
}

#[test]
fn blocking_on_a_plain_thread_panics_with_advice() {
    let ran = Arc::new(Mutex::new(false));
    let r = ran.clone();
    let msg = caught(move || blocking(move || *r.lock().unwrap() = true));
    assert_blocking_hint(&msg);
    assert!(!*ran.lock().unwrap(), "the closure must not run");
}

/// Inside async code run by the pipeline (a view, async middleware) there is
/// no fiber either: `wait`/`blocking` refuse, and the pipeline answers with
/// the panic handler (here: one that echoes the message).
#[test]
fn wait_and_blocking_in_async_view_and_middleware_are_refused() {
    let echo = |info: &suspendware::panic::PanicInfo<'_>| -> Response {
        let mut r = ok(&format!("{}: {}", info.location, info.message));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    };
    let rt = rt();

    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(suspendware::named("view", |_req: Request| async move {
            let v = wait(std::future::ready(1));
            ok(&v.to_string())
        }))
        .panic_handler(echo)
        .build()
        .unwrap();
    let resp = rt.block_on(p.handle(req("/")));
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text(&resp).starts_with("view: "), "{}", text(&resp));
    assert_wait_hint(&text(&resp));
    assert!(p.stack_stats().is_whole());

    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .layer_async(suspendware::named(
            "amw",
            |_req: Request, _next: AsyncNext| async move { blocking(|| ok("never")) },
        ))
        .view(|_req: Request| async move { ok("v") })
        .panic_handler(echo)
        .build()
        .unwrap();
    let resp = rt.block_on(p.handle(req("/")));
    assert!(text(&resp).starts_with("amw: "), "{}", text(&resp));
    assert_blocking_hint(&text(&resp));
    assert!(p.stack_stats().is_whole());
}

/// A `blocking` closure runs on a pool thread, which is not a fiber: a
/// `wait` inside it is refused too (it must not block the pool thread on an
/// async future silently).
#[test]
fn wait_inside_a_blocking_closure_is_refused() {
    let p = Pipeline::builder()
        .sync(|_req: Request, _next: &mut Next| {
            let msg = blocking(|| caught(|| wait(std::future::ready(()))));
            ok(&msg)
        })
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert_wait_hint(&text(&resp));
}

/// A sync middleware's `Next` can't escape to another thread, and the
/// request future can't be spawned onto a multi-thread runtime: both are
/// `!Send`. (Checked at compile time: this file fails to build if either
/// becomes `Send`.)
#[test]
fn next_and_response_future_are_not_send_but_pipeline_is() {
    // `<T as AmbiguousIfSend<_>>::some_item` resolves only when exactly one
    // impl applies, i.e. when `T` is *not* `Send`.
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    impl<T: ?Sized + Send> AmbiguousIfSend<u8> for T {}
    let _ = <Next<'static> as AmbiguousIfSend<_>>::some_item;
    let _ = <ResponseFuture as AmbiguousIfSend<_>>::some_item;

    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<Pipeline>();
    fn send_sync_plain<T: Send + Sync>() {}
    send_sync_plain::<Request>();
    send_sync_plain::<Response>();
}

#[test]
fn build_without_a_view_is_an_error_that_says_what_to_call() {
    let err = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::NoView), "{err:?}");
    assert!(err.to_string().contains(".view("), "{err}");
}

#[test]
fn stack_size_below_the_minimum_is_refused() {
    let view = |_req: Request| async move { ok("v") };
    let err = Pipeline::builder()
        .view(view)
        .stack_size(4096)
        .build()
        .unwrap_err();
    match err {
        BuildError::StackTooSmall { size, min } => {
            assert_eq!(size, 4096);
            assert_eq!(min, MIN_STACK_SIZE);
        }
        other => panic!("expected StackTooSmall, got {other:?}"),
    }
    let msg = Pipeline::builder()
        .view(view)
        .stack_size(0)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("stack_size(0)") && msg.contains(&MIN_STACK_SIZE.to_string()),
        "{msg}"
    );

    // The minimum itself is accepted and is enough for a pass-through
    // middleware and for a panic on the fiber (the panic hook, which may
    // print a backtrace, runs on the fiber's stack). Too small a minimum
    // aborts this whole test binary with the overflow message.
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            if req.uri().path() == "/boom" {
                panic!("boom at the minimum stack size");
            }
            next.get_response(req)
        })
        .view(view)
        .stack_size(MIN_STACK_SIZE)
        .build()
        .unwrap();
    assert_eq!(p.stack_pool().stack_size(), MIN_STACK_SIZE);
    let rt = rt();
    assert_eq!(text(&rt.block_on(p.handle(req("/")))), "v");
    let resp = rt.block_on(p.handle(req("/boom")));
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(p.stack_stats().is_whole());
}

#[test]
fn max_stacks_zero_is_refused() {
    let err = Pipeline::builder()
        .view(|_req: Request| async move { ok("v") })
        .max_stacks(0)
        .build()
        .unwrap_err();
    assert!(matches!(err, BuildError::NoStacks), "{err:?}");
    assert!(err.to_string().contains("max_stacks(0)"), "{err}");
}
