//! Entry points for the crate's own benchmarks (`benches/micro.rs`).
//!
//! Not part of the public API: hidden from the docs, exempt from semver, and
//! only here because the fiber and the stack pool's take/return are
//! crate-private. Everything is safe to call.

use std::task::Waker;

use corosensei::stack::DefaultStack;

use crate::body::Response;
use crate::coro::Step;
use crate::exec::fiber_locals::{RequestFiber, Resumed};
use crate::stack::StackPool;

/// Runs one fiber to completion on a stack taken from `pool`, then returns
/// the stack: the per-request fiber lifecycle without the pipeline around
/// it.
///
/// # Panics
/// If the pool has no free slot or cannot map a stack.
pub fn fiber_lifecycle_pooled(pool: &StackPool) {
    let stack = pool
        .try_acquire()
        .expect("bench pool could not map a stack")
        .expect("bench pool is full: release stacks between runs");
    let stack = run_once(stack);
    pool.release(stack);
}

/// The same lifecycle on a freshly mapped stack that is unmapped afterwards:
/// what every request would pay without the pool.
///
/// # Panics
/// If the stack cannot be mapped.
pub fn fiber_lifecycle_fresh(stack_size: usize) {
    let stack = DefaultStack::new(stack_size).expect("could not map a stack");
    drop(run_once(stack));
}

fn run_once(stack: DefaultStack) -> DefaultStack {
    let mut fiber = RequestFiber::new(stack, (), |_| drop(Response::new(crate::Body::empty())));
    match fiber.resume(Waker::noop(), Resumed::Poll) {
        Step::Done(()) => {}
        Step::Suspended(_) => unreachable!("the bench fiber never suspends"),
    }
    fiber
        .into_stack()
        .expect("a finished fiber gives its stack back")
}
