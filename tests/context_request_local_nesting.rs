//! `RequestLocal` holds no lock while user code runs: nested access to
//! different locals works; re-entrant access to the same local fails loudly
//! (a panic naming it, like `RefCell`), never hangs the thread.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ok, panic_message, req, rt, text, with_deadline};
use suspendware::{Next, Pipeline, Request, RequestLocal, Response};

static USER: RequestLocal<String> = RequestLocal::new(|| "alice".to_owned());
static SESSION: RequestLocal<Vec<String>> = RequestLocal::new(Vec::new);

const LIMIT: Duration = Duration::from_secs(20);

fn run(p: Pipeline) -> Response {
    with_deadline(LIMIT, move || rt().block_on(p.handle(req("/"))))
}

#[test]
fn a_local_used_inside_another_locals_closure() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            SESSION.with(|s| s.push(USER.get()));
            USER.with(|u| SESSION.with(|s| s.push(format!("{u}!"))));
            let resp = next.get_response(req);
            assert_eq!(SESSION.get(), vec!["alice", "alice!"]);
            resp
        })
        .view(|_req: Request| async { ok("done") })
        .build()
        .unwrap();
    assert_eq!(text(&run(p)), "done");
}

#[test]
fn reentrant_use_of_one_local_panics_naming_it() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let err = catch_unwind(AssertUnwindSafe(|| USER.with(|_| USER.get())))
                .expect_err("re-entrant use must panic");
            let msg = panic_message(&*err);
            assert!(msg.contains("RequestLocal<alloc::string::String>"), "{msg}");
            assert!(msg.contains("already in use"), "{msg}");
            // The value was put back when the closure unwound.
            assert_eq!(USER.get(), "alice");
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("done") })
        .build()
        .unwrap();
    assert_eq!(text(&run(p)), "done");
}

#[test]
fn an_inner_layer_reading_a_local_lent_across_get_response_gets_a_500_not_a_hang() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| USER.with(|_| next.get_response(req)))
        .sync(|req: Request, next: &mut Next| {
            let _ = USER.get(); // lent out by the outer layer: panics
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("unreached") })
        .build()
        .unwrap();
    assert_eq!(run(p).status(), 500);
}

#[test]
fn a_panicking_initialiser_leaves_no_placeholder() {
    static FIRST: AtomicBool = AtomicBool::new(true);
    static FLAKY: RequestLocal<u32> = RequestLocal::new(|| {
        if FIRST.swap(false, Ordering::SeqCst) {
            panic!("first init fails");
        }
        7
    });
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            assert!(catch_unwind(|| FLAKY.get()).is_err());
            assert_eq!(FLAKY.get(), 7, "a second access initialises again");
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("done") })
        .build()
        .unwrap();
    assert_eq!(text(&run(p)), "done");
}
