//! The concurrency shim (tokio's pattern).
//!
//! Every primitive that crosses threads is imported from here. Under
//! `RUSTFLAGS="--cfg loom"` the types come from [`loom`], so the model tests in
//! `tests/loom.rs` exercise the crate's real hand-off code; otherwise they are
//! the std / `parking_lot` types used in production.

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

/// `Mutex::get_mut` with one signature for both back ends: exclusive
/// access, so no locking (no atomic operation) at all.
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
