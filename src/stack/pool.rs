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
//! `wait` bound) for one to come back, and then is answered `503`. It first
//! competes for freed stacks (a request arriving meanwhile may win, which
//! keeps warm stacks busy), and after [`STARVING_AFTER`] joins a queue
//! served in order of arrival (see [`PoolCore`]).
//!
//! After a burst, the free list would keep every stack the burst made (two
//! maps and the touched pages each). Each free stack carries the coarse
//! time it was released; the process-wide trimmer thread
//! ([`crate::stack::trim`]) unmaps those idle for the pool's
//! `idle_timeout`, beyond the `hot_set` most recently used ones. The free
//! list is a stack (LIFO): requests take the warmest stack from the top,
//! trimming takes the coldest from the bottom.
//!
//! The counters, free list and queue use the crate's loom shim;
//! `loom_pool.rs` models acquire/release/wake-up and the queue's hand-offs
//! with the same code ([`PoolCore`]).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use corosensei::stack::DefaultStack;

use super::StackError;
use crate::coro::coarse_now_ns;
use crate::handoff::{Receiver, Sender};
use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::loom::sync::Mutex;
use std::collections::VecDeque;
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

/// How long a request waiting for a stack competes for freed slots before
/// it joins the hand-off queue, where it is served in order of arrival
/// (see [`PoolCore`]): a bound on how long arriving requests may overtake
/// it. Measured at N = 30,000 closed-loop clients over a 24,574-stack
/// budget (BENCHMARKS.md, "Fourth round (issue 13)").
pub(crate) const STARVING_AFTER: Duration = Duration::from_millis(50);

/// How often a request waiting because the process's map budget is spent
/// retries (budget freed by other pools does not notify this one): first
/// after `BUDGET_RETRY`, then at twice the previous interval, up to
/// `BUDGET_RETRY_MAX`, so that thousands of such waiters (an overload,
/// when CPU matters most) retry a few tens of thousands of times a second
/// at most, not hundreds of thousands.
const BUDGET_RETRY: Duration = Duration::from_millis(10);
const BUDGET_RETRY_MAX: Duration = Duration::from_millis(100);

/// Default time a free stack may stay idle before it is unmapped: 10 s.
///
/// Long enough that steady traffic (which reuses the most recently freed
/// stacks) never maps and unmaps stacks in a loop, short enough that an
/// idle server gives a burst's memory and maps back within seconds.
pub const DEFAULT_STACK_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default number of most recently used free stacks that are never
/// trimmed: 16 (32 maps, their touched pages; warm for the next request).
pub const DEFAULT_STACK_HOT_SET: usize = 16;

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
    let max = budget_max_map_count();
    (max.saturating_sub(map_headroom(max)) / 2).max(1)
}

/// `vm.max_map_count` as read once for the budget (an error message built
/// on every failed allocation, possibly thousands a second when the budget
/// is spent, would otherwise read `/proc` each time).
fn budget_max_map_count() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(max_map_count)
}

