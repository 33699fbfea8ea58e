//! The axum example's router answers through `SuspendLayer` (sync
//! middleware on suspendware workers) next to tower-http's `CorsLayer`, on
//! axum's multi-thread runtime, over real sockets.

#[path = "../examples/axum_app/mod.rs"]
mod app;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use suspendware::runtime::Runtime;
use suspendware::tower::SuspendLayer;
use suspendware::{Next, Request};
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(
            req.body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_router_answers_through_the_layer() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let router = app::router(runtime.handle()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async { stop_rx.await.unwrap_or(()) })
            .await
    });

    let hello = send(
        addr,
        Method::GET,
        "/",
        &[("origin", "http://example.test")],
        "",
    )
    .await;
    assert_eq!(hello.status, StatusCode::OK);
    assert_eq!(hello.body, "hello from axum\n");
    assert!(
        hello.headers.contains_key("x-render-ms"),
        "the sync Timing middleware ran"
    );
    assert_eq!(
        hello.headers["access-control-allow-origin"], "*",
        "tower-http's CorsLayer ran"
    );

    let worker = send(addr, Method::GET, "/worker", &[], "").await;
    let text = String::from_utf8(worker.body.to_vec()).unwrap();
    assert!(text.starts_with("suspendware worker "), "{text}");

    let echo = send(addr, Method::POST, "/echo", &[], "ping body").await;
    assert_eq!(
        (echo.status, &echo.body[..]),
        (StatusCode::OK, &b"ping body"[..])
    );

    // Sync middleware short-circuits before the axum handler.
    let denied = send(addr, Method::GET, "/admin/stats", &[], "").await;
    assert_eq!(denied.status, StatusCode::UNAUTHORIZED);
    assert!(denied.headers.contains_key("x-render-ms"));
    let allowed = send(
        addr,
        Method::GET,
        "/admin/stats",
        &[("x-api-key", "letmein")],
        "",
    )
    .await;
    assert_eq!(
        (allowed.status, &allowed.body[..]),
        (StatusCode::OK, &b"secret stats\n"[..])
    );

    // `Router::layer` wraps the routes only: unknown paths get axum's 404.
    let missing = send(addr, Method::GET, "/nope", &[], "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Many requests at once.
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(send(addr, Method::GET, "/", &[], "")))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    let report = tokio::task::spawn_blocking(move || runtime.shutdown(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(report.cancelled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layered_service_has_send_futures_and_reads_bodies() {
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let layer = SuspendLayer::new(runtime.handle(), |b| {
        b.sync(|req: Request, next: &mut Next| {
            // Sync middleware sees the whole request body and the inner
            // service's whole response body.
            let len = req.body().len();
            let mut resp = next.get_response(req);
            let out = resp.body().len();
            resp.headers_mut()
                .insert("x-seen", format!("{len}->{out}").parse().unwrap());
            resp
        })
    })
    .unwrap()
    .body_limit(8);
    let inner = tower::service_fn(|req: Request| async move {
        let body = [req.body().as_bytes(), b"!"].concat();
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
    });
    let svc = tower::Layer::layer(&layer, inner);

    let fut = svc
        .clone()
        .oneshot(http::Request::new(Full::new(Bytes::from_static(b"abc"))));
    // `tokio::spawn` needs a `Send` future: this is the property axum needs.
    let resp = tokio::spawn(fut).await.unwrap().unwrap();
    assert_eq!(resp.headers()["x-seen"], "3->4");
    assert_eq!(resp.body().as_bytes(), b"abc!");

    let big = svc
        .oneshot(http::Request::new(Full::new(Bytes::from_static(
            b"123456789",
        ))))
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    tokio::task::spawn_blocking(move || runtime.shutdown(Duration::from_secs(10)))
        .await
        .unwrap();
}
