//! A worker's accept loop: drains its listen queue in batches, enforces the
//! connection cap, and at shutdown closes what has no request in flight.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::conn::{serve, ConnConfig};
use super::stats::{ConnMark, Counters};
use crate::loom::sync::atomic::Ordering;
use crate::loom::sync::Arc;
use crate::pipeline::Pipeline;

/// Most connections accepted in one turn before the worker serves again.
/// A turn drains the listen queue until `WouldBlock` or this many, so a
/// burst leaves the kernel's queue instead of overflowing it, and the
/// connections already open still get the thread between batches.
pub(crate) const ACCEPT_BATCH: usize = 1024;

/// Back-off after a failed `accept` (`EMFILE`: out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// What a client over the connection cap gets before the socket closes.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\ncontent-length: 34\r\nconnection: close\r\nretry-after: 1\r\n\r\n\
server is at its connection limit\n";

/// Accepts until `stopping` completes, then closes the connections with no
/// request in the pipeline, lets the others finish theirs (hyper's graceful
/// shutdown), and returns when all are closed. Runs on one worker; its
/// connections run there too.
///
/// Accepting comes before serving: each wake-up drains the listen queue
/// (up to [`ACCEPT_BATCH`]), and every new connection drains it again when
/// it starts (one non-blocking `accept` when the queue is empty). Without
/// that, the loop would accept only once per pass over all the worker's
/// ready connections, and a burst would overflow the kernel's queue while
/// the worker serves the first ones.
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    pipeline: Pipeline,
    cfg: Arc<ConnConfig>,
    counters: Arc<Counters>,
    stopping: impl Future<Output = ()>,
) -> io::Result<()> {
    let raw = listener.try_clone()?;
    let listener = TcpListener::from_std(listener)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = Rc::new(Acceptor {
        raw: RefCell::new(Some(raw)),
        pipeline,
        cfg,
        counters,
        stop_rx,
        conns: RefCell::new(JoinSet::new()),
        errors: RefCell::new(Throttle::new(Duration::from_secs(1))),
        refusals: RefCell::new(Throttle::new(Duration::from_secs(1))),
    });
    let mut stopping = pin!(stopping);
    let mut batch = Vec::with_capacity(ACCEPT_BATCH);
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            r = accept_batch(&listener, &mut batch) => {
                acceptor.note_batch(batch.len());
                for (stream, _peer) in batch.drain(..) {
                    acceptor.admit(stream);
                }
                if let Err(e) = r {
                    acceptor.accept_failed(&e);
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            Some(_) = poll_fn(|cx| acceptor.conns.borrow_mut().poll_join_next(cx)) => {}
        }
    }
    // Tell the connections first: once the port refuses, they are stopping.
    let _ = stop_tx.send(true);
    drop(listener);
    // The second handle too, so the port refuses.
    acceptor.raw.borrow_mut().take();
    tracing::debug!(
        open = acceptor.conns.borrow().len(),
        "accept loop stopped; finishing requests in flight"
    );
    while poll_fn(|cx| acceptor.conns.borrow_mut().poll_join_next(cx))
        .await
        .is_some()
    {}
    Ok(())
}

/// A worker's listener and what it needs to start connections.
struct Acceptor {
    /// A second handle on the listening socket, for non-blocking drains
    /// that do not wait for tokio's readiness (which only the I/O driver
    /// updates, between passes over the ready tasks).
    /// `None` once the loop stopped.
    raw: RefCell<Option<std::net::TcpListener>>,
    pipeline: Pipeline,
    cfg: Arc<ConnConfig>,
    counters: Arc<Counters>,
    stop_rx: watch::Receiver<bool>,
    conns: RefCell<JoinSet<()>>,
    errors: RefCell<Throttle>,
    refusals: RefCell<Throttle>,
}

impl Acceptor {
    fn note_batch(&self, n: usize) {
        self.counters
            .largest_accept_batch
            .fetch_max(n, Ordering::Relaxed);
    }