/// Stacks allocated by all pools of this process. A plain std atomic even
/// under loom: it is a process-wide tally, not part of a modelled hand-off.
static PROCESS_STACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Counters, free list, hand-off queue and limit of a pool, generic over
/// the stack type so loom can model it with stand-in stacks.
///
/// ## Slots, waiters and the hand-off queue
///
/// A *slot* is the right to hold one stack; `in_use` counts the slots
/// taken. A request takes a slot without waiting ([`PoolCore::try_acquire`])
/// while `in_use < max`. When none is free it waits, in two
/// phases (as Go's `sync.Mutex` does between its normal and starvation
/// modes):
///
/// 1. *Competing* ([`PoolCore::add_waiter`]): a freed slot goes back to the
///    pool and `release` reports that a waiter must be woken; the woken
///    waiter retries, and a request arriving meanwhile may take the slot
///    first. That keeps a just-released (cache-warm) stack busy instead of
///    idle until the waiter's task is scheduled.
/// 2. *Queued* ([`PoolCore::enqueue`]), after [`STARVING_AFTER`] of losing:
///    a freed slot is handed to the oldest queued request directly
///    ([`PoolCore::release_at`], [`PoolCore::cancel_slot`]); the slot stays
///    taken, so no one can overtake the queue. Without this phase, under a
///    closed loop beyond the budget, arriving requests won every race and
///    the same waiters starved until their deadline and a 503
///    (BENCHMARKS.md, "Fourth round (issue 13)").
///
/// Invariant (every change of the queue and of `in_use` happens under the
/// `shared` lock): the queue is non-empty only while `in_use == max`. A
/// queued request is therefore never left beside a free slot: both sides
/// decide under the same lock.
///
/// `in_use` is an atomic only so that [`PoolCore::stats`] may read it; its
/// writers, serialised by the lock, load and store it. A read-modify-write
/// there (the lock-free compare-and-swap slot reservation this pool had
/// before, and `fetch_sub` on release) added two locked instructions per
/// request, about 8 ns each in time on this project's machines, beside
/// the lock the free list needs anyway (BENCHMARKS.md, "Sixth round
/// (issue 13)").
pub(crate) struct PoolCore<S> {
    shared: Mutex<Shared<S>>,
    /// Slots taken: stacks handed out, or reserved for a stack being
    /// mapped or handed to a waiter. Written only under the `shared` lock.
    in_use: AtomicUsize,
    /// Stacks that exist (in use + free).
    allocated: AtomicUsize,
    /// Requests waiting in the competing phase.
    waiters: AtomicUsize,
    /// Requests in the hand-off queue (its length, mirrored for `stats`).
    queued: AtomicUsize,
    max: usize,
}

