//! Closures that borrow from a suspended fiber's stack and run on another
//! thread: `std::thread::scope` for fibers.
//!
//! [`run`] hands a closure `f: FnOnce() -> R + Send + 'a` (it may hold
//! `&mut` borrows of the fiber's frames) to another thread as a [`Job`], and
//! suspends the fiber until the job is [`Completion`]-marked done. It is
//! sound because nothing can pop those frames, reuse or unmap the stack
//! before the job is done:
//!
//! * `run` returns, or unwinds past its frame, only after completion: the
//!   loop parks until done, and a guard (`JoinOnDrop`) waits for completion
//!   on any unwind;
//! * the fiber records the pending completion while suspended
//!   (`Header::scoped`, handed to its driver through `PENDING`), and every
//!   way the driver can end the fiber — [`super::Fiber::cancel`], its `Drop`,
//!   `into_stack` — first waits for that completion (a blocking join). The
//!   exec layer avoids that wait by keeping a cancelled fiber aside until the
//!   job is done (`exec::orphans`);
//! * the job signals completion only after the closure has returned (its
//!   outcome written) or has been dropped unrun (a runtime shutting down).
//!
//! A fiber that is leaked is never freed, so its borrows stay valid.

use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::task::{Context, Poll, Waker};

use super::current;
use crate::loom::sync::{Arc, Condvar, Mutex};
use crate::loom::{condvar_wait, lock};

/// Set once a job has finished with the fiber's stack.
pub(crate) struct Completion {
    state: Mutex<State>,
    cv: Condvar,
}

struct State {
    done: bool,
    waker: Option<Waker>,
}

impl Completion {
    pub(crate) fn new() -> Completion {
        Completion {
            state: Mutex::new(State {
                done: false,
                waker: None,
            }),
            cv: Condvar::new(),
        }
    }

    /// Marks the job done; wakes a poller and every blocked waiter.
    fn complete(&self) {
        let waker = {
            let mut s = lock(&self.state);
            s.done = true;
            s.waker.take()
        };
        self.cv.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the job is done.
    pub(crate) fn is_done(&self) -> bool {
        lock(&self.state).done
    }

    /// `Ready` once the job is done; otherwise `cx`'s waker is woken then.
    /// (The state is read and the waker stored under one lock, and
    /// `complete` sets `done` before taking the waker under the same lock:
    /// no wake-up is lost.)
    pub(crate) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.state);
        if s.done {
            return Poll::Ready(());
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Blocks the calling thread until the job is done.
    pub(crate) fn wait(&self) {
        let mut s = lock(&self.state);
        while !s.done {
            s = condvar_wait(&self.cv, s);
        }
    }
}

/// The work to run on the other thread. Completes its [`Completion`] when
/// run, or when dropped unrun (after dropping the closure).
pub(crate) struct Job {
    work: Option<Box<dyn FnOnce() + Send + 'static>>,
    completion: Arc<Completion>,
}

impl Job {
    /// A job from an already erased closure (the loom models).
    #[cfg(all(test, loom))]
    pub(crate) fn for_model(
        work: Box<dyn FnOnce() + Send + 'static>,
        completion: Arc<Completion>,
    ) -> Job {
        Job {
            work: Some(work),
            completion,
        }
    }

    /// Runs the closure (its panic is caught and handed back to the fiber).
    pub(crate) fn run(mut self) {
        if let Some(work) = self.work.take() {
            work();
        }
        // `Drop` completes.
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        drop(self.work.take());
        self.completion.complete();
    }
}

/// Where the job writes its outcome: a slot in `run`'s frame.
struct Slot<R>(*mut Option<std::thread::Result<R>>);

// SAFETY: the slot is written by exactly one thread (the job's), and read by
// the fiber only after `Completion` says the job is done (its mutex orders
// the write before the read); `R: Send` is required by `run`.
unsafe impl<R: Send> Send for Slot<R> {}

impl<R> Slot<R> {
    fn put(self, v: std::thread::Result<R>) {
        // SAFETY: `run` keeps the slot's frame alive until the job is done
        // (module docs), and nothing else touches the slot until then.
        unsafe { *self.0 = Some(v) };
    }
}

/// Erases the lifetime of a job closure that borrows from the fiber.
///
/// # Safety
/// The closure must be run or dropped before anything it borrows goes away:
/// the caller keeps its frame (and the fiber's stack) alive until the job's
/// completion is done (module docs).
unsafe fn erase<'a>(f: Box<dyn FnOnce() + Send + 'a>) -> Box<dyn FnOnce() + Send + 'static> {
    // SAFETY: the two types differ only in the trait object's lifetime bound
    // (same layout); the caller upholds that the borrow outlives every use.
    unsafe {
        std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Box<dyn FnOnce() + Send + 'static>>(f)
    }
}

/// Waits for the job on any way out of `run` (normal or unwinding), and
/// clears the fiber's pending record.
struct JoinOnDrop<'a> {
    completion: &'a Arc<Completion>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for JoinOnDrop<'_> {
    fn drop(&mut self) {
        self.completion.wait();
        current::set_scoped(None);
    }
}

/// Runs `f` as a [`Job`] handed to `spawn` (which sends it to another
/// thread), while `park` suspends the fiber until the job is done; returns
/// `f`'s outcome, or `None` if the job was dropped unrun.
///
/// # Panics
/// Off-fiber (callers check `current::place()` first).
pub(crate) fn run<'a, F, R>(
    f: F,
    spawn: impl FnOnce(Job),
    mut park: impl FnMut(&Arc<Completion>),
) -> Option<std::thread::Result<R>>
where
    F: FnOnce() -> R + Send + 'a,
    R: Send + 'a,
{
    assert!(
        current::place() == current::Place::Fiber,
        "suspendware: a scoped job needs a fiber that may suspend"
    );
    let completion = Arc::new(Completion::new());
    // Declared before `join`, so dropped after it: the job has written it.
    let mut out = Outcome(None);
    let slot = Slot(&mut out.0);
    let work: Box<dyn FnOnce() + Send + 'a> = Box::new(move || {
        slot.put(panic::catch_unwind(AssertUnwindSafe(f)));
    });
    let job = Job {
        // SAFETY: `join` below (declared before `spawn` may run the job)
        // keeps this frame, and with it `out` and everything `f` borrows from
        // the fiber's stack, until the job is done; the fiber's driver cannot
        // end the fiber before then either (module docs).
        work: Some(unsafe { erase(work) }),
        completion: completion.clone(),
    };
    current::set_scoped(Some(completion.clone()));
    let join = JoinOnDrop {
        completion: &completion,
        _not_send: PhantomData,
    };
    spawn(job);
    while !completion.is_done() {
        park(&completion);
    }
    drop(join);
    out.0.take()
}

/// `run`'s slot for the job's outcome. It still holds one when dropped only
/// if `run` unwinds (the request was cancelled while the job ran): the
/// result's destructor, user code, then runs inside that unwind, where a
/// panic would abort the process, so it is contained (and logged).
struct Outcome<R>(Option<std::thread::Result<R>>);

impl<R> Drop for Outcome<R> {
    fn drop(&mut self) {
        match self.0.take() {
            Some(Ok(value)) => super::contain(
                "the result of a `blocking` closure panicked while it was dropped (its request \
                 was cancelled before it returned)",
                move || drop(value),
            ),
            Some(Err(payload)) => super::drop_payload(payload),
            None => {}
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}
