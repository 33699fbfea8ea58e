//! The runtime (`src/runtime/`): a dispatch travels to a worker's loop
//! through its queue, the job runs, the reply comes back through the
//! oneshot; shutdown closes the queues while dispatches race it.
//!
//! The worker thread is a loom thread running the real
//! `WorkerLoop::serve`. loom cannot run a tokio runtime, so the models give
//! `serve` what the real worker gives it, in loom terms: `start` either runs
//! the job's future to completion inline, or hands it to a small local
//! executor ([`serve_with_local_tasks`], a stand-in for the `LocalSet`);
//! the grace period is "never over" or "over at once".

use std::cell::RefCell;
use std::future::{pending, poll_fn, ready, Future};
use std::pin::pin;

use crate::future::LocalBoxFuture;
use crate::handoff::oneshot;
use crate::runtime::model::{begin_shutdown, unstarted, Job, WorkerLoop, WorkerReport};
use crate::runtime::DispatchError;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// Runs each job to completion as it is received.
fn run_inline(job: Job) {
    if let Some(fut) = job.start() {
        loom::future::block_on(fut);
    }
}

/// The worker thread with an endless grace period: `serve` returns only
/// once its queue is closed and nothing is in flight.
fn serve_inline(work: WorkerLoop) -> WorkerReport {
    loom::future::block_on(work.serve(run_inline, pending::<()>))
}

/// The worker thread with jobs run as local tasks beside the loop (what
/// the `LocalSet` does): the loop's drain can then wait for a job that is
/// still running. `grace_over`: the grace period ends at once (the job
/// still running is dropped, as the worker drops its `LocalSet`).
fn serve_with_local_tasks(work: WorkerLoop, grace_over: bool) -> WorkerReport {
    let tasks: RefCell<Vec<LocalBoxFuture<'static, ()>>> = RefCell::new(Vec::new());
    let grace = move || -> LocalBoxFuture<'static, ()> {
        if grace_over {
            Box::pin(ready(()))
        } else {
            Box::pin(pending())
        }
    };
    let start = |job: Job| tasks.borrow_mut().extend(job.start());
    let report = {
        let mut serve = pin!(work.serve(start, grace));
        loom::future::block_on(poll_fn(|cx| {
            // One round of the executor: the loop, then every task (a task
            // finishing wakes the loop's drain through the same waker).
            let report = serve.as_mut().poll(cx);
            tasks
                .borrow_mut()
                .retain_mut(|t| t.as_mut().poll(cx).is_pending());
            report
        }))
    };
    // What the worker does after the loop: drop the tasks left (cancel).
    tasks.borrow_mut().clear();
    report
}

/// One dispatch, one worker: the job runs exactly once, its reply arrives,
/// and the worker's in-flight count is back to 0 once the caller has the
/// answer. Then a shutdown stops the loop.
///
/// Catches: `InFlight` released after the reply is sent instead of before
/// (`drop(in_flight)` after `tx.send` in `RuntimeHandle::submit`): the
/// caller can hold its answer while the count still says 1.
#[test]
fn runtime_dispatch_and_reply() {
    loom::model(|| {
        let (handle, mut loops) = unstarted(1);
        let worker = {
            let work = loops.pop().unwrap();
            thread::spawn(move || serve_inline(work))
        };
        let runs = Arc::new(AtomicUsize::new(0));
        let job_runs = runs.clone();
        let dispatch = handle.run(move || {
            job_runs.fetch_add(1, Ordering::SeqCst);
            async { 42u32 }
        });
        assert_eq!(loom::future::block_on(dispatch), Ok(42));
        assert_eq!(
            handle.in_flight(0),
            0,
            "answered but still counted in flight"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the job must run exactly once"
        );
        begin_shutdown(&handle);
        let report = worker.join().unwrap();
        assert_eq!(report.cancelled, 0);
    });
}

/// The caller drops its dispatch future while the worker receives and runs
/// the job: nothing hangs, the job's reply end notices the caller is gone
/// or its answer is refused, and the in-flight count returns to 0.
#[test]
fn runtime_dispatch_cancelled_by_caller() {
    loom::model(|| {
        let (handle, mut loops) = unstarted(1);
        let worker = {
            let work = loops.pop().unwrap();
            thread::spawn(move || serve_inline(work))
        };
        let dispatch = handle.run(|| async { 1u8 });
        drop(dispatch);
        begin_shutdown(&handle);
        let report = worker.join().unwrap();
        assert_eq!(report.cancelled, 0);
        assert_eq!(handle.in_flight(0), 0);
    });
}

