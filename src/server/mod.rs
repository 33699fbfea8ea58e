//! A thread-per-core HTTP/1.1 server for pipelines (feature `server`, on by
//! default), built on hyper 1.x and the [`crate::Runtime`].
//!
//! Each worker owns a listening socket (`SO_REUSEPORT` on Unix, so the
//! kernel spreads connections across workers), accepts on it, and serves
//! its connections and their requests itself: a request never changes
//! thread, so the pipeline runs with no dispatch at all.
//!
//! ```no_run
//! use suspendware::{Pipeline, Request, Response, Server};
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

mod conn;
mod error;
mod listener;
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
use conn::ConnConfig;
use stats::Counters;

/// Configures a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    addr: SocketAddr,
    workers: usize,
    backlog: i32,
    conn: ConnConfig,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        ServerBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            workers: std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            backlog: 4096,
            conn: ConnConfig {
                body_limit: DEFAULT_BODY_LIMIT,
                header_read_timeout: Duration::from_secs(30),
            },
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

    /// Listen backlog of each worker's socket (default 4096; the kernel caps
    /// it at `net.core.somaxconn`).
    pub fn backlog(mut self, n: i32) -> Self {
        self.backlog = n;
        self
    }

    /// Cap on request bodies (default [`crate::DEFAULT_BODY_LIMIT`]; longer
    /// ones are answered `413` without running the pipeline).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.conn.body_limit = bytes;
        self
    }

    /// How long a connection may take to send a request's headers (default
    /// 30 s).
    pub fn header_read_timeout(mut self, t: Duration) -> Self {
        self.conn.header_read_timeout = t;
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
        let listeners =
            listener::bind(self.addr, self.workers, self.backlog).map_err(|source| {
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
        let cfg = Arc::new(self.conn);
        let mut loops = Vec::with_capacity(self.workers);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (p, cfg, counters, stopping) = (
                pipeline(i),
                cfg.clone(),
                counters.clone(),
                handle.stopping(),
            );
            loops.push(handle.run_on(i, move || {
                conn::accept_loop(listener, p, cfg, counters, stopping)
            }));
        }
        tracing::info!(addr = %local_addr, workers = self.workers, "suspendware server listening");
        Ok(Server {
            runtime,
            local_addr,
            counters,
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
    /// The workers' accept loops; dropping one would cancel it.
    _loops: Vec<Dispatch<std::io::Result<()>>>,
}

/// What [`Server::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerReport {
    /// The request counters after the workers stopped.
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

    /// Current request counters.
    pub fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }

    /// Stops accepting connections, lets requests in flight finish (each
    /// connection closes after its current response) for up to `grace`,
    /// cancels what is left, and joins the workers. Blocks the calling
    /// thread (from async code: `tokio::task::spawn_blocking`).
    pub fn shutdown(self, grace: Duration) -> ServerReport {
        let Server {
            runtime, counters, ..
        } = self;
        let runtime = runtime.shutdown(grace);
        ServerReport {
            stats: counters.snapshot(),
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
