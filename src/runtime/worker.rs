//! One worker: an OS thread with a current-thread tokio runtime and a
//! `LocalSet`. Work arrives as [`Job`]s on the worker's queue
//! ([`crate::handoff::queue`]) and runs as local tasks, so fibers (and every
//! `!Send` future) stay on this thread from start to end. The loop itself is
//! in `serve.rs`.

use std::cell::Cell;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::LocalSet;

use super::serve::WorkerLoop;
use crate::future::LocalBoxFuture;
use crate::handoff::queue::{self, QueueTx};
use crate::handoff::wait_slot::WaitSlot;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Arc;

/// What the dispatchers and the worker share about one worker.
pub(crate) struct WorkerState {
    /// Work dispatched to this worker and not finished (queued or running).
    /// Raised by the dispatcher before it enqueues (least-loaded placement
    /// reads it), lowered when the job is dropped (finished, cancelled, or
    /// never delivered).
    pub(crate) in_flight: AtomicUsize,
    /// Notified when `in_flight` drops to zero (the drain at shutdown waits
    /// on it).
    pub(crate) idle: WaitSlot,
    /// The worker's job queue. Closing it is the shutdown's cut-off: a job
    /// whose push succeeded is received by the worker's loop (the queue
    /// drains before it reports closed); a later push fails.
    pub(crate) queue: QueueTx<Job>,
}

impl WorkerState {
    /// A worker's shared state and its (not yet running) loop.
    pub(crate) fn new() -> (Arc<WorkerState>, WorkerLoop) {
        let (tx, rx) = queue::queue();
        let state = Arc::new(WorkerState {
            in_flight: AtomicUsize::new(0),
            idle: WaitSlot::new(),
            queue: tx,
        });
        (state.clone(), WorkerLoop::new(state, rx))
    }

    /// Jobs in flight (queued or running).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
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

    /// Makes the job's future (on the worker thread). A panic while making
    /// it is caught and logged (`None`): the worker keeps serving and the
    /// caller sees the work aborted (its reply end was dropped).
    pub(crate) fn start(self) -> Option<LocalBoxFuture<'static, ()>> {
        let Job { make, in_flight } = self;
        match panic::catch_unwind(AssertUnwindSafe(move || make(in_flight))) {
            Ok(fut) => Some(fut),
            Err(p) => {
                let message = crate::panic::payload_message(&*p);
                tracing::error!(
                    panic = message,
                    "a job panicked before it started; the worker keeps serving"
                );
                None
            }
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

/// One unit of `WorkerState::in_flight`, given back on drop.
pub(crate) struct InFlight(Arc<WorkerState>);

impl InFlight {
    pub(crate) fn enter(worker: &Arc<WorkerState>) -> InFlight {
        worker.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(worker.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Count first, then notify (`WaitSlot`'s protocol): a drain that
        // checks after this sees 0; one that registered before is woken.
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify();
        }
    }
}

/// What a worker says when it exits.
#[derive(Debug, Default)]
pub(crate) struct WorkerReport {
    /// Work still in flight when the shutdown deadline passed (dropped).
    pub cancelled: usize,
}

thread_local! {
    /// `(runtime id, worker index)` of the worker running on this thread.
    static CURRENT: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// The index of the [`crate::runtime::Runtime`] worker running the calling code, or
/// `None` off the runtime's threads.
pub fn worker_index() -> Option<usize> {
    CURRENT.with(|c| c.get()).map(|(_, i)| i)
}

/// Whether the calling thread is a worker of runtime `id`.
pub(crate) fn on_runtime(id: usize) -> bool {
    CURRENT.with(|c| c.get()).is_some_and(|(r, _)| r == id)
}

/// How long a stopping worker waits for its runtime's blocking threads
/// (held threads unwinding from their cancellation finish in microseconds)
/// before it leaves the rest to finish detached: a held thread inside slow
/// user code kept `Runtime::shutdown` waiting for as long as that code ran
/// (`core_failure_paths`).
const BLOCKING_LINGER: Duration = Duration::from_secs(1);

/// Starts worker `index`; returns once its tokio runtime exists.
///
/// `stop` carries the shutdown deadline, set before the queue is closed:
/// the loop reads it once its queue is closed and drained.
pub(crate) fn spawn(
    runtime_id: usize,
    index: usize,
    name: String,
    work: WorkerLoop,
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
        let grace = move || {
            // No deadline: the queue was closed without a shutdown (the
            // runtime is gone); stop at once.
            let deadline = (*stop.borrow()).unwrap_or_else(Instant::now);
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline))
        };
        let start = |job: Job| {
            if let Some(fut) = job.start() {
                tokio::task::spawn_local(fut);
            }
        };
        // Reaps cancelled requests whose `blocking` closure still borrowed
        // their fiber, without blocking this worker (`exec::orphans`).
        local.spawn_local(crate::exec::orphans::Reaper::new());
        let report = local.block_on(&rt, work.serve(start, grace));
        {
            // Drop what outlived the deadline inside the runtime's context,
            // so cancelled fibers unwind with timers and I/O still
            // reachable. The reaper's drop waits here for `blocking`
            // closures that still borrow a cancelled fiber's frames: that
            // wait is needed for soundness.
            let _enter = rt.enter();
            drop(local);
        }
        // What still runs on this runtime's blocking threads owns its
        // frames: a held thread busy in user code (Adapt, a hop), which
        // unwinds when it next reaches `get_response`, or a blocking-pool
        // drainer. Dropping the runtime would join them without bound;
        // they get `BLOCKING_LINGER` to finish, then run on detached.
        rt.shutdown_timeout(BLOCKING_LINGER);
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
