//! The stack pool: fiber stacks are reused, and their number is capped.
//!
//! Mapping a stack costs two `mmap`-family calls and unmapping it a TLB
//! shootdown on every core (wasmtime #4637), so stacks are kept in a free
//! list and handed from request to request. A stack is *in use* from
//! [`StackPool::acquire`] until [`StackPool::release`]; a stack that is not in
//! use sits in the free list. Nothing else owns stacks.
//!
//! Two limits apply:
//!
//! * the pool's own `max_stacks` (how many may be in use at once);
//! * the process-wide map budget: each guarded stack costs two entries of
//!   `vm.max_map_count`, and at that limit *every* `mmap` in the process
//!   fails (malloc included). [`default_stack_budget`] derives a budget with
//!   headroom; all pools together never allocate more stacks than that.
//!
//! When `max_stacks` stacks are in use, a request waits (up to the pool's
//! `wait` bound) for one to come back, and then is answered `503`.
//!
//! The counters and free list use the crate's loom shim; `tests/loom.rs`
//! models acquire/release/wake-up with the same code ([`PoolCore`]).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use corosensei::stack::DefaultStack;

use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Mutex;
use crate::stack::StackError;
use std::sync::Arc;

/// Default usable size of a fiber stack: 256 KiB.
///
/// Sync middleware is shallow, but code on a fiber also polls the futures
/// passed to [`crate::wait`], formats log lines and unwinds panics, all of
/// which want tens of KiB. 256 KiB leaves a wide margin, while the kernel
/// backs only the pages a request actually touches: the size costs address
/// space (25k stacks ≈ 6 GiB of it), not memory.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The smallest stack size the builder accepts (64 KiB).
///
/// Measured: a pass-through middleware around a view needs about 20 KiB of
/// fiber stack in a debug build, and a panic on the fiber with
/// `RUST_BACKTRACE=1` (the panic hook captures and prints the backtrace on
/// the fiber's stack) needs 32–48 KiB; below that a trivial pipeline
/// overflows and aborts.
pub const MIN_STACK_SIZE: usize = 64 * 1024;

/// Default time a request waits for a stack when the pool is exhausted.
pub const DEFAULT_STACK_WAIT: Duration = Duration::from_secs(5);

/// Map entries left for everything else in the process (heap arenas, thread
/// stacks, libraries, sockets' buffers): a quarter of the limit, at least
/// 8192.
fn map_headroom(max_map_count: usize) -> usize {
    (max_map_count / 4).max(8192)
}

/// Reads `vm.max_map_count` (65530 when unreadable, the kernel default).
pub fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530)
}

/// The process-wide cap on live fiber stacks: `(max_map_count - headroom) / 2`.
///
/// With the kernel default of 65530 that is 24,574 stacks. Operators who
/// need more in-flight requests raise `vm.max_map_count` (as Elasticsearch
/// asks its users to).
pub fn default_stack_budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let max = max_map_count();
        (max.saturating_sub(map_headroom(max)) / 2).max(1)
    })
}

/// Stacks allocated by all pools of this process. A plain std atomic even
/// under loom: it is a process-wide tally, not part of a modelled hand-off.
static PROCESS_STACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counters, free list and limit of a pool, generic over the stack type so
/// loom can model it with stand-in stacks.
pub(crate) struct PoolCore<S> {
    free: Mutex<Vec<S>>,
    /// Stacks handed out and not yet released.
    in_use: AtomicUsize,
    /// Stacks that exist (in use + free).
    allocated: AtomicUsize,
    /// Requests currently waiting for a stack.
    waiters: AtomicUsize,
    max: usize,
}

/// Outcome of [`PoolCore::try_acquire`].
#[derive(Debug)]
pub(crate) enum TryAcquire<S> {
    /// A stack from the free list.
    Reused(S),
    /// A slot was reserved but the free list was empty: the caller must
    /// allocate a stack (and call [`PoolCore::allocated`] or
    /// [`PoolCore::cancel_slot`]).
    Allocate,
    /// `max` stacks are in use.
    Full,
}

impl<S> PoolCore<S> {
    /// A pool core allowing `max` stacks in use.
    pub(super) fn new(max: usize) -> Self {
        PoolCore {
            free: Mutex::new(Vec::new()),
            in_use: AtomicUsize::new(0),
            allocated: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            max,
        }
    }