/// What the pool's lock guards.
struct Shared<S> {
    /// Free stacks with the coarse time (ns) each was released, most
    /// recently released on top. Times are non-decreasing upwards except for
    /// the few nanoseconds two releases may race; trimming only takes a
    /// run of old entries from the bottom, so such a swap only delays it.
    free: Vec<(S, u64)>,
    /// Waiting requests, oldest first, each with its ticket.
    queue: VecDeque<(u64, Sender<Grant<S>>)>,
    next_ticket: u64,
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

/// A slot given to a waiter: with a free stack, or to allocate one for (as
/// [`TryAcquire::Allocate`]).
#[derive(Debug)]
pub(crate) enum Grant<S> {
    /// A released stack.
    Stack(S),
    /// A slot whose stack must be mapped (the freed slot had none: a failed
    /// allocation or a lost stack gave it back).
    Slot,
}

/// Outcome of [`PoolCore::enqueue`].
pub(crate) enum Enqueued<S> {
    /// A slot was free after all.
    Granted(Grant<S>),
    /// Queued: the grant arrives on the receiver; [`PoolCore::withdraw`]
    /// with the ticket leaves the queue.
    Waiting(u64, Receiver<Grant<S>>),
}

impl<S> PoolCore<S> {
    /// A pool core allowing `max` stacks in use.
    pub(super) fn new(max: usize) -> Self {
        PoolCore {
            shared: Mutex::new(Shared {
                free: Vec::new(),
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            in_use: AtomicUsize::new(0),
            allocated: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            max,
        }
    }

    /// Reserves a slot, then takes a free stack if there is one; cannot
    /// succeed while anyone is queued (the queue is non-empty only while all
    /// slots are taken).
    pub(super) fn try_acquire(&self) -> TryAcquire<S> {
        let mut shared = lock(&self.shared);
        if !self.reserve(&shared) {
            return TryAcquire::Full;
        }
        match shared.free.pop() {
            Some((s, _)) => TryAcquire::Reused(s),
            None => TryAcquire::Allocate,
        }
    }

    /// Takes a slot if `in_use < max`. The `shared` guard is the proof that
    /// the caller holds the lock that serialises `in_use`'s writers.
    fn reserve(&self, _locked: &Shared<S>) -> bool {
        let cur = self.in_use.load(Ordering::Relaxed);
        if cur >= self.max {
            return false;
        }
        self.in_use.store(cur + 1, Ordering::Relaxed);
        true
    }

    /// Frees a slot; under the lock, like [`PoolCore::reserve`].
    fn unreserve(&self, _locked: &Shared<S>) {
        let cur = self.in_use.load(Ordering::Relaxed);
        debug_assert!(cur > 0, "a slot freed that was not taken");
        self.in_use.store(cur - 1, Ordering::Relaxed);
    }

    /// Takes a slot if one is free, else joins the queue (under the lock,
    /// so no slot can be freed between the check and the joining).
    pub(super) fn enqueue(&self) -> Enqueued<S> {
        let mut shared = lock(&self.shared);
        if self.reserve(&shared) {
            return Enqueued::Granted(match shared.free.pop() {
                Some((s, _)) => Grant::Stack(s),
                None => Grant::Slot,
            });
        }
        let (tx, rx) = crate::handoff::oneshot();
        let ticket = shared.next_ticket;
        shared.next_ticket += 1;
        shared.queue.push_back((ticket, tx));
        self.queued.fetch_add(1, Ordering::SeqCst);
        Enqueued::Waiting(ticket, rx)
    }

    /// Leaves the queue. `true`: done, nothing was granted. `false`: a grant
    /// was already sent to the ticket's receiver (it is ready there), and
    /// the caller must use it or give it back.
    pub(super) fn withdraw(&self, ticket: u64) -> bool {
        let mut shared = lock(&self.shared);
        match shared.queue.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                shared.queue.remove(i);
                self.queued.fetch_sub(1, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Hands `grant` to the oldest queued request that still listens; gives
    /// it back when the queue is empty. Called with the lock held: the send
    /// wakes the receiver's task (a tokio waker only schedules it), and a
    /// request that withdraws under the same lock either is still queued or
    /// finds the grant in its receiver.
    fn hand_over(&self, shared: &mut Shared<S>, mut grant: Grant<S>) -> Option<Grant<S>> {
        while let Some((_, tx)) = shared.queue.pop_front() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            match tx.send(grant) {
                Ok(()) => return None,
                // Its receiver is gone without withdrawing (not done by
                // `StackPool`, which withdraws first): the next one.
                Err(g) => grant = g,
            }
        }
        Some(grant)
    }

    /// Records that the caller allocated a stack for its reserved slot.
    pub(super) fn allocated(&self) {
        self.allocated.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back a slot reserved by `try_acquire` (or granted without a
    /// stack) whose allocation failed: to the oldest queued request, else
    /// freed. Returns whether a competing waiter must be woken.
    #[must_use]
    pub(super) fn cancel_slot(&self) -> bool {
        let mut shared = lock(&self.shared);
        if self.hand_over(&mut shared, Grant::Slot).is_none() {
            return false;
        }
        // Under the lock: an `enqueue` must not see the slot taken after
        // this call decided that no one was queued.
        self.unreserve(&shared);
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Returns a stack: to the oldest queued request (its slot with it),
    /// else to the free list, freeing its slot. Returns whether a competing
    /// waiter must be woken.
    ///
    /// Ordering (competing phase): the slot is freed (`in_use` decremented)
    /// and `waiters` read under the lock, and a waiter registers in
    /// `waiters` *before* its retry of `try_acquire` takes the lock. So
    /// either the retry's critical section comes after this one (and sees
    /// the free slot) or before it (and the registration, which precedes
    /// it, is seen here, and the waiter is woken). Reading `waiters` outside
    /// the lock, before the slot is freed, would lose that wake-up (the
    /// loom model `pool_release_wakes_waiter` checks it).
    ///
    /// The release time is the watchdog ticker's published clock reading
    /// while that thread ticks (a memory read: the trimmer only compares it
    /// with idle timeouts of seconds, so its tick of lag does not matter),
    /// else the coarse clock (a vDSO read, ~13 ns per fiber on this
    /// project's machines).
    #[must_use]
    pub(crate) fn release(&self, stack: S) -> bool {
        let now = crate::exec::ticker::clock_ns_if_ticking().unwrap_or_else(coarse_now_ns);
        self.release_at(stack, now)
    }

    /// [`PoolCore::release`] with the release time given (coarse ns).
    #[must_use]
    pub(crate) fn release_at(&self, stack: S, now: u64) -> bool {
        let mut shared = lock(&self.shared);
        let Some(Grant::Stack(stack)) = self.hand_over(&mut shared, Grant::Stack(stack)) else {
            return false;
        };
        shared.free.push((stack, now));
        // Under the lock, as in `cancel_slot`.
        self.unreserve(&shared);
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Registers a competing waiter (before its retry of `try_acquire`).
    pub(super) fn add_waiter(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
    }

    /// Unregisters a competing waiter.
    pub(super) fn remove_waiter(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Drops every free stack (they are unmapped); returns how many.
    pub(crate) fn trim(&self) -> usize {
        self.trim_idle(u64::MAX, 0, 0).len()
    }

    /// Takes the free stacks released at least `idle_ns` before `now`,
    /// beyond the `keep` most recently released, out of the pool and
    /// returns them (coldest first) for the caller to drop outside the lock.
    ///
    /// Only free stacks are touched: a stack in use belongs to its fiber
    /// and comes back through `release`. `allocated` is lowered under the
    /// free list's lock, so `stats` (which reads both under it) never sees
    /// a trimmed stack as missing. `in_use` and the queue are not touched:
    /// trimming frees no slot, and waiters get released stacks directly,
    /// not through the free list.
    pub(crate) fn trim_idle(&self, now: u64, idle_ns: u64, keep: usize) -> Vec<S> {
        let mut shared = lock(&self.shared);
        let free = &mut shared.free;
        let spare = free.len().saturating_sub(keep);
        let cold = free[..spare]
            .iter()
            .take_while(|(_, at)| now.saturating_sub(*at) >= idle_ns)
            .count();
        let out: Vec<S> = free.drain(..cold).map(|(s, _)| s).collect();
        self.allocated.fetch_sub(cold, Ordering::Relaxed);
        out
    }

    /// Current counters.
    pub(super) fn stats(&self) -> PoolStats {
        // Both under the lock: `in_use` and the free list change together.
        let shared = lock(&self.shared);
        PoolStats {
            in_use: self.in_use.load(Ordering::Relaxed),
            idle: shared.free.len(),
            allocated: self.allocated.load(Ordering::Relaxed),
            max: self.max,
            waiting: self.waiters.load(Ordering::SeqCst) + self.queued.load(Ordering::SeqCst),
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
///
/// When every stack is in use, a request waits: for its first 50 ms it
/// competes for released stacks with requests that arrive meanwhile (a
/// just-released stack is warm in the cache, and handing it on at once
/// keeps it busy), then it queues, and the oldest queued request gets the
/// next released stack; requests that arrive while anyone is queued queue
/// behind. So no request waits out its `wait` bound while later ones are
/// served.
#[derive(Clone)]
pub struct StackPool {
    inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    core: PoolCore<DefaultStack>,
    stack_size: usize,
    wait: Duration,
    /// Wakes a competing waiter when a slot is freed.
    notify: tokio::sync::Notify,
    /// Unmap free stacks idle this long (`None`: keep them).
    idle_timeout: Option<Duration>,
    /// Free stacks never trimmed (the most recently used).
    hot_set: usize,
}

impl PoolInner {
    /// Unmaps every free stack, hot or not, and gives them back to the
    /// process budget; returns how many.
    fn trim_all(&self) -> usize {
        let n = self.core.trim();
        PROCESS_STACKS.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Unmaps the stacks idle for `idle_timeout` beyond the hot set (the
    /// munmaps run after the free list's lock is released); returns how
    /// many.
    fn trim_idle(&self) -> usize {
        let Some(timeout) = self.idle_timeout else {
            return 0;
        };
        let idle_ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let cold = self.core.trim_idle(coarse_now_ns(), idle_ns, self.hot_set);
        let n = cold.len();
        drop(cold);
        // After the unmaps: the process-wide budget never counts a stack as
        // gone while its maps still exist.
        PROCESS_STACKS.fetch_sub(n, Ordering::Relaxed);
        n
    }
}

impl crate::stack::trim::Trim for PoolInner {
    fn reclaim(&self) -> usize {
        self.trim_all()
    }

    fn trim(&self) -> usize {
        let n = self.trim_idle();
        if n > 0 {
            tracing::debug!(
                unmapped = n,
                kept = self.core.stats().idle,
                "unmapped idle fiber stacks"
            );
        }
        n
    }

    fn period(&self) -> Option<Duration> {
        self.idle_timeout.map(crate::stack::trim::period_for)
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // The last handle is gone, so no stack is in use (each in-use stack's
        // fiber holds a handle through its chain): the free list is all, and
        // dropping it unmaps them. Give them back to the process budget.
        self.trim_all();
    }
}

impl fmt::Debug for StackPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackPool")
            .field("stack_size", &self.inner.stack_size)
            .field("wait", &self.inner.wait)
            .field("idle_timeout", &self.inner.idle_timeout)
            .field("hot_set", &self.inner.hot_set)
            .field("stats", &self.stats())
            .finish()
    }
}

impl StackPool {
    /// A pool of stacks of `stack_size` usable bytes, at most `max_stacks` in
    /// use at once; a request waits up to `wait` for a stack when all are in
    /// use (`Duration::ZERO`: answer 503 at once).
    ///
    /// Free stacks idle for [`DEFAULT_STACK_IDLE_TIMEOUT`] beyond the
    /// [`DEFAULT_STACK_HOT_SET`] most recently used are unmapped (see
    /// [`StackPool::with_trim`]).
    pub fn new(stack_size: usize, max_stacks: usize, wait: Duration) -> StackPool {
        StackPool::with_trim(
            stack_size,
            max_stacks,
            wait,
            Some(DEFAULT_STACK_IDLE_TIMEOUT),
            DEFAULT_STACK_HOT_SET,
        )
    }

    /// [`StackPool::new`] with its trimming policy: free stacks idle for
    /// `idle_timeout` are unmapped (pages and maps go back to the system),
    /// except the `hot_set` most recently used; `None` keeps every stack
    /// until [`StackPool::trim`] or the pool's drop.
    ///
    /// Trimming runs on a process-wide background thread
    /// (`suspendware-trim`), so it happens on an idle server too: a stack
    /// is unmapped at most `idle_timeout` + min(`idle_timeout` / 4, 1 s)
    /// after its last use. The thread holds pools weakly; a dropped pool is
    /// forgotten.
    pub fn with_trim(
        stack_size: usize,
        max_stacks: usize,
        wait: Duration,
        idle_timeout: Option<Duration>,
        hot_set: usize,
    ) -> StackPool {
        let inner = Arc::new(PoolInner {
            core: PoolCore::new(max_stacks.max(1)),
            stack_size: stack_size.max(MIN_STACK_SIZE),
            wait,
            notify: tokio::sync::Notify::new(),
            idle_timeout,
            hot_set,
        });
        if idle_timeout.is_some() {
            let weak: std::sync::Weak<PoolInner> = Arc::downgrade(&inner);
            crate::stack::trim::register(weak);
        }
        StackPool { inner }
    }

    /// How long a free stack may stay idle before it is unmapped (`None`:
    /// never).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.inner.idle_timeout
    }

    /// How many of the most recently used free stacks are never trimmed.
    pub fn hot_set(&self) -> usize {
        self.inner.hot_set
    }

    /// Unmaps the free stacks idle for the pool's `idle_timeout`, beyond its
    /// hot set, now (the background thread does this on its own); returns
    /// how many. Does nothing without an idle timeout.
    pub fn trim_idle(&self) -> usize {
        self.inner.trim_idle()
    }

    /// Usable bytes of each stack.
    pub fn stack_size(&self) -> usize {
        self.inner.stack_size
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        self.inner.core.stats()
    }

    /// Unmaps every free stack, hot or not (e.g. after a traffic peak);
    /// returns how many.
    pub fn trim(&self) -> usize {
        self.inner.trim_all()
    }

    /// Takes a stack without waiting. `Ok(None)` when all slots are taken,
    /// which they are while anyone is in the hand-off queue: a new request
    /// then waits behind it (see [`PoolCore`]).
    pub(crate) fn try_acquire(&self) -> Result<Option<DefaultStack>, StackError> {
        match self.inner.core.try_acquire() {
            TryAcquire::Reused(s) => Ok(Some(s)),
            TryAcquire::Full => Ok(None),
            TryAcquire::Allocate => self.allocate_for_slot().map(Some),
        }
    }

    /// Maps a stack for a slot already taken; gives the slot back (to the
    /// oldest waiter, if any) when that fails.
    fn allocate_for_slot(&self) -> Result<DefaultStack, StackError> {
        match self.allocate() {
            Ok(s) => {
                self.inner.core.allocated();
                Ok(s)
            }
            Err(e) => {
                self.cancel_slot();
                Err(e)
            }
        }
    }

    fn allocate(&self) -> Result<DefaultStack, StackError> {
        let budget = default_stack_budget();
        let take = || {
            let prev = PROCESS_STACKS.fetch_add(1, Ordering::Relaxed);
            if prev >= budget {
                PROCESS_STACKS.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
            true
        };
        // Spent: other pools' idle stacks may hold it; unmap them and try
        // once more (this pool's own free list is empty: `try_acquire` took
        // from it first).
        if !take() && (crate::stack::trim::reclaim_idle() == 0 || !take()) {
            return Err(StackError::MapBudget {
                budget,
                max_map_count: budget_max_map_count(),
            });
        }
        DefaultStack::new(self.inner.stack_size).map_err(|e| {
            PROCESS_STACKS.fetch_sub(1, Ordering::Relaxed);
            StackError::Map(e)
        })
    }

    /// The stack of a granted slot.
    fn take_grant(&self, grant: Grant<DefaultStack>) -> Result<DefaultStack, StackError> {
        match grant {
            Grant::Stack(s) => Ok(s),
            Grant::Slot => self.allocate_for_slot(),
        }
    }

    /// Takes a stack, waiting up to the pool's bound when all are in use:
    /// first competing for freed slots, then, after [`STARVING_AFTER`], in
    /// the hand-off queue where the oldest request gets the next freed slot
    /// (see [`PoolCore`]).
    pub(crate) async fn acquire(&self) -> Result<DefaultStack, StackError> {
        // The last attempt's failure to map a stack because the process's
        // map budget was spent (`None`: the pool's own slots were full).
        let mut spent = None;
        match self.try_acquire() {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => {}
            Err(e @ StackError::MapBudget { .. }) => spent = Some(e),
            Err(e) => return Err(e),
        }
        let inner = &self.inner;
        let full = || StackError::Exhausted {
            max: inner.core.max,
            waited: inner.wait,
        };
        if inner.wait.is_zero() {
            return Err(spent.unwrap_or_else(full));
        }
        let now = tokio::time::Instant::now();
        let deadline = now + inner.wait;
        let starving = (now + STARVING_AFTER).min(deadline);
        let mut retry = BUDGET_RETRY;
        {
            // Competing.
            inner.core.add_waiter();
            let _waiting = WaiterGuard(&inner.core);
            loop {
                let notified = inner.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.try_acquire() {
                    Ok(Some(s)) => return Ok(s),
                    Ok(None) => spent = None,
                    Err(e @ StackError::MapBudget { .. }) => spent = Some(e),
                    Err(e) => return Err(e),
                }
                if spent.is_none() {
                    if tokio::time::timeout_at(starving, notified).await.is_err() {
                        break;
                    }
                    continue;
                }
                // Blocked by the map budget, not by this pool's slots. Budget
                // freed by another pool notifies nobody, and this attempt's
                // own slot, given back, notified this very waiter (awaiting
                // that spun without yielding: measured, a livelock), so
                // retry after a growing interval instead. Such a waiter
                // never joins the queue, which orders waiters for this
                // pool's slots.
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(spent.take().unwrap_or_else(full));
                }
                tokio::time::sleep_until((now + retry).min(deadline)).await;
                retry = (retry * 2).min(BUDGET_RETRY_MAX);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(full());
        }
        // Queued.
        let (ticket, rx) = match inner.core.enqueue() {
            Enqueued::Granted(g) => return self.take_grant(g),
            Enqueued::Waiting(ticket, rx) => (ticket, rx),
        };
        let mut queued = Queued {
            pool: self,
            ticket,
            rx: Some(rx),
        };
        let rx = queued.rx.as_mut().expect("set above");
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(grant)) => {
                queued.rx = None;
                self.take_grant(grant)
            }
            // The queue holds the senders; the pool outlives this call.
            Ok(Err(_closed)) => {
                queued.rx = None;
                Err(full())
            }
            // Timed out; a grant that raced the deadline is used, not lost.
            Err(_elapsed) => match queued.leave() {
                Some(grant) => self.take_grant(grant),
                None => Err(full()),
            },
        }
    }

    /// Returns a stack taken with `acquire`/`try_acquire`.
    pub(crate) fn release(&self, stack: DefaultStack) {
        if self.inner.core.release(stack) {
            self.inner.notify.notify_one();
        }
    }

    /// Gives back a slot taken but left without a stack.
    fn cancel_slot(&self) {
        if self.inner.core.cancel_slot() {
            self.inner.notify.notify_one();
        }
    }

    /// Gives back the slot of a stack that was lost (a fiber that could not
    /// be unwound keeps its stack; it is unmapped instead of reused).
    pub(crate) fn forget_one(&self) {
        self.inner.core.allocated.fetch_sub(1, Ordering::Relaxed);
        PROCESS_STACKS.fetch_sub(1, Ordering::Relaxed);
        self.cancel_slot();
    }
}

/// Unregisters a competing waiter however it leaves.
struct WaiterGuard<'a, S>(&'a PoolCore<S>);

impl<S> Drop for WaiterGuard<'_, S> {
    fn drop(&mut self) {
        self.0.remove_waiter();
    }
}

/// A place in the hand-off queue. Dropped without being served (the request was
/// cancelled while it waited), it leaves the queue, or gives back the grant
/// that reached it in the meantime, so no slot is lost.
struct Queued<'a> {
    pool: &'a StackPool,
    ticket: u64,
    /// `None` once served.
    rx: Option<Receiver<Grant<DefaultStack>>>,
}

impl Queued<'_> {
    /// Leaves the queue; returns the grant if one arrived first.
    fn leave(&mut self) -> Option<Grant<DefaultStack>> {
        let mut rx = self.rx.take()?;
        if self.pool.inner.core.withdraw(self.ticket) {
            return None;
        }
        // Granted: the sender sent under the pool's lock, before our
        // withdraw took it, so the grant is there now.
        let grant = rx.try_recv().and_then(Result::ok);
        if grant.is_none() {
            // Not reachable by the argument above; a slot would be lost.
            tracing::error!("a stack pool grant was announced but not delivered; one slot is lost");
        }
        grant
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        match self.leave() {
            Some(Grant::Stack(s)) => self.pool.release(s),
            Some(Grant::Slot) => self.pool.cancel_slot(),
            None => {}
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{PoolCore, StackPool, TryAcquire};
    use std::future::Future;
    use std::task::{Context, Poll};
    use std::time::Duration;

    /// A current-thread runtime; with `paused`, tokio's clock is paused
    /// (it jumps to the next timer when every task is idle).
    fn runtime(paused: bool) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(paused)
            .build()
            .unwrap()
    }

    /// Requests that have waited past `STARVING_AFTER` are served in order
    /// of arrival, and a request arriving then queues behind them instead of
    /// taking the released stack.
    #[test]
    fn starving_waiters_are_served_in_order_before_newcomers() {
        let rt = runtime(true);
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let pool = StackPool::new(64 * 1024, 1, Duration::from_secs(30));
            let held = pool.try_acquire().unwrap().expect("one free slot");
            let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let waiter = |name: &'static str| {
                let (pool, order) = (pool.clone(), order.clone());
                tokio::task::spawn_local(async move {
                    let s = pool.acquire().await.expect("served before the deadline");
                    order.borrow_mut().push(name);
                    pool.release(s);
                })
            };
            let a = waiter("a");
            tokio::time::sleep(Duration::from_millis(1)).await;
            let b = waiter("b");
            tokio::time::sleep(super::STARVING_AFTER * 2).await;
            assert_eq!(pool.stats().waiting, 2);
            pool.release(held);
            assert!(
                pool.try_acquire().unwrap().is_none(),
                "a newcomer must queue behind starving waiters"
            );
            a.await.unwrap();
            b.await.unwrap();
            assert_eq!(*order.borrow(), ["a", "b"]);
            assert!(pool.stats().is_whole(), "{:?}", pool.stats());
            assert_eq!(pool.stats().waiting, 0);
        });
    }

    /// A queued request that gives up (its request is cancelled) leaves the
    /// queue, and a stack granted to it just before is given on, not lost.
    #[test]
    fn a_queued_request_that_leaves_loses_no_slot() {
        runtime(true).block_on(async {
            let pool = StackPool::new(64 * 1024, 1, Duration::from_secs(30));
            let held = pool.try_acquire().unwrap().expect("one free slot");
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let mut granted = Box::pin(pool.acquire());
            let mut next = Box::pin(pool.acquire());
            let mut gone = Box::pin(pool.acquire());
            for f in [&mut granted, &mut next, &mut gone] {
                assert!(f.as_mut().poll(&mut cx).is_pending(), "the pool is full");
            }
            // Past the competing phase: all three queue, in this order.
            tokio::time::sleep(super::STARVING_AFTER * 2).await;
            for f in [&mut granted, &mut next, &mut gone] {
                assert!(f.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(pool.stats().waiting, 3);
            drop(gone); // leaves before anything is granted to it
            assert_eq!(pool.stats().waiting, 2);
            pool.release(held); // granted to the oldest...
            drop(granted); // ...which leaves unpolled: the stack goes on
            let Poll::Ready(Ok(stack)) = next.as_mut().poll(&mut cx) else {
                panic!("the grant of the request that left must reach the next one");
            };
            pool.release(stack);
            assert!(pool.stats().is_whole(), "{:?}", pool.stats());
            assert_eq!(pool.stats().waiting, 0);
        });
    }

    /// Past its deadline a waiter gets a 503, and the queue forgets it.
    #[test]
    fn a_waiter_times_out_and_leaves_the_queue() {
        runtime(false).block_on(async {
            let pool = StackPool::new(64 * 1024, 1, Duration::from_millis(20));
            let held = pool.try_acquire().unwrap().expect("one free slot");
            let Err(err) = pool.acquire().await else {
                panic!("the only stack is held");
            };
            assert!(err.to_string().contains("stack"), "{err}");
            assert_eq!(pool.stats().waiting, 0);
            pool.release(held);
            assert_eq!(pool.stats().in_use, 0, "the release freed the slot");
        });
    }

    /// A core with stacks `0..n` released at times `times[i]` (in that
    /// order, so stack `n - 1` is on top).
    fn core_with(times: &[u64]) -> PoolCore<usize> {
        let core = PoolCore::new(times.len());
        for _ in times {
            assert!(matches!(core.try_acquire(), TryAcquire::Allocate));
            core.allocated();
        }
        for (id, &t) in times.iter().enumerate() {
            let _ = core.release_at(id, t);
        }
        core
    }

    #[test]
    fn trim_idle_takes_the_coldest_beyond_the_hot_set() {
        let core = core_with(&[10, 20, 30, 40, 50]);
        // Idle ≥ 25 at 60: stacks released at 10, 20, 30; keep 1 hot.
        assert_eq!(core.trim_idle(60, 25, 1), vec![0, 1, 2]);
        let s = core.stats();
        assert_eq!((s.allocated, s.idle), (2, 2));
        assert!(s.is_whole());
        // The warmest stack is reused first.
        assert!(matches!(core.try_acquire(), TryAcquire::Reused(4)));
    }

    #[test]
    fn trim_idle_keeps_the_hot_set_even_when_cold() {
        let core = core_with(&[1, 2, 3, 4]);
        assert_eq!(core.trim_idle(1_000, 10, 3), vec![0]);
        assert_eq!(core.trim_idle(1_000, 10, 3), Vec::<usize>::new());
        assert_eq!(core.stats().allocated, 3);
    }

    #[test]
    fn trim_idle_leaves_recent_stacks_and_in_use_ones() {
        let core = core_with(&[100, 200]);
        let TryAcquire::Reused(top) = core.try_acquire() else {
            panic!("a free stack")
        };
        assert_eq!(top, 1);
        // The free one is not idle long enough yet; the taken one is not free.
        assert!(core.trim_idle(150, 100, 0).is_empty());
        assert_eq!(core.trim_idle(250, 100, 0), vec![0]);
        let s = core.stats();
        assert_eq!((s.in_use, s.idle, s.allocated), (1, 0, 1));
        let _ = core.release_at(top, 300);
        assert!(core.stats().is_whole());
    }
}
