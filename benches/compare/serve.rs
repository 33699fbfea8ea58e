//! `--serve MODE K D_MS PORT`: one mode of the harness behind a real HTTP/1.1
//! server (hyper, one current-thread runtime, every connection a local
//! task), so a load generator (`scripts/http_peers.sh`, wrk) can measure
//! the modes end to end: what a difference of a fraction of a microsecond
//! per request in the in-process harness is worth once a request also
//! parses, writes and crosses a socket.
//!
//! Every mode gets the same request: the incoming head (method, URI,
//! headers; the body is ignored, `GET` only) in the harness's `Request`,
//! and its response goes out through the same conversion. So the server
//! glue costs every mode the same, and only the handler differs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use suspendware::{Body, Request};

use crate::common::ViewKind;
use crate::modes::{self, Handler};

/// Parses `MODE K D_MS PORT` and serves until killed.
pub fn run(a: &[String]) -> i32 {
    let Some((mode, k, d_ms, port)) = modes::mode_k_d_and::<u16>(a) else {
        eprintln!("usage: compare --serve MODE K D_MS PORT (not block_in_place)");
        return 2;
    };
    let (rt, local) = modes::local_runtime();
    local.block_on(&rt, async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("compare --serve: cannot bind {addr}: {e}");
                return 1;
            }
        };
        let handler = Rc::new(Handler::new(mode, k, ViewKind::from_ms(d_ms), 1));
        eprintln!("serving {} (K={k}, D={d_ms} ms) on {addr}", mode.name());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // Out of descriptors under a burst of connects: keep serving
                // the ones already open.
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::task::spawn_local(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let fut = handler.handle(request_of(req));
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                // A client that goes away mid-request is not an error here.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The harness's request with the incoming head (the body is not read).
fn request_of(req: hyper::Request<hyper::body::Incoming>) -> Request {
    let (parts, _body) = req.into_parts();
    Request::from_parts(parts, Body::empty())
}
