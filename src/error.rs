//! Typed errors.

use std::time::Duration;

/// Why [`crate::PipelineBuilder::build`] refused a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No view was given.
    #[error("the pipeline has no view: call .view(handler) before .build()")]
    NoView,
    /// The stack size is too small to run middleware safely.
    #[error(
        "stack_size({size}) is below the minimum of {min} bytes; \
         use at least {min} (the default is 256 KiB)"
    )]
    StackTooSmall {
        /// The size asked for.
        size: usize,
        /// The minimum accepted.
        min: usize,
    },
    /// Strict mode found sync-only middleware.
    #[error(
        "Mode::Strict accepts only async-capable middleware, but these are sync-only: {}; \
         make them async (or hybrid), or use Mode::Suspend to run them on fibers",
        names.join(", ")
    )]
    SyncInStrict {
        /// The offending middleware, outermost first.
        names: Vec<String>,
    },
    /// A middleware declared neither sync nor async capability.
    #[error(
        "middleware {name} is neither sync- nor async-capable: its capabilities() must \
         set at least one of sync / async_"
    )]
    NoCapability {
        /// The middleware's name.
        name: String,
    },
    /// `max_stacks(0)` admits no request with sync middleware.
    #[error("max_stacks(0) would answer every request with 503; use at least 1")]
    NoStacks,
}

/// Why a request could not get a fiber stack. The pipeline answers such a
/// request with `503 Service Unavailable` and logs this message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    /// All of the pool's stacks stayed in use for the whole wait.
    #[error(
        "all {max} fiber stacks are in use and none came back within {waited:?}; \
         raise PipelineBuilder::max_stacks / stack_wait, or shed load earlier"
    )]
    Exhausted {
        /// The pool's cap.
        max: usize,
        /// How long the request waited.
        waited: Duration,
    },
    /// The process-wide budget derived from `vm.max_map_count` is spent.
    #[error(
        "the process-wide budget of {budget} fiber stacks is spent (derived from \
         vm.max_map_count = {max_map_count}, two map entries per stack, with headroom \
         so that malloc keeps working); raise vm.max_map_count or lower max_stacks"
    )]
    MapBudget {
        /// Stacks the budget allows.
        budget: usize,
        /// The kernel's per-process map limit.
        max_map_count: usize,
    },
    /// `mmap`/`mprotect` of a new stack failed.
    #[error("mapping a new fiber stack failed ({0}); lower max_stacks or stack_size")]
    Map(#[source] std::io::Error),
}
