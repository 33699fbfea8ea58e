//! loom models of a scoped job's completion against the fiber's driver:
//! the slot the job writes (on the fiber's stack) is read or freed only
//! after the completion says the job is done, and a waiting driver is
//! always woken.

use std::task::Context;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::scoped::{Completion, Job};
use crate::loom_support::counting_waker;

/// The job's slot, standing in for the fiber frame it borrows.
struct Cell(UnsafeCell<Option<u32>>);

// SAFETY: every access goes through loom's `UnsafeCell`, which reports any
// access that is not ordered with another (the very property modelled).
unsafe impl Sync for Cell {}

type Slot = Arc<Cell>;

fn slot() -> Slot {
    Arc::new(Cell(UnsafeCell::new(None)))
}

fn job(completion: &Arc<Completion>, slot: &Slot) -> Job {
    let slot = slot.clone();
    Job::for_model(
        Box::new(move || {
            // SAFETY: loom checks this access against the driver's below.
            slot.0.with_mut(|p| unsafe { *p = Some(7) });
        }),
        completion.clone(),
    )
}

/// Cancellation path: the driver blocks until done, then frees the slot.
#[test]
fn scoped_job_vs_cancellation_frees_the_slot_only_after_the_job() {
    loom::model(|| {
        let completion = Arc::new(Completion::new());
        let slot = slot();
        let j = job(&completion, &slot);
        let t = thread::spawn(move || j.run());
        completion.wait();
        // SAFETY: loom reports a race if the job could still write.
        slot.0.with_mut(|p| unsafe {
            assert_eq!(*p, Some(7));
            *p = None;
        });
        t.join().unwrap();
    });
}

/// Normal path: the driver polls; a `Pending` poll is woken, and a `Ready`
/// poll may read the slot.
#[test]
fn scoped_job_poll_vs_complete_no_lost_wakeup() {
    loom::model(|| {
        let completion = Arc::new(Completion::new());
        let slot = slot();
        let j = job(&completion, &slot);
        let t = thread::spawn(move || j.run());
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        if completion.poll_done(&mut cx).is_pending() {
            t.join().unwrap();
            assert!(
                count.0.load(std::sync::atomic::Ordering::SeqCst) > 0,
                "lost wake-up"
            );
            assert!(completion.poll_done(&mut cx).is_ready());
        } else {
            t.join().unwrap();
        }
        // SAFETY: the job is done (ready, or joined above).
        slot.0.with(|p| unsafe { assert_eq!(*p, Some(7)) });
    });
}

/// A job dropped unrun (its runtime shutting down) still completes.
#[test]
fn scoped_job_dropped_unrun_completes() {
    loom::model(|| {
        let completion = Arc::new(Completion::new());
        let slot = slot();
        let j = job(&completion, &slot);
        let t = thread::spawn(move || drop(j));
        completion.wait();
        // SAFETY: the job is gone; nothing else touches the slot.
        slot.0.with(|p| unsafe { assert_eq!(*p, None) });
        t.join().unwrap();
    });
}
