//! Onion order (Django's MIDDLEWARE order), short-circuit, request/response
//! modification, repeated `get_response`, and mixed sync/async chains.

mod capture;
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{header, ok, req, rt, text, Events};
use http::StatusCode;
use suspendware::{AsyncNext, Next, Pipeline, Request, Response};

/// Sync middleware that logs `name>` before and `name<` after the inner
/// part, appends its name to the request's `x-path` header on the way in and
/// to the response's `x-trail` header on the way out.
fn tracer(
    events: &Events,
    name: &'static str,
) -> impl Fn(Request, &mut Next) -> Response + Send + Sync {
    let events = events.clone();
    move |mut req: Request, next: &mut Next| {
        events.push(format!("{name}>"));
        append(req.headers_mut(), "x-path", name);
        let mut resp = next.get_response(req);
        events.push(format!("{name}<"));
        append(resp.headers_mut(), "x-trail", name);
        resp
    }
}

fn append(h: &mut http::HeaderMap, key: &'static str, name: &str) {
    let v = match h.get(key) {
        Some(old) => format!("{},{name}", old.to_str().unwrap()),
        None => name.to_owned(),
    };
    h.insert(key, v.parse().unwrap());
}

/// An async view that logs `view`, yields to the executor once (so the
/// fiber really suspends) and echoes the request's `x-path` header.
fn echo_view(
    events: &Events,
) -> impl Fn(Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response>>> + Send + Sync
{
    let events = events.clone();
    move |req: Request| {
        let events = events.clone();
        Box::pin(async move {
            events.push("view");
            tokio::time::sleep(Duration::from_millis(1)).await;
            let path = req
                .headers()
                .get("x-path")
                .map(|v| v.to_str().unwrap().to_owned());
            ok(&path.unwrap_or_default())
        })
    }
}

#[test]
fn first_added_is_outermost_and_sees_request_first_response_last() {
    let ev = Events::new();
    let p = Pipeline::builder()
        .sync(tracer(&ev, "a"))
        .sync(tracer(&ev, "b"))
        .sync(tracer(&ev, "c"))
        .view(echo_view(&ev))
        .build()
        .unwrap();
    assert_eq!(
        p.fiber_segments(),
        1,
        "three consecutive sync middleware share one fiber"
    );

    let resp = rt().block_on(p.handle(req("/")));

    assert_eq!(ev.take(), ["a>", "b>", "c>", "view", "c<", "b<", "a<"]);
    // Request modified on the way in, outermost first.
    assert_eq!(text(&resp), "a,b,c");
    // Response modified on the way out, innermost first.
    assert_eq!(header(&resp, "x-trail").as_deref(), Some("c,b,a"));
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
}

#[test]
fn short_circuit_skips_inner_layers_and_view_but_outer_still_wraps() {
    let ev = Events::new();
    let ev2 = ev.clone();
    let view_calls = Arc::new(AtomicUsize::new(0));
    let vc = view_calls.clone();
    let p = Pipeline::builder()
        .sync(tracer(&ev, "outer"))
        .sync(move |req: Request, next: &mut Next| {
            if req.uri().path() == "/forbidden" {
                ev2.push("guard: deny");
                let mut r = ok("denied");
                *r.status_mut() = StatusCode::FORBIDDEN;
                return r;
            }
            next.get_response(req)
        })
        .sync(tracer(&ev, "inner"))
        .view(move |_req: Request| {
            vc.fetch_add(1, Ordering::SeqCst);
            async move { ok("view") }
        })
        .build()
        .unwrap();
    let rt = rt();

    let resp = rt.block_on(p.handle(req("/forbidden")));
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(text(&resp), "denied");
    assert_eq!(header(&resp, "x-trail").as_deref(), Some("outer"));
    assert_eq!(ev.take(), ["outer>", "guard: deny", "outer<"]);
    assert_eq!(view_calls.load(Ordering::SeqCst), 0);

    // The same pipeline passes other requests through.
    let resp = rt.block_on(p.handle(req("/open")));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-trail").as_deref(), Some("inner,outer"));
    assert_eq!(ev.take(), ["outer>", "inner>", "inner<", "outer<"]);
    assert_eq!(view_calls.load(Ordering::SeqCst), 1);
    assert!(p.stack_stats().is_whole());
}

/// A retry middleware calls `get_response` until the view stops failing;
/// each call suspends the same fiber again (the view awaits a timer).
#[test]
fn get_response_can_be_called_several_times_retry() {
    let ev = Events::new();
    let ev_mw = ev.clone();
    let attempts = Arc::new(AtomicUsize::new(0));
    let at = attempts.clone();
    let p = Pipeline::builder()
        .sync(tracer(&ev, "outer"))
        .sync(move |req: Request, next: &mut Next| {
            let mut last = None;
            for i in 1..=5 {
                let resp = next.get_response(req.clone());
                ev_mw.push(format!("retry: attempt {i} -> {}", resp.status().as_u16()));
                if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
                    return resp;
                }
                last = Some(resp);
            }
            last.unwrap()
        })
        .view(move |_req: Request| {
            let n = at.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut r = ok(&format!("attempt {n}"));
                if n < 3 {
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                r
            }
        })
        .build()
        .unwrap();

    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(text(&resp), "attempt 3");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(
        ev.take(),
        [
            "outer>",
            "retry: attempt 1 -> 503",
            "retry: attempt 2 -> 503",
            "retry: attempt 3 -> 200",
            "outer<"
        ]
    );
    assert!(p.stack_stats().is_whole());
}

