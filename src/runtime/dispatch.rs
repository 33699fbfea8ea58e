//! `RuntimeHandle`: sending work to a worker and getting a `Send` future of
//! its result.
//!
//! ## Choosing a worker
//!
//! Least-loaded: the worker with the fewest jobs in flight (queued or
//! running) wins; the scan starts at a round-robin cursor, so ties (an idle
//! runtime, equal loads) rotate through the workers. With a handful of
//! workers the scan is a few relaxed loads.
//!
//! ## Racing a shutdown
//!
//! A dispatch is accepted iff its push onto the worker's queue succeeds;
//! shutdown closes the queues (after it stopped accepting and published the
//! deadline). So a dispatch either is accepted — the worker's loop receives
//! it before it sees the queue closed, starts it, and waits for it up to the
//! deadline — or gets [`DispatchError::ShuttingDown`]. The `accepting` flag
//! only refuses early, without building the job.

use std::fmt;
use std::future::{poll_fn, Future};
use std::panic::{self, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::watch;

use super::error::DispatchError;
use super::reply::{self, ReplyRx};
use super::worker::{InFlight, Job, WorkerState};
use crate::body::{Request, Response};
use crate::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::loom::sync::Arc;
use crate::pipeline::Pipeline;

/// State shared by the runtime and every handle.
pub(crate) struct Shared {
    pub(crate) id: usize,
    pub(crate) workers: Vec<Arc<WorkerState>>,
    /// False once shutdown has begun.
    pub(crate) accepting: AtomicBool,
    cursor: AtomicUsize,
    /// `Some(deadline)` once shutdown has begun.
    pub(crate) stop: watch::Sender<Option<Instant>>,
}

impl Shared {
    pub(crate) fn new(
        id: usize,
        workers: Vec<Arc<WorkerState>>,
        stop: watch::Sender<Option<Instant>>,
    ) -> Self {
        Shared {
            id,
            workers,
            accepting: AtomicBool::new(true),
            cursor: AtomicUsize::new(0),
            stop,
        }
    }

    /// Begins a shutdown: refuses new work, publishes `deadline` (the
    /// workers' grace ends there), then closes every worker's queue — the
    /// cut-off between accepted and refused dispatches (module docs).
    pub(crate) fn begin_shutdown(&self, deadline: Instant) {
        self.accepting.store(false, Ordering::SeqCst);
        self.stop.send_replace(Some(deadline));
        for worker in &self.workers {
            worker.queue.close();
        }
    }
}

/// A cheap, `Send + Sync + Clone` handle that sends work to a
/// [`crate::runtime::Runtime`]'s workers from any thread or runtime.
#[derive(Clone)]
pub struct RuntimeHandle {
    pub(crate) shared: Arc<Shared>,
}

impl RuntimeHandle {
    /// Runs `pipeline` on `req` on the least-loaded worker.
    ///
    /// The returned future is `Send`, so it can be awaited on a
    /// multi-thread runtime (axum, a plain `tokio::spawn`); the pipeline's
    /// fibers stay on the worker. Dropping the future cancels the request on
    /// the worker (its suspended middleware unwinds).
    pub fn dispatch(&self, pipeline: &Pipeline, req: Request) -> Dispatch<Response> {
        let pipeline = pipeline.clone();
        self.run(move || pipeline.handle(req))
    }

    /// Runs `make()` and then its future on the least-loaded worker.
    ///
    /// `make` crosses threads (`Send`); the future it returns does not (it
    /// may hold `Rc`s, fibers, `!Send` pipeline futures). A panic in either
    /// is reported as [`DispatchError::Panicked`] and the worker keeps
    /// serving.
    pub fn run<F, Fut, T>(&self, make: F) -> Dispatch<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let worker = self.pick();
        self.submit(worker, make)
    }

    /// Like [`RuntimeHandle::run`] on worker `index` (for per-worker work
    /// such as one accept loop per worker).
    pub fn run_on<F, Fut, T>(&self, index: usize, make: F) -> Dispatch<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let workers = self.shared.workers.len();
        if index >= workers {
            return Dispatch::failed(DispatchError::NoSuchWorker { index, workers });
        }
        self.submit(index, make)
    }

    /// How many workers the runtime has.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Jobs in flight (queued or running) on worker `index`; `0` for an
    /// index out of range.
    pub fn in_flight(&self, index: usize) -> usize {
        self.shared.workers.get(index).map_or(0, |w| w.in_flight())
    }

    /// Whether shutdown has begun (new work is refused).
    pub fn is_stopping(&self) -> bool {
        !self.shared.accepting.load(Ordering::SeqCst)
    }

    /// Completes when shutdown begins. Long-running work (an accept loop)
    /// awaits it to stop taking new requests and finish the ones it has.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.stop.subscribe();
        async move {
            // An error means the runtime is gone, which is a stop too.
            let _ = rx.wait_for(Option::is_some).await;
        }
    }

    fn pick(&self) -> usize {
        let workers = &self.shared.workers;
        let n = workers.len();
        if n == 1 {
            return 0;
        }
        let start = self.shared.cursor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut best_load = usize::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            let load = workers[i].in_flight.load(Ordering::Relaxed);
            if load < best_load {
                best = i;
                best_load = load;
                if load == 0 {
                    break;
                }
            }
        }
        best
    }

    fn submit<F, Fut, T>(&self, index: usize, make: F) -> Dispatch<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let worker = &self.shared.workers[index];
        let in_flight = InFlight::enter(worker);
        // Early refusal only; the cut-off is the push below (module docs).
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return Dispatch::failed(DispatchError::ShuttingDown);
        }
        let (mut tx, rx) = reply::channel();
        let job = Job::new(in_flight, move |in_flight| {
            Box::pin(async move {
                let outcome = tokio::select! {
                    biased;
                    // The caller dropped its future: drop the work (this
                    // cancels a pipeline request and unwinds its fibers).
                    // Looked at first, so a job whose caller left while it
                    // was queued is dropped unrun: polled second, `make()`
                    // ran first and a request that never suspends (or an
                    // inner tower service) ran to its end for nobody
                    // (`runtime_tower_paths`).
                    () = tx.closed() => return,
                    r = catch_unwind(async move { make().await }) => r,
                };
                drop(in_flight);
                let _ = tx.send(outcome);
            })
        });
        match worker.queue.push(job) {
            Ok(()) => Dispatch {
                state: State::Waiting(rx),
            },
            Err(job) => {
                // Never queued: its in-flight mark and reply end go now.
                drop(job);
                // Closed by a shutdown (which stopped accepting before it
                // closed the queue, so this load sees it), or because the
                // worker's loop is gone (its thread died).
                Dispatch::failed(if self.shared.accepting.load(Ordering::SeqCst) {
                    DispatchError::Aborted
                } else {
                    DispatchError::ShuttingDown
                })
            }
        }
    }
}

