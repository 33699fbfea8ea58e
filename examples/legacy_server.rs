//! A thread-per-core hyper server whose middleware mirrors a new Django
//! project's defaults, written as blocking-style sync middleware in front of
//! async views.
//!
//! ```text
//! cargo run --release --example legacy_server -- --addr 127.0.0.1:8000 --view-delay-ms 50
//! curl -i http://127.0.0.1:8000/
//! ```
//!
//! Each worker thread has its own `SO_REUSEPORT` listener, accepts, and
//! serves its connections itself (see `suspendware::server::Server`). Routes:
//! `GET /` (waits `--view-delay-ms`), `GET /users/<name>` (async lookup),
//! `POST /login` (`username=alice`; other methods get 405), `GET /me`,
//! `GET /visits` (a session counter). Ctrl-C shuts down gracefully.

#[path = "legacy_app/mod.rs"]
mod app;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use suspendware::server::Server;

/// How sync middleware meets the async views (`suspendware::Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Suspend the middleware's fiber at `get_response` (no thread held).
    Suspend,
    /// Hold a blocking-pool thread per request (asgiref's adaptation).
    Adapt,
    /// Django 3.1's per-hook hops to the blocking pool.
    Hop,
}

impl From<ModeArg> for suspendware::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Suspend => suspendware::Mode::Suspend,
            ModeArg::Adapt => suspendware::Mode::Adapt,
            ModeArg::Hop => suspendware::Mode::ThreadHop,
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "Django-style sync middleware in front of async views, thread-per-core")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// How sync middleware runs.
    #[arg(long, value_enum, default_value_t = ModeArg::Suspend)]
    mode: ModeArg,
    /// How long `GET /` waits before answering, in milliseconds.
    #[arg(long, default_value_t = 0)]
    view_delay_ms: u64,
    /// Most connections held open across workers; more get 503 at once
    /// (default: `ulimit -n` less a tenth).
    #[arg(long)]
    max_connections: Option<usize>,
    /// Seconds a request body may take to arrive after its head (then 408).
    #[arg(long, default_value_t = 30)]
    body_read_timeout_s: u64,
    /// Most pieces (chunks) a request body may arrive in (then 413).
    #[arg(long, default_value_t = 65_536)]
    body_frame_limit: usize,
    /// Listen backlog of each worker (default: the connection cap, at most
    /// 65,535; the kernel caps it at net.core.somaxconn).
    #[arg(long)]
    backlog: Option<i32>,
    /// Seconds requests in flight get to finish at Ctrl-C.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_s: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let state = app::AppState::default();
    let cfg = app::AppConfig {
        view_delay: Duration::from_millis(args.view_delay_ms),
        mode: args.mode.into(),
    };
    // One pipeline (and stack pool) per worker.
    let pipelines = match (0..workers)
        .map(|_| app::pipeline(&state, &cfg))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "could not build the pipeline");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = Server::builder()
        .addr(args.addr)
        .workers(workers)
        .body_read_timeout(Duration::from_secs(args.body_read_timeout_s))
        .body_frame_limit(args.body_frame_limit);
    if let Some(n) = args.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(n) = args.backlog {
        builder = builder.backlog(n);
    }
    let server = match builder.serve(|i| pipelines[i].clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not start the server");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(addr = %server.local_addr(), workers, mode = ?args.mode, view_delay_ms = args.view_delay_ms, "legacy server ready");

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("signal runtime");
    if let Err(e) = signals.block_on(tokio::signal::ctrl_c()) {
        tracing::error!(error = %e, "cannot wait for Ctrl-C; shutting down");
    }
    tracing::info!(
        grace_s = args.shutdown_grace_s,
        "shutting down: finishing requests in flight"
    );
    let started = std::time::Instant::now();
    let report = server.shutdown(Duration::from_secs(args.shutdown_grace_s));
    tracing::info!(
        served = report.stats.served,
        cancelled = report.stats.cancelled,
        closed_at_once = report.stats.closed_at_shutdown,
        drained = report.stats.drained_at_shutdown,
        refused = report.stats.refused,
        largest_accept_batch = report.stats.largest_accept_batch,
        took_ms = started.elapsed().as_millis() as u64,
        "stopped"
    );
    log_stalls(&pipelines);
    ExitCode::SUCCESS
}

/// Logs the watchdog's stall counts, summed by layer over the workers'
/// pipelines (nothing when no fiber stalled).
fn log_stalls(pipelines: &[suspendware::Pipeline]) {
    let mut by_layer: std::collections::BTreeMap<String, (u64, Duration, Duration)> =
        Default::default();
    for s in pipelines.iter().flat_map(|p| p.stall_stats()) {
        let e = by_layer.entry(s.layer).or_default();
        e.0 += s.count;
        e.1 += s.total;
        e.2 = e.2.max(s.worst);
    }
    for (layer, (count, total, worst)) in by_layer {
        tracing::warn!(
            layer = %layer,
            count,
            total_ms = total.as_millis() as u64,
            worst_ms = worst.as_millis() as u64,
            "watchdog: sync code blocked its thread"
        );
    }
}
