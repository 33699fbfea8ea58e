//! `Runtime`: owning the workers, and stopping them gracefully.

use std::fmt;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::builder::RuntimeBuilder;
use super::dispatch::{RuntimeHandle, Shared};
use super::error::RuntimeError;
use super::worker::{on_runtime, WorkerReport};
use crate::loom::sync::Arc;

/// N worker threads, each a current-thread tokio runtime with a `LocalSet`,
/// where pipelines run. Coroutines never leave their worker.
///
/// ```
/// use suspendware::{Pipeline, Request, Response, Runtime};
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

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Work still in flight at the deadline, dropped (cancelled). Its
    /// callers get [`crate::DispatchError::Aborted`].
    pub cancelled: usize,
    /// Workers whose thread panicked (their work is lost; should be 0).
    pub worker_panics: usize,
    /// How long the shutdown took.
    pub elapsed: Duration,
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

    /// Stops accepting work, lets work in flight finish for up to `grace`,
    /// drops (cancels) what is left, and joins the workers.
    ///
    /// Blocks the calling thread; from async code run it with
    /// `tokio::task::spawn_blocking`.
    ///
    /// # Panics
    /// When called on one of this runtime's own workers (it would wait for
    /// itself).
    pub fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        assert!(
            !on_runtime(self.shared.id),
            "suspendware: Runtime::shutdown called on one of its own workers; call it from \
             another thread (e.g. tokio::task::spawn_blocking on the caller's runtime)"
        );
        self.stop(grace)
    }

    fn stop(&mut self, grace: Duration) -> ShutdownReport {
        let start = Instant::now();
        self.shared.begin_shutdown(start + grace);
        let mut report = ShutdownReport::default();
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(r) => report.cancelled += r.cancelled,
                Err(_) => report.worker_panics += 1,
            }
        }
        report.elapsed = start.elapsed();
        tracing::info!(
            cancelled = report.cancelled,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "suspendware runtime stopped"
        );
        report
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        if on_runtime(self.shared.id) {
            // Joining would wait for this very thread: stop without joining.
            self.shared.begin_shutdown(Instant::now());
            self.threads.clear();
            return;
        }
        self.stop(Duration::ZERO);
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
