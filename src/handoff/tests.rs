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
