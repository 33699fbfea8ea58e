//! A real HTTP client against an in-process `Server`, shared by the test
//! binaries that drive the example app over the network.

#![allow(dead_code)] // each test binary uses part of it

use std::time::Duration;

use bytes::Bytes;
use http::header::SET_COOKIE;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use suspendware::server::Server;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Every request is bounded: a hung server fails the test instead of
/// hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The client's runtime: two workers, so the client never shares a thread
/// with what it measures.
pub fn tokio_mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A whole response.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends `method path` with `headers` and `body` to `server` and reads the
/// whole reply (at most [`REQUEST_TIMEOUT`]).
pub async fn send(
    client: &HttpClient,
    server: &Server,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", server.local_addr()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let reply = async {
        let resp = client.request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, reply)
        .await
        .unwrap_or_else(|_| panic!("no answer to {path} in {REQUEST_TIMEOUT:?}"))
}

/// The whole `Set-Cookie` line that sets cookie `name`.
pub fn set_cookie_line(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| {
            v.split(';')
                .next()
                .and_then(|p| p.split_once('='))
                .map(|p| p.0)
                == Some(name)
        })
        .map(str::to_owned)
}

/// The value of cookie `name` set by the response.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    set_cookie_line(headers, name)
        .and_then(|l| Some(l.split(';').next()?.split_once('=')?.1.to_owned()))
}
