//! The hand-off on real threads (the loom models in `tests/loom.rs` explore
//! the interleavings; these check the plain std/parking_lot build).

use std::sync::Arc;

use super::{oneshot, Closed};

#[test]
fn value_crosses_to_a_blocked_thread() {
    let (tx, rx) = oneshot();
    let t = std::thread::spawn(move || rx.recv_blocking());
    assert_eq!(tx.send(5u32), Ok(()));
    assert_eq!(t.join().unwrap(), Ok(5));
}

#[test]
fn value_crosses_to_a_task() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (tx, rx) = oneshot();
    let t = std::thread::spawn(move || tx.send("hi"));
    assert_eq!(rt.block_on(rx), Ok("hi"));
    assert_eq!(t.join().unwrap(), Ok(()));
}

#[test]
fn dropped_sender_closes() {
    let (tx, rx) = oneshot::<u8>();
    drop(tx);
    assert_eq!(rx.recv_blocking(), Err(Closed));
    let (tx, rx) = oneshot::<u8>();
    std::thread::spawn(move || drop(tx));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(rx), Err(Closed));
}

#[test]
fn send_to_a_dropped_receiver_gives_the_value_back() {
    let (tx, rx) = oneshot();
    drop(rx);
    let value = Arc::new(());
    let back = tx.send(value.clone()).expect_err("the receiver is gone");
    assert!(Arc::ptr_eq(&back, &value));
}

#[test]
fn unclaimed_value_is_dropped_with_the_receiver() {
    let value = Arc::new(());
    let (tx, rx) = oneshot();
    tx.send(value.clone()).unwrap();
    assert_eq!(Arc::strong_count(&value), 2);
    drop(rx);
    assert_eq!(Arc::strong_count(&value), 1);
}

#[test]
fn sender_sees_the_receiver_go() {
    use std::future::poll_fn;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (mut tx, rx) = oneshot::<u8>();
    let t = std::thread::spawn(move || drop(rx));
    rt.block_on(poll_fn(|cx| tx.poll_closed(cx)));
    t.join().unwrap();
    assert_eq!(tx.send(1), Err(1));
}

#[test]
fn queue_delivers_in_order_across_threads_then_none() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (tx, mut rx) = super::queue::queue();
    let t = std::thread::spawn(move || {
        for i in 0..1000u32 {
            tx.push(i).unwrap();
        }
        // Dropping the sender closes the queue.
    });
    let got = rt.block_on(async {
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        got
    });
    t.join().unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

#[test]
fn queue_refuses_after_close_and_drains_first() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (tx, mut rx) = super::queue::queue();
    tx.push(1u8).unwrap();
    tx.close();
    assert!(tx.is_closed());
    assert_eq!(tx.push(2), Err(2));
    assert_eq!(rt.block_on(rx.recv()), Some(1));
    assert_eq!(rt.block_on(rx.recv()), None);
}

#[test]
fn queue_dropped_receiver_drops_queued_values_and_refuses() {
    let value = Arc::new(());
    let (tx, rx) = super::queue::queue();
    tx.push(value.clone()).unwrap();
    drop(rx);
    assert_eq!(Arc::strong_count(&value), 1);
    assert!(tx.push(value.clone()).is_err());
}

#[test]
fn wait_slot_wakes_the_waiter_when_the_condition_turns() {
    use std::future::poll_fn;
    use std::sync::atomic::{AtomicBool, Ordering};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let slot = Arc::new(super::wait_slot::WaitSlot::new());
    let flag = Arc::new(AtomicBool::new(false));
    let t = {
        let (slot, flag) = (slot.clone(), flag.clone());
        std::thread::spawn(move || {
            flag.store(true, Ordering::SeqCst);
            slot.notify();
        })
    };
    rt.block_on(poll_fn(|cx| {
        slot.poll_until(cx, || flag.load(Ordering::SeqCst))
    }));
    t.join().unwrap();
}
