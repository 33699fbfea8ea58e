//! loom models of the stack pool's counters and wake-ups (`PoolCore`).
#![allow(unused_imports)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::loom_support::*;
use crate::stack::{Enqueued, Grant, PoolCore, TryAcquire};

// ------------------------------------------------------------- stack pool

/// A core with `max` slots whose `waiters` counter already has a SeqCst
/// history (a waiter came and went).
///
/// loom treats SeqCst loads like Acquire loads, except that one cannot
/// return a SeqCst store older than another SeqCst store to the same
/// atomic. The counters' initial values are stored by `new` (not SeqCst),
/// so without this history loom would let `release` read the initial 0
/// after `add_waiter`'s SeqCst increment, a reordering real SeqCst forbids
/// (loom README, "Unsupported features"; tokio-rs/loom#180).
fn core_with_history(max: usize) -> Arc<PoolCore<usize>> {
    let core = Arc::new(PoolCore::new(max));
    core.add_waiter();
    core.remove_waiter();
    core
}

/// Takes a slot for a stand-in stack, allocating `next_id` when the free
/// list is empty, as `StackPool::try_acquire` does.
fn take(core: &PoolCore<usize>, next_id: &AtomicUsize) -> Option<usize> {
    match core.try_acquire() {
        TryAcquire::Reused(s) => Some(s),
        TryAcquire::Allocate => {
            core.allocated();
            Some(next_id.fetch_add(1, Ordering::SeqCst))
        }
        TryAcquire::Full => None,
    }
}

/// One stack, one holder releasing it, one request waiting for it (what
/// `StackPool::acquire` does: `try_acquire` fails, `add_waiter`, retry).
/// Either the retry gets the stack or `release` reports that a waiter must
/// be woken; the woken waiter's next retry gets it. No stack is allocated
/// twice: `max` is 1 and the stack is reused.
///
/// Catches (checked by applying the mutation, seeing the model fail with
/// "lost wake-up", restoring): `PoolCore::release` reading `waiters`
/// before decrementing `in_use`.
#[test]
fn pool_release_wakes_waiter() {
    loom::model(|| {
        let core = core_with_history(1);
        let ids = Arc::new(AtomicUsize::new(0));
        let held = take(&core, &ids).expect("an empty pool has a slot");
        let holder = {
            let core = core.clone();
            thread::spawn(move || core.release(held))
        };
        // The waiting request.
        let mut got = take(&core, &ids);
        let mut registered = false;
        if got.is_none() {
            core.add_waiter();
            registered = true;
            got = take(&core, &ids);
        }
        let must_wake = holder.join().unwrap();
        if got.is_none() {
            assert!(
                must_wake,
                "lost wake-up: the waiter's retry failed and release did not ask to wake it"
            );
            got = take(&core, &ids); // what the woken waiter does
        }
        if registered {
            core.remove_waiter();
        }
        let stack = got.expect("the released stack must be available to the woken waiter");
        assert_eq!(
            stack, 0,
            "the stack must be reused, not a second one allocated"
        );
        let stats = core.stats();
        assert_eq!((stats.in_use, stats.allocated, stats.waiting), (1, 1, 0));
        let _ = core.release(stack);
        assert!(core.stats().is_whole());
    });
}

/// A request reserved the last slot but failed to map its stack
/// (`cancel_slot`) while another waits: same no-lost-wake-up rule.
///
/// Catches (checked like the model above): `cancel_slot` reading
/// `waiters` before decrementing `in_use`.
#[test]
fn pool_cancel_slot_wakes_waiter() {
    loom::model(|| {
        let core = core_with_history(1);
        let ids = Arc::new(AtomicUsize::new(0));
        match core.try_acquire() {
            TryAcquire::Allocate => {}
            _ => unreachable!("an empty pool reserves a slot to allocate"),
        }
        let failer = {
            let core = core.clone();
            thread::spawn(move || core.cancel_slot())
        };
        let mut got = take(&core, &ids);
        let mut registered = false;
        if got.is_none() {
            core.add_waiter();
            registered = true;
            got = take(&core, &ids);
        }
        let must_wake = failer.join().unwrap();
        if got.is_none() {
            assert!(must_wake, "lost wake-up after a failed allocation");
            got = take(&core, &ids);
        }
        if registered {
            core.remove_waiter();
        }
        let stack = got.expect("the freed slot must be available");
        let stats = core.stats();
        assert_eq!((stats.in_use, stats.allocated, stats.waiting), (1, 1, 0));
        let _ = core.release(stack);
        assert!(core.stats().is_whole());
    });
}

