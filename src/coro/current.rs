//! The running-fiber pointer and the suspension point.
//!
//! `CURRENT` is a thread-local pointer to the [`Header`] of the fiber whose
//! code executes on this thread *right now*, or null. Code running on a
//! fiber reaches its fiber only through it, so every rule about who may
//! touch a fiber's context is a rule about this pointer:
//!
//! * the fiber sets it when its root starts and whenever control comes back
//!   to it out of a suspension, normally or by corosensei's forced unwind
//!   ([`Reclaim`]);
//! * the driver's `ResumeGuard` (in `fiber.rs`) restores the previous value
//!   (fibers nest) as soon as control returns to the driver, whichever way;
//! * the fiber's root clears it *before* the context is dropped
//!   (`ExitGuard`), so nothing reachable from a destructor that runs
//!   afterwards (a span's last handle, a subscriber's `try_close`) can find
//!   a half-dropped context.
//!
//! A fiber never suspends while its thread is unwinding (`Refused::Unwinding`):
//! std keeps the panic count per OS thread, and a fiber suspended mid-unwind
//! would leave it raised for every other request on the thread.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::ptr::{self, NonNull};
use std::task::Waker;

use corosensei::Yielder;

use crate::loom::sync::Arc;

use super::fiber::{Cmd, Input};
use super::scoped::Completion;
use super::unwind::Cancelled;
use super::waker::ForwardWaker;

/// What the code running on a fiber attaches to it.
///
/// The hooks live in the fiber's root frame, next to its [`Header`]. The
/// fiber calls them around every suspension, on the fiber's own stack.
pub(crate) trait Hooks: Any {
    /// Control is about to leave the fiber (a suspension).
    fn suspending(&self);
    /// Control came back to the fiber (resumed, cancelled or force-unwound).
    fn resumed(&self);
    /// The fiber's function returned or unwound out. `CURRENT` is already
    /// cleared: release whatever could call back into fiber APIs.
    fn exiting(&self);
}

/// Hooks for fibers that carry nothing.
impl Hooks for () {
    fn suspending(&self) {}
    fn resumed(&self) {}
    fn exiting(&self) {}
}

thread_local! {
    static CURRENT: Cell<*const Header> = const { Cell::new(ptr::null()) };
    /// The scoped job a fiber suspended with, handed to the `Fiber` that
    /// resumed it (taken after every resumption; see `scoped.rs`).
    static PENDING: Cell<Option<Arc<Completion>>> = const { Cell::new(None) };
    /// Whether `PENDING` holds a job. A destructor-less flag read after
    /// every resumption, so the common case (no `blocking` in flight) skips
    /// `PENDING`, a thread-local with a destructor whose every access also
    /// checks its registration.
    static HAS_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Takes the scoped job the fiber that just stopped suspended with.
#[inline]
pub(super) fn take_pending() -> Option<Arc<Completion>> {
    if !HAS_PENDING.with(|h| h.replace(false)) {
        return None;
    }
    PENDING.with(|p| p.take())
}

/// Records (or clears) the running fiber's scoped job.
pub(super) fn set_scoped(job: Option<Arc<Completion>>) {
    if let Some(h) = current() {
        h.scoped.set(job);
    }
}

/// The type-independent part of a fiber's context, at the start of its root
/// frame. Reached through `CURRENT` only while the fiber runs.
pub(crate) struct Header {
    /// The fiber's hooks (set right after the context is built, before any
    /// code can read it).
    hooks: Cell<Option<NonNull<dyn Hooks>>>,
    /// `TypeId` of the hooks' concrete type, so [`with_hooks`] checks it
    /// with one comparison instead of a virtual `type_id` call.
    hooks_type: Cell<Option<TypeId>>,
    /// The waker of the driver's `poll` that is executing this fiber *now*.
    ///
    /// Invariant: replaced on every resumption before any code of the fiber
    /// runs (by [`suspend`], or the root for the first one); read only by
    /// code on the fiber during that resumption; never handed out. Code on
    /// the fiber sees [`ForwardWaker`]'s stable waker instead.
    driver_waker: Cell<NonNull<Waker>>,
    /// The waker code on the fiber polls futures with.
    waker: ForwardWaker,
    /// `*const Yielder<Input<R>, Y>` of the fiber's root, type-erased.
    yielder: *const (),
    /// `TypeId::of::<(Y, R)>()`: checked by [`suspend`] before the cast.
    tag: TypeId,
    /// The scoped job borrowing this fiber's stack, while one runs.
    scoped: Cell<Option<Arc<Completion>>>,
}

impl Header {
    pub(super) fn new<Y: 'static, R: 'static>(
        yielder: &Yielder<Input<R>, Y>,
        driver_waker: NonNull<Waker>,
    ) -> Header {
        Header {
            hooks: Cell::new(None),
            hooks_type: Cell::new(None),
            driver_waker: Cell::new(driver_waker),
            waker: ForwardWaker::new(),
            yielder: (yielder as *const Yielder<Input<R>, Y>).cast(),
            tag: TypeId::of::<(Y, R)>(),
            scoped: Cell::new(None),
        }
    }

    /// Attaches the hooks stored beside this header in the root frame.
    pub(super) fn attach<H: Hooks>(&self, hooks: &H) {
        self.hooks.set(Some(NonNull::from(hooks as &dyn Hooks)));
        self.hooks_type.set(Some(TypeId::of::<H>()));
    }

    /// The driver's waker for the resumption executing the fiber now.
    fn driver(&self) -> &Waker {
        // SAFETY: `driver_waker` targets either the static no-op waker or the
        // `&Waker` borrowed by the resume that executes this fiber now
        // (invariant on the field); that resume is below the caller on the
        // thread's stack, so the borrow is alive for the returned lifetime,
        // which callers (code on the fiber) only use to clone or compare.
        unsafe { self.driver_waker.get().as_ref() }
    }

    fn hooks(&self) -> &dyn Hooks {
        let p = self
            .hooks
            .get()
            .expect("suspendware: fiber hooks used before the root attached them");
        // SAFETY: `attach` stored a pointer to the hooks in the same root
        // frame as `self`; they are dropped after this header stops being
        // reachable (the root's `ExitGuard` clears `CURRENT` first).
        unsafe { p.as_ref() }
    }

    /// Makes this fiber the one running on the thread.
    pub(super) fn claim(&self) {
        CURRENT.with(|c| c.set(self));
    }

    /// The fiber is leaving for good: clear `CURRENT`, then let the hooks
    /// release what they hold while the context is still whole.
    pub(super) fn exit(&self) {
        CURRENT.with(|c| c.set(ptr::null()));
        self.hooks().exiting();
    }
}

/// The running fiber's header, if code of a fiber runs on this thread.
fn current<'a>() -> Option<&'a Header> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: a non-null `CURRENT` points at the header in the root frame of
    // the fiber executing on this thread (module docs). Callers are code on
    // that fiber, above its root frame, so the header outlives their use;
    // the lifetime is not allowed to escape the crate's fiber-side callers.
    unsafe { p.as_ref() }
}

