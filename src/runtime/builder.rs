//! `Runtime::builder()`.

use std::num::NonZeroUsize;
use std::thread;

use tokio::sync::watch;

use super::dispatch::Shared;
use super::error::RuntimeError;
use super::serve::WorkerLoop;
use super::worker::{self, WorkerState};
use super::Runtime;
use crate::loom::sync::Arc;

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    workers: usize,
    thread_name: String,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            workers: thread::available_parallelism().map_or(1, NonZeroUsize::get),
            thread_name: "suspendware-worker".to_owned(),
        }
    }
}

/// Tells runtimes apart (a worker knows which runtime it belongs to).
static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl RuntimeBuilder {
    /// Number of worker threads (default: `std::thread::available_parallelism`).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Thread name prefix; workers are named `<prefix>-<index>`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Starts the workers. Returns once every worker's tokio runtime runs.
    pub fn build(self) -> Result<Runtime, RuntimeError> {
        if self.workers == 0 {
            return Err(RuntimeError::NoWorkers);
        }
        let (shared, loops) = parts(self.workers);
        let id = shared.id;
        let mut runtime = Runtime::new_empty(shared.clone());
        for (index, work) in loops.into_iter().enumerate() {
            let name = format!("{}-{index}", self.thread_name);
            match worker::spawn(id, index, name, work, shared.stop.subscribe()) {
                Ok(t) => runtime.threads.push(t),
                // Dropping `runtime` stops and joins the workers started so far.
                Err(source) => return Err(RuntimeError::Spawn { index, source }),
            }
        }
        Ok(runtime)
    }
}

/// A runtime's shared state and its workers' loops, no thread started:
/// what [`RuntimeBuilder::build`] runs on the worker threads, and what the
/// loom models run on loom threads.
pub(crate) fn parts(workers: usize) -> (Arc<Shared>, Vec<WorkerLoop>) {
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (stop, _) = watch::channel(None);
    let (states, loops) = (0..workers).map(|_| WorkerState::new()).unzip();
    (Arc::new(Shared::new(id, states, stop)), loops)
}