/// Two requests acquire and release concurrently on a pool of 1 slot while
/// the main thread holds nothing: no stack is held by two requests at once,
/// `in_use` never exceeds `max`, and at the end every allocated stack is in
/// the free list exactly once.
#[test]
fn pool_counters_consistent() {
    loom::model(|| {
        let core = Arc::new(PoolCore::<usize>::new(1));
        let ids = Arc::new(AtomicUsize::new(0));
        let busy: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let worker =
            |core: Arc<PoolCore<usize>>, ids: Arc<AtomicUsize>, busy: Arc<[AtomicBool; 2]>| {
                move || {
                    if let Some(s) = take(&core, &ids) {
                        assert!(s < 2, "more stacks allocated than requests");
                        assert!(
                            !busy[s].swap(true, Ordering::SeqCst),
                            "stack {s} handed to two requests"
                        );
                        assert!(core.stats().in_use <= 1, "in_use above max");
                        busy[s].store(false, Ordering::SeqCst);
                        let _ = core.release(s);
                        true
                    } else {
                        false
                    }
                }
            };
        let a = thread::spawn(worker(core.clone(), ids.clone(), busy.clone()));
        let b_ran = worker(core.clone(), ids.clone(), busy.clone())();
        let a_ran = a.join().unwrap();
        assert!(
            a_ran || b_ran,
            "with one slot and two requests, at least one gets it"
        );
        let stats = core.stats();
        assert_eq!(stats.in_use, 0);
        assert!(stats.is_whole(), "stacks lost: {stats:?}");
        let allocated = ids.load(Ordering::SeqCst);
        assert_eq!(
            core.trim(),
            allocated,
            "every allocated stack is back in the free list"
        );
        assert_eq!(
            allocated, 1,
            "one slot: the second request reuses the first stack"
        );
    });
}

/// Two requests wait for the single stack of a pool while its holder
/// releases it: at most one gets it; if neither retry got it, `release`
/// asked for a wake-up; the counters match what the requests hold.
///
/// A waiter whose retry failed stays registered (it would be waiting on
/// the pool's `Notify`); it unregisters after the check, as
/// `StackPool::acquire`'s guard does when it leaves.
#[test]
fn pool_two_waiters_one_release() {
    loom::model(|| {
        let core = core_with_history(1);
        let ids = Arc::new(AtomicUsize::new(0));
        let held = take(&core, &ids).expect("an empty pool has a slot");
        let waiter = |core: Arc<PoolCore<usize>>, ids: Arc<AtomicUsize>| {
            move || match take(&core, &ids) {
                Some(s) => (Some(s), false),
                None => {
                    core.add_waiter();
                    (take(&core, &ids), true)
                }
            }
        };
        let a = thread::spawn(waiter(core.clone(), ids.clone()));
        let b = thread::spawn(waiter(core.clone(), ids.clone()));
        let must_wake = core.release(held);
        let (got_a, reg_a) = a.join().unwrap();
        let (got_b, reg_b) = b.join().unwrap();
        assert!(
            got_a.is_none() || got_b.is_none(),
            "one stack handed to two requests"
        );
        assert!(
            got_a.unwrap_or(0) == 0 && got_b.unwrap_or(0) == 0,
            "the one stack is reused"
        );
        if got_a.is_none() && got_b.is_none() {
            assert!(
                must_wake,
                "lost wake-up: a free stack and two waiters, none woken"
            );
        }
        for registered in [reg_a, reg_b] {
            if registered {
                core.remove_waiter();
            }
        }
        let holding = usize::from(got_a.is_some()) + usize::from(got_b.is_some());
        let stats = core.stats();
        assert_eq!(
            (stats.in_use, stats.allocated, stats.waiting),
            (holding, 1, 0)
        );
        assert_eq!(stats.idle, 1 - holding);
    });
}

