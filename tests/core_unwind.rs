//! What suspension means while a fiber unwinds, and whose panic state other
//! requests see.
//!
//! A fiber never suspends while its thread unwinds: `blocking(f)` runs `f`
//! inline and `wait(fut)` blocks the thread until `fut` is ready. So cleanup
//! that goes through `blocking`/`wait` in a destructor works on a cancelled
//! or panicking request, and no other request on the thread ever observes
//! `std::thread::panicking()` because of it.
//!
//! The cancellation scenario used to abort the process ("panic in a
//! destructor during cleanup"), so it runs in a child process: the parent
//! reports the child's exit instead of dying with it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{ok, poll_once, req, rt, run_child, text, Events};
use suspendware::{blocking, wait, Next, Pipeline, Request, Response};

/// A value delivered by another thread after `ms` milliseconds: a future
/// that is pending for a while and is not driven by this thread's reactor.
fn from_other_thread(ms: u64, v: u32) -> tokio::sync::oneshot::Receiver<u32> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        let _ = tx.send(v);
    });
    rx
}

/// A "transaction" rolled back in its destructor through `blocking` and
/// `wait`, as a database-backed guard would.
struct Transaction(Events);

impl Drop for Transaction {
    fn drop(&mut self) {
        let a = blocking(|| 1);
        let b = wait(from_other_thread(20, 2)).expect("sender kept");
        self.0.push(format!(
            "rolled back {} panicking={}",
            a + b,
            std::thread::panicking()
        ));
    }
}

#[test]
fn cleanup_through_blocking_and_wait_on_a_cancelled_request() {
    let out = run_child("child_cancelled_request_cleans_up_through_blocking_and_wait");
    assert!(out.contains("CHILD-OK"), "{out}");
}

#[test]
#[ignore = "run by cleanup_through_blocking_and_wait_on_a_cancelled_request in a child process"]
fn child_cancelled_request_cleans_up_through_blocking_and_wait() {
    let log = Events::new();
    let l2 = log.clone();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let _tx = Transaction(l2.clone());
            next.get_response(req)
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut fut = Box::pin(p.handle(req("/")));
        assert!(poll_once(fut.as_mut()).is_pending());
        drop(fut); // the client went away: the fiber unwinds
    });
    assert_eq!(log.take(), vec!["rolled back 3 panicking=true"]);
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
    // The process and the thread keep serving.
    let p2 = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async { ok("still serving") })
        .build()
        .unwrap();
    let resp = rt.block_on(p2.handle(req("/")));
    assert_eq!(text(&resp), "still serving");
    println!("CHILD-OK");
}

#[test]
fn a_panicking_request_does_not_leak_its_panic_state_to_others() {
    common::with_deadline(Duration::from_secs(30), || {
        let log = Events::new();
        let l2 = log.clone();
        let panicker = Pipeline::builder()
            .sync(move |_req: Request, _next: &mut Next| -> Response {
                let _tx = Transaction(l2.clone());
                panic!("boom while holding a transaction");
            })
            .view(|_req: Request| async { ok("unreached") })
            .build()
            .unwrap();
        // A bystander on the same thread, holding a std mutex across
        // `get_response`: it would be poisoned if this request's code ran
        // while the thread counted another request's panic.
        let seen_panicking = Arc::new(AtomicBool::new(false));
        let seen = seen_panicking.clone();
        let lock = Arc::new(Mutex::new(0u32));
        let lock2 = lock.clone();
        let bystander = Pipeline::builder()
            .sync(move |req: Request, next: &mut Next| {
                seen.fetch_or(std::thread::panicking(), Ordering::SeqCst);
                let mut g = lock2.lock().unwrap();
                *g += 1;
                let resp = next.get_response(req);
                seen.fetch_or(std::thread::panicking(), Ordering::SeqCst);
                drop(g);
                resp
            })
            .view(|_req: Request| async {
                for _ in 0..5 {
                    tokio::task::yield_now().await;
                }
                ok("bystander")
            })
            .build()
            .unwrap();
        let (a, b) = rt().block_on(async {
            tokio::join!(panicker.handle(req("/a")), bystander.handle(req("/b")))
        });
        assert_eq!(a.status(), 500);
        assert_eq!(text(&b), "bystander");
        assert!(
            !seen_panicking.load(Ordering::SeqCst),
            "a request that never panicked saw std::thread::panicking()"
        );
        assert!(!lock.is_poisoned(), "the bystander's mutex was poisoned");
        assert_eq!(log.take(), vec!["rolled back 3 panicking=true"]);
        assert!(panicker.stack_stats().is_whole());
        assert!(bystander.stack_stats().is_whole());
    });
}

static WHOSE: suspendware::RequestLocal<&'static str> = suspendware::RequestLocal::new(|| "unset");

/// Records, when dropped, whose request-local its destructor can see.
struct Recorder(Events);

impl Drop for Recorder {
    fn drop(&mut self) {
        let whose = WHOSE.try_with(|w| *w).unwrap_or("no request");
        self.0.push(format!("destructor saw {whose}"));
    }
}

#[test]
fn a_forced_unwind_runs_under_its_own_fiber_and_is_not_caught() {
    let log = Events::new();
    let (l1, l2) = (log.clone(), log.clone());
    // The inner pipeline's L2 keeps swallowing its cancellation, so after
    // the bounded retries the fiber is force-unwound.
    let inner = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let resp = next.get_response(req);
            l1.push("L1 continued after get_response");
            resp
        })
        .sync(move |req: Request, next: &mut Next| {
            let _r = Recorder(l2.clone());
            WHOSE.set("inner");
            let mut req = Some(req);
            loop {
                let r = req.take().unwrap_or_else(|| common::req("/again"));
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    next.get_response(r)
                })) {
                    Ok(resp) => return resp,
                    Err(p) if p.is::<suspendware::panic::Cancelled>() => continue,
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let inner = Arc::new(inner);
    let inner2 = inner.clone();
    let outer = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            WHOSE.set("outer");
            // Abandon the inner request from code on the outer fiber.
            let mut f = Box::pin(inner2.handle(common::req("/inner")));
            assert!(poll_once(f.as_mut()).is_pending());
            drop(f);
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("outer done") })
        .build()
        .unwrap();
    let resp = rt().block_on(outer.handle(req("/")));
    assert_eq!(text(&resp), "outer done");
    assert_eq!(log.take(), vec!["destructor saw inner"]);
    assert!(inner.stack_stats().is_whole(), "{:?}", inner.stack_stats());
    assert!(outer.stack_stats().is_whole());
}
