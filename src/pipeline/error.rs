//! Typed errors.

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
