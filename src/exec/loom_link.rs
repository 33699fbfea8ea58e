//! Adapt mode's hand-off (`src/thread/link.rs`): the held thread pushes
//! `Inner(request, reply)` and blocks in `recv_blocking`; the async side
//! receives it from the queue, runs the inner part and answers through the
//! oneshot. A loom thread stands for the held thread; the async side is
//! driven with `block_on` (or polled by hand, then dropped, to cancel).

use std::future::{pending, ready, Future, Pending, Ready};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::exec::link::{link, AsyncEnd};
use crate::handoff::Closed;
use loom::thread;

/// Drives the async side to its end with `run` as the inner part.
fn finish<F: Future<Output = u32> + Unpin>(
    end: &mut AsyncEnd<u32, u32, F>,
    mut run: impl FnMut(u32) -> F,
) -> Option<u32> {
    loom::future::block_on(std::future::poll_fn(|cx| end.poll(cx, &mut run)))
}

/// The held thread calls `get_response` twice (two inner round trips, as
/// a middleware may) and then finishes the segment; the async side answers
/// each and gets the final response. A lost wake-up on either side hangs a
/// `recv_blocking` or the `block_on` (loom: deadlock).
///
/// Catches: `push` waking before its value is queued (deadlock);
/// `poll_recv` reporting `None` before the queue is drained (assertion).
#[test]
fn adapt_thread_blocks_async_answers() {
    loom::model(|| {
        let (link, mut end) = link::<u32, u32, Ready<u32>>();
        let held = thread::spawn(move || {
            let a = link.inner(1)?;
            let b = link.inner(a + 1)?;
            link.done(b + 100);
            Ok::<_, Closed>((a, b))
        });
        let out = finish(&mut end, |req| ready(req * 10));
        assert_eq!(held.join().unwrap(), Ok((10, 110)));
        assert_eq!(out, Some(210));
    });
}

/// The held thread ends without a response (its link dropped, e.g. the
/// blocking task was dropped): the async side gets `None`, not a hang.
#[test]
fn adapt_thread_gone_without_response() {
    loom::model(|| {
        let (link, mut end) = link::<u32, u32, Ready<u32>>();
        let held = thread::spawn(move || drop(link));
        assert_eq!(finish(&mut end, ready), None);
        held.join().unwrap();
    });
}

/// Cancellation: the async side is polled once (it may or may not have
/// received the request and started the inner part, which never finishes)
/// and is then dropped, as when the request's future is dropped. The held
/// thread's `get_response` must return `Closed` — its push refused, or its
/// reply sender dropped while it blocks — and never stay blocked (loom:
/// deadlock).
///
/// Catches (each applied, seen failing, restored): `QueueTx::push` not
/// checking `closed`, and `push` waking before its value is queued — in
/// both the request lands in a queue nobody reads, its reply sender is
/// never dropped, and the thread blocks forever (loom: deadlock).
#[test]
fn adapt_async_side_dropped_closes_the_thread() {
    loom::model(|| {
        let (link, mut end) = link::<u32, u32, Pending<u32>>();
        let held = thread::spawn(move || link.inner(4));
        let polled = end.poll(&mut Context::from_waker(Waker::noop()), |_| pending());
        assert_eq!(polled, Poll::Pending, "the inner part never finishes");
        drop(end);
        assert_eq!(held.join().unwrap(), Err(Closed));
    });
}

/// The async side answers while the held thread's request is still being
/// pushed, with the inner part boxed like the real one: the answer reaches
/// the thread, which then finishes.
#[test]
fn adapt_boxed_inner_part() {
    type Boxed = Pin<Box<dyn Future<Output = u32>>>;
    loom::model(|| {
        let (link, mut end) = link::<u32, u32, Boxed>();
        let held = thread::spawn(move || {
            let r = link.inner(3).unwrap();
            link.done(r);
        });
        let out = finish(&mut end, |req| Box::pin(async move { req + 1 }));
        held.join().unwrap();
        assert_eq!(out, Some(4));
    });
}

/// A held thread blocked in `wait` (not in `get_response`) waits on its
/// link's cancel signal beside its own future: when the async side is
/// dropped, the signal must resolve (`Closed`) and wake the thread, whether
/// the drop comes before or after the thread starts waiting.
///
/// Catches: a signal whose sender the `AsyncEnd` does not keep (it resolves
/// while the end is alive: the first assertion), or one whose sender
/// outlives the end (it never resolves: loom deadlock).
#[test]
fn adapt_thread_waiting_elsewhere_learns_of_the_cancellation() {
    loom::model(|| {
        let (mut link, end) = link::<u32, u32, Ready<u32>>();
        let mut cancelled = link.cancel_signal().expect("taken once");
        assert!(link.cancel_signal().is_none(), "a second take gets none");
        assert!(
            cancelled.try_recv().is_none(),
            "not cancelled while the async side lives"
        );
        let held = thread::spawn(move || {
            let _link = link;
            loom::future::block_on(cancelled)
        });
        drop(end);
        assert_eq!(held.join().unwrap(), Err(Closed));
    });
}
