//! Where a connection is in its current request, so that shutdown knows
//! which connections to wait for.
//!
//! Only a request handed to the pipeline gets the shutdown grace; a
//! connection that is idle, still reading a request head (hyper would wait
//! for the rest of it) or still reading a body is closed at once. A
//! response counts as in flight until hyper has flushed its last byte:
//! hyper drops the response body once it has taken the last frame, and
//! calls the socket's `poll_flush` only when its own write buffer is empty.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::rt::{Read, ReadBufCursor, Write};

use crate::body::Body;

/// A connection's phase; transitions in the order listed, then back to
/// `Idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No request, or a head still arriving.
    Idle,
    /// The head was read; the body is being collected.
    Body,
    /// The pipeline has the request.
    Pipeline,
    /// The response is being written (hyper holds its body).
    Writing,
    /// The response body is in hyper's write buffer; set back to `Idle` by
    /// the next completed flush.
    Flushing,
}

/// A connection's shared phase cell (one connection, one thread).
#[derive(Debug, Clone)]
pub(crate) struct ConnPhase(Rc<Cell<Phase>>);

impl ConnPhase {
    pub(crate) fn new() -> Self {
        ConnPhase(Rc::new(Cell::new(Phase::Idle)))
    }

    pub(crate) fn set(&self, p: Phase) {
        self.0.set(p);
    }

    /// Whether a request was handed to the pipeline and its response has
    /// not been flushed yet: such a connection gets the shutdown grace.
    pub(crate) fn in_flight(&self) -> bool {
        matches!(
            self.0.get(),
            Phase::Pipeline | Phase::Writing | Phase::Flushing
        )
    }

    /// Wraps a response body: dropping it (hyper took the last frame, or
    /// gave up) moves the phase to `Flushing`.
    pub(crate) fn track_body(&self, body: Body) -> TrackedBody {
        self.set(Phase::Writing);
        TrackedBody {
            inner: body,
            phase: self.clone(),
        }
    }
}

/// A response body whose drop marks the response as handed to hyper.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: Body,
    phase: ConnPhase,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.phase.set(Phase::Flushing);
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket; a completed flush while `Flushing` means the
/// response is out (`Idle`).
#[derive(Debug)]
pub(crate) struct FlushWatch<T> {
    inner: T,
    phase: ConnPhase,
}

impl<T> FlushWatch<T> {
    pub(crate) fn new(inner: T, phase: ConnPhase) -> Self {
        FlushWatch { inner, phase }
    }
}

impl<T: Read + Unpin> Read for FlushWatch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for FlushWatch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) && self.phase.0.get() == Phase::Flushing {
            self.phase.set(Phase::Idle);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
