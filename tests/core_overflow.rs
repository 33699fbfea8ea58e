//! Stack overflow on a fiber hits the guard page and aborts with a message
//! naming the fiber's stack size and how to raise it — not a bare SIGSEGV.
//!
//! The overflow kills the process, so it runs in a child: the parent test
//! re-executes this test binary, selecting one test with `--exact`, with
//! `CHILD_ENV` set to say which scenario to run.

mod common;

use std::process::{Command, Output};

use common::{ok, req, rt};
use suspendware::{Next, Pipeline, Request, Response};

const CHILD_ENV: &str = "SUSPENDWARE_OVERFLOW_CHILD";

/// Recurses until the stack runs out; `black_box` keeps the frames real
/// (and the exit condition opaque, so the recursion can't be folded).
fn recurse(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let buf = std::hint::black_box([depth; 64]);
    std::hint::black_box(recurse(depth + 1)) + buf[7]
}

fn run_child(test: &str, scenario: &str) -> Output {
    let exe = std::env::current_exe().expect("test binary path");
    Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .output()
        .expect("spawn child test process")
}

fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Child side. Without `CHILD_ENV` (a normal test run) it does nothing.
#[test]
fn child_process() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    let p = Pipeline::builder()
        .stack_size(64 * 1024)
        .sync(|req: Request, next: &mut Next| -> Response {
            if req.uri().path() == "/deep" {
                let n = recurse(0);
                return ok(&n.to_string());
            }
            next.get_response(req)
        })
        .view(|_req: Request| async move { ok("fine") })
        .build()
        .unwrap();
    let rt = rt();
    // A normal request first: installs the fault handler, uses a fiber.
    let resp = rt.block_on(p.handle(req("/")));
    assert_eq!(resp.status(), 200);
    match scenario.as_str() {
        "fiber" => {
            eprintln!("child: recursing on a fiber");
            let _ = rt.block_on(p.handle(req("/deep")));
        }
        "thread" => {
            eprintln!("child: recursing on a plain thread");
            let t = std::thread::Builder::new()
                .name("plain".into())
                .stack_size(256 * 1024);
            let _ = t.spawn(|| recurse(0)).unwrap().join();
        }
        other => panic!("unknown scenario {other}"),
    }
    // Reaching here means the overflow went unnoticed: exit cleanly so the
    // parent fails on the success status.
    std::process::exit(0);
}

#[test]
fn overflow_on_a_fiber_reports_the_stack_size_and_aborts() {
    let out = run_child("child_process", "fiber");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "child should die: {}",
        describe(&out)
    );
    assert!(
        stderr.contains("child: recursing on a fiber"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("overflowed its fiber stack of 65536 bytes"),
        "message names the stack size: {}",
        describe(&out)
    );
    assert!(
        stderr.contains("stack_size("),
        "message says how to raise it: {}",
        describe(&out)
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc_sigabrt()),
            "aborted: {}",
            describe(&out)
        );
    }
}

/// The fiber handler chains to the previous one: an overflow of an ordinary
/// thread stack still gets std's own report, not the fiber message.
#[test]
fn overflow_on_a_plain_thread_still_gets_std_report() {
    let out = run_child("child_process", "thread");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "child should die: {}",
        describe(&out)
    );
    assert!(
        stderr.contains("child: recursing on a plain thread"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr.contains("thread 'plain'") && stderr.contains("has overflowed its stack"),
        "{}",
        describe(&out)
    );
    assert!(
        !stderr.contains("fiber stack"),
        "not blamed on a fiber: {}",
        describe(&out)
    );
}

/// SIGABRT's number (6 on every Linux architecture and on macOS).
#[cfg(unix)]
fn libc_sigabrt() -> i32 {
    6
}
