//! The hand-off between an Adapt-mode held thread and the async side of its
//! segment.
//!
//! ```text
//!  held thread (blocking pool)                  async side (the segment's future)
//!  ───────────────────────────                  ─────────────────────────────────
//!  get_response(req):
//!    push Inner(req, reply_tx) ──queue──▶  poll: receive, run the inner part
//!    reply_rx.recv_blocking()  ◀─oneshot── reply_tx.send(resp)
//!  segment done:
//!    push Done(resp)           ──queue──▶  poll: Ready(Some(resp))
//!  thread ends without Done    ──close──▶  poll: Ready(None)
//! ```
//!
//! Both directions are the crate's loom-checked hand-offs
//! ([`crate::handoff::queue`] and [`crate::handoff::oneshot`]).
//!
//! Cancellation: dropping the [`AsyncEnd`] drops its queue end (a later push
//! fails) and the reply sender of an inner part in progress (the blocked
//! `recv_blocking` returns `Closed`). Either way [`ThreadLink::inner`]
//! returns `Err(Closed)` and the thread unwinds; it never stays blocked.
//! A thread blocked in `wait` instead (on a future of its own) learns it
//! from [`ThreadLink::cancel_signal`], which the dropped end resolves.
//!
//! Generic over the request and response so the loom models drive this
//! code with stand-in values.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::body::{Request, Response};
use crate::handoff::queue::{self, QueueRx, QueueTx};
use crate::handoff::{self, Closed};

/// Messages from the held thread to the async side.
pub(crate) enum ToAsync<Req, Resp> {
    /// Run the inner part with this request; answer on the sender.
    Inner(Req, handoff::Sender<Resp>),
    /// The segment finished.
    Done(Resp),
}

/// Creates a link: the held thread's end and the async side's.
pub(crate) fn link<Req, Resp, F>() -> (ThreadLink<Req, Resp>, AsyncEnd<Req, Resp, F>) {
    let (tx, rx) = queue::queue();
    let (gone, cancelled) = handoff::oneshot();
    (
        ThreadLink {
            tx,
            cancelled: Some(cancelled),
        },
        AsyncEnd {
            rx,
            inner: None,
            _gone: gone,
        },
    )
}

/// The held thread's end. Dropping it without [`ThreadLink::done`] tells
/// the async side that the thread ended without a response.
pub(crate) struct ThreadLink<Req = Request, Resp = Response> {
    tx: QueueTx<ToAsync<Req, Resp>>,
    /// Resolves (`Err(Closed)`) when the async side is dropped: for a held
    /// thread blocked elsewhere than in `get_response` (in `wait`), taken
    /// by [`ThreadLink::cancel_signal`].
    cancelled: Option<handoff::Receiver<()>>,
}

impl<Req, Resp> ThreadLink<Req, Resp> {
    /// A future that resolves when the async side is gone (the request was
    /// cancelled, or the runtime is shutting down). `None` after the first
    /// call.
    pub(crate) fn cancel_signal(&mut self) -> Option<handoff::Receiver<()>> {
        self.cancelled.take()
    }

    /// Blocks this thread until the inner part answers `req`.
    /// `Err(Closed)`: the async side is gone (the request was cancelled).
    pub(crate) fn inner(&self, req: Req) -> Result<Resp, Closed> {
        let (reply_tx, reply_rx) = handoff::oneshot();
        if self.tx.push(ToAsync::Inner(req, reply_tx)).is_err() {
            return Err(Closed);
        }
        reply_rx.recv_blocking()
    }

    /// Hands the segment's response to the async side. If it is gone
    /// (cancelled), the response is dropped here, on this thread.
    pub(crate) fn done(self, resp: Resp) {
        let _ = self.tx.push(ToAsync::Done(resp));
    }
}

/// The async side's end: receives the thread's messages and runs inner
/// parts (futures of type `F`).
pub(crate) struct AsyncEnd<Req, Resp, F> {
    rx: QueueRx<ToAsync<Req, Resp>>,
    /// The inner part being run, and where its answer goes.
    inner: Option<(F, handoff::Sender<Resp>)>,
    /// Never sent on: dropped with this end, it resolves the thread's
    /// [`ThreadLink::cancel_signal`].
    _gone: handoff::Sender<()>,
}

impl<Req, Resp, F> AsyncEnd<Req, Resp, F>
where
    F: Future<Output = Resp> + Unpin,
{
    /// Drives the link: runs the inner part in progress and answers the
    /// thread with its result, then takes the thread's next message (an
    /// `Inner` starts `run(req)`). `Ready(Some(resp))` when the segment is
    /// done, `Ready(None)` when the thread ended without a response.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        mut run: impl FnMut(Req) -> F,
    ) -> Poll<Option<Resp>> {
        loop {
            if let Some((fut, _)) = &mut self.inner {
                let resp = match Pin::new(fut).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                let (_, reply) = self.inner.take().expect("inner present");
                // Err: the thread is gone (cannot happen while it waits on
                // this reply); nothing to do.
                let _ = reply.send(resp);
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(ToAsync::Inner(req, reply))) => {
                    self.inner = Some((run(req), reply));
                }
                Poll::Ready(Some(ToAsync::Done(resp))) => return Poll::Ready(Some(resp)),
                Poll::Ready(None) => return Poll::Ready(None),
            }
        }
    }
}

impl<Req, Resp> fmt::Debug for ThreadLink<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadLink").finish_non_exhaustive()
    }
}

impl<Req, Resp, F> fmt::Debug for AsyncEnd<Req, Resp, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncEnd")
            .field("running_inner", &self.inner.is_some())
            .finish()
    }
}
