//! One worker: an OS thread with a current-thread tokio runtime and a
//! `LocalSet`. Work arrives as [`Job`]s on an unbounded channel and runs as
//! local tasks, so fibers (and every `!Send` future) stay on this thread
//! from start to end.

use std::cell::Cell;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::LocalSet;

use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Arc;
use crate::middleware::LocalBoxFuture;

/// What the dispatcher and the worker share about one worker.
pub(crate) struct WorkerState {
    /// Work dispatched to this worker and not finished (queued or running).
    /// Raised by the dispatcher before it checks that the runtime accepts
    /// work, lowered when the job is dropped (finished, cancelled, or never
    /// delivered).
    pub(crate) in_flight: AtomicUsize,
    /// Signalled when `in_flight` drops to zero (the drain waits on it).
    pub(crate) idle: Notify,
    pub(crate) tx: mpsc::UnboundedSender<Job>,
}

/// Work for a worker: a closure run on the worker that makes the task's
/// future, and the in-flight mark. The mark goes into the future, which
/// drops it just before it answers, so a caller that has its answer sees
/// the work no longer in flight; if the job or its future is dropped
/// instead, the mark goes with it.
pub(crate) struct Job {
    make: Box<dyn FnOnce(InFlight) -> LocalBoxFuture<'static, ()> + Send>,
    in_flight: InFlight,
}

impl Job {
    pub(crate) fn new(
        in_flight: InFlight,
        make: impl FnOnce(InFlight) -> LocalBoxFuture<'static, ()> + Send + 'static,
    ) -> Job {
        Job {
            make: Box::new(make),
            in_flight,
        }
    }
}

/// One unit of `WorkerState::in_flight`, given back on drop.
pub(crate) struct InFlight(Arc<WorkerState>);

impl InFlight {
    pub(crate) fn enter(worker: &Arc<WorkerState>) -> InFlight {
        // SeqCst pairs with `Runtime::shutdown`: a dispatcher that still sees
        // the runtime accepting (SeqCst load after this add) has its add
        // ordered before the shutdown's store, so the draining worker sees it.
        worker.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(worker.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            // `notify_one` keeps a permit if the worker is not waiting yet.
            self.0.idle.notify_one();
        }
    }
}

/// What a worker says when it exits.
#[derive(Debug, Default)]
pub(crate) struct WorkerReport {
    /// Work still in flight when the shutdown deadline passed (dropped).
    pub(crate) cancelled: usize,
}

thread_local! {
    /// `(runtime id, worker index)` of the worker running on this thread.
    static CURRENT: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// The index of the [`crate::Runtime`] worker running the calling code, or
/// `None` off the runtime's threads.
pub fn worker_index() -> Option<usize> {
    CURRENT.with(|c| c.get()).map(|(_, i)| i)
}

/// Whether the calling thread is a worker of runtime `id`.
pub(crate) fn on_runtime(id: usize) -> bool {
    CURRENT.with(|c| c.get()).is_some_and(|(r, _)| r == id)
}

/// Starts worker `index`; returns once its tokio runtime exists.
pub(crate) fn spawn(
    runtime_id: usize,
    index: usize,
    name: String,
    state: Arc<WorkerState>,
    rx: mpsc::UnboundedReceiver<Job>,
    stop: watch::Receiver<Option<Instant>>,
) -> io::Result<JoinHandle<WorkerReport>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = thread::Builder::new().name(name).spawn(move || {
        CURRENT.with(|c| c.set(Some((runtime_id, index))));
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let _ = ready_tx.send(Ok(()));
                rt
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return WorkerReport::default();
            }
        };
        let local = LocalSet::new();
        let report = local.block_on(&rt, serve(&state, rx, stop));
        // Drop what outlived the deadline inside the runtime's context, so
        // cancelled fibers unwind with timers and I/O still reachable.
        let _enter = rt.enter();
        drop(local);
        report
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(io::Error::other(
                "worker thread exited before its runtime started",
            ))
        }
    }
}

/// The worker's loop: run jobs until shutdown, then drain until nothing is
/// in flight or the deadline passes.
async fn serve(
    state: &WorkerState,
    mut rx: mpsc::UnboundedReceiver<Job>,
    mut stop: watch::Receiver<Option<Instant>>,
) -> WorkerReport {
    let deadline = loop {
        tokio::select! {
            biased;
            d = stop.wait_for(Option::is_some) => {
                // A dropped sender means the runtime is gone: stop at once.
                break d.ok().and_then(|d| *d).unwrap_or_else(Instant::now);
            }
            job = rx.recv() => match job {
                Some(job) => start(job),
                None => break Instant::now(),
            },
        }
    };
    let deadline = tokio::time::Instant::from_std(deadline);
    loop {
        let left = state.in_flight.load(Ordering::SeqCst);
        if left == 0 {
            return WorkerReport::default();
        }
        tokio::select! {
            biased;
            // Work dispatched just before the shutdown began is still owed.
            Some(job) = rx.recv() => start(job),
            () = state.idle.notified() => {}
            () = tokio::time::sleep_until(deadline) => {
                let cancelled = state.in_flight.load(Ordering::SeqCst);
                if cancelled > 0 {
                    tracing::warn!(cancelled, "shutdown deadline passed; dropping in-flight work");
                }
                return WorkerReport { cancelled };
            }
        }
    }
}

/// Runs a job as a local task. A panic while making its future is caught
/// here so the worker keeps serving (the dispatcher's caller then sees the
/// work aborted); panics while the task runs are caught inside the task.
fn start(job: Job) {
    let Job { make, in_flight } = job;
    match panic::catch_unwind(AssertUnwindSafe(move || make(in_flight))) {
        Ok(fut) => {
            tokio::task::spawn_local(fut);
        }
        Err(p) => {
            let message = crate::panic::payload_message(&*p);
            tracing::error!(
                panic = message,
                "a job panicked before it started; the worker keeps serving"
            );
        }
    }
}