impl fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loads: Vec<usize> = (0..self.workers()).map(|i| self.in_flight(i)).collect();
        f.debug_struct("RuntimeHandle")
            .field("in_flight", &loads)
            .field("stopping", &self.is_stopping())
            .finish()
    }
}

/// Polls `fut`, turning a panic into [`DispatchError::Panicked`].
async fn catch_unwind<T>(fut: impl Future<Output = T>) -> Result<T, DispatchError> {
    let mut fut = pin!(fut);
    poll_fn(|cx| match panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(p) => {
            let message = crate::panic::payload_message(&*p).to_owned();
            tracing::error!(panic = %message, "dispatched work panicked; the worker keeps serving");
            Poll::Ready(Err(DispatchError::Panicked { message }))
        }
    })
    .await
}

/// The `Send` future of work sent to a worker
/// ([`RuntimeHandle::run`], [`RuntimeHandle::dispatch`]).
///
/// Dropping it cancels the work on the worker.
#[must_use = "the work is cancelled when this future is dropped"]
pub struct Dispatch<T> {
    state: State<T>,
}

enum State<T> {
    Waiting(ReplyRx<Result<T, DispatchError>>),
    Failed(Option<DispatchError>),
}

impl<T> Dispatch<T> {
    fn failed(e: DispatchError) -> Self {
        Dispatch {
            state: State::Failed(Some(e)),
        }
    }
}

impl<T> Future for Dispatch<T> {
    type Output = Result<T, DispatchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(DispatchError::Aborted))),
            State::Failed(e) => {
                Poll::Ready(Err(e.take().expect("Dispatch polled after completion")))
            }
        }
    }
}

impl<T> fmt::Debug for Dispatch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting(_) => "waiting",
            State::Failed(_) => "failed",
        };
        f.debug_struct("Dispatch").field("state", &state).finish()
    }
}
