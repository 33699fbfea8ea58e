//! The innermost view of a [`super::SuspendLayer`] pipeline: calls the
//! wrapped tower service.

use std::future::poll_fn;

use http::StatusCode;
use tower_service::Service;

use super::body::{status, BoxError, CollectResponse};
use crate::body::{Request, Response};
use crate::loom::sync::Mutex;
use crate::pipeline::middleware::{LocalBoxFuture, View};

/// Holds the inner service; each request calls a fresh clone of it (tower's
/// rule for services shared by concurrent requests), readied on the worker.
pub(crate) struct InnerView<S> {
    /// Behind a lock only so the view is `Sync` for any `Send` service;
    /// held just long enough to clone.
    inner: Mutex<S>,
}

impl<S> InnerView<S> {
    pub(crate) fn new(inner: S) -> Self {
        InnerView {
            inner: Mutex::new(inner),
        }
    }
}

impl<S> View for InnerView<S>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Response: CollectResponse,
    S::Error: Into<BoxError>,
    S::Future: 'static,
{
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response> {
        let mut svc = crate::loom::lock(&self.inner).clone();
        Box::pin(async move {
            if let Err(e) = poll_fn(|cx| svc.poll_ready(cx)).await {
                return failed("was not ready", e.into());
            }
            match svc.call(req).await {
                Ok(resp) => match resp.collect_response().await {
                    Ok(r) => r,
                    Err(e) => failed("response body failed", e),
                },
                Err(e) => failed("failed", e.into()),
            }
        })
    }

    fn name(&self) -> &str {
        "inner service"
    }
}

fn failed(what: &str, e: BoxError) -> Response {
    tracing::error!(error = %e, "the service inside SuspendLayer {what}; answering 500");
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal server error\n".to_owned(),
    )
}
