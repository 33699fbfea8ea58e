//! `Pipeline` and `RuntimeService` as tower services.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::StatusCode;
use tower_service::Service;

use super::body::{collect_request, status, BoxError, DEFAULT_BODY_LIMIT};
use crate::body::Response;
use crate::future::LocalBoxFuture;
use crate::pipeline::Pipeline;
use crate::runtime::{DispatchError, RuntimeHandle};

/// The pipeline as a local service: the future is `!Send` (run it on a
/// current-thread runtime or a `LocalSet`, as a thread-per-core server
/// does). The body is read first, up to [`DEFAULT_BODY_LIMIT`] (see the
/// module docs on body conversion).
impl<B> Service<http::Request<B>> for Pipeline
where
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = LocalBoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let pipeline = self.clone();
        Box::pin(async move {
            Ok(match collect_request(req, DEFAULT_BODY_LIMIT).await {
                Ok(req) => pipeline.handle(req).await,
                Err(resp) => resp,
            })
        })
    }
}

/// A pipeline run on a [`crate::runtime::Runtime`]'s workers, as a tower service
/// with `Send` futures (for axum, hyper on a multi-thread runtime, ...).
///
/// The request body is read on the caller's thread (see the module docs),
/// then the request goes to the least-loaded worker. It never fails:
/// a runtime that is shutting down or dropped the request answers `503`,
/// work that panicked `500`. `poll_ready` is always ready; bound
/// concurrency in front of it (e.g. tower's `ConcurrencyLimit`) if needed.
#[derive(Clone)]
pub struct RuntimeService {
    handle: RuntimeHandle,
    pipeline: Pipeline,
    body_limit: usize,
}

impl RuntimeService {
    /// Serves `pipeline` on `handle`'s runtime.
    pub fn new(handle: RuntimeHandle, pipeline: Pipeline) -> Self {
        RuntimeService {
            handle,
            pipeline,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    /// Cap on request bodies in bytes (default [`DEFAULT_BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The pipeline it runs.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

impl fmt::Debug for RuntimeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeService")
            .field("pipeline", &self.pipeline)
            .field("body_limit", &self.body_limit)
            .finish()
    }
}

impl<B> Service<http::Request<B>> for RuntimeService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let req = match collect_request(req, this.body_limit).await {
                Ok(req) => req,
                Err(resp) => return Ok(resp),
            };
            Ok(match this.handle.dispatch(&this.pipeline, req).await {
                Ok(resp) => resp,
                Err(e) => dispatch_failed(&e),
            })
        })
    }
}

/// The response for a request the runtime could not answer.
fn dispatch_failed(e: &DispatchError) -> Response {
    tracing::warn!(error = %e, "request not served by the suspendware runtime");
    let code = match e {
        DispatchError::Panicked { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    status(
        code,
        format!("{}\n", code.canonical_reason().unwrap_or("error")),
    )
}
