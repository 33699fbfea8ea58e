//! A thread-per-core HTTP/1.1 server for pipelines (feature `server`, on by
//! default), built on hyper 1.x and the [`crate::runtime::Runtime`].
//!
//! Each worker owns a listening socket (`SO_REUSEPORT` on Unix, so the
//! kernel spreads connections across workers), accepts on it, and serves
//! its connections and their requests itself: a request never changes
//! thread, so the pipeline runs with no dispatch at all.
//!
//! ```no_run
//! use suspendware::{Pipeline, Request, Response};
//! use suspendware::server::{Server};
//!
//! let server = Server::builder()
//!     .addr("127.0.0.1:8000".parse().unwrap())
//!     .workers(2)
//!     .serve(|_worker| {
//!         Pipeline::builder()
//!             .view(|_req: Request| async { Response::new("hi".into()) })
//!             .build()
//!             .unwrap()
//!     })
//!     .unwrap();
//! println!("listening on {}", server.local_addr());
//! // ... later:
//! server.shutdown(std::time::Duration::from_secs(10));
//! ```

mod accept;
mod body;
mod conn;
mod error;
mod limits;
mod listener;
mod phase;
mod stats;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

pub use error::ServerError;
pub use stats::ServerStats;

use crate::loom::sync::Arc;
use crate::pipeline::Pipeline;
use crate::runtime::{Dispatch, Runtime, RuntimeHandle, ShutdownReport};
use crate::tower::DEFAULT_BODY_LIMIT;
use body::BodyLimits;
use conn::ConnConfig;
use stats::{Counters, Pipelines};

/// Configures a [`Server`].
///
/// The defaults bound what one client can cost: the request head must
/// arrive within 30 s and the body within 30 s more, a body is at most
/// 2.5 MiB in at most 65,536 pieces, and the server holds at most
/// `max_connections` connections (derived from `ulimit -n`). README.md
/// ("Running it in production") lists them with what each protects against.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    addr: SocketAddr,
    workers: usize,
    /// `None`: [`limits::default_backlog`] of the connection cap.
    backlog: Option<i32>,
    /// `None`: [`limits::default_max_connections`].
    max_connections: Option<usize>,
    body: BodyLimits,
    header_read_timeout: Duration,
    write_timeout: Duration,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            workers: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            backlog: None,
            max_connections: None,
            body: BodyLimits {
                max_bytes: DEFAULT_BODY_LIMIT,
                max_frames: limits::DEFAULT_BODY_FRAME_LIMIT,
                read_timeout: limits::DEFAULT_BODY_READ_TIMEOUT,
            },
            header_read_timeout: limits::DEFAULT_HEADER_READ_TIMEOUT,
            write_timeout: limits::DEFAULT_WRITE_TIMEOUT,
        }
    }
}

