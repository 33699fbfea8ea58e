//! Stopping a `Runtime` gracefully.

use std::time::{Duration, Instant};

use super::worker::on_runtime;
use super::Runtime;

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Work still in flight at the deadline, dropped (cancelled). Its
    /// callers get [`crate::runtime::DispatchError::Aborted`].
    pub cancelled: usize,
    /// Workers whose thread panicked (their work is lost; should be 0).
    pub worker_panics: usize,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl Runtime {
    /// Stops accepting work, lets work in flight finish for up to `grace`,
    /// drops (cancels) what is left, and joins the workers.
    ///
    /// It returns soon after the deadline, with two exceptions. A cancelled
    /// request's `blocking` closure that still borrows its fiber's frames
    /// is waited for, because the fiber may not unwind before it returns.
    /// A held thread (Adapt, ThreadHop) busy in your code gets one more
    /// second, then is left to finish on its own; it unwinds when it next
    /// calls `get_response`.
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
