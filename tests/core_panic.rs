//! A panic anywhere becomes the panic handler's response (500 by default),
//! logged as a `tracing` error; outer middleware still sees a response;
//! every frame's destructors run; the stack goes back to the pool; the
//! thread keeps serving. A cancellation is not a panic and is not logged.

mod capture;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{error_lines, header, ok, poll_once, req, rt, text, DropCounter};
use http::StatusCode;
use suspendware::panic::PanicInfo;
use suspendware::{named, AsyncNext, Next, Pipeline, Request, Response};

/// Outer sync middleware: records the status it got from the inner part and
/// stamps the response, proving it ran its "after" half.
fn observer(seen: &Arc<Mutex<Vec<u16>>>) -> impl Fn(Request, &mut Next) -> Response + Send + Sync {
    let seen = seen.clone();
    move |req: Request, next: &mut Next| {
        let mut resp = next.get_response(req);
        seen.lock().unwrap().push(resp.status().as_u16());
        resp.headers_mut()
            .insert("x-outer", "saw-it".parse().unwrap());
        resp
    }
}

/// A panic handler answering 418 with "location | message".
fn teapot(info: &PanicInfo<'_>) -> Response {
    let mut r = ok(&format!("{} | {}", info.location, info.message));
    *r.status_mut() = StatusCode::IM_A_TEAPOT;
    r
}

fn is_default_500(resp: &Response) -> bool {
    resp.status() == StatusCode::INTERNAL_SERVER_ERROR && text(resp) == "internal server error\n"
}

#[test]
fn panic_in_sync_middleware_before_get_response() {
    let seen = Arc::default();
    let frames = DropCounter::new();
    let f = frames.clone();
    let view_calls = Arc::new(AtomicUsize::new(0));
    let vc = view_calls.clone();
    let p = Pipeline::builder()
        .sync(observer(&seen))
        .sync(named(
            "boom",
            move |_req: Request, _next: &mut Next| -> Response {
                let _on_stack = f.token();
                panic!("sync middleware exploded");
            },
        ))
        .view(move |_req: Request| {
            vc.fetch_add(1, Ordering::SeqCst);
            async move { ok("v") }
        })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert!(is_default_500(&resp), "{resp:?}");
    assert_eq!(header(&resp, "x-outer").as_deref(), Some("saw-it"));
    assert_eq!(*seen.lock().unwrap(), [500]);
    assert_eq!(frames.count(), 1);
    assert_eq!(view_calls.load(Ordering::SeqCst), 0);
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
}

/// The panic happens after the fiber suspended and resumed: the frames that
/// lived across the suspension are dropped exactly once.
#[test]
fn panic_in_sync_middleware_after_resuming() {
    let seen = Arc::default();
    let outer_frame = DropCounter::new();
    let boom_frame = DropCounter::new();
    let (of, bf) = (outer_frame.clone(), boom_frame.clone());
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let t = of.token();
            let r = next.get_response(req);
            t.touch();
            r
        })
        .sync(observer(&seen))
        .sync(move |req: Request, next: &mut Next| -> Response {
            let t = bf.token();
            let r = next.get_response(req);
            t.touch();
            assert_eq!(text(&r), "v");
            panic!("after the view answered");
        })
        .view(|_req: Request| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            ok("v")
        })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert!(is_default_500(&resp));
    assert_eq!(header(&resp, "x-outer").as_deref(), Some("saw-it"));
    assert_eq!(*seen.lock().unwrap(), [500]);
    assert_eq!((outer_frame.count(), boom_frame.count()), (1, 1));
    assert!(p.stack_stats().is_whole());
}

