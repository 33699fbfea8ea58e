//! The coroutine room: all of the crate's `unsafe` but one lifetime
//! extension (`ArcBorrowing::new` in `src/future.rs`), and a leaf: it
//! imports nothing from the rest of the crate but the loom shim.
//!
//! * [`fiber`] wraps a corosensei coroutine on a guarded stack: a generic
//!   `Fiber<Y, R, T>` that runs `FnOnce() -> T`, suspends with `Y` and is
//!   resumed with `R` (as corosensei's `Coroutine<Input, Yield, Return>`),
//!   and its cancellation.
//! * [`current`] is the thread-local "which fiber runs here" pointer, the
//!   suspension point, and the hooks by which the code on a fiber attaches
//!   its own per-fiber data.
//! * [`waker`] is the fiber-owned waker that code on a fiber polls with.
//! * [`unwind`] holds the unwinds that are not panics ([`Cancelled`] and
//!   corosensei's forced unwind).
//! * [`overflow`] installs a `SIGSEGV`/`SIGBUS` handler that recognises a
//!   fault in the guard page of the fiber running on the faulting thread and
//!   reports it before aborting.
//! * [`warm`] prefetches a suspended fiber's stack before its driver resumes
//!   it, when the thread holds so many fibers that their stacks are cold.
//! * [`clock`] is the coarse clock the watchdog reads (and lets the
//!   watchdog's ticker thread leave a pinned creator's CPU).
#![allow(unsafe_code)]

pub(crate) mod clock;
pub(crate) mod current;
pub(crate) mod fiber;
#[cfg(all(test, loom))]
mod loom_scoped;
pub(crate) mod overflow;
pub(crate) mod scoped;
pub(crate) mod unwind;
pub(crate) mod waker;
mod warm;

#[cfg(all(test, not(loom)))]
mod tests;

pub(crate) use clock::{allow_every_cpu, coarse_now_ns};
pub(crate) use current::{place, suspend, with_hooks, with_waker, Hooks, Place};
pub(crate) use fiber::{Cancel, Fiber, Step};
pub use unwind::Cancelled;
pub(crate) use unwind::{contain, drop_payload, is_forced_unwind};
