//! Helpers shared by the integration tests: runtimes, requests, drop
//! counters, event logs and a hang guard.
//!
//! Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use suspendware::{Request, Response};

/// A current-thread tokio runtime with timers and I/O enabled.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A GET request for `uri`.
pub fn req(uri: &str) -> Request {
    http::Request::builder()
        .uri(uri)
        .body(Default::default())
        .expect("request")
}

/// A 200 response with `body`.
pub fn ok(body: &str) -> Response {
    Response::new(body.to_owned().into())
}

/// The response body as UTF-8 text.
pub fn text(resp: &Response) -> String {
    String::from_utf8(resp.body().as_bytes().to_vec()).expect("utf-8 body")
}

/// The value of header `name` as text, if present.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii header").to_owned())
}

/// Counts how many [`DropToken`]s it handed out have been dropped.
#[derive(Clone, Default)]
pub struct DropCounter(Arc<AtomicUsize>);

impl DropCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A value whose drop increments this counter.
    pub fn token(&self) -> DropToken {
        DropToken {
            counter: self.0.clone(),
            log: None,
        }
    }

    /// A value whose drop increments this counter and records `name` in `log`.
    pub fn logged(&self, log: &Events, name: &str) -> DropToken {
        DropToken {
            counter: self.0.clone(),
            log: Some((log.clone(), name.to_owned())),
        }
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Increments its [`DropCounter`] when dropped.
pub struct DropToken {
    counter: Arc<AtomicUsize>,
    log: Option<(Events, String)>,
}

impl DropToken {
    /// Keeps the token alive up to this call (it lives on whatever stack
    /// frame holds it).
    pub fn touch(&self) {
        std::hint::black_box(self);
    }
}

impl Drop for DropToken {
    fn drop(&mut self) {
        self.counter.fetch_add(1, Ordering::SeqCst);
        if let Some((log, name)) = &self.log {
            log.push(format!("drop {name}"));
        }
    }
}

/// An ordered log of events, shareable with middleware (`Send + Sync`).
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&self, e: impl Into<String>) {
        self.0.lock().unwrap().push(e.into());
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The ERROR-level lines of captured `tracing` output (see
/// `tests/capture/mod.rs`).
pub fn error_lines(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains(" ERROR "))
        .map(str::to_owned)
        .collect()
}

/// Polls `fut` once with a no-op waker.
pub fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    fut.poll(&mut cx)
}

/// Runs `f` on its own thread and fails the test if it has not finished
/// within `limit` — turns "the runtime thread got blocked" into a failure
/// instead of a hung test run. Panics inside `f` are propagated.
pub fn with_deadline<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let th = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) => match th.join().expect("deadline thread") {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(_) => panic!("test body did not finish within {limit:?}: a runtime thread was blocked"),
    }
}

/// The message of a caught panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}

/// The process's threads, less libtest's threads for the tests named in
/// `tests` (libtest names each test's thread after it; /proc cuts names to
/// 15 bytes). libtest starts the other tests' threads while one runs
/// (waiting on a serial lock), which would blur a thread count.
pub fn threads_except_tests(tests: &[&str]) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| {
            let comm = comm.trim_end();
            comm.len() < 15 || !tests.iter().any(|t| t.starts_with(comm))
        })
        .count()
}

/// Runs the ignored test `name` of the current test binary in a child
/// process (for what would take the whole binary down: an abort, a hang),
/// and returns its output. Fails with that output unless the child exits
/// successfully within 60 s (it is killed then).
pub fn run_child(name: &str) -> String {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("child {name} did not finish within 60 s (a thread stayed blocked)");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success(), "child {name} failed ({status}):\n{text}");
    text
}

/// [`run_child`], and the child printed `CHILD-OK` (it got to its end).
pub fn run_child_ok(name: &str) {
    let out = run_child(name);
    assert!(
        out.contains("CHILD-OK"),
        "child {name} did not finish:\n{out}"
    );
}
