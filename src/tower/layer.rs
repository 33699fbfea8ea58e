//! `SuspendLayer`: sync middleware in front of any tower service.

use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use tower_service::Service;

use super::body::{BoxError, CollectResponse, DEFAULT_BODY_LIMIT};
use super::service::RuntimeService;
use super::view::InnerView;
use crate::body::{Request, Response};
use crate::pipeline::builder::PipelineBuilder;
use crate::pipeline::error::BuildError;
use crate::pipeline::Pipeline;
use crate::runtime::RuntimeHandle;
use crate::stack::{default_stack_budget, StackPool, DEFAULT_STACK_SIZE, DEFAULT_STACK_WAIT};

type Configure = dyn Fn(PipelineBuilder) -> PipelineBuilder + Send + Sync;

/// A tower [`Layer`] that runs sync (and async) middleware, on a
/// [`crate::runtime::Runtime`]'s workers, in front of the service it wraps.
///
/// `layer(inner)` builds a pipeline from `configure` whose view calls a
/// clone of `inner` (on the worker), and returns a [`RuntimeService`]: its
/// futures are `Send`, so it fits `axum::Router::layer` on the default
/// multi-thread runtime next to tower-http layers. Bodies are read into
/// [`crate::Body`] on the way in and out (see the module docs).
///
/// ```
/// use suspendware::{Next, Request};
/// use suspendware::runtime::{Runtime};
/// use suspendware::tower::{SuspendLayer};
///
/// let runtime = Runtime::builder().workers(1).build().unwrap();
/// let layer = SuspendLayer::new(runtime.handle(), |b| {
///     b.sync(|req: Request, next: &mut Next| {
///         let mut resp = next.get_response(req);
///         resp.headers_mut().insert("x-frame-options", "DENY".parse().unwrap());
///         resp
///     })
/// })
/// .unwrap();
/// // let app = axum::Router::new().route("/", get(handler)).layer(layer);
/// # drop(layer);
/// ```
///
/// axum applies a layer to every route, so `layer` may run many times:
/// each call builds a pipeline (calling `configure` again), and all of them
/// share one stack pool (set your own with `stack_pool` in `configure`).
#[derive(Clone)]
pub struct SuspendLayer {
    handle: RuntimeHandle,
    configure: Arc<Configure>,
    pool: StackPool,
    body_limit: usize,
}

impl SuspendLayer {
    /// A layer whose pipeline is `configure(builder)` plus a view that calls
    /// the wrapped service. Fails with the pipeline's build error (checked
    /// once here with a placeholder view).
    pub fn new<F>(handle: RuntimeHandle, configure: F) -> Result<Self, BuildError>
    where
        F: Fn(PipelineBuilder) -> PipelineBuilder + Send + Sync + 'static,
    {
        let pool = StackPool::new(
            DEFAULT_STACK_SIZE,
            default_stack_budget(),
            DEFAULT_STACK_WAIT,
        );
        let layer = SuspendLayer {
            handle,
            configure: Arc::new(configure),
            pool,
            body_limit: DEFAULT_BODY_LIMIT,
        };
        layer.pipeline(|_req: Request| async { Response::default() })?;
        Ok(layer)
    }

    /// Cap on request bodies in bytes (default [`DEFAULT_BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    fn pipeline(&self, view: impl crate::View) -> Result<Pipeline, BuildError> {
        (self.configure)(Pipeline::builder().stack_pool(self.pool.clone()))
            .view(view)
            .build()
    }
}

impl<S> Layer<S> for SuspendLayer
where
    S: Service<Request> + Clone + Send + 'static,
    S::Response: CollectResponse,
    S::Error: Into<BoxError>,
    S::Future: 'static,
{
    type Service = RuntimeService;

    fn layer(&self, inner: S) -> RuntimeService {
        let pipeline = self
            .pipeline(InnerView::new(inner))
            .expect("SuspendLayer: `configure` built a pipeline in `new` but not in `layer`; it must be deterministic");
        RuntimeService::new(self.handle.clone(), pipeline).body_limit(self.body_limit)
    }
}

impl fmt::Debug for SuspendLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SuspendLayer")
            .field("handle", &self.handle)
            .field("body_limit", &self.body_limit)
            .finish()
    }
}
