//! A pipeline's bounded blocking pool: what [`crate::blocking`] runs its
//! closures on when called from a fiber.
//!
//! ## Design
//!
//! * **Admission** is a per-pipeline `tokio::sync::Semaphore` with `limit`
//!   permits (tokio's semaphore is fair: waiters are served in FIFO order).
//!   A fiber takes a permit with `wait(..)`, so a caller over the limit
//!   waits *suspended*, holding no thread; a cancelled caller leaves the
//!   queue without running its closure.
//! * **Threads**: at most `limit` dedicated `suspendware-blocking` std
//!   threads, spawned lazily (one more only when no spawned thread is idle),
//!   so the process never holds more than `limit` threads for `blocking`
//!   (tokio's `spawn_blocking` would allow 512). They live as long as the
//!   pipeline (the job queue's sender closes when the pool drops) and are
//!   shared by every runtime that runs the pipeline.
//! * **Job queue**: a `crossbeam-channel` MPMC queue (fibers of any worker
//!   thread send, pool threads receive). Chosen over the crate's `handoff`
//!   queue because that one is single-consumer (a runtime worker's job
//!   queue) and nothing here needs a loom model of its own: the only
//!   hand-off that races a cancellation (the result going back to a fiber
//!   that may have been dropped) is the crate's loom-checked `oneshot`.
//! * The permit is released when the closure returns (or panics), on the
//!   pool thread, so "closures running at once ≤ limit" holds even for
//!   closures whose request was cancelled meanwhile.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::handoff::{self, Closed};

/// A unit of work for a pool thread.
type Job = Box<dyn FnOnce() + Send>;

/// Thread accounting shared with the pool threads.
#[derive(Default)]
struct Workers {
    /// Threads spawned so far (never above the limit).
    spawned: usize,
    /// Threads that finished a job and were not yet handed another. May
    /// over-count once every thread is spawned (harmless: it only decides
    /// whether to spawn).
    idle: usize,
}

/// One pipeline's bounded blocking pool (see the module docs).
pub(crate) struct BlockingPool {
    limit: usize,
    permits: Arc<Semaphore>,
    jobs: Sender<Job>,
    /// Cloned into each new pool thread.
    rx: Receiver<Job>,
    workers: Arc<Mutex<Workers>>,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.workers.lock();
        f.debug_struct("BlockingPool")
            .field("limit", &self.limit)
            .field("spawned", &w.spawned)
            .finish()
    }
}

impl BlockingPool {
    /// A pool running at most `limit` (≥ 1) closures at once.
    pub(crate) fn new(limit: usize) -> BlockingPool {
        let limit = limit.max(1);
        let (jobs, rx) = crossbeam_channel::unbounded();
        BlockingPool {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            jobs,
            rx,
            workers: Arc::default(),
        }
    }

    /// Runs `f` on a pool thread while the calling fiber is suspended
    /// (first waiting, suspended, for one of the `limit` slots in FIFO
    /// order). Only for code on a fiber that may suspend.
    pub(crate) fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let permit = super::wait(self.permits.clone().acquire_owned())
            .expect("suspendware: the blocking pool's semaphore is never closed");
        let (tx, rx) = handoff::oneshot::<std::thread::Result<R>>();
        self.dispatch(Box::new(move || {
            let out = panic::catch_unwind(AssertUnwindSafe(f));
            drop(permit);
            // Err: the request was cancelled and its fiber dropped the
            // receiver; the result (or panic payload) is dropped here.
            drop(tx.send(out));
        }));
        match super::wait(rx) {
            Ok(Ok(v)) => v,
            Ok(Err(payload)) => panic::resume_unwind(payload),
            Err(Closed) => {
                panic!("suspendware::blocking(): the pool thread was lost while the closure ran")
            }
        }
    }

    /// Hands `job` to an idle pool thread, or to a new one while fewer than
    /// `limit` exist.
    fn dispatch(&self, job: Job) {
        let spawn = {
            let mut w = self.workers.lock();
            if w.idle > 0 {
                w.idle -= 1;
                false
            } else if w.spawned < self.limit {
                w.spawned += 1;
                true
            } else {
                false
            }
        };
        if spawn {
            let (rx, workers) = (self.rx.clone(), self.workers.clone());
            let started = std::thread::Builder::new()
                .name("suspendware-blocking".into())
                .spawn(move || work(rx, workers));
            if let Err(e) = started {
                self.workers.lock().spawned -= 1;
                tracing::error!(
                    error = %e,
                    "suspendware: could not start a blocking-pool thread; running the closure \
                     on tokio's blocking pool instead (raise the process's thread limit)"
                );
                drop(tokio::task::spawn_blocking(job));
                return;
            }
        }
        // The pool holds a receiver itself, so the channel is never closed here.
        drop(self.jobs.send(job));
    }
}

/// A pool thread's loop: ends when the pool (the last sender) is dropped.
fn work(rx: Receiver<Job>, workers: Arc<Mutex<Workers>>) {
    while let Ok(job) = rx.recv() {
        job();
        workers.lock().idle += 1;
    }
}