#[test]
fn panic_in_async_middleware_reaches_outer_sync_as_500() {
    let seen = Arc::default();
    let inner_frame = DropCounter::new();
    let async_local = DropCounter::new();
    let (inf, al) = (inner_frame.clone(), async_local.clone());
    let p = Pipeline::builder()
        .sync(observer(&seen))
        .layer_async(move |req: Request, next: AsyncNext| {
            let t = al.token();
            async move {
                let r = next.run(req).await;
                t.touch();
                assert_eq!(text(&r), "v");
                panic!("async middleware exploded");
            }
        })
        .sync(move |req: Request, next: &mut Next| {
            let t = inf.token();
            let r = next.get_response(req);
            t.touch();
            r
        })
        .view(|_req: Request| async move {
            tokio::task::yield_now().await;
            ok("v")
        })
        .build()
        .unwrap();
    assert_eq!(p.fiber_segments(), 2);
    let resp = rt().block_on(p.handle(req("/")));
    assert!(is_default_500(&resp));
    assert_eq!(header(&resp, "x-outer").as_deref(), Some("saw-it"));
    assert_eq!(*seen.lock().unwrap(), [500]);
    assert_eq!((inner_frame.count(), async_local.count()), (1, 1));
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
}

#[test]
fn panic_in_view_after_awaiting_reaches_every_outer_layer() {
    let seen = Arc::default();
    let view_local = DropCounter::new();
    let vl = view_local.clone();
    let p = Pipeline::builder()
        .sync(observer(&seen))
        .layer_async(|req: Request, next: AsyncNext| async move {
            let mut r = next.run(req).await;
            let status = r.status().as_str().parse().unwrap();
            r.headers_mut().insert("x-async", status);
            r
        })
        .sync(observer(&seen))
        .view(move |_req: Request| {
            let t = vl.token();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                t.touch();
                panic!("view exploded");
            }
        })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert!(is_default_500(&resp));
    assert_eq!(header(&resp, "x-async").as_deref(), Some("500"));
    assert_eq!(
        *seen.lock().unwrap(),
        [500, 500],
        "both sync observers saw the 500"
    );
    assert_eq!(view_local.count(), 1);
    assert!(p.stack_stats().is_whole());
}

#[test]
fn custom_panic_handler_gets_location_and_message() {
    let handler = teapot;
    let rt = rt();

    let p = Pipeline::builder()
        .sync(named(
            "auth",
            |_req: Request, _next: &mut Next| -> Response { panic!("token {} invalid", 7) },
        ))
        .view(|_req: Request| async move { ok("v") })
        .panic_handler(handler)
        .build()
        .unwrap();
    let resp = rt.block_on(p.handle(req("/")));
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(text(&resp), "auth | token 7 invalid");

    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(named("detail_view", |_req: Request| async move {
            std::panic::panic_any(42u32);
        }))
        .panic_handler(handler)
        .build()
        .unwrap();
    let resp = rt.block_on(p.handle(req("/")));
    assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(text(&resp), "detail_view | <non-string panic payload>");
    assert!(p.stack_stats().is_whole());
}

/// After many panics the same runtime thread and pipeline keep answering,
/// reusing one pooled stack — none leaked — while an unrelated request
/// stays suspended across all of them.
#[test]
fn thread_keeps_serving_after_panics() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            if req.uri().path() == "/boom" {
                panic!("boom");
            }
            next.get_response(req)
        })
        .view(move |req: Request| {
            let g = g.clone();
            async move {
                if req.uri().path() == "/slow" {
                    g.notified().await;
                }
                ok(req.uri().path())
            }
        })
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt(), async {
        let slow = tokio::task::spawn_local(p.handle(req("/slow")));
        tokio::task::yield_now().await;
        assert_eq!(p.stack_stats().in_use, 1);
        for _ in 0..50 {
            assert!(is_default_500(&p.handle(req("/boom")).await));
            assert_eq!(text(&p.handle(req("/ok")).await), "/ok");
        }
        // The suspended request was unaffected.
        assert_eq!(p.stack_stats().in_use, 1);
        gate.notify_one();
        assert_eq!(text(&slow.await.unwrap()), "/slow");
    });
    let s = p.stack_stats();
    assert!(s.is_whole(), "{s:?}");
    assert_eq!(
        s.allocated, 2,
        "one stack for /slow, one reused by all others: {s:?}"
    );
}

