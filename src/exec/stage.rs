//! The adaptors that give every layer the one `Middleware` shape the chain
//! walks: sync-only and async-only middleware, and the view as the
//! innermost stage (a sync view hops to the blocking pool where it cannot
//! run inline).

use std::sync::Arc;

use crate::body::{Request, Response};
use crate::exec::next::{AsyncNext, Next};
use crate::future::LocalBoxFuture;
use crate::pipeline::middleware::{AsyncMiddleware, Middleware, SyncMiddleware, SyncView, View};
use crate::pipeline::mode::Capabilities;

/// Adapts a [`SyncMiddleware`] to [`Middleware`] (sync only).
pub(crate) struct SyncOnly<M>(pub(crate) M);

impl<M: SyncMiddleware> Middleware for SyncOnly<M> {
    fn capabilities(&self) -> Capabilities {
        Capabilities::SYNC
    }
    fn call_sync(&self, req: Request, next: &mut Next<'_>) -> Response {
        self.0.call(req, next)
    }
    fn name(&self) -> &str {
        self.0.name()
    }
}

/// Adapts an [`AsyncMiddleware`] to [`Middleware`] (async only).
pub(crate) struct AsyncOnly<M>(pub(crate) M);

impl<M: AsyncMiddleware> Middleware for AsyncOnly<M> {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ASYNC
    }
    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        self.0.call(req, next)
    }
    fn name(&self) -> &str {
        self.0.name()
    }
}

/// An async view as the innermost stage. (An inner async segment calls the
/// view through `Entry::view` instead; this adaptor gives it the
/// `Middleware` shape the planner and the other callers see.)
pub(crate) struct AsyncViewStage(pub(crate) Arc<dyn View>);

impl Middleware for AsyncViewStage {
    fn capabilities(&self) -> Capabilities {
        Capabilities::ASYNC
    }
    fn call_async<'a>(&'a self, req: Request, _next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        self.0.call(req)
    }
    fn name(&self) -> &str {
        self.0.name()
    }
}

/// A sync view as the innermost stage: inline when planned sync, a hop to
/// the blocking pool when planned async.
pub(crate) struct SyncViewStage(pub(crate) Arc<dyn SyncView>);

impl Middleware for SyncViewStage {
    fn capabilities(&self) -> Capabilities {
        Capabilities::BOTH
    }
    fn call_sync(&self, req: Request, _next: &mut Next<'_>) -> Response {
        self.0.call(req)
    }
    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        let view = self.0.clone();
        Box::pin(crate::exec::hop::hop(next.request_ctx(), move || {
            view.call(req)
        }))
    }
    fn name(&self) -> &str {
        self.0.name()
    }
}
