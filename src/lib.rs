//! # suspendware
//!
//! Blocking-style ("sync") middleware around async views, without holding a
//! thread per request.
//!
//! Legacy middleware is written as `fn call(&self, req, next) -> Response`
//! where `next.get_response(req)` looks like a plain call. suspendware runs
//! each run of consecutive sync middleware on a stackful coroutine (a
//! *fiber*, from [corosensei](https://docs.rs/corosensei)). At
//! `get_response` the fiber suspends back to the executor, the async inner
//! part (async middleware, the view) runs as an ordinary future, and the
//! fiber resumes with the response. Thousands of suspended middleware
//! contexts share one OS thread.
//!
//! ```
//! use suspendware::{Next, Pipeline, Request, Response, SyncMiddleware};
//!
//! struct Timing;
//! impl SyncMiddleware for Timing {
//!     fn call(&self, req: Request, next: &mut Next) -> Response {
//!         let start = std::time::Instant::now();
//!         let mut resp = next.get_response(req); // suspends this fiber
//!         let ms = start.elapsed().as_millis().to_string();
//!         resp.headers_mut().insert("x-render-ms", ms.parse().unwrap());
//!         resp
//!     }
//! }
//!
//! let pipeline = Pipeline::builder()
//!     .sync(Timing)
//!     .sync(|req: Request, next: &mut Next| next.get_response(req))
//!     .view(|_req: Request| async move { Response::new("hello".into()) })
//!     .build()
//!     .unwrap();
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let resp = rt.block_on(pipeline.handle(Request::new(Default::default())));
//! assert!(resp.headers().contains_key("x-render-ms"));
//! ```
//!
//! Futures returned by [`Pipeline::handle`] are `!Send`: a fiber never
//! leaves the thread it started on. Run them on a current-thread runtime or
//! a `LocalSet`.
//!
//! ## Where things are
//!
//! The root holds what a middleware author needs: [`Pipeline`] and its
//! builder, the middleware and view traits, [`Next`]/[`AsyncNext`],
//! [`Mode`], [`wait`], [`blocking`], [`RequestLocal`], [`enter_span`] and the
//! body types. The rest lives in modules: [`runtime`] (thread-per-core
//! workers for multi-thread servers), [`server`] (a hyper server),
//! [`tower`] (tower/axum integration), [`hooks`] and [`decorators`]
//! (Django-style hook middleware and view decorators), [`plan`] (what runs
//! where), [`panic`](mod@panic) (panic handling and cancellation) and [`stack`] (fiber
//! stacks and their budget).
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tower` | yes | `tower::Service` for `Pipeline` and the runtime handle; [`tower::SuspendLayer`], which puts sync middleware in front of any tower service (an axum `Router`) |
//! | `server` | yes (implies `tower`) | [`server::Server`], a thread-per-core hyper HTTP/1.1 server |
//!
//! With `default-features = false` the crate is the pipeline, the bridge
//! functions and the [`runtime`]; bring your own server glue.
//!
//! See `ARCHITECTURE.md` for the flow of a request and the invariants.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod bridge;
mod coro;
mod exec;
mod future;
mod handoff;
mod loom;
#[cfg(all(test, loom))]
mod loom_support;
pub mod panic;
mod pipeline;
pub mod runtime;
mod service_thread;
// tokio leaves out `net` under `--cfg loom`.
#[cfg(all(feature = "server", not(loom)))]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod stack;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Entry points for the crate's own benchmarks; not part of the API.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod __bench;

pub use body::{Body, Request, Response};
pub use bridge::local::{NoRequest, RequestLocal};
pub use bridge::span::{enter_span, SpanGuard};
pub use bridge::{blocking, sleep, wait};
pub use exec::next::{AsyncNext, Next};
pub use exec::watchdog::StallStats;
pub use future::LocalBoxFuture;
pub use pipeline::builder::PipelineBuilder;
pub use pipeline::error::BuildError;
pub use pipeline::middleware::{
    named, AsyncMiddleware, Middleware, Named, SyncMiddleware, SyncView, View,
};
pub use pipeline::mode::Mode;
pub use pipeline::{Pipeline, ResponseFuture};

/// Django-style hook middleware (`process_request`, `process_view`,
/// `process_exception`, `process_response`).
pub mod hooks {
    pub use crate::pipeline::hooks::{ExceptionInfo, HookMiddleware, RequestHead};
}

/// View decorators in the manner of Django's `require_http_methods`.
pub mod decorators {
    pub use crate::pipeline::decorators::{
        require_get, require_http_methods, require_post, RequireMethods,
    };
}

/// Blocking-style I/O for sync code on a fiber: [`io::SyncIo`] wraps a
/// tokio stream as `std::io::Read + Write`, suspending the fiber (not the
/// thread) while the stream is not ready.
pub mod io {
    pub use crate::bridge::io::SyncIo;
}

/// What runs where: the plan a pipeline was built with, and the
/// capabilities a hybrid middleware declares.
pub mod plan {
    pub use crate::pipeline::mode::{Capabilities, Exec};
    pub use crate::pipeline::plan::Plan;
}
