//! loom models of the oneshot (Adapt's reply, the runtime's reply; the
//! models drive it as a fiber waiting on a pool thread's answer would).
#![allow(unused_imports)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::handoff::{oneshot, Closed};
use crate::loom_support::*;

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
