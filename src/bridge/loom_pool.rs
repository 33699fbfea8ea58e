//! loom model of the blocking pool's drainer count (`pool.rs`): with the
//! cap reached, a job queued while the only drainer finds the queue empty
//! and stops is never left without a drainer.

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread::{self, JoinHandle};

use super::{drain, BlockingPool};

#[test]
fn pool_two_submitters_one_slot_no_lost_job() {
    loom::model(|| {
        let pool = Arc::new(BlockingPool::new(1));
        let ran = Arc::new(AtomicUsize::new(0));
        let drainers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let submit = |pool: Arc<BlockingPool>| {
            let (ran, drainers) = (ran.clone(), drainers.clone());
            thread::spawn(move || {
                let job = {
                    let ran = ran.clone();
                    Box::new(move || {
                        ran.fetch_add(1, Ordering::SeqCst);
                    })
                };
                pool.submit_with(job, |slot| {
                    let t = thread::spawn(move || drain(slot));
                    drainers.lock().unwrap().push(t);
                });
            })
        };
        let a = submit(pool.clone());
        let b = submit(pool.clone());
        a.join().unwrap();
        b.join().unwrap();
        loop {
            let next = drainers.lock().unwrap().pop();
            match next {
                Some(t) => t.join().unwrap(),
                None => break,
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 2, "a queued job was lost");
        assert!(pool.shared.queue.is_empty());
        assert_eq!(*crate::loom::lock(&pool.shared.active), 0);
    });
}

/// One submitter's drainer is refused (its runtime is shutting down: tokio
/// drops the task unrun, which drops the `Slot` on the submitting thread)
/// while another submitter, whose drainer starts, races it. Every job still
/// runs, and the count ends at 0: the refused slot's `Drop` drains what no
/// other drainer would see.
#[test]
fn pool_refused_drainer_leaves_no_job_behind() {
    loom::model(|| {
        let pool = Arc::new(BlockingPool::new(1));
        let ran = Arc::new(AtomicUsize::new(0));
        let drainers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let job = |ran: &Arc<AtomicUsize>| {
            let ran = ran.clone();
            Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            })
        };
        let refused = {
            let (pool, job) = (pool.clone(), job(&ran));
            thread::spawn(move || pool.submit_with(job, drop))
        };
        let started = {
            let (pool, job, drainers) = (pool.clone(), job(&ran), drainers.clone());
            thread::spawn(move || {
                pool.submit_with(job, |slot| {
                    let t = thread::spawn(move || drain(slot));
                    drainers.lock().unwrap().push(t);
                })
            })
        };
        refused.join().unwrap();
        started.join().unwrap();
        loop {
            let next = drainers.lock().unwrap().pop();
            match next {
                Some(t) => t.join().unwrap(),
                None => break,
            }
        }
        assert_eq!(ran.load(Ordering::SeqCst), 2, "a queued job was stranded");
        assert!(pool.shared.queue.is_empty());
        assert_eq!(*crate::loom::lock(&pool.shared.active), 0);
    });
}
