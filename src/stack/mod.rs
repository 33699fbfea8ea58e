//! Fiber stacks: the pool they are reused from, and the process-wide budget
//! that caps them.
//!
//! Each request that runs sync middleware in Suspend mode holds one stack
//! from its pool while its fiber exists. See [`StackPool`] for sharing a
//! pool between pipelines and for the counters, and
//! [`default_stack_budget`] for the cap derived from `vm.max_map_count`.

mod error;
#[cfg(all(test, loom))]
mod loom_pool;
mod pool;
mod trim;

pub use error::StackError;
pub use pool::{
    default_stack_budget, max_map_count, PoolStats, StackPool, DEFAULT_STACK_HOT_SET,
    DEFAULT_STACK_IDLE_TIMEOUT, DEFAULT_STACK_SIZE, DEFAULT_STACK_WAIT, MIN_STACK_SIZE,
};
#[cfg(all(test, loom))]
pub(crate) use pool::{Enqueued, Grant};
#[cfg(loom)]
pub(crate) use pool::{PoolCore, TryAcquire};
