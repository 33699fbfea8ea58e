//! Errors of the runtime: starting it and dispatching to it.

use std::io;

/// Why a [`crate::runtime::Runtime`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// `workers(0)` was asked for.
    #[error("a suspendware runtime needs at least one worker thread (workers(0) was given)")]
    NoWorkers,
    /// A worker thread or its tokio runtime could not be created.
    #[error("could not start suspendware worker {index}: {source} (check the thread and file-descriptor limits)")]
    Spawn {
        /// The worker's index.
        index: usize,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// Why a dispatched piece of work has no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// [`crate::runtime::Runtime::shutdown`] has begun: no new work is accepted.
    #[error("the suspendware runtime is shutting down and accepts no new work")]
    ShuttingDown,
    /// The worker dropped the work before it finished: the shutdown
    /// deadline passed while it was in flight, or the worker exited.
    #[error("a suspendware worker dropped the work before it finished (shutdown deadline passed or the worker exited)")]
    Aborted,
    /// The work panicked on its worker (the worker keeps serving).
    #[error("the work dispatched to a suspendware worker panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// [`crate::runtime::RuntimeHandle::run_on`] named a worker that does not exist.
    #[error("no suspendware worker {index}: the runtime has {workers} (indices 0..{workers})")]
    NoSuchWorker {
        /// The index asked for.
        index: usize,
        /// How many workers the runtime has.
        workers: usize,
    },
}
