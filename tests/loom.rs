//! loom models of the crate's cross-thread hand-offs, run on the real code
//! (`suspendware::__loom` re-exports it; it exists only under `cfg(loom)`).
//!
//! Run with `.ci/loom.sh`, i.e.
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --test loom`.
//!
//! loom cannot see a coroutine switch, so the models drive the hand-off
//! state machines around it with loom threads: the fiber's side is the
//! thread that polls (or blocks on) the receiver, the pool thread's side the
//! one that sends.
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use suspendware::__loom::{oneshot, Closed, PoolCore, TryAcquire};

/// A waker that counts its wake-ups.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (std::sync::Arc<CountingWaker>, Waker) {
    let w = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
    (w.clone(), Waker::from(w))
}

/// A value that counts its drops.
struct Counted {
    value: u32,
    drops: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- oneshot

/// The fiber polls the receiver (the first poll of `wait(rx)` in
/// `blocking()`) while the pool thread sends. If the poll returned Pending,
/// the waker it registered must have been woken, and the next poll yields
/// the value.
///
/// Catches (checked by applying each mutation, seeing this model fail, and
/// restoring the code):
/// * `Sender::send` waking before setting `SENT` (swap `shared.set(SENT)`
///   and `shared.wake_receiver()`): the sender finds no waker, the receiver
///   then registers and sees no `SENT` -> "lost wake-up" assertion;
/// * `Receiver::poll` reading the state before taking the waiter lock and
///   registering after it without a re-check: same lost wake-up;
/// * `Sender::send` storing the value after setting `SENT`: the receiver
///   sees `SENT` and finds no value (panics in `outcome`).
#[test]
fn oneshot_poll_vs_send_no_lost_wakeup() {
    loom::model(|| {
        let (tx, mut rx) = oneshot::<u32>();
        let (count, waker) = counting_waker();
        let sender = thread::spawn(move || tx.send(7).is_ok());
        let first = Pin::new(&mut rx).poll(&mut Context::from_waker(&waker));
        let sent = sender.join().unwrap();
        assert!(sent, "the receiver was alive, send must succeed");
        match first {
            Poll::Ready(v) => {
                assert_eq!(v, Ok(7));
                assert_eq!(
                    count.0.load(Ordering::SeqCst),
                    0,
                    "woken after it was ready"
                );
            }
            Poll::Pending => {
                assert_eq!(
                    count.0.load(Ordering::SeqCst),
                    1,
                    "lost wake-up: Pending and never woken"
                );
                let (_, noop) = counting_waker();
                let again = Pin::new(&mut rx).poll(&mut Context::from_waker(&noop));
                assert_eq!(again, Poll::Ready(Ok(7)));
            }
        }
    });
}

/// The receiver re-polls with a different waker (the driver's task moved
/// its waker) while the sender sends: the current waker is the one woken.
#[test]
fn oneshot_waker_replaced_vs_send() {
    loom::model(|| {
        let (tx, mut rx) = oneshot::<u32>();
        let (old_count, old) = counting_waker();
        let (new_count, new) = counting_waker();
        if Pin::new(&mut rx)
            .poll(&mut Context::from_waker(&old))
            .is_ready()
        {
            unreachable!("nothing was sent yet");
        }
        let sender = thread::spawn(move || tx.send(3).is_ok());
        let second = Pin::new(&mut rx).poll(&mut Context::from_waker(&new));
        assert!(sender.join().unwrap());
        let old_woken = old_count.0.load(Ordering::SeqCst);
        let new_woken = new_count.0.load(Ordering::SeqCst);
        match second {
            Poll::Ready(v) => assert_eq!(v, Ok(3)),
            Poll::Pending => {
                assert_eq!(
                    (old_woken, new_woken),
                    (0, 1),
                    "the replaced waker must be the one woken"
                );
            }
        }
    });
}

/// `blocking()` end to end on loom's executor: the fiber's `wait(rx)` is
/// `block_on(rx)`; a lost wake-up leaves it parked forever, which loom
/// reports as a deadlock.
#[test]
fn oneshot_block_on_vs_send() {
    loom::model(|| {
        let (tx, rx) = oneshot::<u32>();
        let sender = thread::spawn(move || tx.send(11).is_ok());
        assert_eq!(loom::future::block_on(rx), Ok(11));
        assert!(sender.join().unwrap());
    });
}

/// Adapt mode: a thread blocks in `recv_blocking` while another sends. A
/// lost notification leaves it parked forever (loom: deadlock).
///
/// Catches: `wake_receiver` called before `set(SENT)` in `send` (the
/// receiver then parks after the notification was sent).
#[test]
fn oneshot_recv_blocking_vs_send() {
    loom::model(|| {
        let (tx, rx) = oneshot::<u32>();
        let sender = thread::spawn(move || tx.send(5).is_ok());
        assert_eq!(rx.recv_blocking(), Ok(5));
        assert!(sender.join().unwrap());
    });
}

/// The sender is dropped unsent (the runtime dropped the blocking task)
/// while the receiver waits: it gets `Closed`, both as a future and as a
/// blocking call.
///
/// Catches: `Sender::drop` waking before setting `TX_DROPPED` (loom:
/// deadlock), and the unchecked `poll` registration described above.
#[test]
fn oneshot_sender_dropped_vs_receiver() {
    loom::model(|| {
        let (tx, rx) = oneshot::<u32>();
        let dropper = thread::spawn(move || drop(tx));
        assert_eq!(loom::future::block_on(rx), Err(Closed));
        dropper.join().unwrap();
    });
    loom::model(|| {
        let (tx, rx) = oneshot::<u32>();
        let dropper = thread::spawn(move || drop(tx));
        assert_eq!(rx.recv_blocking(), Err(Closed));
        dropper.join().unwrap();
    });
}

/// A cancelled request drops the receiver while the pool thread sends:
/// the value is dropped exactly once, either by `send`'s caller (it got it
/// back as `Err`) or by the receiver's drop, never both, never neither.
///
/// Catches: `Receiver::drop` taking the value without checking that `SENT`
/// was set before its `RX_DROPPED` (it can take a value that `send` stored
/// but had not published; `send` then sees `RX_DROPPED`, finds the slot
/// empty and panics).
#[test]
fn oneshot_receiver_dropped_vs_send() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = oneshot::<Counted>();
        let value = Counted {
            value: 9,
            drops: drops.clone(),
        };
        let sender = thread::spawn(move || match tx.send(value) {
            Ok(()) => true,
            Err(back) => {
                assert_eq!(back.value, 9, "send must give back its own value");
                false
            }
        });
        drop(rx);
        let delivered = sender.join().unwrap();
        // Both halves are gone now; the value must have been dropped by one
        // of them, not left for the last `Arc`.
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "value dropped {} times (delivered: {delivered})",
            drops.load(Ordering::SeqCst)
        );
    });
}

/// The receiver is polled (registers a waker) and then dropped while the
/// sender sends: no panic, value dropped once, waker released.
#[test]
fn oneshot_polled_then_dropped_vs_send() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = oneshot::<Counted>();
        let value = Counted {
            value: 1,
            drops: drops.clone(),
        };
        let (_, waker) = counting_waker();
        let sender = thread::spawn(move || tx.send(value).is_ok());
        let polled = Pin::new(&mut rx).poll(&mut Context::from_waker(&waker));
        drop(polled);
        drop(rx);
        sender.join().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    });
}

/// The worker's job waits for its caller to go away (`Sender::poll_closed`,
/// the `tx.closed()` branch of a dispatched job) while the caller drops its
/// `Dispatch` (the receiver): the sender's task is woken and sees it.
/// A lost wake-up leaves `block_on` parked forever (loom: deadlock).
///
/// Catches: `Receiver::drop` waking the `closed_waker` before setting
/// `RX_DROPPED` (deadlock); `poll_closed` reading the state before taking
/// its lock and registering without a re-check (deadlock).
#[test]
fn oneshot_poll_closed_vs_receiver_drop() {
    loom::model(|| {
        let (mut tx, rx) = oneshot::<u32>();
        let dropper = thread::spawn(move || drop(rx));
        loom::future::block_on(std::future::poll_fn(|cx| tx.poll_closed(cx)));
        dropper.join().unwrap();
        assert_eq!(tx.send(1), Err(1), "the receiver is gone");
    });
}

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

// ------------------------------------------------ queue, runtime, Adapt

#[path = "loom/adapt.rs"]
mod adapt;
#[path = "loom/queue.rs"]
mod queue;
#[path = "loom/runtime.rs"]
mod runtime;
