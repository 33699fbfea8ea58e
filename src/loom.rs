//! The concurrency shim (tokio's pattern).
//!
//! Every primitive that crosses threads is imported from here. Under
//! `RUSTFLAGS="--cfg loom"` the types come from `loom`, so the models
//! (`#[cfg(loom)]` unit tests beside the code, run by `.ci/loom.sh`) exercise
//! the crate's real code; otherwise they are the std / `parking_lot` types
//! used in production.

#[cfg(not(loom))]
pub(crate) mod sync {
    pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
    pub(crate) use std::sync::Arc;

    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }
}

#[cfg(loom)]
pub(crate) mod sync {
    pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};

    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    }
}

/// An `UnsafeCell` whose every access goes through a closure (loom's API),
/// so that under loom each access is checked against the others.
#[cfg(not(loom))]
pub(crate) mod cell {
    /// `std::cell::UnsafeCell` with loom's access methods.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Calls `f` with a pointer for reading the value.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Calls `f` with a pointer for writing the value.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
pub(crate) mod cell {
    pub(crate) use loom::cell::UnsafeCell;
}

/// A number that identifies the calling thread among the threads alive now
/// (the address of a one-byte thread-local: one `fs`-relative address
/// computation, where `thread::current().id()` touches a reference count).
/// A thread that has exited may pass its number on to a new thread.
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn thread_token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

/// Under loom, model threads share one OS thread: a loom thread-local.
#[cfg(loom)]
pub(crate) fn thread_token() -> usize {
    loom::thread_local! {
        static TOKEN: u8 = 0;
    }
    TOKEN.with(|t| std::ptr::from_ref(t) as usize)
}

/// `Mutex::lock` with one signature for both back ends (loom's returns a
/// `LockResult`, parking_lot's the guard itself).
pub(crate) fn lock<T>(m: &sync::Mutex<T>) -> sync::MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        m.lock()
    }
    #[cfg(loom)]
    {
        m.lock().expect("suspendware: a lock holder panicked")
    }
}

/// `Mutex::get_mut` with one signature for both back ends: the value of a
/// mutex the caller holds exclusively (e.g. in a `Drop`), without locking.
pub(crate) fn get_mut<T>(m: &mut sync::Mutex<T>) -> &mut T {
    #[cfg(not(loom))]
    {
        m.get_mut()
    }
    #[cfg(loom)]
    {
        m.get_mut().expect("suspendware: a lock holder panicked")
    }
}

/// `Condvar::wait` with one signature for both back ends: releases the lock
/// of `guard` while parked and returns it re-locked. May wake spuriously.
pub(crate) fn condvar_wait<'a, T>(
    cv: &sync::Condvar,
    guard: sync::MutexGuard<'a, T>,
) -> sync::MutexGuard<'a, T> {
    #[cfg(not(loom))]
    {
        let mut guard = guard;
        cv.wait(&mut guard);
        guard
    }
    #[cfg(loom)]
    {
        cv.wait(guard).expect("suspendware: a lock holder panicked")
    }
}
