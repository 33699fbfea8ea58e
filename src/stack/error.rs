//! Why a request got no fiber stack.

use std::time::Duration;

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
