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
//! See `ARCHITECTURE.md` for the flow of a request and the invariants.
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

mod body;
mod bridge;
mod builder;
mod chain;
mod context;
mod coro;
mod decorators;
mod driver;
mod error;
mod handoff;
mod hooks;
mod loom;
mod middleware;
mod mode;
mod next;
mod panic;
mod pipeline;
mod plan;
mod runtime;
// tokio leaves out `net` under `--cfg loom`.
#[cfg(all(feature = "server", not(loom)))]
mod server;
mod stack_pool;
mod stack_trim;
mod thread;
#[cfg(feature = "tower")]
mod tower;
mod trace;
mod watchdog;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Hooks for the crate's benchmarks; not a public API (see the module).
#[doc(hidden)]
pub mod __bench;

pub use body::{Body, Request, Response};
pub use bridge::{blocking, wait};
pub use builder::{PipelineBuilder, DEFAULT_ADAPT_THREADS, DEFAULT_WATCHDOG};
pub use context::{NoRequest, RequestLocal};
pub use decorators::{require_get, require_http_methods, require_post, RequireMethods};
pub use error::{BuildError, StackError};
pub use hooks::{ExceptionInfo, HookMiddleware, RequestHead};
pub use middleware::{
    named, AsyncMiddleware, LocalBoxFuture, Middleware, Named, SyncMiddleware, SyncView, View,
};
pub use mode::{Capabilities, Exec, Mode};
pub use next::{AsyncNext, Next};
pub use panic::{default_panic_handler, Cancelled, PanicHandler, PanicInfo};
pub use pipeline::{Pipeline, ResponseFuture};
pub use plan::Plan;
pub use runtime::{
    worker_index, Dispatch, DispatchError, Runtime, RuntimeBuilder, RuntimeError, RuntimeHandle,
    ShutdownReport,
};
#[cfg(all(feature = "server", not(loom)))]
pub use server::{Server, ServerBuilder, ServerError, ServerReport, ServerStats};
pub use stack_pool::{
    default_stack_budget, max_map_count, PoolStats, StackPool, DEFAULT_STACK_HOT_SET,
    DEFAULT_STACK_IDLE_TIMEOUT, DEFAULT_STACK_SIZE, DEFAULT_STACK_WAIT, MIN_STACK_SIZE,
};
#[cfg(feature = "tower")]
pub use tower::{BoxError, CollectResponse, RuntimeService, SuspendLayer, DEFAULT_BODY_LIMIT};
pub use trace::{enter_span, SpanGuard};
pub use watchdog::StallStats;

/// Crate internals for the loom models in `tests/loom.rs`; exists only when
/// built with `RUSTFLAGS="--cfg loom"`. Not an API.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::handoff::queue::{queue, QueueRx, QueueTx};
    pub use crate::handoff::{oneshot, Closed, Receiver, Sender};
    pub use crate::runtime::model::{begin_shutdown, unstarted, Job, WorkerLoop, WorkerReport};
    pub use crate::stack_pool::{PoolCore, TryAcquire};
    pub use crate::thread::link::{link, AsyncEnd, ThreadLink};
}
