//! The axum app of `examples/axum_layer.rs`, shared with its test: an axum
//! `Router` whose routes sit behind blocking-style sync middleware (through
//! `SuspendLayer`, running on a `suspendware::runtime::Runtime`) and tower-http's
//! `CorsLayer`, on axum's multi-thread runtime.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use http::header::HeaderValue;
use http::StatusCode;
use suspendware::runtime::RuntimeHandle;
use suspendware::tower::SuspendLayer;
use suspendware::{wait, BuildError, Next, Request, Response, SyncMiddleware};
use tower_http::cors::CorsLayer;

/// `X-Render-MS` around everything inside it.
pub struct Timing;

impl SyncMiddleware for Timing {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        let start = Instant::now();
        let mut resp = next.get_response(req);
        let ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
        resp.headers_mut()
            .insert("x-render-ms", HeaderValue::from_str(&ms).expect("digits"));
        resp
    }
}

/// `/admin/*` needs `X-Api-Key: letmein`; the key check "asks a backend"
/// blocking-style (`wait` suspends the fiber, not the thread).
pub struct AdminGate;

impl SyncMiddleware for AdminGate {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        if req.uri().path().starts_with("/admin") {
            let key = req.headers().get("x-api-key").cloned();
            let allowed = wait(async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                key.is_some_and(|k| k == "letmein")
            });
            if !allowed {
                let mut r = Response::new("missing or wrong X-Api-Key\n".into());
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
        }
        next.get_response(req)
    }
}

/// The layer: the sync middleware stack, outermost first.
pub fn suspend_layer(handle: RuntimeHandle) -> Result<SuspendLayer, BuildError> {
    SuspendLayer::new(handle, |b| b.sync(Timing).sync(AdminGate))
}

/// The router: axum handlers behind the sync middleware, CORS outermost.
pub fn router(handle: RuntimeHandle) -> Result<Router, BuildError> {
    Ok(Router::new()
        .route("/", get(|| async { "hello from axum\n" }))
        .route(
            "/worker",
            get(|| async {
                // Handlers run on the suspendware worker the request went to.
                match suspendware::runtime::worker_index() {
                    Some(i) => format!("suspendware worker {i}\n"),
                    None => "not on a suspendware worker\n".to_owned(),
                }
            }),
        )
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/admin/stats", get(|| async { "secret stats\n" }))
        .layer(suspend_layer(handle)?)
        .layer(CorsLayer::permissive()))
}
