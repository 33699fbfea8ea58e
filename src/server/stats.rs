//! Request counters of a server, and its pipelines' stall statistics.

use crate::exec::watchdog::StallStats;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Arc;
use crate::pipeline::Pipeline;

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
            stalls: Vec::new(),
        }
    }
}

/// The workers' pipelines, each distinct pipeline once (workers given
/// clones of one pipeline share its stall counters), for
/// [`ServerStats::stalls`].
#[derive(Clone, Default)]
pub(crate) struct Pipelines(Vec<Pipeline>);

impl Pipelines {
    /// Adds a worker's pipeline unless a clone of it is already here.
    pub(crate) fn add(&mut self, p: &Pipeline) {
        // Clones share one chain, and so one stack pool at one address.
        if !self
            .0
            .iter()
            .any(|q| std::ptr::eq(q.stack_pool(), p.stack_pool()))
        {
            self.0.push(p.clone());
        }
    }

    /// The stall statistics of all pipelines, merged by layer name (counts
    /// and totals added, the worst kept), in order of first appearance.
    pub(crate) fn stalls(&self) -> Vec<StallStats> {
        let mut out: Vec<StallStats> = Vec::new();
        for s in self.0.iter().flat_map(Pipeline::stall_stats) {
            match out.iter_mut().find(|o| o.layer == s.layer) {
                Some(o) => {
                    o.count += s.count;
                    o.total += s.total;
                    o.worst = o.worst.max(s.worst);
                }
                None => out.push(s),
            }
        }
        out
    }
}

/// A snapshot of a server's request counters and of its pipelines' stall
/// statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Per-layer stalls counted by the workers' pipeline watchdogs
    /// ([`Pipeline::stall_stats`]): layers whose fibers ran past the
    /// threshold of [`crate::PipelineBuilder::watchdog`] without
    /// suspending (default 10 ms), counted since the pipelines were built.
    /// When workers have distinct pipelines, their figures are merged by
    /// layer name (counts and totals added, the longest stall kept); a
    /// pipeline shared by several workers counts once. Empty when no layer
    /// stalled or the watchdogs are off.
    pub stalls: Vec<StallStats>,
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
