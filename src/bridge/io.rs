//! `SyncIo`: a tokio stream as `std::io::Read + Write` for sync code on a
//! fiber, suspending the fiber while the stream is not ready (as Java's
//! virtual threads park the virtual thread, not its carrier).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::bridge::wait;
use crate::coro::{self, Place};

/// A tokio `AsyncRead`/`AsyncWrite` stream usable by blocking-style code:
/// `std::io::Read` and `std::io::Write` whose calls suspend the running
/// fiber (not its thread) until the stream is ready, so unmodified sync
/// clients generic over `Read + Write` (a websocket client, a database
/// driver's wire protocol) run on fibers without holding threads.
///
/// Each `read`, `write` and `flush` is one [`wait`] on the
/// stream's `AsyncReadExt::read`, `AsyncWriteExt::write` or `flush`; they
/// never return `WouldBlock`. For `BufRead`, wrap it in
/// `std::io::BufReader` (and writes in `std::io::BufWriter`): buffering is
/// left to std so the wrapper adds no copy of its own.
///
/// On a held thread (Adapt) or in a hop (ThreadHop) the calls block that
/// thread, as `wait` does there.
///
/// ```no_run
/// use std::io::{Read, Write};
/// use suspendware::io::SyncIo;
///
/// // In sync middleware, on a fiber:
/// let tcp = suspendware::wait(tokio::net::TcpStream::connect("127.0.0.1:6379")).unwrap();
/// let mut conn = SyncIo::new(tcp);
/// conn.write_all(b"PING\r\n").unwrap(); // suspends the fiber while the socket is full
/// let mut buf = [0; 7];
/// conn.read_exact(&mut buf).unwrap(); // suspends the fiber until the reply comes
/// ```
///
/// # Panics
/// Reading, writing or flushing off-fiber (async code, plain threads),
/// with the same advice as [`wait`]: use the stream's async
/// methods with `.await` there.
#[derive(Debug)]
pub struct SyncIo<S> {
    inner: S,
}

impl<S> SyncIo<S> {
    /// Wraps `stream`.
    pub fn new(stream: S) -> SyncIo<S> {
        SyncIo { inner: stream }
    }

    /// The wrapped stream.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A shared reference to the wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the wrapped stream (reading or writing it
    /// directly may corrupt the protocol the sync code speaks over it).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

/// Panics with `SyncIo`'s advice where `wait` could not suspend or block.
fn check_place() {
    if coro::place() == Place::Off && !crate::exec::request::on_held_thread() {
        crate::panic::off_fiber("SyncIo");
    }
}

impl<S: AsyncRead + Unpin> io::Read for SyncIo<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check_place();
        wait(self.inner.read(buf))
    }
}

impl<S: AsyncWrite + Unpin> io::Write for SyncIo<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        check_place();
        wait(self.inner.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        check_place();
        wait(self.inner.flush())
    }
}
