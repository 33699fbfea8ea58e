//! A thread-per-core hyper server whose middleware mirrors a new Django
//! project's defaults, written as blocking-style sync middleware in front of
//! async views, with Django's database session backend and user table in
//! SQLite (queried with plain blocking `rusqlite` calls).
//!
//! ```text
//! cargo run --release --example legacy_server -- --addr 127.0.0.1:8000 --view-delay-ms 50
//! curl -i http://127.0.0.1:8000/
//! ```
//!
//! Each worker thread has its own `SO_REUSEPORT` listener, accepts, and
//! serves its connections itself (see `suspendware::server::Server`). Routes:
//! `GET /` (waits `--view-delay-ms`, hands out the CSRF cookie), `GET /csrf`
//! (a token for a form), `POST /login` (form: `username=alice`, the token in
//! `csrfmiddlewaretoken` or `X-CSRFToken`, optional `next=`; other methods
//! get 405), `GET /me`, `GET /visits` (a session counter), `GET
//! /users/<name>`. The database is `--db PATH`, or a new file in a fresh
//! temporary directory (logged at start, removed at exit). Ctrl-C shuts down
//! gracefully and logs what the watchdog saw blocking a thread, by layer.

#[path = "legacy_app/mod.rs"]
mod app;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use suspendware::server::Server;

/// Where the sync middleware's database calls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DbCallsArg {
    /// On the fiber, on the worker thread's own connection: blocks the thread.
    Inline,
    /// In `suspendware::blocking` on a pooled connection: suspends the fiber.
    Blocking,
}

/// How sync middleware meets the async views (`suspendware::Mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// Suspend the middleware's fiber at `get_response` (no thread held).
    Suspend,
    /// Hold a blocking-pool thread per request (asgiref's adaptation).
    Adapt,
    /// Django 3.1's per-hook hops to the blocking pool.
    Hop,
    /// The same middleware rewritten as native async middleware (database
    /// calls through `tokio::task::spawn_blocking`): the floor to compare with.
    Async,
}

impl From<ModeArg> for suspendware::Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Suspend => suspendware::Mode::Suspend,
            ModeArg::Adapt => suspendware::Mode::Adapt,
            ModeArg::Hop => suspendware::Mode::ThreadHop,
            // Not used by the async pipeline (it has no sync middleware).
            ModeArg::Async => suspendware::Mode::Suspend,
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
    /// The SQLite database file (created if missing; default: a new file in
    /// a fresh temporary directory, removed at exit). `:memory:` is refused:
    /// the workers' connections must share the data.
    #[arg(long)]
    db: Option<std::path::PathBuf>,
    /// Where the sync middleware's database calls run.
    #[arg(long, value_enum, default_value_t = DbCallsArg::Blocking)]
    db_calls: DbCallsArg,
    /// Connections in the database pool (blocking calls and async code).
    #[arg(long, default_value_t = 16)]
    db_pool: u32,
    /// Milliseconds of blocking sleep added to every database call (stands
    /// for a database server's round trip).
    #[arg(long, default_value_t = 0)]
    db_latency_ms: u64,
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
    let db_cfg = app::DbConfig {
        path: args.db.clone(),
        calls: match args.db_calls {
            DbCallsArg::Inline => app::DbCalls::Inline,
            DbCallsArg::Blocking => app::DbCalls::Blocking,
        },
        pool_size: args.db_pool,
        latency: Duration::from_millis(args.db_latency_ms),
    };
    let state = match app::AppState::open(&db_cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not open the database");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        db = %state.db.path().display(),
        temporary = args.db.is_none(),
        db_calls = ?args.db_calls,
        db_pool = args.db_pool,
        db_latency_ms = args.db_latency_ms,
        "database ready"
    );
    let cfg = app::AppConfig {
        view_delay: Duration::from_millis(args.view_delay_ms),
        mode: args.mode.into(),
    };
    // One pipeline (and stack pool) per worker.
    let pipelines = match (0..workers)
        .map(|_| match args.mode {
            ModeArg::Async => app::async_pipeline(&state, &cfg),
            _ => app::pipeline(&state, &cfg),
        })
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