/// Whether code runs on a fiber, and whether that fiber may suspend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Not on a suspendware fiber.
    Off,
    /// On a fiber that may suspend.
    Fiber,
    /// On a fiber whose thread is unwinding (a panic or a cancellation is
    /// passing): it must not suspend.
    Unwinding,
}

/// Where the calling code runs.
pub(crate) fn place() -> Place {
    if current().is_none() {
        Place::Off
    } else if std::thread::panicking() {
        Place::Unwinding
    } else {
        Place::Fiber
    }
}

/// Calls `f` with the running fiber's hooks if they are of type `H`.
#[inline]
pub(crate) fn with_hooks<H: Hooks, R>(f: impl FnOnce(&H) -> R) -> Option<R> {
    let h = current()?;
    if h.hooks_type.get() != Some(TypeId::of::<H>()) {
        return None;
    }
    let p = h.hooks.get()?.cast::<H>();
    // SAFETY: `hooks_type` says the attached hooks are an `H` (both set
    // together by `attach`), so the thin pointer targets a live `H` in the
    // root frame, alive while code of this fiber runs (as in `hooks`).
    Some(f(unsafe { p.as_ref() }))
}

/// Calls `f` with the waker that code on the running fiber polls futures
/// with: a waker owned by the fiber that always wakes the driver's latest
/// waker, so it stays valid across every suspension of the fiber.
pub(crate) fn with_waker<R>(f: impl FnOnce(&Waker) -> R) -> Option<R> {
    let h = current()?;
    Some(f(h.waker.get(h.driver())))
}

/// Suspends the running fiber, handing `what` to its driver, and returns
/// what the driver resumes it with.
///
/// Refuses off-fiber and while the thread unwinds (see the module docs),
/// returning where the caller runs (never `Place::Fiber`); `what` is then
/// dropped.
/// Raises a [`Cancelled`] unwind when the driver cancels the fiber.
#[inline(always)] // one frame with its callers (`get_response`'s end)
pub(crate) fn suspend<Y: 'static, R: 'static>(what: Y) -> Result<R, Place> {
    // `place()`, with the header it finds kept (one `CURRENT` read).
    let Some(h) = current() else {
        return Err(Place::Off);
    };
    if std::thread::panicking() {
        return Err(Place::Unwinding);
    }
    assert!(
        h.tag == TypeId::of::<(Y, R)>(),
        "suspendware: a fiber was suspended with types it does not carry"
    );
    // SAFETY: `tag` proves `yielder` was erased from a
    // `Yielder<Input<R>, Y>`; corosensei keeps that yielder alive for the
    // whole life of the root frame, which is below us.
    let yielder = unsafe { &*h.yielder.cast::<Yielder<Input<R>, Y>>() };
    h.hooks().suspending();
    // A suspension with a scoped job in flight: tell the driver's `Fiber`.
    let job = h.scoped.take();
    if let Some(j) = &job {
        PENDING.with(|p| p.set(Some(j.clone())));
        HAS_PENDING.with(|h| h.set(true));
    }
    h.scoped.set(job);
    let reclaim = Reclaim(h);
    // For the driver's prefetch of this frame before the resume.
    super::warm::note_suspension(std::ptr::addr_of!(reclaim) as usize);
    let input = yielder.suspend(what);
    h.driver_waker.set(input.waker);
    h.waker.refresh(h.driver());
    drop(reclaim);
    match input.cmd {
        Cmd::Go(r) => Ok(r),
        Cmd::Cancel => std::panic::resume_unwind(Box::new(Cancelled)),
    }
}

/// Takes the thread back for the fiber when control returns out of
/// `yielder.suspend`: normally, or as corosensei's forced unwind passes
/// through it (then the driver's waker is stale: park it on the no-op one).
struct Reclaim<'a>(&'a Header);

impl Drop for Reclaim<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.driver_waker.set(NonNull::from(Waker::noop()));
        }
        self.0.claim();
        self.0.hooks().resumed();
    }
}

/// The thread's fiber pointer, saved by the driver around a resumption.
#[derive(Clone, Copy)]
pub(super) struct Saved(*const Header);

pub(super) fn save() -> Saved {
    Saved(CURRENT.with(|c| c.get()))
}

pub(super) fn restore(s: Saved) {
    CURRENT.with(|c| c.set(s.0));
}