impl ServerBuilder {
    /// Address to listen on (default `127.0.0.1:8000`; port 0 picks one, see
    /// [`Server::local_addr`]).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Worker threads (default: available parallelism).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Listen backlog of each worker's socket: how many connections the
    /// kernel queues for a worker that is busy. Default: the connection cap
    /// (see [`ServerBuilder::max_connections`]), at least 128 and at most
    /// 65,535, so a burst of as many clients as the server may hold waits in
    /// the queue instead of being dropped. The kernel caps it at
    /// `net.core.somaxconn` (raise that too).
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = Some(n);
        self
    }

    /// Most connections the server holds open, across all workers. Above
    /// it, a new connection is answered `503` with `Connection: close` and
    /// closed at once, so clients fail fast instead of waiting while the
    /// process is out of file descriptors. Default: the soft `RLIMIT_NOFILE`
    /// (`ulimit -n`) less a tenth (at least 64) for the pipeline's own files.
    /// Must be at least 1.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Cap on request bodies (default [`crate::tower::DEFAULT_BODY_LIMIT`]; longer
    /// ones are answered `413` without running the pipeline). A body is
    /// read into one buffer that holds at most twice the bytes received.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body.max_bytes = bytes;
        self
    }

    /// Most pieces (chunks of a chunked body, or socket reads) a request
    /// body may arrive in (default 65,536); more are answered `413`. Each
    /// piece costs CPU however small it is: this stops a body sent as
    /// 1-byte chunks from costing a second of CPU. Must be at least 1.
    pub fn body_frame_limit(mut self, frames: usize) -> Self {
        self.body.max_frames = frames;
        self
    }

    /// How long a request's body may take to arrive, from the end of its
    /// head to its last byte (default 30 s). A slower body is answered
    /// `408` and the connection closes. The pipeline only ever sees complete
    /// bodies, so this bounds how long a client can hold a connection (and a
    /// buffer) without sending.
    pub fn body_read_timeout(mut self, t: Duration) -> Self {
        self.body.read_timeout = t;
        self
    }

    /// How long a connection may take to send a request's headers (default
    /// 30 s). Between 1 ns and a year, else [`serve`](Self::serve) fails
    /// with [`ServerError::Timeout`].
    pub fn header_read_timeout(mut self, t: Duration) -> Self {
        self.header_read_timeout = t;
        self
    }

    /// How long writing a response may make no progress, the client
    /// accepting not one byte, before the connection is closed (default
    /// 30 s). A client that stops reading would otherwise keep its
    /// connection slot, and the response's buffer, for good. The clock
    /// restarts at every byte written, so a slow reader is not cut off. Between 1 ns and a year,
    /// else [`serve`](Self::serve) fails with [`ServerError::Timeout`].
    pub fn write_timeout(mut self, t: Duration) -> Self {
        self.write_timeout = t;
        self
    }

    /// Binds, starts the workers and serves. `pipeline(i)` is called here,
    /// once per worker `i`, so each worker can have its own pipeline (and
    /// stack pool); return clones of one pipeline to share it.
    pub fn serve<F>(self, mut pipeline: F) -> Result<Server, ServerError>
    where
        F: FnMut(usize) -> Pipeline,
    {
        if self.workers == 0 {
            return Err(ServerError::Runtime(
                crate::runtime::RuntimeError::NoWorkers,
            ));
        }
        let max_connections = self
            .max_connections
            .unwrap_or_else(limits::default_max_connections);
        for (setting, value) in [
            ("max_connections", max_connections),
            ("body_frame_limit", self.body.max_frames),
        ] {
            if value == 0 {
                return Err(ServerError::ZeroLimit { setting });
            }
        }
        for (setting, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if value.is_zero() || value > limits::MAX_TIMEOUT {
                return Err(ServerError::Timeout { setting, value });
            }
        }
        let backlog = self
            .backlog
            .unwrap_or_else(|| limits::default_backlog(max_connections));
        if let Some(cap) = limits::somaxconn().filter(|&cap| cap < backlog as usize) {
            tracing::info!(
                backlog,
                somaxconn = cap,
                "the kernel caps the listen backlog at net.core.somaxconn; raise it for bursts of more connections"
            );
        }
        let listeners = listener::bind(self.addr, self.workers, backlog).map_err(|source| {
            ServerError::Bind {
                addr: self.addr,
                source,
            }
        })?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: self.addr,
                source,
            })?;
        let runtime = Runtime::builder()
            .workers(self.workers)
            .thread_name("suspendware-server")
            .build()?;
        let handle = runtime.handle();
        let counters = Arc::new(Counters::default());
        let cfg = Arc::new(ConnConfig {
            body: self.body,
            header_read_timeout: self.header_read_timeout,
            write_timeout: self.write_timeout,
            max_connections,
        });
        let mut loops = Vec::with_capacity(self.workers);
        let mut pipelines = Pipelines::default();
        for (i, listener) in listeners.into_iter().enumerate() {
            let (p, cfg, counters, stopping) = (
                pipeline(i),
                cfg.clone(),
                counters.clone(),
                handle.stopping(),
            );
            pipelines.add(&p);
            loops.push(handle.run_on(i, move || {
                accept::accept_loop(listener, p, cfg, counters, stopping)
            }));
        }
        tracing::info!(addr = %local_addr, workers = self.workers, max_connections, backlog, "suspendware server listening");
        Ok(Server {
            runtime,
            local_addr,
            counters,
            pipelines,
            _loops: loops,
        })
    }
}

/// A running thread-per-core server. See the module docs.
///
/// Dropping it stops it at once (requests in flight are cancelled); call
/// [`Server::shutdown`] to let them finish.
pub struct Server {
    runtime: Runtime,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
    /// The workers' pipelines, for their stall statistics.
    pipelines: Pipelines,
    /// The workers' accept loops; dropping one would cancel it.
    _loops: Vec<Dispatch<std::io::Result<()>>>,
}

/// What [`Server::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerReport {
    /// The request counters and stall statistics after the workers stopped.
    pub stats: ServerStats,
    /// The runtime's report (its `cancelled` counts accept loops that had to
    /// be dropped at the deadline, one per worker that still had requests).
    pub runtime: ShutdownReport,
}

impl Server {
    /// Starts a builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The workers' runtime, to run other work next to the server.
    pub fn handle(&self) -> RuntimeHandle {
        self.runtime.handle()
    }

    /// Current request counters and per-layer stall statistics
    /// ([`ServerStats::stalls`]).
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            stalls: self.pipelines.stalls(),
            ..self.counters.snapshot()
        }
    }

    /// Stops accepting connections, closes at once every connection with no
    /// request in the pipeline (idle, or still reading a request head or
    /// body), lets requests in the pipeline finish (each connection closes
    /// after its response) for up to `grace`, cancels what is left, and
    /// joins the workers. Blocks the calling
    /// thread (from async code: `tokio::task::spawn_blocking`).
    ///
    /// It can take longer than `grace` in one case: a cancelled request
    /// whose [`blocking`](crate::blocking) closure is still running. The
    /// closure may borrow its fiber's stack, so the fiber cannot unwind
    /// until the closure returns, and shutdown waits for that (as
    /// [`Runtime::shutdown`](crate::runtime::Runtime::shutdown) does).
    /// Closing connections also read what their clients still send for up
    /// to half a second, so that no response is cut off by a reset.
    pub fn shutdown(self, grace: Duration) -> ServerReport {
        let Server {
            runtime,
            counters,
            pipelines,
            ..
        } = self;
        let runtime = runtime.shutdown(grace);
        ServerReport {
            stats: ServerStats {
                stalls: pipelines.stalls(),
                ..counters.snapshot()
            },
            runtime,
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("workers", &self.runtime.workers())
            .field("stats", &self.stats())
            .finish()
    }
}
