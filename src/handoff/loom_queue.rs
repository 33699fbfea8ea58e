//! The queue (`src/handoff/queue.rs`): the runtime's job queues and Adapt
//! mode's thread→async messages.

use crate::handoff::queue::{queue, QueueRx};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::loom_support::Counted;

/// Everything the consumer gets until the queue reports closed.
fn drain<T>(rx: &mut QueueRx<T>) -> Vec<T> {
    loom::future::block_on(async {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        got
    })
}

/// A producer pushes two values while the consumer awaits them: both
/// arrive, in order. The producer keeps its end open, so each wake-up the
/// consumer needs comes from a push alone (a later close cannot mask a lost
/// one); a lost wake-up leaves `block_on` parked forever (loom: deadlock).
/// Then another thread drops the producer's end while the consumer waits:
/// the close wakes it with `None`.
///
/// Catches (each applied, seen failing, restored):
/// * `push` waking the consumer before its value is in the queue (take and
///   wake the waker in one critical section, append in a second one): the
///   woken consumer finds nothing and parks again -> deadlock;
/// * `close` setting the flag without waking the consumer -> deadlock.
#[test]
fn queue_push_vs_recv_fifo_then_closed() {
    loom::model(|| {
        let (tx, mut rx) = queue::<u32>();
        let producer = thread::spawn(move || {
            tx.push(1).unwrap();
            tx.push(2).unwrap();
            tx
        });
        assert_eq!(loom::future::block_on(rx.recv()), Some(1));
        assert_eq!(loom::future::block_on(rx.recv()), Some(2));
        let tx = producer.join().unwrap();
        let closer = thread::spawn(move || drop(tx));
        assert_eq!(loom::future::block_on(rx.recv()), None);
        closer.join().unwrap();
    });
}

/// The consumer drains with the producer dropping its end right after its
/// pushes: everything pushed arrives, in order, before `None`.
///
/// Catches: `poll_recv` checking `closed` before popping (`None` while a
/// value is still queued -> assertion); `close` not waking (deadlock).
#[test]
fn queue_drains_before_closed() {
    loom::model(|| {
        let (tx, mut rx) = queue::<u32>();
        let producer = thread::spawn(move || {
            tx.push(1).unwrap();
            tx.push(2).unwrap();
        });
        assert_eq!(drain(&mut rx), vec![1, 2]);
        producer.join().unwrap();
    });
}

/// Two producers share one end (as dispatchers share a worker's queue):
/// the consumer gets both values; the queue closes when the last reference
/// to the end goes.
#[test]
fn queue_two_producers() {
    loom::model(|| {
        let (tx, mut rx) = queue::<u32>();
        let tx = Arc::new(tx);
        let a = {
            let tx = tx.clone();
            thread::spawn(move || tx.push(1).unwrap())
        };
        let b = thread::spawn(move || tx.push(2).unwrap());
        let mut got = drain(&mut rx);
        got.sort_unstable();
        assert_eq!(got, vec![1, 2]);
        a.join().unwrap();
        b.join().unwrap();
    });
}

/// `close` races a push and a waiting consumer (the runtime's shutdown
/// cut-off): a push that returned `Ok` is received before `None`; one
/// refused after the close is not; the consumer is woken by the close.
///
/// Catches: `push` not checking `closed` (a value accepted after the
/// consumer saw `None` is never received -> assertion); `push` waking
/// before its value is queued (the value lands after the close).
#[test]
fn queue_close_vs_push_is_a_clean_cut() {
    loom::model(|| {
        let (tx, mut rx) = queue::<u32>();
        let tx = Arc::new(tx);
        let pusher = {
            let tx = tx.clone();
            thread::spawn(move || tx.push(7).is_ok())
        };
        let closer = {
            let tx = tx.clone();
            thread::spawn(move || tx.close())
        };
        let got = drain(&mut rx);
        let accepted = pusher.join().unwrap();
        closer.join().unwrap();
        if accepted {
            assert_eq!(got, vec![7], "a value accepted before the close was lost");
        } else {
            assert!(got.is_empty(), "a refused value was delivered");
        }
        assert!(tx.push(8).is_err(), "closed for good");
    });
}

/// The consumer is dropped (a cancelled Adapt request, a dead worker) while
/// a producer pushes: the value is dropped exactly once — by the producer
/// (refused) or with the queue's contents — and the producer learns that
/// nobody will receive it afterwards.
#[test]
fn queue_receiver_dropped_vs_push() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = queue::<Counted>();
        let value = Counted {
            value: 3,
            drops: drops.clone(),
        };
        let producer = thread::spawn(move || {
            let refused = match tx.push(value) {
                Ok(()) => false,
                Err(back) => {
                    assert_eq!(back.value, 3);
                    true
                }
            };
            (refused, tx)
        });
        drop(rx);
        let (_refused, tx) = producer.join().unwrap();
        assert_eq!(
            drops.load(Ordering::SeqCst),
            1,
            "value not dropped exactly once"
        );
        assert!(tx.is_closed());
    });
}
