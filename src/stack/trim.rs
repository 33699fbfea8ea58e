//! The trimmer: one process-wide background thread that gives idle fiber
//! stacks back to the system.
//!
//! ## Why a std thread
//!
//! Pools are shared across threads and runtimes (a `StackPool` may serve
//! pipelines on several current-thread runtimes, `SuspendLayer` on a
//! multi-thread one), and trimming must happen on an idle server, where no
//! request comes to do it. A tokio task would need a runtime that is
//! guaranteed to exist and to stay up for the pool's life; a plain thread
//! works with any runtime, or none. It is started on the first pool
//! registration, sleeps on a condvar between rounds, and costs one wake-up
//! per period (at the default 10 s timeout: once a second).
//!
//! Unmapping on this thread is sound: `DefaultStack` is `Send` (its fields
//! are an address and a length; `Drop` is a `munmap`), and a stack reaches
//! this thread only after [`crate::stack::pool::PoolCore::trim_idle`] took
//! it out of a free list, i.e. no fiber owns it.
//!
//! ## Registry
//!
//! Pools are held by `Weak` references: the thread never keeps a pool
//! alive, and forgets one whose last handle was dropped. A round upgrades
//! each pool, trims it outside the registry's lock, and drops the strong
//! reference (if that was the last one, the pool's stacks are unmapped
//! here). Not part of any modelled hand-off, so plain std types are used
//! even under loom.

use std::sync::{Condvar, Mutex, PoisonError, Weak};
use std::time::Duration;

/// A pool the trimmer can work on.
pub(crate) trait Trim: Send + Sync {
    /// Unmaps what is idle for long enough; returns how many stacks.
    fn trim(&self) -> usize;
    /// Unmaps every idle stack now, hot or not; returns how many.
    fn reclaim(&self) -> usize;
    /// How often the pool wants a round (`None`: never).
    fn period(&self) -> Option<Duration>;
}

/// The round period for a pool with idle timeout `timeout`: a quarter of
/// it (a stack is unmapped at most `timeout + timeout / 4` after its last
/// use), at most 1 s, at least 5 ms.
pub(crate) fn period_for(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

struct Registry {
    pools: Vec<Weak<dyn Trim>>,
    started: bool,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pools: Vec::new(),
    started: false,
});

/// Wakes the thread when a pool registers (its period may be shorter).
static WAKE: Condvar = Condvar::new();

/// Registers `pool` with the trimmer, starting the thread if needed.
pub(crate) fn register<T: Trim + 'static>(pool: Weak<T>) {
    let pool: Weak<dyn Trim> = pool;
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    reg.pools.push(pool);
    if !reg.started {
        // `run` takes the registry's lock only after it signalled that it
        // runs, so waiting for it here, lock held, cannot deadlock.
        let spawned = crate::service_thread::spawn("suspendware-trim", None, run);
        match spawned {
            Ok(_) => reg.started = true,
            // Pools then keep their stacks (as with no idle timeout); the
            // next registration tries again.
            Err(e) => tracing::warn!(error = %e, "could not start the stack trimmer thread"),
        }
    }
    drop(reg);
    WAKE.notify_one();
}

/// Unmaps every idle stack of every registered pool, now; returns how
/// many. For a pool that needs a stack when the process's map budget is
/// spent: idle stacks of other pools would otherwise hold the budget for
/// up to their idle timeout, and their hot sets for good, while this pool
/// answers 503 (`core_failure_paths`). Pools without an idle timeout are
/// not registered, and keep theirs.
///
/// At most one pass per `RECLAIM_EVERY` in the process (others return 0 at
/// once): requests waiting for a spent budget retry it, possibly thousands
/// of them, and a pass locks every pool.
pub(crate) fn reclaim_idle() -> usize {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = crate::coro::coarse_now_ns();
    let last = LAST.load(std::sync::atomic::Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < RECLAIM_EVERY.as_nanos() as u64 {
        return 0;
    }
    if LAST
        .compare_exchange(
            last,
            now.max(1),
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        )
        .is_err()
    {
        return 0;
    }
    let live = {
        let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        live_pools(&mut reg).0
    };
    live.iter().map(|p| p.reclaim()).sum()
}

/// The shortest time between two [`reclaim_idle`] passes.
const RECLAIM_EVERY: Duration = Duration::from_millis(10);

/// The live pools and the shortest period among them; prunes dead ones.
fn live_pools(reg: &mut Registry) -> (Vec<std::sync::Arc<dyn Trim>>, Option<Duration>) {
    let mut live = Vec::with_capacity(reg.pools.len());
    reg.pools.retain(|w| match w.upgrade() {
        Some(p) => {
            live.push(p);
            true
        }
        None => false,
    });
    let period = live.iter().filter_map(|p| p.period()).min();
    (live, period)
}

fn run() {
    let mut reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let (live, period) = live_pools(&mut reg);
        // Not holding pools while asleep: their owners may drop them.
        drop(live);
        reg = match period {
            None => WAKE.wait(reg).unwrap_or_else(PoisonError::into_inner),
            Some(p) => {
                WAKE.wait_timeout(reg, p)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
        let (live, _) = live_pools(&mut reg);
        drop(reg);
        for pool in &live {
            pool.trim();
        }
        drop(live);
        reg = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    }
}