/// `get_response` twice when the next layer is sync middleware on the same
/// fiber (a plain call, no suspension in between).
#[test]
fn get_response_twice_through_inner_sync_middleware() {
    let ev = Events::new();
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let first = next.get_response(req.clone());
            let second = next.get_response(req);
            ok(&format!("{}+{}", text(&first), text(&second)))
        })
        .sync(tracer(&ev, "inner"))
        .view(|req: Request| async move { ok(req.headers()["x-path"].to_str().unwrap()) })
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(text(&resp), "inner+inner");
    assert_eq!(ev.take(), ["inner>", "inner<", "inner>", "inner<"]);
}

fn async_tracer(
    events: &Events,
    name: &'static str,
) -> impl Fn(Request, AsyncNext) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response>>>
       + Send
       + Sync {
    let events = events.clone();
    move |mut req: Request, next: AsyncNext| {
        let events = events.clone();
        Box::pin(async move {
            events.push(format!("{name}>"));
            append(req.headers_mut(), "x-path", name);
            tokio::task::yield_now().await;
            let mut resp = next.run(req).await;
            events.push(format!("{name}<"));
            append(resp.headers_mut(), "x-trail", name);
            resp
        })
    }
}

#[test]
fn mixed_chain_sync_async_sync_view_uses_two_fibers_in_order() {
    let ev = Events::new();
    let p = Pipeline::builder()
        .sync(tracer(&ev, "s1"))
        .layer_async(async_tracer(&ev, "a"))
        .sync(tracer(&ev, "s2"))
        .view(echo_view(&ev))
        .build()
        .unwrap();
    assert_eq!(p.fiber_segments(), 2);

    let rt = rt();
    let peak = Arc::new(AtomicUsize::new(0));
    // Sample how many stacks are in use while the view runs: both fibers
    // (s1's and s2's) are suspended at that point.
    let resp = rt.block_on(async {
        let fut = p.handle(req("/"));
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                r = &mut fut => break r,
                _ = tokio::task::yield_now() => {
                    peak.fetch_max(p.stack_stats().in_use, Ordering::SeqCst);
                }
            }
        }
    });

    assert_eq!(ev.take(), ["s1>", "a>", "s2>", "view", "s2<", "a<", "s1<"]);
    assert_eq!(text(&resp), "s1,a,s2");
    assert_eq!(header(&resp, "x-trail").as_deref(), Some("s2,a,s1"));
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "one stack per sync segment while the view runs"
    );
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
}

#[test]
fn segments_group_maximal_runs_of_sync_middleware() {
    let pass = |req: Request, next: &mut Next| next.get_response(req);
    let apass = |req: Request, next: AsyncNext| async move { next.run(req).await };
    let view = |_req: Request| async move { ok("v") };

    let p = Pipeline::builder().view(view).build().unwrap();
    assert_eq!(p.fiber_segments(), 0);

    let p = Pipeline::builder()
        .layer_async(apass)
        .layer_async(apass)
        .view(view)
        .build()
        .unwrap();
    assert_eq!(p.fiber_segments(), 0);

    let p = Pipeline::builder()
        .sync(pass)
        .sync(pass)
        .sync(pass)
        .view(view)
        .build()
        .unwrap();
    assert_eq!(p.fiber_segments(), 1);

    let p = Pipeline::builder()
        .sync(pass)
        .sync(pass)
        .layer_async(apass)
        .sync(pass)
        .layer_async(apass)
        .layer_async(apass)
        .sync(pass)
        .sync(pass)
        .view(view)
        .build()
        .unwrap();
    assert_eq!(p.fiber_segments(), 3);

    // And such a chain still answers.
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(text(&resp), "v");
    assert!(p.stack_stats().is_whole());
}

