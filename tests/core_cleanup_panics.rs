//! User code that the library runs on its own cleanup paths: destructors
//! of values it drops while it cancels a request, and a tracing
//! subscriber's callbacks from a fiber's hooks and span guards. A panic
//! there is contained and logged: before, it aborted the process (it came
//! during the cancellation's unwind: a `blocking` result, a future passed
//! to `wait`, a layer span's exit), corrupted memory (a request dropped
//! before its fiber started: corosensei dropped the fiber's closure twice,
//! SIGSEGV), or replaced the cancellation with a panic, so the cancelled
//! request's middleware ran on past `get_response`.
//!
//! Each case runs in a child process (an abort would otherwise take the
//! whole test binary down); the parent fails with the child's output.

mod capture;
mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{ok, poll_once, req, rt, run_child_ok, text};
use suspendware::{blocking, wait, Next, Pipeline, Request, Response};

/// A user value whose destructor panics.
struct Bomb(&'static str);

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// After a case: the process is alive, every stack is back, and the thread
/// still serves. Prints the marker the parent looks for.
fn still_serving(p: &Pipeline, rt: &tokio::runtime::Runtime) {
    assert!(p.stack_stats().is_whole(), "{:?}", p.stack_stats());
    let p2 = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async { ok("still serving") })
        .build()
        .unwrap();
    assert_eq!(text(&rt.block_on(p2.handle(req("/")))), "still serving");
    println!("CHILD-OK");
}

/// Starts one request, lets it suspend in `get_response`, and drops it
/// (cancels it) with `armed` set, so the subscriber fails during the
/// cancellation only.
fn drop_suspended_while(p: &Pipeline, rt: &tokio::runtime::Runtime, armed: &AtomicBool) {
    rt.block_on(async {
        let mut f = Box::pin(p.handle(req("/")));
        assert!(
            poll_once(f.as_mut()).is_pending(),
            "suspended in get_response"
        );
        armed.store(true, Ordering::SeqCst);
        drop(f);
        armed.store(false, Ordering::SeqCst);
    });
}

/// `logs` report the contained panic: `what`, with the panic's message.
fn assert_logged(logs: &str, what: &str, message: &str) {
    assert!(
        logs.contains(what) && logs.contains(message),
        "expected {what:?} with {message:?} in the logs:\n{logs}"
    );
}

// ---------------------------------------------------------------------------
// 1. `blocking(f)`: the closure's result is dropped by `coro::scoped::run`
//    (its `out` slot) while the cancellation unwinds the fiber.

/// Sync middleware whose `blocking` closure waits for `release`, then
/// returns a value whose destructor panics.
fn blocking_bomb_pipeline(release: mpsc::Receiver<()>) -> Pipeline {
    let release = Arc::new(Mutex::new(Some(release)));
    Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let rx = release.lock().unwrap().take().unwrap();
            let v = blocking(move || {
                rx.recv().unwrap();
                Bomb("blocking result dropped")
            });
            std::mem::forget(v); // the request is cancelled before this
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("unreached") })
        .build()
        .unwrap()
}

#[test]
fn blocking_result_dropped_by_a_cancellation() {
    run_child_ok("child_blocking_result_dropped_by_a_cancellation");
}

#[test]
#[ignore = "run in a child process by blocking_result_dropped_by_a_cancellation"]
fn child_blocking_result_dropped_by_a_cancellation() {
    let (tx, rx) = mpsc::channel();
    let p = blocking_bomb_pipeline(rx);
    let rt = rt();
    let (logs, ()) = capture::capture(|| {
        rt.block_on(async {
            let mut f = Box::pin(p.handle(req("/")));
            assert!(poll_once(f.as_mut()).is_pending(), "suspended in blocking");
            tx.send(()).unwrap(); // the closure returns its value
            drop(f); // the client went away (no reaper: waits for the closure)
        })
    });
    assert_logged(
        &logs,
        "the result of a `blocking` closure panicked",
        "blocking result dropped",
    );
    still_serving(&p, &rt);
}

/// The same on a thread with a `Reaper` (as every `Runtime`/`Server`
/// worker has): the request is dropped while the closure still runs, the
/// fiber is orphaned, and the reaper task unwinds it when the closure
/// returns.
#[test]
fn blocking_result_dropped_by_the_reaper() {
    run_child_ok("child_blocking_result_dropped_by_the_reaper");
}

