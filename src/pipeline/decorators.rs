//! View decorators: `require_http_methods` and friends.
//!
//! The wrapper is a view of the same kind as the one it wraps: a sync view
//! stays sync (so it still runs on the fiber or thread of the middleware
//! around it) and an async view stays async. (Decorating an async view with
//! a sync-only decorator would silently turn the view
//! into a sync one whose "response" was an un-awaited future.)

use http::header::{HeaderValue, ALLOW};
use http::{Method, StatusCode};

use crate::body::{Request, Response};
use crate::pipeline::middleware::{LocalBoxFuture, SyncView, View};

/// Answers `405 Method Not Allowed` (with an `Allow` header listing
/// `methods`) unless the request's method is one of `methods`; otherwise
/// calls `view`. Works for both [`View`] and [`SyncView`].
///
/// ```
/// use http::Method;
/// use suspendware::{Request, Response};
/// use suspendware::decorators::{require_http_methods};
/// let v = require_http_methods(&[Method::GET, Method::HEAD], |_r: Request| async move {
///     Response::new("ok".into())
/// });
/// # let _ = v;
/// ```
pub fn require_http_methods<V>(methods: &[Method], view: V) -> RequireMethods<V> {
    let allow = methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    RequireMethods {
        methods: methods.to_vec(),
        allow: HeaderValue::from_str(&allow).expect("method names are valid header text"),
        view,
    }
}

/// Only `GET` (like Django's `require_GET`).
pub fn require_get<V>(view: V) -> RequireMethods<V> {
    require_http_methods(&[Method::GET], view)
}

/// Only `POST`.
pub fn require_post<V>(view: V) -> RequireMethods<V> {
    require_http_methods(&[Method::POST], view)
}

/// A view restricted to some methods (see [`require_http_methods`]).
#[derive(Debug, Clone)]
pub struct RequireMethods<V> {
    methods: Vec<Method>,
    allow: HeaderValue,
    view: V,
}

impl<V> RequireMethods<V> {
    fn reject(&self, req: &Request) -> Option<Response> {
        if self.methods.contains(req.method()) {
            return None;
        }
        tracing::debug!(method = %req.method(), allow = ?self.allow, "method not allowed");
        let mut r = Response::new(format!("method {} not allowed\n", req.method()).into());
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r.headers_mut().insert(ALLOW, self.allow.clone());
        Some(r)
    }
}

impl<V: View> View for RequireMethods<V> {
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response> {
        match self.reject(&req) {
            Some(r) => Box::pin(async move { r }),
            None => self.view.call(req),
        }
    }
    fn name(&self) -> &str {
        self.view.name()
    }
}

impl<V: SyncView> SyncView for RequireMethods<V> {
    fn call(&self, req: Request) -> Response {
        match self.reject(&req) {
            Some(r) => r,
            None => self.view.call(req),
        }
    }
    fn name(&self) -> &str {
        self.view.name()
    }
}
