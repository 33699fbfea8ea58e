//! Closed-loop clients beyond a pool's stack cap: every client is served
//! about as often as the others; none waits while others are served again
//! and again.
//!
//! Before the pool's hand-off queue, a client whose request ended started
//! its next one in the same poll and took the stack it had just released,
//! so the clients that had to wait never got one until their deadline (a
//! 503). Its own binary: the pools are small, but the test's clients keep
//! a runtime busy.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use http::StatusCode;
use suspendware::stack::StackPool;
use suspendware::{Next, Pipeline, Request, Response};

const STACKS: usize = 8;
const CLIENTS: usize = 3 * STACKS;
/// Responses a run collects before its clients stop.
const TOTAL: usize = 3_000;

fn pipeline(pool: &StackPool) -> Pipeline {
    Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Response::new("ok".into())
        })
        .stack_pool(pool.clone())
        .build()
        .unwrap()
}

/// Runs `CLIENTS` closed-loop clients on this thread until `TOTAL`
/// responses (over all clients of all threads sharing `done`) are in;
/// returns how many responses each client got, and the non-200 count.
fn clients(
    p: Pipeline,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> (Vec<usize>, usize) {
    use std::sync::atomic::Ordering;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let errors = Rc::new(Cell::new(0));
    let counts: Vec<Rc<Cell<usize>>> = (0..CLIENTS).map(|_| Rc::new(Cell::new(0))).collect();
    local.block_on(&rt, async {
        let tasks: Vec<_> = counts
            .iter()
            .map(|count| {
                let (p, done, count, errors) =
                    (p.clone(), done.clone(), count.clone(), errors.clone());
                tokio::task::spawn_local(async move {
                    while done.load(Ordering::SeqCst) < TOTAL {
                        let resp = p.handle(Request::new(Default::default())).await;
                        if resp.status() != StatusCode::OK {
                            errors.set(errors.get() + 1);
                        }
                        count.set(count.get() + 1);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    (counts.iter().map(|c| c.get()).collect(), errors.get())
}

/// Every client got at least a fifth of the mean number of responses.
/// (Measured: the fewest is 0.6–0.95 of the mean with the hand-off queue;
/// with the old pool, the clients that once had to wait got exactly one
/// response, after the others had stopped, against a mean of 125.)
fn assert_everyone_served(counts: &[usize], errors: usize, pool: &StackPool) {
    assert_eq!(errors, 0, "no request may wait out stack_wait");
    let mean = counts.iter().sum::<usize>() / counts.len();
    let starved = counts.iter().filter(|&&c| c * 5 < mean).count();
    assert_eq!(
        starved,
        0,
        "{starved} of {} clients got under a fifth of the mean {mean} (responses per client: \
         {counts:?})",
        counts.len()
    );
    let s = pool.stats();
    assert!(s.is_whole() && s.waiting == 0, "{s:?}");
}

#[test]
fn closed_loop_clients_beyond_the_cap_are_all_served() {
    let pool = StackPool::new(64 * 1024, STACKS, Duration::from_secs(30));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counts, errors) = clients(pipeline(&pool), done);
    assert_everyone_served(&counts, errors, &pool);
}

/// The same with one pool shared by two threads' pipelines: grants cross
/// threads (a stack released on one thread goes to a request queued on the
/// other).
#[test]
fn a_pool_shared_by_two_threads_serves_both_threads_clients() {
    let pool = StackPool::new(64 * 1024, STACKS, Duration::from_secs(30));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (pool, done) = (pool.clone(), done.clone());
            std::thread::spawn(move || clients(pipeline(&pool), done))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        let (counts, e) = t.join().unwrap();
        all.extend(counts);
        errors += e;
    }
    assert_everyone_served(&all, errors, &pool);
}