#[test]
#[ignore = "run in a child process by blocking_result_dropped_by_the_reaper"]
fn child_blocking_result_dropped_by_the_reaper() {
    let (tx, rx) = mpsc::channel();
    let p = blocking_bomb_pipeline(rx);
    let rt = rt();
    let local = tokio::task::LocalSet::new();
    local.spawn_local(suspendware::runtime::Reaper::new());
    let (logs, ()) = capture::capture(|| {
        local.block_on(&rt, async {
            let mut f = Box::pin(p.handle(req("/")));
            assert!(poll_once(f.as_mut()).is_pending(), "suspended in blocking");
            drop(f); // orphaned: the closure still waits for `tx`
            tx.send(()).unwrap();
            // The reaper unwinds the fiber when the closure returns; until
            // then its stack stays in use (bounded: the child's deadline).
            while !p.stack_stats().is_whole() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    });
    assert_logged(
        &logs,
        "the result of a `blocking` closure panicked",
        "blocking result dropped",
    );
    still_serving(&p, &rt);
}

// ---------------------------------------------------------------------------
// 2. `wait(fut)`: the waited future, pinned in `wait`'s frame, is dropped
//    while the cancellation unwinds the fiber.

#[test]
fn waited_future_dropped_by_a_cancellation() {
    run_child_ok("child_waited_future_dropped_by_a_cancellation");
}

#[test]
#[ignore = "run in a child process by waited_future_dropped_by_a_cancellation"]
fn child_waited_future_dropped_by_a_cancellation() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            wait(async {
                let _b = Bomb("waited future dropped");
                std::future::pending::<()>().await;
            });
            next.get_response(req)
        })
        .view(|_req: Request| async { ok("unreached") })
        .build()
        .unwrap();
    let rt = rt();
    let (logs, ()) = capture::capture(|| {
        rt.block_on(async {
            let mut f = Box::pin(p.handle(req("/")));
            assert!(poll_once(f.as_mut()).is_pending(), "suspended in wait");
            drop(f);
        })
    });
    assert_logged(
        &logs,
        "a future passed to `wait` panicked",
        "waited future dropped",
    );
    still_serving(&p, &rt);
}

// ---------------------------------------------------------------------------
// 3. The library's own per-layer span (`LayerSpan`, made by
//    `Chain::call_sync` when DEBUG is enabled): dropped while the
//    cancellation unwinds the fiber, it calls the subscriber's `exit`.

/// Set once the request is suspended: from then on `exit` of a sync
/// layer's span panics.
static ARMED: AtomicBool = AtomicBool::new(false);

/// Once set, `enter` of any span panics (case 7).
static ANY_ENTER_ARMED: AtomicBool = AtomicBool::new(false);

/// Set by the armed `exit` as it panics.
static EXIT_FAILED: AtomicBool = AtomicBool::new(false);

/// Likewise for `enter` (case 5).
static ENTER_ARMED: AtomicBool = AtomicBool::new(false);

/// A subscriber whose `exit` of a sync layer's span (`exec = "sync"`)
/// panics once armed; everything else is a no-op.
struct ExitPanics {
    next: AtomicU64,
    sync_spans: Mutex<HashSet<u64>>,
}

struct IsSync(bool);

impl tracing::field::Visit for IsSync {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "exec" && format!("{value:?}").trim_matches('"') == "sync" {
            self.0 = true;
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "exec" && value == "sync" {
            self.0 = true;
        }
    }
}

impl ExitPanics {
    /// Makes a fresh one the process's subscriber (each case's child
    /// process installs its own).
    fn install() {
        tracing::subscriber::set_global_default(ExitPanics {
            next: AtomicU64::new(1),
            sync_spans: Mutex::new(HashSet::new()),
        })
        .unwrap();
    }
}

impl tracing::Subscriber for ExitPanics {
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut v = IsSync(false);
        attrs.record(&mut v);
        if v.0 {
            self.sync_spans.lock().unwrap().insert(id);
        }
        tracing::span::Id::from_u64(id)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, id: &tracing::span::Id) {
        if ANY_ENTER_ARMED.load(Ordering::SeqCst) {
            panic!("subscriber enter failed");
        }
        if ENTER_ARMED.load(Ordering::SeqCst)
            && self.sync_spans.lock().unwrap().contains(&id.into_u64())
        {
            panic!("subscriber enter failed");
        }
    }
    fn exit(&self, id: &tracing::span::Id) {
        if ARMED.load(Ordering::SeqCst) && self.sync_spans.lock().unwrap().contains(&id.into_u64())
        {
            EXIT_FAILED.store(true, Ordering::SeqCst);
            panic!("subscriber exit failed");
        }
    }
}

#[test]
fn layer_span_exited_by_a_cancellation() {
    run_child_ok("child_layer_span_exited_by_a_cancellation");
}

