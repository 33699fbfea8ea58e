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

pub use builder::RuntimeBuilder;
pub use dispatch::{Dispatch, RuntimeHandle};
pub use error::{DispatchError, RuntimeError};
pub use shutdown::{Runtime, ShutdownReport};
pub use worker::worker_index;

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
    pub fn unstarted(workers: usize) -> (RuntimeHandle, Vec<WorkerLoop>) {
        let (shared, loops) = super::builder::parts(workers);
        (RuntimeHandle { shared }, loops)
    }

    /// What `Runtime::shutdown` does before it joins the threads.
    pub fn begin_shutdown(handle: &RuntimeHandle) {
        handle.shared.begin_shutdown(std::time::Instant::now());
    }
}
