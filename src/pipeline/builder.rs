//! `Pipeline::builder()`: collects layers and settings, then plans.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::body::Response;
use crate::bridge::pool::BlockingPool;
use crate::exec::chain::Chain;
use crate::exec::stage::{AsyncOnly, AsyncViewStage, SyncOnly, SyncViewStage};
use crate::exec::thread_segment::AdaptAdmission;
use crate::exec::watchdog::Watchdog;
use crate::panic::{default_panic_handler, PanicHandler, PanicInfo};
use crate::pipeline::error::BuildError;
use crate::pipeline::hooks::{HookMiddleware, HookStage, ViewHooks};
use crate::pipeline::middleware::{AsyncMiddleware, Middleware, SyncMiddleware, SyncView, View};
use crate::pipeline::mode::{Exec, Mode};
use crate::pipeline::plan::{plan, Entry, Kind, Plan, Segment};
use crate::pipeline::Pipeline;
use crate::stack::{
    default_stack_budget, StackPool, DEFAULT_STACK_HOT_SET, DEFAULT_STACK_IDLE_TIMEOUT,
    DEFAULT_STACK_SIZE, DEFAULT_STACK_WAIT, MIN_STACK_SIZE,
};

/// Builds a [`Pipeline`]. Layers are listed outermost first, like Django's
/// `MIDDLEWARE` setting and tower's `ServiceBuilder`.
pub struct PipelineBuilder {
    entries: Vec<Entry>,
    hooks: Vec<Arc<dyn HookMiddleware>>,
    view: Option<Entry>,
    mode: Mode,
    stack_size: usize,
    max_stacks: Option<usize>,
    stack_wait: Duration,
    stack_idle_timeout: Option<Duration>,
    stack_hot_set: usize,
    pool: Option<StackPool>,
    panic_handler: PanicHandler,
    watchdog: Option<Duration>,
    adapt_threads: usize,
    blocking_threads: usize,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        PipelineBuilder {
            entries: Vec::new(),
            hooks: Vec::new(),
            view: None,
            mode: Mode::default(),
            stack_size: DEFAULT_STACK_SIZE,
            max_stacks: None,
            stack_wait: DEFAULT_STACK_WAIT,
            stack_idle_timeout: Some(DEFAULT_STACK_IDLE_TIMEOUT),
            stack_hot_set: DEFAULT_STACK_HOT_SET,
            pool: None,
            panic_handler: default_panic_handler(),
            watchdog: Some(Self::DEFAULT_WATCHDOG),
            adapt_threads: Self::DEFAULT_ADAPT_THREADS,
            blocking_threads: Self::DEFAULT_BLOCKING_THREADS,
        }
    }
}

impl fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field(
                "layers",
                &self
                    .entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("view", &self.view.as_ref().map(|v| v.name.as_str()))
            .field("mode", &self.mode)
            .field("stack_size", &self.stack_size)
            .field("max_stacks", &self.max_stacks)
            .field("stack_wait", &self.stack_wait)
            .field("stack_idle_timeout", &self.stack_idle_timeout)
            .field("stack_hot_set", &self.stack_hot_set)
            .field("blocking_threads", &self.blocking_threads)
            .finish()
    }
}

fn entry(kind: Kind, mw: Arc<dyn Middleware>) -> Entry {
    Entry {
        name: mw.name().to_owned(),
        kind,
        mw,
        view: None,
        exec: Exec::Async,
    }
}

impl PipelineBuilder {
    /// Default watchdog threshold ([`PipelineBuilder::watchdog`]): a fiber
    /// running this long without suspending is reported.
    pub const DEFAULT_WATCHDOG: Duration = Duration::from_millis(10);

    /// Default number of blocking-pool threads Adapt mode may hold
    /// ([`PipelineBuilder::adapt_threads`]; tokio's default
    /// `max_blocking_threads`).
    pub const DEFAULT_ADAPT_THREADS: usize = 512;

    /// Default cap on [`crate::blocking`] closures of one pipeline running
    /// at once, and so on its blocking threads
    /// ([`PipelineBuilder::blocking_threads`]).
    ///
    /// By Little's law the threads a load needs are its rate of `blocking`
    /// calls times their duration: 64 covers 12,800 calls/s of 5 ms (6,400
    /// of 10 ms), while staying well below tokio's 512 so that a slow
    /// dependency cannot make the process hold hundreds of threads.
    /// Measured (release, 2 shared cores, one current-thread worker, 4,000
    /// concurrent calls of 5 ms): cap 16 → 2,940 calls/s, 64 → 10,700
    /// (84% of its Little bound), 256 → 20,700, 512 → 16,300 (362
    /// threads): past ~100 threads the worker thread itself, not the cap,
    /// limits a worker, so 64 per pipeline costs little throughput and
    /// bounds the threads.
    pub const DEFAULT_BLOCKING_THREADS: usize = 64;
}

