//! axum on tokio's multi-thread runtime, with blocking-style sync
//! middleware in front of its routes through `suspendware::tower::SuspendLayer`,
//! next to tower-http's `CorsLayer`.
//!
//! ```text
//! cargo run --example axum_layer -- --addr 127.0.0.1:3000
//! curl -i http://127.0.0.1:3000/
//! curl -i -H 'x-api-key: letmein' http://127.0.0.1:3000/admin/stats
//! ```
//!
//! axum's tasks run on the multi-thread runtime; each request is handed to
//! a suspendware worker where the sync middleware runs on fibers and the
//! innermost step calls the axum routes. Ctrl-C stops both gracefully.

#[path = "axum_app/mod.rs"]
mod app;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use suspendware::runtime::Runtime;

#[derive(Debug, Parser)]
#[command(about = "axum with suspendware sync middleware through a tower Layer")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// suspendware worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut builder = Runtime::builder();
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    let runtime = builder.build()?;
    let app = app::router(runtime.handle())?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, workers = runtime.workers(), "axum + suspendware listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    let report =
        tokio::task::spawn_blocking(move || runtime.shutdown(Duration::from_secs(10))).await?;
    tracing::info!(cancelled = report.cancelled, "stopped");
    Ok(())
}
