//! Request counters of a server.

use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    in_flight: AtomicUsize,
    served: AtomicUsize,
    cancelled: AtomicUsize,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> ServerStats {
        ServerStats {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
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
    /// went away, or the shutdown deadline passed).
    pub cancelled: usize,
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