#[test]
#[ignore = "run in a child process by layer_span_exited_by_a_cancellation"]
fn child_layer_span_exited_by_a_cancellation() {
    ExitPanics::install();
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let rt = rt();
    drop_suspended_while(&p, &rt, &ARMED);
    still_serving(&p, &rt);
}

// ---------------------------------------------------------------------------
// 4. A request dropped before its fiber started: `Fiber::cancel` has
//    corosensei drop the fiber's unstarted closure (which owns the boxed
//    request) with `force_unwind`, outside any `catch_unwind`.

/// A request extension whose destructor panics (what a client-supplied
/// extension, a guard, a connection handle put in the request could do).
#[derive(Clone)]
struct ExtBomb;

impl Drop for ExtBomb {
    fn drop(&mut self) {
        panic!("request extension dropped");
    }
}

#[test]
fn request_dropped_before_its_fiber_started() {
    run_child_ok("child_request_dropped_before_its_fiber_started");
}

#[test]
#[ignore = "run in a child process by request_dropped_before_its_fiber_started"]
fn child_request_dropped_before_its_fiber_started() {
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| async { ok("unreached") })
        .build()
        .unwrap();
    let rt = rt();
    let (logs, escaped) = capture::capture(|| {
        rt.block_on(async {
            let mut r = req("/");
            r.extensions_mut().insert(ExtBomb);
            let f = p.handle(r); // a stack is taken and the fiber made, not started
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(f))).is_err()
        })
    });
    assert!(
        !escaped,
        "the panic escaped from the response future's drop"
    );
    assert_logged(
        &logs,
        "a value held by a request whose fiber never started panicked",
        "request extension dropped",
    );
    still_serving(&p, &rt);
}

// ---------------------------------------------------------------------------
// 5. The `resumed` hook (`Reclaim::drop` in `coro::suspend`) re-enters the
//    fiber's spans when a cancellation resumes it, before the `Cancelled`
//    unwind starts. A subscriber's `enter` that panics there turns the
//    cancellation into an ordinary panic: the inner layer's boundary answers
//    500 and the outer middleware of the cancelled request goes on running.

#[test]
fn span_entered_by_a_cancellation() {
    run_child_ok("child_span_entered_by_a_cancellation");
}

#[test]
#[ignore = "run in a child process by span_entered_by_a_cancellation"]
fn child_span_entered_by_a_cancellation() {
    ExitPanics::install();
    let ran_on = Arc::new(AtomicBool::new(false));
    let r2 = ran_on.clone();
    let p = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let resp = next.get_response(req);
            // A cancelled request must never get here.
            r2.store(true, Ordering::SeqCst);
            resp
        })
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let rt = rt();
    drop_suspended_while(&p, &rt, &ENTER_ARMED);
    assert!(
        !ran_on.load(Ordering::SeqCst),
        "the cancelled request's middleware ran on past get_response ({:?})",
        p.stack_stats()
    );
    still_serving(&p, &rt);
}

// ---------------------------------------------------------------------------
// 6. On a held thread (Adapt mode) the layer's span lives on the thread; a
//    cancelled request's held thread unwinds through its exit.

/// Set by a guard in the held thread's middleware frame as the
/// cancellation's unwind passes it.
static HELD_UNWOUND: AtomicBool = AtomicBool::new(false);

struct MarkUnwound;

impl Drop for MarkUnwound {
    fn drop(&mut self) {
        HELD_UNWOUND.store(true, Ordering::SeqCst);
    }
}

#[test]
fn held_thread_span_exited_by_a_cancellation() {
    run_child_ok("child_held_thread_span_exited_by_a_cancellation");
}