#[test]
fn panic_is_logged_as_a_tracing_error_naming_location_and_message() {
    let p = Pipeline::builder()
        .sync(named(
            "csrf",
            |_req: Request, _next: &mut Next| -> Response { panic!("csrf token missing") },
        ))
        .view(|_req: Request| async move { ok("v") })
        .build()
        .unwrap();
    let rt = rt();
    let (logs, resp) = capture::capture(|| rt.block_on(p.handle(req("/"))));
    assert!(is_default_500(&resp));
    let errors = error_lines(&logs);
    assert_eq!(errors.len(), 1, "exactly one error event: {errors:?}");
    let e = &errors[0];
    assert!(e.contains(r#"panic="csrf token missing""#), "{e}");
    assert!(e.contains(r#"location="csrf""#), "{e}");
    // Logged inside the request's span and the middleware's span.
    assert!(e.contains("request{method=GET uri=/}"), "{e}");
    assert!(e.contains("middleware{name=csrf"), "{e}");
}

/// Dropping a request while its fiber is suspended unwinds the fiber, but
/// that is not a panic: no error event, panic handler not called.
#[test]
fn cancellation_is_not_logged_or_handled_as_a_panic() {
    let handler_calls = Arc::new(AtomicUsize::new(0));
    let hc = handler_calls.clone();
    let frames = DropCounter::new();
    let (f1, f2) = (frames.clone(), frames.clone());
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let t = f1.token();
            let r = next.get_response(req);
            t.touch();
            r
        })
        .sync(move |req: Request, next: &mut Next| {
            let t = f2.token();
            suspendware::wait(tokio::time::sleep(Duration::from_secs(3600)));
            t.touch();
            next.get_response(req)
        })
        .view(|_req: Request| async move { ok("v") })
        .panic_handler(move |_info: &PanicInfo<'_>| -> Response {
            hc.fetch_add(1, Ordering::SeqCst);
            ok("handler")
        })
        .build()
        .unwrap();
    let rt = rt();
    let (text, ()) = capture::capture(|| {
        rt.block_on(async {
            let mut fut = Box::pin(p.handle(req("/")));
            assert!(poll_once(fut.as_mut()).is_pending());
            assert_eq!(p.stack_stats().in_use, 1);
            drop(fut);
        })
    });
    assert_eq!(frames.count(), 2, "both frames unwound");
    assert_eq!(
        handler_calls.load(Ordering::SeqCst),
        0,
        "panic handler not called for a cancellation"
    );
    assert!(
        error_lines(&text).is_empty(),
        "no error events for a cancellation:\n{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(p.stack_stats().is_whole());
}

/// A panic in the synchronous part of an async layer's call (before its
/// future exists), for the view and for async middleware inside a fiber
/// segment and at the front of the chain: the handler names the layer, the
/// outer sync layer sees the response, and the stack goes back.
#[test]
fn panic_in_the_call_of_an_async_layer_before_its_future_exists() {
    let handler = teapot;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rt = rt();
    let view_panics = named(
        "eager_view",
        |_req: Request| -> std::future::Ready<Response> { panic!("view refused") },
    );
    let p = Pipeline::builder()
        .sync(observer(&seen))
        .view(view_panics)
        .panic_handler(handler)
        .build()
        .unwrap();
    let resp = rt.block_on(p.handle(req("/")));
    assert_eq!(text(&resp), "eager_view | view refused");
    assert_eq!(header(&resp, "x-outer").as_deref(), Some("saw-it"));

    let mw_panics = |_req: Request, _next: AsyncNext| -> std::future::Ready<Response> {
        panic!("middleware refused")
    };
    for async_first in [false, true] {
        let b = Pipeline::builder();
        let b = if async_first {
            b.layer_async(named("eager_mw", mw_panics))
                .sync(observer(&seen))
        } else {
            b.sync(observer(&seen))
                .layer_async(named("eager_mw", mw_panics))
        };
        let p = b
            .view(|_req: Request| async move { ok("v") })
            .panic_handler(handler)
            .build()
            .unwrap();
        let resp = rt.block_on(p.handle(req("/")));
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(text(&resp), "eager_mw | middleware refused");
        assert_eq!(
            header(&resp, "x-outer").is_some(),
            !async_first,
            "the outer sync layer saw the response"
        );
        assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
    }
    assert_eq!(*seen.lock().unwrap(), [418, 418]);
}
