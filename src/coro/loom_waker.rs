//! loom model of the forwarding waker's target: the owner thread re-points
//! it and wakes it in place without the lock while another thread wakes it
//! through the lock. loom checks every access to `latest` against the
//! others (an unordered write next to a read fails the model) and that
//! every wake reaches a driver waker.

use std::sync::Arc;
use std::task::Waker;

use loom::sync::atomic::Ordering;
use loom::thread;

use super::Forward;
use crate::loom_support::counting_waker;

#[test]
fn a_remote_wake_races_a_re_point_and_an_in_place_wake() {
    loom::model(|| {
        let (a, a_waker) = counting_waker();
        let (b, b_waker) = counting_waker();
        let fwd: Arc<Forward> = Forward::made_for(&a_waker);
        let own = Waker::from(fwd.clone());
        let remote = own.clone();
        let t = thread::spawn(move || remote.wake_by_ref());
        // The owner: a new driver waker, then a wake of its own.
        fwd.point_at(&b_waker);
        own.wake_by_ref();
        t.join().expect("remote waker");
        let (na, nb) = (a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst));
        // The owner's wake follows its re-point: it reaches `b`; the remote
        // one reaches whichever target it read, whole.
        assert!(nb >= 1, "the owner's wake reached the new target");
        assert_eq!(na + nb, 2, "both wakes reached a driver waker");
    });
}
