//! The middleware and view traits, and their closure forms.

use std::future::Future;

use crate::body::{Request, Response};
use crate::exec::next::{AsyncNext, Next};
use crate::pipeline::mode::Capabilities;

pub(crate) use crate::future::LocalBoxFuture;

/// Blocking-style middleware: Django's `def __call__(self, request)`.
///
/// `call` runs on a fiber (a stackful coroutine). [`Next::get_response`]
/// looks like a plain call; when the rest of the pipeline is async it
/// suspends the fiber, the async part runs on the executor, and the fiber
/// resumes with the response. Many requests' middleware contexts share one
/// OS thread this way.
///
/// Closures with annotated parameters are middleware too:
///
/// ```
/// use suspendware::{Next, Request, Response, SyncMiddleware};
/// let mw = |req: Request, next: &mut Next| next.get_response(req);
/// fn check<M: SyncMiddleware>(_: &M) {}
/// check(&mw);
/// ```
///
/// The middleware value is shared by every request, on every thread that
/// runs the pipeline, hence `Send + Sync`.
pub trait SyncMiddleware: Send + Sync + 'static {
    /// Handles one request. Call `next.get_response(req)` zero times
    /// (short-circuit), once, or several times (retry).
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response;

    /// The name used in logs, spans and build errors.
    fn name(&self) -> &str {
        short_type_name::<Self>()
    }
}

impl<F> SyncMiddleware for F
where
    F: Fn(Request, &mut Next<'_>) -> Response + Send + Sync + 'static,
{
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        self(req, next)
    }
}

/// Async middleware: awaits the rest of the pipeline through [`AsyncNext`].
///
/// It runs on the executor's stack, never on a fiber. Closures work:
/// `|req: Request, next: AsyncNext| async move { next.run(req).await }`.
pub trait AsyncMiddleware: Send + Sync + 'static {
    /// Handles one request.
    fn call<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response>;

    /// The name used in logs, spans and build errors.
    fn name(&self) -> &str {
        short_type_name::<Self>()
    }
}

impl<F, Fut> AsyncMiddleware for F
where
    F: Fn(Request, AsyncNext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + 'static,
{
    fn call<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        crate::future::box_in_place!(Fut, self(req, next))
    }
}

/// An async view (the innermost handler).
///
/// `|req: Request| async move { Response::new("hi".into()) }` is a view.
pub trait View: Send + Sync + 'static {
    /// Produces the response.
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response>;

    /// The name used in logs and spans.
    fn name(&self) -> &str {
        short_type_name::<Self>()
    }
}

impl<F, Fut> View for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + 'static,
{
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response> {
        crate::future::box_in_place!(Fut, self(req))
    }
}

/// A sync view: blocking-style code that produces the response.
///
/// In Suspend mode it runs on the fiber of the sync middleware around it (no
/// extra switch); in Adapt mode on that held thread; in ThreadHop and Strict
/// modes it hops to the blocking pool. `|req: Request| Response::new(..)`
/// is a sync view.
pub trait SyncView: Send + Sync + 'static {
    /// Produces the response.
    fn call(&self, req: Request) -> Response;

    /// The name used in logs and spans.
    fn name(&self) -> &str {
        short_type_name::<Self>()
    }
}

impl<F> SyncView for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    fn call(&self, req: Request) -> Response {
        self(req)
    }
}

/// The general middleware form, with Django's capability flags.
///
/// [`SyncMiddleware`] and [`AsyncMiddleware`] are the common single-mode
/// cases (the builder wraps them). Implement `Middleware` directly for a
/// *hybrid* — one middleware with both a sync and an async implementation;
/// the planner picks, per pipeline, the one that needs fewer sync↔async
/// switches (Django's `load_middleware` rule).
///
/// ```
/// use suspendware::{AsyncNext, LocalBoxFuture, Middleware, Next, Request, Response};
/// use suspendware::plan::{Capabilities};
/// struct Hybrid;
/// impl Middleware for Hybrid {
///     fn capabilities(&self) -> Capabilities { Capabilities::BOTH }
///     fn call_sync(&self, req: Request, next: &mut Next) -> Response { next.get_response(req) }
///     fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
///         Box::pin(async move { next.run(req).await })
///     }
/// }
/// ```
pub trait Middleware: Send + Sync + 'static {
    /// Which implementations exist. Both `false` is a build error.
    fn capabilities(&self) -> Capabilities;

    /// The sync implementation (required when `capabilities().sync`).
    fn call_sync(&self, req: Request, next: &mut Next<'_>) -> Response {
        let _ = (req, next);
        panic!(
            "middleware {} declares sync capability but does not implement Middleware::call_sync",
            self.name()
        )
    }

    /// The async implementation (required when `capabilities().async_`).
    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        let _ = (req, next);
        panic!(
            "middleware {} declares async capability but does not implement Middleware::call_async",
            self.name()
        )
    }

    /// The name used in logs, spans, build errors and the plan.
    fn name(&self) -> &str {
        short_type_name::<Self>()
    }
}

/// Gives a middleware (or view) a readable name for logs and errors —
/// closures otherwise show up as `{{closure}}`.
///
/// ```
/// use suspendware::{named, Next, Request, SyncMiddleware};
/// let mw = named("passthrough", |req: Request, next: &mut Next| next.get_response(req));
/// assert_eq!(SyncMiddleware::name(&mw), "passthrough");
/// ```
pub fn named<M>(name: impl Into<String>, inner: M) -> Named<M> {
    Named {
        name: name.into(),
        inner,
    }
}

/// A middleware or view with a name given by [`named`].
#[derive(Debug, Clone)]
pub struct Named<M> {
    name: String,
    inner: M,
}

impl<M: SyncMiddleware> SyncMiddleware for Named<M> {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        self.inner.call(req, next)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl<M: AsyncMiddleware> AsyncMiddleware for Named<M> {
    fn call<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        self.inner.call(req, next)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl<M: Middleware> Middleware for Named<M> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn call_sync(&self, req: Request, next: &mut Next<'_>) -> Response {
        self.inner.call_sync(req, next)
    }
    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        self.inner.call_async(req, next)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl<V: SyncView> SyncView for Named<V> {
    fn call(&self, req: Request) -> Response {
        self.inner.call(req)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

impl<V: View> View for Named<V> {
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response> {
        self.inner.call(req)
    }
    fn name(&self) -> &str {
        &self.name
    }
}

/// `std::any::type_name` without the module path of the outer type.
pub(crate) fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let head = full.split('<').next().unwrap_or(full);
    match head.rfind("::") {
        Some(i) if !head.ends_with("}}") => &full[i + 2..],
        _ => full,
    }
}
