//! A worker's accept loop and its HTTP/1.1 connections.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::stats::{Counters, RequestMark};
use crate::body::Response;
use crate::loom::sync::Arc;
use crate::pipeline::Pipeline;
use crate::tower::collect_request;

/// Settings every connection of a server uses.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub(crate) body_limit: usize,
    pub(crate) header_read_timeout: Duration,
}

/// Accepts until `stopping` completes, then lets every connection finish
/// its request in flight (hyper's graceful shutdown) and returns when all
/// are closed. Runs on one worker; its connections run there too.
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    pipeline: Pipeline,
    cfg: Arc<ConnConfig>,
    counters: Arc<Counters>,
    stopping: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut stopping = pin!(stopping);
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let conn = serve(stream, pipeline.clone(), cfg.clone(), counters.clone(), stop_rx.clone());
                    conns.spawn_local(conn);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying in 10 ms");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = conns.join_next() => {}
        }
    }
    // Tell the connections first: once the port refuses, they are stopping.
    let _ = stop_tx.send(true);
    drop(listener);
    tracing::debug!(
        open = conns.len(),
        "accept loop stopped; finishing open connections"
    );
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until the peer closes it or the server stops.
async fn serve(
    stream: TcpStream,
    pipeline: Pipeline,
    cfg: Arc<ConnConfig>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let limit = cfg.body_limit;
    let svc = service_fn(move |req: http::Request<Incoming>| {
        let pipeline = pipeline.clone();
        let mark = RequestMark::start(&counters);
        async move { Ok::<_, Infallible>(handle(pipeline, req, limit, mark).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .serve_connection(TokioIo::new(stream), svc);
    let mut conn = pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.wait_for(|s| *s) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

async fn handle(
    pipeline: Pipeline,
    req: http::Request<Incoming>,
    limit: usize,
    mark: RequestMark,
) -> Response {
    let resp = match collect_request(req, limit).await {
        Ok(req) => pipeline.handle(req).await,
        Err(resp) => resp,
    };
    mark.finish();
    resp
}
