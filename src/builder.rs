//! `Pipeline::builder()`: collects layers and settings, then plans segments.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::body::Response;
use crate::chain::{plan, Chain, Entry, Layer};
use crate::error::BuildError;
use crate::middleware::{AsyncMiddleware, SyncMiddleware, View};
use crate::panic::{default_panic_handler, PanicHandler, PanicInfo};
use crate::pipeline::Pipeline;
use crate::stack_pool::{default_stack_budget, StackPool, DEFAULT_STACK_SIZE, DEFAULT_STACK_WAIT, MIN_STACK_SIZE};

/// Builds a [`Pipeline`]. Layers are listed outermost first, like Django's
/// `MIDDLEWARE` setting and tower's `ServiceBuilder`.
pub struct PipelineBuilder {
    entries: Vec<Entry>,
    view: Option<(String, Box<dyn View>)>,
    stack_size: usize,
    max_stacks: Option<usize>,
    stack_wait: Duration,
    pool: Option<StackPool>,
    panic_handler: PanicHandler,
}

impl Default for PipelineBuilder {
    fn default() -> Self {
        PipelineBuilder {
            entries: Vec::new(),
            view: None,
            stack_size: DEFAULT_STACK_SIZE,
            max_stacks: None,
            stack_wait: DEFAULT_STACK_WAIT,
            pool: None,
            panic_handler: default_panic_handler(),
        }
    }
}

impl fmt::Debug for PipelineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("layers", &self.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>())
            .field("view", &self.view.as_ref().map(|v| v.0.as_str()))
            .field("stack_size", &self.stack_size)
            .field("max_stacks", &self.max_stacks)
            .field("stack_wait", &self.stack_wait)
            .finish()
    }
}

impl PipelineBuilder {
    /// Adds blocking-style middleware (runs on a fiber).
    pub fn sync<M: SyncMiddleware>(mut self, mw: M) -> Self {
        let name = mw.name().to_owned();
        self.entries.push(Entry { name, layer: Layer::Sync(Box::new(mw)) });
        self
    }

    /// Adds async middleware (runs on the executor).
    pub fn layer_async<M: AsyncMiddleware>(mut self, mw: M) -> Self {
        let name = mw.name().to_owned();
        self.entries.push(Entry { name, layer: Layer::Async(Box::new(mw)) });
        self
    }

    /// Sets the async view (the innermost handler). Required.
    pub fn view<V: View>(mut self, view: V) -> Self {
        self.view = Some((view.name().to_owned(), Box::new(view)));
        self
    }

    /// Usable bytes of each fiber stack (default 256 KiB, see
    /// [`crate::DEFAULT_STACK_SIZE`]; at least [`crate::MIN_STACK_SIZE`]).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Cap on fiber stacks in use at once, i.e. on requests inside sync
    /// middleware (default: [`crate::default_stack_budget`], derived from
    /// `vm.max_map_count`).
    pub fn max_stacks(mut self, n: usize) -> Self {
        self.max_stacks = Some(n);
        self
    }

    /// How long a request waits for a stack when all are in use before it is
    /// answered `503` (default 5 s; zero answers at once). Waiting needs the
    /// tokio runtime's timer (`enable_time`/`enable_all`).
    pub fn stack_wait(mut self, wait: Duration) -> Self {
        self.stack_wait = wait;
        self
    }

    /// Uses (and shares) an existing pool instead of making one; overrides
    /// `stack_size`, `max_stacks` and `stack_wait`.
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

    /// Checks the settings and plans the segments.
    pub fn build(self) -> Result<Pipeline, BuildError> {
        let (view_name, view) = self.view.ok_or(BuildError::NoView)?;
        let pool = match self.pool {
            Some(p) => p,
            None => {
                if self.stack_size < MIN_STACK_SIZE {
                    return Err(BuildError::StackTooSmall { size: self.stack_size, min: MIN_STACK_SIZE });
                }
                let max = self.max_stacks.unwrap_or_else(default_stack_budget);
                if max == 0 {
                    return Err(BuildError::NoStacks);
                }
                StackPool::new(self.stack_size, max, self.stack_wait)
            }
        };
        let segments = plan(&self.entries);
        let chain = Chain {
            entries: self.entries,
            segments,
            view,
            view_name,
            pool,
            panic_handler: self.panic_handler,
        };
        Ok(Pipeline::from_chain(Arc::new(chain)))
    }
}