// ------------------------------------------------ queue, runtime, Adapt
/// The trimmer takes idle stacks out of the free list while a request
/// acquires and releases: a stack is either trimmed (and never handed
/// out again) or handed out (and never trimmed while held); the counters
/// stay consistent (`allocated` = free + held, lowered under the free
/// list's lock so `stats` never sees a trimmed stack as missing); a
/// waiter's wake-up rule is unaffected (trimming frees no slot).
///
/// Stand-in stacks are ids; "idle long enough" is every free stack
/// (`now = u64::MAX`, `idle_ns = 0`), so the race is all that varies.
#[test]
fn pool_trim_vs_acquire() {
    loom::model(|| {
        let core = core_with_history(2);
        let ids = Arc::new(AtomicUsize::new(0));
        // Two stacks exist, both free.
        let a = take(&core, &ids).unwrap();
        let b = take(&core, &ids).unwrap();
        let _ = core.release(a);
        let _ = core.release(b);
        let trimmer = {
            let core = core.clone();
            thread::spawn(move || {
                let gone = core.trim_idle(u64::MAX, 0, 0);
                let s = core.stats();
                assert!(s.idle <= s.allocated, "stats saw a trimmed stack: {s:?}");
                gone
            })
        };
        // The request.
        let held = take(&core, &ids).expect("two slots, none in use");
        let s = core.stats();
        assert!(s.in_use == 1 && s.idle <= s.allocated, "{s:?}");
        let gone = trimmer.join().unwrap();
        assert!(!gone.contains(&held), "stack {held} trimmed while in use");
        let _ = core.release(held);
        let s = core.stats();
        assert!(s.is_whole(), "{s:?}");
        // Every stack ever made is either trimmed or free, once.
        let made = ids.load(Ordering::SeqCst);
        assert_eq!(s.allocated + gone.len(), made, "{s:?}, trimmed {gone:?}");
        let mut all: Vec<usize> = core.trim_idle(u64::MAX, 0, 0);
        all.extend(gone);
        all.sort_unstable();
        assert_eq!(
            all,
            (0..made).collect::<Vec<_>>(),
            "a stack lost or duplicated"
        );
    });
}

// ------------------------------------------------------- hand-off queue

/// Full pool: the holder releases its stack while another request joins
/// the hand-off queue (`StackPool::acquire`'s second phase). Exactly one
/// of these happens: the join finds the slot free (`Granted`), or the
/// release hands the stack to the queued request (its receiver has it).
/// Never a queued request beside a free slot; no stack allocated twice.
///
/// Catches (checked by applying the mutation, seeing the model fail,
/// restoring): `release_at` freeing the slot after dropping the lock
/// ("a queued request beside a free slot").
#[test]
fn pool_release_hands_to_queued() {
    loom::model(|| {
        let core = core_with_history(1);
        let ids = Arc::new(AtomicUsize::new(0));
        let held = take(&core, &ids).expect("an empty pool has a slot");
        let holder = {
            let core = core.clone();
            thread::spawn(move || {
                let _ = core.release(held);
            })
        };
        let got = match core.enqueue() {
            Enqueued::Granted(Grant::Stack(s)) => s,
            Enqueued::Granted(Grant::Slot) => unreachable!("the slot's stack was released"),
            Enqueued::Waiting(_, rx) => {
                holder.join().unwrap();
                let s = core.stats();
                assert_eq!(s.in_use, 1, "a queued request beside a free slot: {s:?}");
                match rx.recv_blocking() {
                    Ok(Grant::Stack(s)) => {
                        let _ = core.release(s);
                        assert!(core.stats().is_whole());
                        return;
                    }
                    other => panic!("the released stack must reach the queue: {other:?}"),
                }
            }
        };
        holder.join().unwrap();
        assert_eq!(got, 0, "the stack is reused");
        let _ = core.release(got);
        let s = core.stats();
        assert!(s.is_whole() && s.waiting == 0, "{s:?}");
    });
}

/// A queued request leaves (its request was cancelled, or its deadline
/// passed) while the holder releases: either it left first (nothing was
/// granted; the release freed the slot) or the grant reached it first (its
/// receiver holds the stack, which it gives back). No slot is lost.
#[test]
fn pool_withdraw_vs_release() {
    loom::model(|| {
        let core = core_with_history(1);
        let ids = Arc::new(AtomicUsize::new(0));
        let held = take(&core, &ids).expect("an empty pool has a slot");
        let Enqueued::Waiting(ticket, mut rx) = core.enqueue() else {
            unreachable!("the only slot is held");
        };
        let holder = {
            let core = core.clone();
            thread::spawn(move || {
                let _ = core.release(held);
            })
        };
        if !core.withdraw(ticket) {
            match rx.try_recv() {
                Some(Ok(Grant::Stack(s))) => {
                    let _ = core.release(s);
                }
                other => panic!("granted but not delivered: {other:?}"),
            }
        }
        holder.join().unwrap();
        let s = core.stats();
        assert!(s.is_whole() && s.waiting == 0, "a slot lost: {s:?}");
    });
}