impl PipelineBuilder {
    /// Adds blocking-style middleware (on a fiber in Suspend mode).
    pub fn sync<M: SyncMiddleware>(mut self, mw: M) -> Self {
        self.entries
            .push(entry(Kind::Plain, Arc::new(SyncOnly(mw))));
        self
    }

    /// Adds sync middleware that must keep its own OS thread for the whole
    /// request, in every mode (it runs as in Adapt mode).
    ///
    /// Use it for middleware that relies on thread identity in ways
    /// [`crate::RequestLocal`] cannot replace: thread-locals of a C library
    /// or of code you cannot change, thread-affine handles (some database
    /// drivers' connections), or locks held across `get_response` that must
    /// be released by the same thread. It costs a held thread per in-flight
    /// request, so keep it for those cases.
    pub fn sync_on_thread<M: SyncMiddleware>(mut self, mw: M) -> Self {
        self.entries
            .push(entry(Kind::ThreadBound, Arc::new(SyncOnly(mw))));
        self
    }

    /// Adds async middleware (runs on the executor).
    pub fn layer_async<M: AsyncMiddleware>(mut self, mw: M) -> Self {
        self.entries
            .push(entry(Kind::Plain, Arc::new(AsyncOnly(mw))));
        self
    }

    /// Adds a middleware with explicit capability flags (e.g. a hybrid with
    /// both a sync and an async implementation; the planner chooses).
    pub fn middleware<M: Middleware>(mut self, mw: M) -> Self {
        self.entries.push(entry(Kind::Plain, Arc::new(mw)));
        self
    }

    /// Adds Django-style hook middleware (see [`HookMiddleware`]).
    pub fn hooks<H: HookMiddleware>(mut self, h: H) -> Self {
        let h: Arc<dyn HookMiddleware> = Arc::new(h);
        self.hooks.push(h.clone());
        self.entries.push(entry(Kind::Hook, Arc::new(HookStage(h))));
        self
    }

    /// Sets an async view (the innermost handler). A view is required.
    pub fn view<V: View>(mut self, view: V) -> Self {
        let view: Arc<dyn View> = Arc::new(view);
        let mut e = entry(Kind::AsyncView, Arc::new(AsyncViewStage(view.clone())));
        e.view = Some(view);
        self.view = Some(e);
        self
    }

    /// Sets a sync view: on the fiber of the sync middleware around it in
    /// Suspend mode, on the held thread in Adapt mode, a hop to the blocking
    /// pool in ThreadHop and Strict modes.
    pub fn sync_view<V: SyncView>(mut self, view: V) -> Self {
        self.view = Some(entry(
            Kind::SyncView,
            Arc::new(SyncViewStage(Arc::new(view))),
        ));
        self
    }

    /// Sets the execution mode (default [`Mode::Suspend`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Usable bytes of each fiber stack (default 256 KiB, see
    /// [`crate::stack::DEFAULT_STACK_SIZE`]; at least [`crate::stack::MIN_STACK_SIZE`]).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Cap on fiber stacks in use at once, i.e. on requests inside sync
    /// middleware (default: [`crate::stack::default_stack_budget`], derived from
    /// `vm.max_map_count`).
    pub fn max_stacks(mut self, n: usize) -> Self {
        self.max_stacks = Some(n);
        self
    }

    /// How long a request waits for a stack when all are in use before it is
    /// answered `503` (default 5 s; zero answers at once). Waiting needs the
    /// tokio runtime's timer (`enable_time`/`enable_all`). A request that has
    /// waited 50 ms is served in order of arrival, before requests that
    /// arrive later (see [`crate::stack::StackPool`]).
    pub fn stack_wait(mut self, wait: Duration) -> Self {
        self.stack_wait = wait;
        self
    }