    /// Accepts what is queued now, up to [`ACCEPT_BATCH`], without waiting.
    fn drain(self: &Rc<Self>) {
        let mut n = 0;
        while n < ACCEPT_BATCH {
            let accepted = match self.raw.borrow().as_ref() {
                Some(raw) => raw.accept(),
                None => break,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    n += 1;
                    match stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(stream))
                    {
                        Ok(stream) => self.admit(stream),
                        Err(e) => tracing::debug!(error = %e, "could not register a connection"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The accept loop backs off on its next wake-up.
                Err(e) => {
                    self.accept_failed(&e);
                    break;
                }
            }
        }
        self.note_batch(n);
    }

    /// Serves `stream`, or answers 503 over the connection cap.
    fn admit(self: &Rc<Self>, stream: TcpStream) {
        let cfg = &self.cfg;
        let Some(mark) = ConnMark::try_open(&self.counters, cfg.max_connections) else {
            // Counted first: the client may read the 503 at once.
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            refuse(stream);
            if let Some(n) = self.refusals.borrow_mut().hit() {
                tracing::warn!(
                    refused = n,
                    max_connections = cfg.max_connections,
                    "connection limit reached; refusing new connections with 503 (raise ServerBuilder::max_connections and `ulimit -n`)"
                );
            }
            return;
        };
        let weak = Rc::downgrade(self);
        let on_start = move || {
            if let Some(acceptor) = weak.upgrade() {
                acceptor.drain();
            }
        };
        let conn = serve(
            stream,
            self.pipeline.clone(),
            cfg.clone(),
            self.counters.clone(),
            mark,
            self.stop_rx.clone(),
            on_start,
        );
        self.conns.borrow_mut().spawn_local(conn);
    }

    fn accept_failed(&self, e: &io::Error) {
        if let Some(n) = self.errors.borrow_mut().hit() {
            tracing::warn!(
                error = %e,
                errors = n,
                "accept failed; retrying every 10 ms (at the open-files limit: lower max_connections or raise `ulimit -n`)"
            );
        }
    }
}

/// Accepts into `batch` until the queue is empty (`WouldBlock`) or
/// [`ACCEPT_BATCH`] connections; pending while nothing is queued. An error
/// ends the batch (what was accepted before it is kept).
async fn accept_batch(
    listener: &TcpListener,
    batch: &mut Vec<(TcpStream, SocketAddr)>,
) -> io::Result<()> {
    // Unconstrained: tokio's task budget would end a turn after 128 accepts.
    tokio::task::unconstrained(poll_fn(|cx| loop {
        if batch.len() >= ACCEPT_BATCH {
            return Poll::Ready(Ok(()));
        }
        match listener.poll_accept(cx) {
            Poll::Ready(Ok(conn)) => batch.push(conn),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending if batch.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Ok(())),
        }
    }))
    .await
}

/// Answers 503 and closes, without waiting: a fresh socket's send buffer
/// takes the short reply. What the client already sent is read first so the
/// close is a FIN, not a reset that could discard the reply.
fn refuse(stream: TcpStream) {
    let mut sink = [0u8; 2048];
    let _ = stream.try_read(&mut sink);
    let _ = stream.try_write(REFUSED);
}

/// Lets one log line through per interval and counts the ones held back.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
            count: 0,
        }
    }

    /// Records one event; `Some(n)` when a line is due, `n` = events since
    /// the last line (this one included).
    pub(crate) fn hit(&mut self) -> Option<u64> {
        self.hit_at(Instant::now())
    }

    fn hit_at(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| now - t < self.interval) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_once_per_interval_with_a_count() {
        let mut t = Throttle::new(Duration::from_secs(1));
        let mut now = Instant::now();
        assert_eq!(t.hit_at(now), Some(1), "the first event is logged");
        let mut lines = Vec::new();
        // 89 events a second for 3 seconds, as at the open-files limit.
        for _ in 0..(3 * 89) {
            now += Duration::from_micros(1_000_000 / 89 + 1);
            lines.extend(t.hit_at(now));
        }
        assert_eq!(lines.len(), 3, "one line per second: {lines:?}");
        assert!(
            lines.iter().all(|&n| n >= 88),
            "each line counts the second's events: {lines:?}"
        );
        assert_eq!(lines.iter().sum::<u64>() + t.count, 3 * 89);
    }

    #[test]
    fn refusal_has_the_right_length() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
