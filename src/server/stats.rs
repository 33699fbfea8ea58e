//! Request counters of a server.

use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    in_flight: AtomicUsize,
    served: AtomicUsize,
    cancelled: AtomicUsize,
    pub(crate) connections: AtomicUsize,
    pub(crate) refused: AtomicUsize,
    pub(crate) closed_at_shutdown: AtomicUsize,
    pub(crate) drained_at_shutdown: AtomicUsize,
    pub(crate) largest_accept_batch: AtomicUsize,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ServerStats {
        ServerStats {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            closed_at_shutdown: self.closed_at_shutdown.load(Ordering::Relaxed),
            drained_at_shutdown: self.drained_at_shutdown.load(Ordering::Relaxed),
            largest_accept_batch: self.largest_accept_batch.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a server's request counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Requests being handled now.
    pub in_flight: usize,
    /// Requests answered (the response was produced).
    pub served: usize,
    /// Requests dropped before their response was produced (the client
    /// went away, the shutdown deadline passed, or shutdown closed the
    /// connection while the body was still arriving).
    pub cancelled: usize,
    /// Connections open now (counted against
    /// [`crate::server::ServerBuilder::max_connections`]).
    pub connections: usize,
    /// Connections refused (`503`, closed at once) because the server
    /// already held `max_connections`.
    pub refused: usize,
    /// Connections closed at once by shutdown: idle, or reading a request
    /// head or body (no request in the pipeline).
    pub closed_at_shutdown: usize,
    /// Connections shutdown let finish their request in the pipeline.
    pub drained_at_shutdown: usize,
    /// Most connections one worker accepted in one turn of its accept loop
    /// (a burst drained from the listen queue before serving).
    pub largest_accept_batch: usize,
}

/// One open connection in the counters, from accept to close.
pub(crate) struct ConnMark {
    counters: Arc<Counters>,
}

impl ConnMark {
    /// Counts a connection unless `max` are open already (then `None`).
    pub(crate) fn try_open(counters: &Arc<Counters>, max: usize) -> Option<Self> {
        // Only this worker's accept loop and the other workers' race here;
        // a relaxed CAS loop is exact for a counter.
        counters
            .connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnMark {
            counters: counters.clone(),
        })
    }
}

impl Drop for ConnMark {
    fn drop(&mut self) {
        self.counters.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request in the counters; counts as cancelled unless finished.
pub(crate) struct RequestMark {
    counters: Arc<Counters>,
    finished: bool,
}

impl RequestMark {
    pub(crate) fn start(counters: &Arc<Counters>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestMark {
            counters: counters.clone(),
            finished: false,
        }
    }

    pub(crate) fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for RequestMark {
    fn drop(&mut self) {
        let c = &self.counters;
        c.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.finished {
            c.served.fetch_add(1, Ordering::Relaxed);
        } else {
            c.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}
