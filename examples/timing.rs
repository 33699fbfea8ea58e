//! The classic Django timing middleware, written as blocking-style sync
//! middleware around an async view.
//!
//! `Timing` reads the clock, calls `next.get_response(req)` as if it were a
//! plain function call, and stamps `X-Render-MS` on the way out. Behind the
//! scenes its fiber suspends at `get_response` while the async view awaits a
//! timer, so the runtime thread is free to serve other requests meanwhile.
//!
//! Run with `cargo run --example timing`.

use std::time::{Duration, Instant};

use suspendware::{Next, Pipeline, Request, Response, SyncMiddleware};

/// Adds `X-Render-MS`: milliseconds spent in the rest of the pipeline.
struct Timing;

impl SyncMiddleware for Timing {
    fn call(&self, req: Request, next: &mut Next) -> Response {
        let start = Instant::now();
        let mut resp = next.get_response(req); // suspends this fiber
        let ms = start.elapsed().as_millis().to_string();
        resp.headers_mut().insert(
            "x-render-ms",
            ms.parse().expect("digits are a valid header value"),
        );
        resp
    }
}

/// An async view that pretends to query a database for 30 ms.
async fn article(req: Request) -> Response {
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut resp = Response::new(format!("article at {}\n", req.uri().path()).into());
    resp.headers_mut().insert(
        "content-type",
        "text/plain".parse().expect("valid header value"),
    );
    resp
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pipeline = Pipeline::builder()
        .sync(Timing)
        // Closure middleware needs annotated parameters.
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(article)
        .build()?;

    // The future of `handle` is !Send: run it on a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let req = http::Request::builder()
        .uri("/articles/42")
        .body(Default::default())?;
    let resp = rt.block_on(pipeline.handle(req));

    println!("status: {}", resp.status());
    for (name, value) in resp.headers() {
        println!("{name}: {}", value.to_str().unwrap_or("<binary>"));
    }
    print!("\n{}", String::from_utf8_lossy(resp.body().as_bytes()));
    Ok(())
}
