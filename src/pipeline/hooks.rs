//! Hook middleware: Django's `MiddlewareMixin`.
//!
//! A [`HookMiddleware`] offers optional hooks instead of one `call`:
//!
//! * `process_request` — in order, outermost first; a response returned
//!   short-circuits (inner layers and the view are skipped, but this
//!   middleware's and the outer ones' `process_response` still run);
//! * `process_view` — in order, after every `process_request`, just before
//!   the view; a response returned skips the view;
//! * `process_exception` — when the inner part panicked, innermost first; a
//!   response returned replaces the panic handler's 500;
//! * `process_response` — in reverse order, innermost first.
//!
//! In Suspend mode the hooks run on the fiber like any sync code; in Adapt
//! mode on the held thread; in ThreadHop and Strict modes each hook is its
//! own hop to the blocking pool (Django 3.1's ASGI behaviour).

use std::sync::Arc;

use http::{HeaderMap, Method, Uri, Version};

use crate::body::{Request, Response};
use crate::exec::boundary::PanicMarker;
use crate::exec::hop::hop;
use crate::exec::next::{AsyncNext, Next};
use crate::pipeline::middleware::{short_type_name, LocalBoxFuture, Middleware};
use crate::pipeline::mode::Capabilities;

/// What `process_exception` and `process_response` see of the request.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The URI.
    pub uri: Uri,
    /// The HTTP version.
    pub version: Version,
    /// The headers (as they were when the request went inward).
    pub headers: HeaderMap,
}

impl RequestHead {
    fn of(req: &Request) -> RequestHead {
        RequestHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }
}

/// Details of a panic handed to `process_exception`.
#[derive(Clone, Debug)]
pub struct ExceptionInfo {
    /// The middleware or view that panicked.
    pub location: String,
    /// The panic message.
    pub message: String,
}

/// Django-style hook middleware. Every hook is optional.
#[allow(unused_variables)]
pub trait HookMiddleware: Send + Sync + 'static {
    /// Before the inner layers; `Some` short-circuits.
    fn process_request(&self, req: &mut Request) -> Option<Response> {
        None
    }

    /// Just before the view (after all `process_request`s); `Some` skips
    /// the view.
    fn process_view(&self, req: &mut Request) -> Option<Response> {
        None
    }

    /// The inner part panicked; `Some` replaces the 500 response.
    fn process_exception(&self, head: &RequestHead, exc: &ExceptionInfo) -> Option<Response> {
        None
    }

    /// After the inner layers, innermost first.
    fn process_response(&self, head: &RequestHead, resp: Response) -> Response {
        resp
    }

    /// The name used in logs, spans, build errors and the plan.
    fn name(&self) -> &str {
        short_type_name::<Self>()
    }
}

/// A hook middleware as a pipeline stage (sync inline, or async with hops).
pub(crate) struct HookStage(pub(crate) Arc<dyn HookMiddleware>);

fn exception_of(resp: &Response) -> Option<ExceptionInfo> {
    resp.extensions()
        .get::<PanicMarker>()
        .map(|m| ExceptionInfo {
            location: m.location.clone(),
            message: m.message.clone(),
        })
}

impl Middleware for HookStage {
    fn capabilities(&self) -> Capabilities {
        Capabilities::BOTH
    }

    fn call_sync(&self, mut req: Request, next: &mut Next<'_>) -> Response {
        let h = &self.0;
        let head = RequestHead::of(&req);
        if let Some(r) = h.process_request(&mut req) {
            return h.process_response(&head, r);
        }
        let mut resp = next.get_response(req);
        if let Some(exc) = exception_of(&resp) {
            if let Some(r) = h.process_exception(&head, &exc) {
                resp = r;
            }
        }
        h.process_response(&head, resp)
    }

    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let ctx = next.request_ctx();
            let head = RequestHead::of(&req);
            let h = self.0.clone();
            let (req, early) = hop(ctx.clone(), move || {
                let mut req = req;
                let early = h.process_request(&mut req);
                (req, early)
            })
            .await;
            let mut resp = match early {
                Some(r) => r,
                None => {
                    let mut resp = next.run(req).await;
                    if let Some(exc) = exception_of(&resp) {
                        let (h, head2) = (self.0.clone(), head.clone());
                        if let Some(r) =
                            hop(ctx.clone(), move || h.process_exception(&head2, &exc)).await
                        {
                            resp = r;
                        }
                    }
                    resp
                }
            };
            let h = self.0.clone();
            resp = hop(ctx, move || h.process_response(&head, resp)).await;
            resp
        })
    }

    fn name(&self) -> &str {
        self.0.name()
    }
}

/// The `process_view` hooks of every hook middleware, as one stage placed
/// just before the view.
pub(crate) struct ViewHooks(pub(crate) Vec<Arc<dyn HookMiddleware>>);

impl Middleware for ViewHooks {
    fn capabilities(&self) -> Capabilities {
        Capabilities::BOTH
    }

    fn call_sync(&self, mut req: Request, next: &mut Next<'_>) -> Response {
        for h in &self.0 {
            if let Some(r) = h.process_view(&mut req) {
                return r;
            }
        }
        next.get_response(req)
    }

    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let ctx = next.request_ctx();
            let mut req = req;
            for h in &self.0 {
                let h = h.clone();
                let (back, early) = hop(ctx.clone(), move || {
                    let mut req = req;
                    let early = h.process_view(&mut req);
                    (req, early)
                })
                .await;
                if let Some(r) = early {
                    return r;
                }
                req = back;
            }
            next.run(req).await
        })
    }

    fn name(&self) -> &str {
        "process_view hooks"
    }
}
