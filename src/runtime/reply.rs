//! The one-shot channel a worker answers a dispatch through: the crate's
//! loom-checked hand-off ([`crate::handoff`]), wrapped to the two things
//! dispatch needs (answer, or notice the caller left).

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::handoff::{self, Receiver, Sender};

/// A fresh reply channel.
pub(crate) fn channel<T>() -> (ReplyTx<T>, ReplyRx<T>) {
    let (tx, rx) = handoff::oneshot();
    (ReplyTx(tx), ReplyRx(rx))
}

/// The worker's end.
pub(crate) struct ReplyTx<T>(Sender<T>);

impl<T> ReplyTx<T> {
    /// Delivers the value; gives it back if the caller already went away.
    pub(crate) fn send(self, value: T) -> Result<(), T> {
        self.0.send(value)
    }

    /// Completes when the caller drops its end (it no longer wants the
    /// answer, so the work can be cancelled).
    pub(crate) async fn closed(&mut self) {
        poll_fn(|cx| self.0.poll_closed(cx)).await
    }
}

/// The caller's end: a future of `Some(value)`, or `None` when the worker
/// dropped its end without answering.
pub(crate) struct ReplyRx<T>(Receiver<T>);

impl<T> Future for ReplyRx<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}