/// Shutdown races a dispatch (the caller, the shutdown and the worker on
/// three threads): the dispatch either is accepted — its job runs once and
/// its reply arrives — or gets `ShuttingDown` and its job never runs.
/// Never an accepted job silently lost (that would be `Aborted` here: the
/// grace period never ends), never a hang (the worker's loop returns, the
/// caller's `block_on` returns), and nothing is left in flight.
///
/// Catches (each applied, seen failing, restored):
/// * `QueueTx::push` not checking `closed`: a job accepted after the loop
///   saw the queue closed is never run -> the caller waits forever (loom:
///   deadlock);
/// * `QueueRx::poll_recv` reporting `None` before the queue is drained:
///   the accepted job is never started -> the caller waits forever
///   (deadlock);
/// * `Shared::begin_shutdown` closing the queues before it stops
///   accepting: a refused dispatch is reported `Aborted`, not
///   `ShuttingDown` -> assertion;
/// * `WaitSlot::poll_until` checking the condition outside its lock: the
///   drain checks `in_flight` == 1 (a dispatcher between `InFlight::enter`
///   and its refused push), the dispatcher drops its mark and notifies
///   nobody, the drain registers and sleeps forever (loom: deadlock).
#[test]
fn runtime_shutdown_vs_dispatch() {
    loom::model(|| {
        let (handle, mut loops) = unstarted(1);
        let worker = {
            let work = loops.pop().unwrap();
            thread::spawn(move || serve_inline(work))
        };
        let stopper = {
            let handle = handle.clone();
            thread::spawn(move || begin_shutdown(&handle))
        };
        let runs = Arc::new(AtomicUsize::new(0));
        let job_runs = runs.clone();
        let dispatch = handle.run(move || {
            job_runs.fetch_add(1, Ordering::SeqCst);
            async { 5u32 }
        });
        let outcome = loom::future::block_on(dispatch);
        stopper.join().unwrap();
        let report = worker.join().unwrap();
        match outcome {
            Ok(v) => {
                assert_eq!(v, 5);
                assert_eq!(runs.load(Ordering::SeqCst), 1);
            }
            Err(DispatchError::ShuttingDown) => {
                assert_eq!(runs.load(Ordering::SeqCst), 0, "a refused job ran");
            }
            Err(e) => panic!("an accepted dispatch was lost: {e:?}"),
        }
        assert_eq!(report.cancelled, 0);
        assert_eq!(handle.in_flight(0), 0, "in-flight count leaked");
    });
}

/// A job is still running when shutdown begins (it waits for a value from
/// another thread, as a `blocking()` call would): with an endless grace
/// period the loop's drain waits for it, the reply arrives, and the loop
/// returns with nothing cancelled.
///
/// Catches: the drain not waiting for `in_flight` to reach 0 (the job is
/// dropped with the loop -> `Aborted` -> assertion).
#[test]
fn runtime_drain_waits_for_running_job() {
    loom::model(|| {
        let (handle, mut loops) = unstarted(1);
        let (done_tx, done_rx) = oneshot::<u32>();
        let dispatch = handle.run(move || async move { done_rx.await.unwrap() + 1 });
        let worker = {
            let work = loops.pop().unwrap();
            thread::spawn(move || serve_with_local_tasks(work, false))
        };
        let finisher = thread::spawn(move || done_tx.send(9).is_ok());
        begin_shutdown(&handle);
        assert_eq!(loom::future::block_on(dispatch), Ok(10));
        assert!(finisher.join().unwrap());
        assert_eq!(worker.join().unwrap().cancelled, 0);
        assert_eq!(handle.in_flight(0), 0);
    });
}

/// The grace period is over at once while a job still waits: the loop
/// reports it cancelled, the job is dropped, and its caller gets
/// `Aborted` (not a hang); its value, if sent, is dropped.
#[test]
fn runtime_deadline_cancels_running_job() {
    loom::model(|| {
        let (handle, mut loops) = unstarted(1);
        let (done_tx, done_rx) = oneshot::<u32>();
        let dispatch = handle.run(move || async move { done_rx.await.unwrap_or(0) });
        let worker = {
            let work = loops.pop().unwrap();
            thread::spawn(move || serve_with_local_tasks(work, true))
        };
        begin_shutdown(&handle);
        let outcome = loom::future::block_on(dispatch);
        let report = worker.join().unwrap();
        match outcome {
            // The drain got there after the job finished: impossible here,
            // nobody sends before the job is dropped.
            Ok(v) => panic!("the job cannot finish without its value, got {v}"),
            Err(e) => assert_eq!(e, DispatchError::Aborted),
        }
        assert_eq!(report.cancelled, 1);
        assert_eq!(handle.in_flight(0), 0);
        assert!(done_tx.send(1).is_err(), "the job's receiver was dropped");
    });
}
