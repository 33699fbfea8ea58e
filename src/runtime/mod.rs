//! The thread-per-core runtime: where pipelines run when the server's own
//! executor is multi-threaded.
//!
//! ```text
//!  any thread / multi-thread tokio            worker k (OS thread)
//!  ───────────────────────────────            ─────────────────────────────
//!  handle.dispatch(&pipeline, req) ──Job──>   current-thread tokio + LocalSet
//!        │  (least-loaded worker)              spawn_local(pipeline.handle(req))
//!        ▼                                        fibers start, suspend, resume
//!  Dispatch<Response>: Send  <──reply────────     and finish here, never moving
//! ```
//!
//! * [`Runtime`] owns N worker threads (default: available parallelism).
//! * [`RuntimeHandle`] is `Send + Sync + Clone`; [`RuntimeHandle::dispatch`]
//!   and [`RuntimeHandle::run`] return a `Send` [`Dispatch`] future.
//! * [`Runtime::shutdown`] stops accepting, lets in-flight work finish up to
//!   a deadline, drops (cancels) what is left, and joins the threads.

mod builder;
mod dispatch;
mod error;
mod reply;
mod serve;
mod shutdown;
mod worker;

pub use crate::exec::orphans::Reaper;
pub use builder::RuntimeBuilder;
pub use dispatch::{Dispatch, RuntimeHandle};
pub use error::{DispatchError, RuntimeError};
pub use shutdown::ShutdownReport;
pub use worker::worker_index;

use std::fmt;
use std::thread::JoinHandle;

use crate::loom::sync::Arc;
use dispatch::Shared;
use worker::WorkerReport;

/// N worker threads, each a current-thread tokio runtime with a `LocalSet`,
/// where pipelines run. Coroutines never leave their worker.
///
/// ```
/// use suspendware::runtime::Runtime;
/// use suspendware::{Pipeline, Request, Response};
///
/// let pipeline = Pipeline::builder()
///     .view(|_req: Request| async { Response::new("hi".into()) })
///     .build()
///     .unwrap();
/// let runtime = Runtime::builder().workers(2).build().unwrap();
/// let handle = runtime.handle();
///
/// // From a multi-thread runtime (the future is `Send`):
/// let mt = tokio::runtime::Runtime::new().unwrap();
/// let resp = mt.block_on(async move {
///     tokio::spawn(async move { handle.dispatch(&pipeline, Request::default()).await })
///         .await
///         .unwrap()
/// });
/// assert_eq!(resp.unwrap().body().as_bytes(), b"hi");
///
/// let report = runtime.shutdown(std::time::Duration::from_secs(5));
/// assert_eq!(report.cancelled, 0);
/// ```
///
/// Dropping a `Runtime` without calling [`Runtime::shutdown`] stops it with
/// no grace period: work still in flight is cancelled.
pub struct Runtime {
    shared: Arc<Shared>,
    pub(crate) threads: Vec<JoinHandle<WorkerReport>>,
}

impl Runtime {
    /// A runtime with one worker per available core.
    pub fn new() -> Result<Runtime, RuntimeError> {
        RuntimeBuilder::default().build()
    }

    /// Starts a builder.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    pub(crate) fn new_empty(shared: Arc<Shared>) -> Runtime {
        Runtime {
            shared,
            threads: Vec::new(),
        }
    }

    /// A handle for dispatching work (cheap to clone, `Send + Sync`).
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            shared: self.shared.clone(),
        }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.workers())
            .field("handle", &self.handle())
            .finish()
    }
}

#[cfg(all(test, loom))]
mod loom_models;

/// Entry points for the loom models (`loom_models.rs`).
#[cfg(loom)]
pub(crate) mod model {
    pub(crate) use super::serve::WorkerLoop;
    pub(crate) use super::worker::{Job, WorkerReport};
    use super::RuntimeHandle;

    /// A runtime with `workers` workers whose loops are returned instead of
    /// started on threads (run each with [`WorkerLoop::serve`]).
    pub(crate) fn unstarted(workers: usize) -> (RuntimeHandle, Vec<WorkerLoop>) {
        let (shared, loops) = super::builder::parts(workers);
        (RuntimeHandle { shared }, loops)
    }

    /// What `Runtime::shutdown` does before it joins the threads.
    pub(crate) fn begin_shutdown(handle: &RuntimeHandle) {
        handle.shared.begin_shutdown(std::time::Instant::now());
    }
}
