//! An executor that catches wakers used after their poll returned.
//!
//! Every `poll` gets a fresh waker stored at its own address; when the poll
//! returns, that waker is marked dead (its memory is kept, so a late use is
//! observed, not undefined). Any `clone`, `wake_by_ref` or `wake` through a
//! dead waker is counted. Clones are ordinary owned wakers and stay valid:
//! only the `&Waker` lent to one poll has that poll's lifetime.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// What the executor saw while running one future.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Polls made.
    pub polls: usize,
    /// Uses of a poll's waker after that poll had returned.
    pub dead_uses: usize,
}

struct Shared {
    woken: AtomicBool,
    thread: Thread,
    dead_uses: AtomicUsize,
}

impl Shared {
    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// The waker lent to one poll.
struct PollWaker {
    alive: AtomicBool,
    shared: Arc<Shared>,
}

impl PollWaker {
    fn check(&self) {
        if !self.alive.load(Ordering::SeqCst) {
            self.shared.dead_uses.fetch_add(1, Ordering::SeqCst);
        }
    }
}

static LENT: RawWakerVTable = RawWakerVTable::new(lent_clone, lent_wake, lent_wake, lent_drop);
static OWNED: RawWakerVTable =
    RawWakerVTable::new(owned_clone, owned_wake, owned_wake_by_ref, owned_drop);

fn lent(p: *const ()) -> &'static PollWaker {
    // SAFETY: `p` comes from a `Box<PollWaker>` that `block_on` keeps alive
    // until it returns (the boxes are never freed early: a dead waker is
    // only marked dead), and wakers are not used after `block_on` returns
    // in these tests' futures (they are all finished by then).
    unsafe { &*p.cast::<PollWaker>() }
}

fn lent_clone(p: *const ()) -> RawWaker {
    let w = lent(p);
    w.check();
    owned_raw(w.shared.clone())
}

fn lent_wake(p: *const ()) {
    let w = lent(p);
    w.check();
    w.shared.wake();
}

fn lent_drop(_: *const ()) {}

fn owned_raw(shared: Arc<Shared>) -> RawWaker {
    RawWaker::new(Arc::into_raw(shared).cast(), &OWNED)
}

fn owned(p: *const ()) -> Arc<Shared> {
    // SAFETY: `p` was made by `Arc::into_raw` in `owned_raw`, and each owned
    // waker gives its reference back exactly once (in `wake` or `drop`).
    unsafe { Arc::from_raw(p.cast::<Shared>()) }
}

fn owned_clone(p: *const ()) -> RawWaker {
    let a = owned(p);
    let b = a.clone();
    std::mem::forget(a);
    owned_raw(b)
}

fn owned_wake(p: *const ()) {
    owned(p).wake();
}

fn owned_wake_by_ref(p: *const ()) {
    let a = owned(p);
    a.wake();
    std::mem::forget(a);
}

fn owned_drop(p: *const ()) {
    drop(owned(p));
}

/// Runs `fut` to completion on this thread with a fresh waker per poll.
///
/// # Panics
/// If the future has not finished within `limit` (a hang becomes a failure).
pub fn block_on<F: Future>(fut: F, limit: Duration) -> (F::Output, Report) {
    let shared = Arc::new(Shared {
        woken: AtomicBool::new(true),
        thread: thread::current(),
        dead_uses: AtomicUsize::new(0),
    });
    let mut fut = pin!(fut);
    let mut keep: Vec<Box<PollWaker>> = Vec::new();
    let deadline = Instant::now() + limit;
    let mut polls = 0;
    loop {
        while !shared.woken.swap(false, Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "future did not finish within {limit:?}"
            );
            thread::park_timeout(Duration::from_millis(10));
        }
        let pw = Box::new(PollWaker {
            alive: AtomicBool::new(true),
            shared: shared.clone(),
        });
        let raw = RawWaker::new((&*pw as *const PollWaker).cast(), &LENT);
        // SAFETY: the vtable's functions uphold the `RawWaker` contract for
        // this data pointer (see `lent`): the box outlives every use.
        // Boxed: each poll's waker lives at its own address, so a reference
        // kept from an earlier poll reads that poll's (dead) waker, not the
        // current one.
        let waker = Box::new(unsafe { Waker::from_raw(raw) });
        polls += 1;
        let out = fut.as_mut().poll(&mut Context::from_waker(&waker));
        pw.alive.store(false, Ordering::SeqCst);
        keep.push(pw);
        // Never freed (its drop is a no-op): a late read must stay defined.
        std::mem::forget(waker);
        if out.is_ready() {
            // Never freed: a waker kept past the end must stay readable.
            std::mem::forget(std::mem::take(&mut keep));
        }
        if let Poll::Ready(v) = out {
            let report = Report {
                polls,
                dead_uses: shared.dead_uses.load(Ordering::SeqCst),
            };
            return (v, report);
        }
    }
}

/// Pending once (waking itself through a clone of the context's waker),
/// then ready.
pub struct YieldOnce(bool);

impl YieldOnce {
    pub fn new() -> Self {
        YieldOnce(false)
    }
}

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        // A clone, as timers and channels take one: cloning is the use a
        // dead waker must never see.
        #[allow(clippy::waker_clone_wake)]
        cx.waker().clone().wake();
        Poll::Pending
    }
}
