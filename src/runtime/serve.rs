//! A worker's loop: receive jobs until the queue is closed, then drain.
//!
//! ```text
//!   receiving ── queue closed and drained ──▶ draining ── in_flight == 0 ──▶ done
//!                (every accepted job started)     └──── grace over ──────▶ done, cancelled = in_flight
//! ```
//!
//! Shutdown (`Shared::begin_shutdown`) stops accepting, publishes the
//! deadline and closes every worker's queue. The queue is the cut-off: a
//! dispatch whose push succeeded is received here before the queue reports
//! closed (`crate::handoff::queue`), so it is started and counted in
//! `in_flight`; a later push fails and its caller gets `ShuttingDown`.
//!
//! The loop is generic over how a job is started and how the grace period
//! ends, so the loom models (`tests/loom.rs`) run this very code on a loom
//! thread (jobs run inline, grace never or at once) while the real worker
//! spawns jobs on its `LocalSet` and sleeps until the deadline.

use std::future::{poll_fn, Future};

use super::worker::{Job, WorkerReport, WorkerState};
use crate::handoff::queue::QueueRx;
use crate::loom::sync::Arc;

/// The consuming side of one worker: its queue and its shared state.
pub(crate) struct WorkerLoop {
    state: Arc<WorkerState>,
    rx: QueueRx<Job>,
}

impl WorkerLoop {
    pub(crate) fn new(state: Arc<WorkerState>, rx: QueueRx<Job>) -> WorkerLoop {
        WorkerLoop { state, rx }
    }

    /// Runs the loop (module docs). `start` runs or spawns a job; `grace`
    /// is called once the queue is closed and drained, and its future
    /// completing ends the wait for work in flight.
    pub(crate) async fn serve<G>(
        mut self,
        mut start: impl FnMut(Job),
        grace: impl FnOnce() -> G,
    ) -> WorkerReport
    where
        G: Future<Output = ()>,
    {
        while let Some(job) = self.rx.recv().await {
            start(job);
        }
        let grace = grace();
        let state = &*self.state;
        let idle = poll_fn(|cx| state.idle.poll_until(cx, || state.in_flight() == 0));
        tokio::select! {
            biased;
            () = idle => WorkerReport::default(),
            () = grace => {
                let cancelled = state.in_flight();
                if cancelled > 0 {
                    tracing::warn!(cancelled, "shutdown deadline passed; dropping in-flight work");
                }
                WorkerReport { cancelled }
            }
        }
    }
}

impl std::fmt::Debug for WorkerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLoop")
            .field("in_flight", &self.state.in_flight())
            .finish()
    }
}