    /// Reserves an in-use slot, then takes a free stack if there is one.
    pub(super) fn try_acquire(&self) -> TryAcquire<S> {
        // SeqCst: pairs with `release`/`add_waiter` (see `release`).
        let mut cur = self.in_use.load(Ordering::SeqCst);
        loop {
            if cur >= self.max {
                return TryAcquire::Full;
            }
            match self.in_use.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        match lock(&self.free).pop() {
            Some(s) => TryAcquire::Reused(s),
            None => TryAcquire::Allocate,
        }
    }

    /// Records that the caller allocated a stack for its reserved slot.
    pub(super) fn allocated(&self) {
        self.allocated.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back a slot reserved by `try_acquire` whose allocation failed.
    /// Returns whether a waiter should be woken.
    #[must_use]
    pub(super) fn cancel_slot(&self) -> bool {
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Returns a stack to the free list and frees its slot. Returns whether a
    /// waiter must be woken.
    ///
    /// Ordering: the slot is freed (`in_use` decremented) *before* `waiters`
    /// is read, and a waiter registers in `waiters` *before* retrying
    /// `try_acquire`; all four accesses are SeqCst. So either this call sees
    /// the waiter (and wakes it) or the waiter's retry sees the free slot.
    /// Reading `waiters` first would lose that wake-up (the loom model
    /// `pool_release_wakes_waiter` catches it).
    #[must_use]
    pub(super) fn release(&self, stack: S) -> bool {
        lock(&self.free).push(stack);
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Registers a waiter (before its retry of `try_acquire`).
    pub(super) fn add_waiter(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
    }

    /// Unregisters a waiter.
    pub(super) fn remove_waiter(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Drops every free stack (they are unmapped); returns how many.
    pub(super) fn trim(&self) -> usize {
        let drained: Vec<S> = lock(&self.free).drain(..).collect();
        let n = drained.len();
        self.allocated.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Current counters.
    pub(super) fn stats(&self) -> PoolStats {
        PoolStats {
            in_use: self.in_use.load(Ordering::SeqCst),
            idle: lock(&self.free).len(),
            allocated: self.allocated.load(Ordering::Relaxed),
            max: self.max,
            waiting: self.waiters.load(Ordering::SeqCst),
        }
    }
}

impl<S> fmt::Debug for PoolCore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolCore")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Stacks held by running or suspended fibers.
    pub in_use: usize,
    /// Stacks in the free list.
    pub idle: usize,
    /// Stacks that exist (`in_use + idle` when no acquire is half-way).
    pub allocated: usize,
    /// The pool's cap on stacks in use.
    pub max: usize,
    /// Requests waiting for a stack.
    pub waiting: usize,
}

impl PoolStats {
    /// True when no stack is in use and every allocated stack is back in the
    /// free list: nothing leaked.
    pub fn is_whole(&self) -> bool {
        self.in_use == 0 && self.idle == self.allocated
    }
}

/// A shared pool of fiber stacks (cheap to clone; clones share the pool).
///
/// Pipelines make their own pool from the builder's settings; pass one pool
/// to several builders with [`crate::PipelineBuilder::stack_pool`] to share
/// stacks and the cap between them.
#[derive(Clone)]
pub struct StackPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    core: PoolCore<DefaultStack>,
    stack_size: usize,
    wait: Duration,
    notify: tokio::sync::Notify,
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackPool")
            .field("stack_size", &self.inner.stack_size)
            .field("wait", &self.inner.wait)
            .field("stats", &self.stats())
            .finish()
    }
}

impl StackPool {
    /// A pool of stacks of `stack_size` usable bytes, at most `max_stacks` in
    /// use at once; a request waits up to `wait` for a stack when all are in
    /// use (`Duration::ZERO`: answer 503 at once).
    pub fn new(stack_size: usize, max_stacks: usize, wait: Duration) -> StackPool {
        StackPool {
            inner: Arc::new(PoolInner {
                core: PoolCore::new(max_stacks.max(1)),
                stack_size: stack_size.max(MIN_STACK_SIZE),
                wait,
                notify: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Usable bytes of each stack.
    pub fn stack_size(&self) -> usize {
        self.inner.stack_size
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        self.inner.core.stats()
    }

    /// Unmaps every idle stack (e.g. after a traffic peak); returns how many.
    pub fn trim(&self) -> usize {
        let n = self.inner.core.trim();
        PROCESS_STACKS.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Takes a stack without waiting. `Ok(None)` when the pool is full.
    pub(crate) fn try_acquire(&self) -> Result<Option<DefaultStack>, StackError> {
        match self.inner.core.try_acquire() {
            TryAcquire::Reused(s) => Ok(Some(s)),
            TryAcquire::Full => Ok(None),
            TryAcquire::Allocate => match self.allocate() {
                Ok(s) => {
                    self.inner.core.allocated();
                    Ok(Some(s))
                }
                Err(e) => {
                    if self.inner.core.cancel_slot() {
                        self.inner.notify.notify_one();
                    }
                    Err(e)
                }
            },
        }
    }

    fn allocate(&self) -> Result<DefaultStack, StackError> {
        let budget = default_stack_budget();
        let prev = PROCESS_STACKS.fetch_add(1, Ordering::Relaxed);
        if prev >= budget {
            PROCESS_STACKS.fetch_sub(1, Ordering::Relaxed);
            return Err(StackError::MapBudget {
                budget,
                max_map_count: max_map_count(),
            });
        }
        DefaultStack::new(self.inner.stack_size).map_err(|e| {
            PROCESS_STACKS.fetch_sub(1, Ordering::Relaxed);
            StackError::Map(e)
        })
    }

    /// Takes a stack, waiting up to the pool's bound when all are in use.
    pub(crate) async fn acquire(&self) -> Result<DefaultStack, StackError> {
        if let Some(s) = self.try_acquire()? {
            return Ok(s);
        }
        let inner = &self.inner;
        let full = || StackError::Exhausted {
            max: inner.core.max,
            waited: inner.wait,
        };
        if inner.wait.is_zero() {
            return Err(full());
        }
        let deadline = tokio::time::Instant::now() + inner.wait;
        inner.core.add_waiter();
        let _waiting = WaiterGuard(&inner.core);
        loop {
            let notified = inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = self.try_acquire()? {
                return Ok(s);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(full());
            }
        }
    }

    /// Returns a stack taken with `acquire`/`try_acquire`.
    pub(crate) fn release(&self, stack: DefaultStack) {
        if self.inner.core.release(stack) {
            self.inner.notify.notify_one();
        }
    }

    /// Gives back the slot of a stack that was lost (a fiber that could not
    /// be unwound keeps its stack; it is unmapped instead of reused).
    pub(crate) fn forget_one(&self) {
        self.inner.core.allocated.fetch_sub(1, Ordering::Relaxed);
        PROCESS_STACKS.fetch_sub(1, Ordering::Relaxed);
        if self.inner.core.cancel_slot() {
            self.inner.notify.notify_one();
        }
    }
}

struct WaiterGuard<'a, S>(&'a PoolCore<S>);

impl<S> Drop for WaiterGuard<'_, S> {
    fn drop(&mut self) {
        self.0.remove_waiter();
    }
}
