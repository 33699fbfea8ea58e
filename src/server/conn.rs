//! One HTTP/1.1 connection: hyper's state machine, the body bounds, and
//! what shutdown does to it.

use std::convert::Infallible;
use std::pin::pin;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::body::{self, BodyLimits};
use super::phase::{ConnPhase, FlushWatch, Phase, TrackedBody};
use super::stats::{ConnMark, Counters, RequestMark};
use crate::body::Request;
use crate::loom::sync::atomic::Ordering;
use crate::loom::sync::Arc;
use crate::pipeline::Pipeline;

/// Settings every connection of a server uses.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub(crate) body: BodyLimits,
    pub(crate) header_read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) max_connections: usize,
}

/// Serves one connection until the peer closes it or the server stops.
/// `on_start` runs when the connection's task first runs.
///
/// At the stop, a connection with a request in the pipeline (or its
/// response not yet flushed) finishes it and closes (hyper's graceful
/// shutdown, bounded by the runtime's deadline); any other connection is
/// closed at once.
pub(crate) async fn serve(
    stream: TcpStream,
    pipeline: Pipeline,
    cfg: Arc<ConnConfig>,
    counters: Arc<Counters>,
    _mark: ConnMark,
    mut stop: watch::Receiver<bool>,
    on_start: impl FnOnce(),
) {
    // Accept what queued up while this worker was busy, before serving.
    on_start();
    let _ = stream.set_nodelay(true);
    let phase = ConnPhase::new();
    let limits = cfg.body;
    let svc_phase = phase.clone();
    let svc_counters = counters.clone();
    let svc = service_fn(move |req: http::Request<Incoming>| {
        let (pipeline, phase) = (pipeline.clone(), svc_phase.clone());
        phase.set(Phase::Body);
        let mark = RequestMark::start(&svc_counters);
        async move { Ok::<_, Infallible>(handle(pipeline, req, limits, &phase, mark).await) }
    });
    let io = FlushWatch::new(TokioIo::new(stream), phase.clone(), cfg.write_timeout);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .serve_connection(io, svc);
    let mut conn = pin!(conn);
    let result = tokio::select! {
        // The stop is looked at first: once it is set, the connection's
        // phase at that moment decides what shutdown does with it (and how
        // it is counted), even when the same wake-up would also let the
        // request finish. Polled in random order, a request that finished
        // in the poll that first saw the stop went uncounted.
        biased;
        _ = stop.wait_for(|s| *s) => {
            if !phase.in_flight() {
                counters.closed_at_shutdown.fetch_add(1, Ordering::Relaxed);
                return;
            }
            counters.drained_at_shutdown.fetch_add(1, Ordering::Relaxed);
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        r = conn.as_mut() => r,
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Reads the body within its bounds, runs the pipeline, and marks the
/// phases on the way.
async fn handle(
    pipeline: Pipeline,
    req: http::Request<Incoming>,
    limits: BodyLimits,
    phase: &ConnPhase,
    mark: RequestMark,
) -> http::Response<TrackedBody> {
    let (parts, incoming) = req.into_parts();
    let resp = match body::collect(incoming, limits).await {
        Ok(bytes) => {
            phase.set(Phase::Pipeline);
            pipeline
                .handle(Request::from_parts(parts, bytes.into()))
                .await
        }
        Err(e) => e.into_response(),
    };
    mark.finish();
    resp.map(|b| phase.track_body(b))
}