#[test]
#[ignore = "run in a child process by held_thread_span_exited_by_a_cancellation"]
fn child_held_thread_span_exited_by_a_cancellation() {
    ExitPanics::install();
    let (entered_tx, entered_rx) = mpsc::channel();
    let entered_tx = Mutex::new(entered_tx);
    let p = Pipeline::builder()
        .mode(suspendware::Mode::Adapt)
        .sync(move |req: Request, next: &mut Next| {
            let _mark = MarkUnwound;
            entered_tx.lock().unwrap().send(()).unwrap();
            next.get_response(req)
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut f = Box::pin(p.handle(req("/")));
        // Polled until the held thread runs the layer (it then blocks in
        // `get_response`, waiting for the view that never answers).
        while entered_rx.try_recv().is_err() {
            assert!(poll_once(f.as_mut()).is_pending());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..3 {
            assert!(poll_once(f.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
        ARMED.store(true, Ordering::SeqCst);
        drop(f); // the held thread unwinds with `Cancelled`
                 // The unwind passes the mark, then the span's exit, which panics
                 // (bounded by the parent's deadline for the child).
        while !(HELD_UNWOUND.load(Ordering::SeqCst) && EXIT_FAILED.load(Ordering::SeqCst)) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ARMED.store(false, Ordering::SeqCst);
    });
    still_serving(&p, &rt);
}

// ---------------------------------------------------------------------------
// 7. The request's span (made by `Pipeline::handle` when a subscriber
//    listens at INFO) is entered around the request's future, also while
//    that future is dropped. A subscriber whose `enter` panics there made
//    tracing's `Instrumented` skip the drop: the cancelled request's fiber
//    kept its stack for good, and the panic escaped the response future's
//    drop.

#[test]
fn request_span_entered_by_a_cancellation() {
    run_child_ok("child_request_span_entered_by_a_cancellation");
}

#[test]
#[ignore = "run in a child process by request_span_entered_by_a_cancellation"]
fn child_request_span_entered_by_a_cancellation() {
    ExitPanics::install();
    let p = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let rt = rt();
    let escaped = rt.block_on(async {
        let mut f = Box::pin(p.handle(req("/")));
        assert!(
            poll_once(f.as_mut()).is_pending(),
            "suspended in get_response"
        );
        ANY_ENTER_ARMED.store(true, Ordering::SeqCst);
        let escaped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(f))).is_err();
        ANY_ENTER_ARMED.store(false, Ordering::SeqCst);
        escaped
    });
    assert!(
        !escaped,
        "the panic escaped from the response future's drop"
    );
    still_serving(&p, &rt);
}

// ---------------------------------------------------------------------------
// 9. A ThreadHop hop's future runs in the caller's span too. Dropped by a
//    cancellation while the subscriber's `enter` panics, tracing's
//    `Instrumented` would skip dropping it, and with it the sender of the
//    hop's cancel signal: a hook blocked in `wait` on its hop would then
//    keep its blocking thread for good. The crate's `InSpan` drops it.

/// Set by a guard in the hook's frame as the hop's thread unwinds.
static HOP_UNWOUND: AtomicBool = AtomicBool::new(false);

struct MarkHopUnwound;

impl Drop for MarkHopUnwound {
    fn drop(&mut self) {
        HOP_UNWOUND.store(true, Ordering::SeqCst);
    }
}

/// A hook that waits on its hop for a future that never finishes.
struct WaitingHook(Mutex<mpsc::Sender<()>>);

impl suspendware::hooks::HookMiddleware for WaitingHook {
    fn process_request(&self, _req: &mut Request) -> Option<Response> {
        let _frame = MarkHopUnwound;
        self.0.lock().unwrap().send(()).unwrap();
        wait(std::future::pending::<()>());
        None
    }
}

#[test]
fn hop_span_entered_by_a_cancellation() {
    run_child_ok("child_hop_span_entered_by_a_cancellation");
}

/// A layer whose `on_enter` panics once `ANY_ENTER_ARMED` is set. On the
/// registry, which tracks the current span, unlike `ExitPanics`: the hop
/// takes the caller's span with `Span::current()`.
struct EnterPanicsLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EnterPanicsLayer {
    fn on_enter(&self, _id: &tracing::span::Id, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if ANY_ENTER_ARMED.load(Ordering::SeqCst) {
            panic!("subscriber enter failed");
        }
    }
}

#[test]
#[ignore = "run in a child process by hop_span_entered_by_a_cancellation"]
fn child_hop_span_entered_by_a_cancellation() {
    use tracing_subscriber::layer::SubscriberExt as _;
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(EnterPanicsLayer))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let p = Pipeline::builder()
        .mode(suspendware::Mode::ThreadHop)
        .hooks(WaitingHook(Mutex::new(tx)))
        .view(|_req: Request| async { ok("unreached") })
        .build()
        .unwrap();
    let rt = rt();
    let escaped = rt.block_on(async {
        let mut f = Box::pin(p.handle(req("/")));
        assert!(poll_once(f.as_mut()).is_pending(), "waiting on its hop");
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        ANY_ENTER_ARMED.store(true, Ordering::SeqCst);
        let escaped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(f))).is_err();
        ANY_ENTER_ARMED.store(false, Ordering::SeqCst);
        escaped
    });
    let t0 = std::time::Instant::now();
    while !HOP_UNWOUND.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let freed = HOP_UNWOUND.load(Ordering::SeqCst);
    // Dropping `rt` would wait for a blocked hop.
    std::mem::forget(rt);
    assert!(
        !escaped,
        "the panic escaped from the response future's drop"
    );
    assert!(
        freed,
        "10 s after its request was cancelled, the hop is still blocked in `wait`"
    );
    println!("CHILD-OK");
}
