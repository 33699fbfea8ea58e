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
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

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
///
/// It also bounds how long a write may make no progress (`write_timeout`):
/// a client that stops reading its response fills the socket's buffers and
/// leaves the write pending; past the timeout with not one byte accepted,
/// the write fails (`TimedOut`) and hyper closes the connection, so the
/// client cannot keep its slot (and the response's buffer) for good.
/// Without it, a few such clients held every slot, and every other client
/// was answered 503 (`server_hostile_paths`). The timer exists only while
/// a write is pending: the common write that completes at once allocates
/// and arms nothing.
#[derive(Debug)]
pub(crate) struct FlushWatch<T> {
    inner: T,
    phase: ConnPhase,
    write_timeout: Duration,
    /// Armed when a write (or flush) first returns `Pending`; dropped at
    /// the next progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The end of the connection: its write side is shut, then what the
    /// client still sends is read and discarded until it closes or
    /// [`LINGER`] passes (see `poll_shutdown`).
    closing: Option<Closing>,
}

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, waiting for it to close first.
const LINGER: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Closing {
    write_shut: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<T> FlushWatch<T> {
    pub(crate) fn new(inner: T, phase: ConnPhase, write_timeout: Duration) -> Self {
        FlushWatch {
            inner,
            phase,
            write_timeout,
            stall: None,
            closing: None,
        }
    }

    /// Passes a write's (or flush's) result through, failing a pending one
    /// that has made no progress for `write_timeout`.
    fn bound<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stall = None;
            return r;
        }
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.stall = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client accepted no response bytes within the server's write_timeout",
                )))
            }
        }
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

impl<T: Read + Write + Unpin> Write for FlushWatch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.bound(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.bound(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) && self.phase.0.get() == Phase::Flushing {
            self.phase.set(Phase::Idle);
        }
        self.bound(cx, r)
    }

    /// Closes gently ("lingering close"): shuts the write side (the FIN
    /// goes after the response's last byte), then reads and discards what
    /// the client still sends until it closes, at most [`LINGER`]. Closing a
    /// socket whose receive queue holds unread bytes (the rest of a request
    /// the server will not read, a pipelined one) makes the kernel send a
    /// reset and drop what the send buffer still holds: a response counted
    /// as served arrived cut off (`server_hostile_paths`).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let closing = this.closing.get_or_insert_with(|| Closing {
            write_shut: false,
            deadline: Box::pin(tokio::time::sleep(LINGER)),
        });
        if !closing.write_shut {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            closing.write_shut = true;
        }
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        loop {
            if closing.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = hyper::rt::ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, buf.unfilled()) {
                // End of stream: the client closed; nothing can reset now.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