    /// After a burst, unmap free stacks idle this long (default 10 s,
    /// [`crate::stack::DEFAULT_STACK_IDLE_TIMEOUT`]), keeping the
    /// [`stack_hot_set`](Self::stack_hot_set) most recently used; `None`
    /// keeps every stack the pool ever made. A process-wide background
    /// thread does it, so an idle server gives the memory and maps back too
    /// (at most `timeout` + min(`timeout` / 4, 1 s) after a stack's last
    /// use).
    pub fn stack_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stack_idle_timeout = timeout;
        self
    }

    /// How many of the most recently used free stacks trimming keeps
    /// (default 16, [`crate::stack::DEFAULT_STACK_HOT_SET`]): warm for the next
    /// requests.
    pub fn stack_hot_set(mut self, n: usize) -> Self {
        self.stack_hot_set = n;
        self
    }

    /// Uses (and shares) an existing pool instead of making one; overrides
    /// `stack_size`, `max_stacks`, `stack_wait`, `stack_idle_timeout` and
    /// `stack_hot_set`.
    pub fn stack_pool(mut self, pool: StackPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Replaces the default panic handler (`500 Internal Server Error`).
    pub fn panic_handler<F>(mut self, f: F) -> Self
    where
        F: Fn(&PanicInfo<'_>) -> Response + Send + Sync + 'static,
    {
        self.panic_handler = Arc::new(f);
        self
    }

    /// Warn (through `tracing`) when a fiber runs longer than `threshold`
    /// without suspending (default 10 ms), and count it in
    /// [`Pipeline::stall_stats`]; `None` turns both off.
    ///
    /// Only time the thread was blocked or computing counts: time it was
    /// runnable but waiting for a CPU (read from
    /// `/proc/thread-self/schedstat` when the wall time tripped) is
    /// subtracted, so a busy machine does not get innocent layers blamed.
    /// Around each resume the check reads a coarse clock (vDSO, no system
    /// call); the thread's schedstat snapshot is refreshed at most once per
    /// `threshold / 4` (at least 1 ms). Keep the threshold above the coarse
    /// clock's resolution (1–4 ms).
    ///
    /// A stall is charged to the layer that ran the longest stretch of the
    /// fiber's run, not to the layer the fiber happened to stop in: each
    /// layer entry and exit reads a millisecond counter that a
    /// `suspendware-ticker` thread advances while fibers run (it parks when
    /// they are idle; started here, with this thread's CPU set widened to
    /// the whole process's).
    pub fn watchdog(mut self, threshold: Option<Duration>) -> Self {
        self.watchdog = threshold;
        self
    }

    /// Blocking-pool threads that Adapt/ThreadHop held-thread segments may
    /// use (default 512, tokio's `max_blocking_threads` default). Set it to
    /// your runtime's value if you changed that.
    pub fn adapt_threads(mut self, n: usize) -> Self {
        self.adapt_threads = n.max(2);
        self
    }

    /// Caps how many [`crate::blocking`] closures called from this
    /// pipeline's fibers run at once (default
    /// [`DEFAULT_BLOCKING_THREADS`](Self::DEFAULT_BLOCKING_THREADS); at least
    /// 1), and so how many of the runtime's blocking threads the pipeline
    /// occupies. Further calls queue first come, first served, their fibers
    /// suspended (holding no thread).
    ///
    /// Size it by Little's law: rate of `blocking` calls × their duration
    /// (not requests in flight × request time, as Adapt mode's threads).
    /// Held threads and hops (Adapt, ThreadHop, `sync_on_thread`) run
    /// `blocking` closures inline and are not counted here.
    pub fn blocking_threads(mut self, n: usize) -> Self {
        self.blocking_threads = n.max(1);
        self
    }

    /// Checks the settings, plans the layers and builds the pipeline.
    pub fn build(self) -> Result<Pipeline, BuildError> {
        let view = self.view.ok_or(BuildError::NoView)?;
        let mut entries = self.entries;
        if !self.hooks.is_empty() {
            entries.push(entry(Kind::ViewHooks, Arc::new(ViewHooks(self.hooks))));
        }
        entries.push(view);
        let segments = plan(&mut entries, self.mode)?;
        let pool = match self.pool {
            Some(p) => p,
            None => {
                if self.stack_size < MIN_STACK_SIZE {
                    return Err(BuildError::StackTooSmall {
                        size: self.stack_size,
                        min: MIN_STACK_SIZE,
                    });
                }
                let max = self.max_stacks.unwrap_or_else(default_stack_budget);
                if max == 0 {
                    return Err(BuildError::NoStacks);
                }
                StackPool::with_trim(
                    self.stack_size,
                    max,
                    self.stack_wait,
                    self.stack_idle_timeout,
                    self.stack_hot_set,
                )
            }
        };
        let held = segments
            .iter()
            .filter(|s| matches!(s, Segment::Thread(_)))
            .count();
        let adapt = AdaptAdmission::new(self.adapt_threads, held);
        for e in entries
            .iter()
            .filter(|e| e.exec == Exec::Thread && e.kind != Kind::ViewHooks)
        {
            tracing::warn!(
                middleware = %e.name,
                mode = %self.mode,
                admitted = adapt.limit(),
                "Synchronous middleware {} adapted to a blocking-pool thread: it holds one OS \
                 thread per in-flight request while the rest of the pipeline runs (at most {} \
                 requests at once; more wait). Mode::Suspend runs it on a fiber instead.",
                e.name,
                adapt.limit()
            );
        }
        let plan = Plan::of(self.mode, &entries, &segments);
        let watchdog = self.watchdog.map(|t| Watchdog::new(t, entries.len()));
        let ctx_on_first_fiber = Chain::context_on_first_fiber(&entries, &segments);
        let chain = Chain {
            mode: self.mode,
            entries,
            segments,
            plan,
            pool,
            panic_handler: self.panic_handler,
            watchdog,
            adapt,
            blocking: Arc::new(BlockingPool::new(self.blocking_threads)),
            ctx_on_first_fiber,
        };
        Ok(Pipeline::from_chain(Arc::new(chain)))
    }
}