/// Async middleware may also short-circuit, in which case the inner sync
/// segment never takes a stack.
#[test]
fn async_short_circuit_skips_inner_fiber() {
    let ev = Events::new();
    let p = Pipeline::builder()
        .sync(tracer(&ev, "s1"))
        .layer_async(|_req: Request, _next: AsyncNext| async move { ok("cached") })
        .sync(tracer(&ev, "s2"))
        .view(echo_view(&ev))
        .build()
        .unwrap();
    let resp = rt().block_on(p.handle(req("/")));
    assert_eq!(text(&resp), "cached");
    assert_eq!(ev.take(), ["s1>", "s1<"]);
    // Only s1's stack was ever needed.
    assert_eq!(p.stack_stats().allocated, 1);
    assert!(p.stack_stats().is_whole());
}

/// Each request gets a span, each middleware a span inside it; while a
/// fiber is suspended its spans are exited, so another request's events
/// never appear inside them.
#[test]
fn spans_per_request_and_middleware_do_not_leak_across_suspensions() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let p = Pipeline::builder()
        .sync(suspendware::named(
            "outer_mw",
            |req: Request, next: &mut Next| {
                tracing::info!("outer before");
                let r = next.get_response(req);
                tracing::info!("outer after");
                r
            },
        ))
        .view(move |req: Request| {
            let g = g.clone();
            async move {
                if req.uri().path() == "/a" {
                    g.notified().await;
                }
                tracing::info!(path = req.uri().path(), "in view");
                ok("v")
            }
        })
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let rt = rt();
    let (text, ()) = capture::capture(|| {
        local.block_on(&rt, async {
            let a = tokio::task::spawn_local(p.handle(req("/a")));
            tokio::task::yield_now().await;
            // /a is suspended inside outer_mw's span; /b runs now.
            p.handle(req("/b")).await;
            // Executor code between polls is outside every request's spans.
            tracing::info!("between requests");
            gate.notify_one();
            a.await.unwrap();
        })
    });
    let line = |needle: &str| -> String {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
            .to_owned()
    };
    let b_view = line(r#"path="/b""#);
    assert!(b_view.contains("request{method=GET uri=/b}"), "{b_view}");
    assert!(
        !b_view.contains("uri=/a"),
        "request /a's span leaked into /b: {b_view}"
    );
    let a_view = line(r#"path="/a""#);
    assert!(a_view.contains("request{method=GET uri=/a}"), "{a_view}");
    assert!(!a_view.contains("uri=/b"), "{a_view}");
    let between = line("between requests");
    assert!(
        !between.contains("middleware{") && !between.contains("request{"),
        "a suspended fiber's span stayed entered: {between}"
    );
    for l in text
        .lines()
        .filter(|l| l.contains("outer before") || l.contains("outer after"))
    {
        assert!(
            l.contains("middleware{name=outer_mw"),
            "sync middleware events inside its span: {l}"
        );
    }
    assert_eq!(
        text.lines().filter(|l| l.contains("outer after")).count(),
        2
    );
}

/// A response future is lazy: building it calls no middleware and no view
/// (not even the synchronous part of an async layer's call), whatever the
/// first segment is; dropping it unpolled runs nothing either.
#[test]
fn no_layer_runs_before_the_first_poll() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counting_async = |calls: &Arc<AtomicUsize>| {
        let calls = calls.clone();
        move |req: Request, next: AsyncNext| {
            // Counted in the call itself, before its future exists.
            calls.fetch_add(1, Ordering::SeqCst);
            async move { next.run(req).await }
        }
    };
    let counting_sync = |calls: &Arc<AtomicUsize>| {
        let calls = calls.clone();
        move |req: Request, next: &mut Next| {
            calls.fetch_add(1, Ordering::SeqCst);
            next.get_response(req)
        }
    };
    let counting_view = |calls: &Arc<AtomicUsize>| {
        let calls = calls.clone();
        move |_req: Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { ok("v") }
        }
    };
    let pipelines = [
        Pipeline::builder()
            .layer_async(counting_async(&calls))
            .sync(counting_sync(&calls))
            .view(counting_view(&calls))
            .build()
            .unwrap(),
        Pipeline::builder()
            .sync(counting_sync(&calls))
            .layer_async(counting_async(&calls))
            .view(counting_view(&calls))
            .build()
            .unwrap(),
        Pipeline::builder()
            .view(counting_view(&calls))
            .build()
            .unwrap(),
    ];
    let rt = rt();
    for (i, p) in pipelines.iter().enumerate() {
        calls.store(0, Ordering::SeqCst);
        // Built outside any runtime, dropped unpolled.
        drop(p.handle(req("/")));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "pipeline {i}: dropped unpolled"
        );
        let fut = p.handle(req("/"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "pipeline {i}: built, not polled"
        );
        let resp = rt.block_on(fut);
        assert_eq!(text(&resp), "v");
        let layers = if i == 2 { 1 } else { 3 };
        assert_eq!(calls.load(Ordering::SeqCst), layers, "pipeline {i}: polled");
        assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
    }
}
