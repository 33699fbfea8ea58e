//! A process-wide millisecond counter for timing layers against each other.
//!
//! The watchdog's layer accounting (`crate::exec::active`) reads a clock at
//! every sync layer's entry and exit. Any real clock read there cost more
//! than the layer itself: `rdtsc` measured 230–260 ns more per request
//! through five layers on this project's (virtualised) machines, a vDSO
//! clock read is slower still. Here a background thread increments one
//! atomic counter every [`TICK`], and a layer transition is a relaxed load
//! of it: a plain memory read, its cache line written once per tick.
//!
//! Resolution is one tick (1 ms). The accounting only has to tell a layer
//! that blocked for the watchdog's threshold (10 ms by default, tens of
//! ticks) from layers that took microseconds (zero or one tick).
//!
//! ## Idling
//!
//! The ticker runs while fibers run. Every resume under a watchdog notes
//! that fibers are in use ([`in_use`]: a load, and a store only when the
//! flag was clear); once
//! a second the ticker clears the flag, and after a second in which nobody
//! set it, parks itself. The first resume after that wakes it (one
//! `unpark`). The handshake, all `SeqCst`:
//!
//! * ticker: `awake := false`, then looks at `used`; if set, it stays awake;
//!   otherwise it parks;
//! * resume: `used := true`, then looks at `awake`; if clear, it sets it and
//!   unparks the ticker.
//!
//! Either the ticker sees `used` or the resume sees `!awake`; an `unpark`
//! that comes before the `park` makes the `park` return at once. So the
//! ticker is never asleep while fibers run, except for the moment between a
//! wake-up and its first tick: a stall that starts right after a long idle
//! period is still timed, just with the first tick's delay.
//!
//! Not on the loom shim: these are process-wide statics (loom's types are
//! neither `const`-constructible nor usable outside a model), and the
//! counter itself carries no data between threads. Under `cfg(loom)` the
//! clock reads zero and no thread is started.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// How often the counter advances.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Ticks since the ticker started (it only advances while fibers run).
static TICKS: AtomicU64 = AtomicU64::new(0);
/// The coarse clock (`crate::coro::coarse_now_ns`) as last read by the
/// ticker, or by the resume that woke it; 0 until the ticker first ran.
static CLOCK_NS: AtomicU64 = AtomicU64::new(0);
/// Some fiber was resumed since the ticker last looked.
static USED: AtomicBool = AtomicBool::new(false);
/// The ticker is ticking (not parked, not about to park).
static AWAKE: AtomicBool = AtomicBool::new(false);
/// The ticker thread, once started.
static TICKER: OnceLock<Option<Thread>> = OnceLock::new();

/// The counter: ticks of [`TICK`]. Only differences between two reads on
/// one thread mean anything.
#[inline(always)]
pub(crate) fn now() -> u64 {
    if cfg!(loom) {
        return 0;
    }
    TICKS.load(Ordering::Relaxed)
}

/// A reading of the coarse clock taken at most about one tick ago (later
/// if the ticker was kept off a CPU): never ahead of the clock. The
/// watchdog's after-resume check compares it with the clock read before
/// the resume (an elapsed time that can only come out short, never long),
/// and reads the clock itself only when that already exceeds its
/// threshold. `None` when no ticker runs (it could not be started): read
/// the clock instead.
#[inline(always)]
pub(crate) fn clock_ns_lagging() -> Option<u64> {
    if cfg!(loom) {
        return None;
    }
    match CLOCK_NS.load(Ordering::Relaxed) {
        0 => None,
        t => Some(t),
    }
}

/// The published clock reading while the ticker ticks (so it is at most
/// about a tick old), else `None`: for timestamps that tolerate a tick of
/// lag but not a stale reading (the stack pool's release times).
#[inline(always)]
pub(crate) fn clock_ns_if_ticking() -> Option<u64> {
    if cfg!(loom) || !AWAKE.load(Ordering::Relaxed) {
        return None;
    }
    clock_ns_lagging()
}

/// Publishes a clock reading, never moving [`CLOCK_NS`] back (the ticker
/// and a waking resume may race).
fn publish_clock() {
    CLOCK_NS.fetch_max(crate::coro::coarse_now_ns(), Ordering::Relaxed);
}

/// A fiber is about to run: keeps the ticker ticking (see the module docs).
#[inline(always)]
pub(crate) fn in_use() {
    if cfg!(loom) {
        return;
    }
    if !USED.load(Ordering::Relaxed) {
        wake();
    }
}

/// Cold path of [`in_use`]: first use, or the first after an idle second.
#[cold]
#[inline(never)]
fn wake() {
    USED.store(true, Ordering::SeqCst);
    if !AWAKE.load(Ordering::SeqCst) {
        AWAKE.store(true, Ordering::SeqCst);
        if let Some(t) = TICKER.get_or_init(start) {
            // The published clock stood still while the ticker slept:
            // bring it up to date before this resume's watchdog reads it.
            publish_clock();
            t.unpark();
        }
    }
}

/// Starts the ticker thread now if it is not running yet. Called when a
/// pipeline with a watchdog is built: a thread inherits its creator's CPU
/// set and scheduling priority, and the thread that builds a pipeline is
/// usually an ordinary one, while the first thread to resume a fiber may
/// be pinned or reniced (as the watchdog's contention tests do to their
/// worker: a ticker started there would share its starved CPU).
pub(crate) fn start_early() {
    if !cfg!(loom) {
        TICKER.get_or_init(start);
    }
}

/// Starts the ticker thread; `None` if the system refused a thread (the
/// counter then stays still and the watchdog names the layer a fiber
/// stopped in, as it did before layers were timed).
fn start() -> Option<Thread> {
    let spawned = crate::service_thread::spawn("suspendware-ticker", Some(64 * 1024), run);
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            tracing::warn!(error = %e, "could not start the watchdog's ticker thread");
            None
        }
    }
}

/// Ticks of one second: how often the ticker checks for use.
const PER_SECOND: u64 = 1_000;

fn run() {
    // Started by whichever thread first resumed a fiber, possibly one pinned
    // to a busy CPU: tick wherever the process may run instead.
    if let Err(e) = crate::coro::allow_every_cpu() {
        tracing::debug!(error = %e, "the watchdog's ticker keeps its creator's CPU set");
    }
    let mut n: u64 = 0;
    loop {
        std::thread::sleep(TICK);
        TICKS.fetch_add(1, Ordering::Relaxed);
        publish_clock();
        n += 1;
        if !n.is_multiple_of(PER_SECOND) {
            continue;
        }
        if USED.swap(false, Ordering::SeqCst) {
            continue; // used during the last second: keep ticking
        }
        // A whole second without a resume: park, unless one comes now.
        AWAKE.store(false, Ordering::SeqCst);
        if USED.load(Ordering::SeqCst) {
            AWAKE.store(true, Ordering::SeqCst);
            continue;
        }
        std::thread::park();
        // Woken by `wake` (or spuriously: then the next idle second parks
        // again).
        AWAKE.store(true, Ordering::SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Polls until the counter has moved `n` ticks past `from` (bounded).
    fn moved(from: u64, n: u64) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            in_use();
            if now() >= from + n {
                return true;
            }
            std::thread::sleep(TICK);
        }
        false
    }

    #[test]
    fn the_published_clock_follows_the_clock_and_is_never_ahead_of_it() {
        in_use();
        let start = crate::coro::coarse_now_ns();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            in_use();
            // `None` until the ticker's first tick when another test woke
            // it a moment ago (callers then read the clock themselves).
            let lagging = clock_ns_lagging();
            let real = crate::coro::coarse_now_ns();
            if let Some(lagging) = lagging {
                assert!(lagging <= real, "published {lagging} ahead of {real}");
                if lagging >= start {
                    break;
                }
            }
            assert!(std::time::Instant::now() < deadline, "never caught up");
            std::thread::sleep(TICK);
        }
    }

    #[test]
    fn the_counter_advances_while_fibers_run_and_after_an_idle_park() {
        in_use();
        assert!(moved(now(), 3), "the ticker never ticked");
        // Idle long enough for the ticker to park (two checks of a second;
        // other tests of this binary may keep it awake, which is fine).
        std::thread::sleep(Duration::from_millis(2_100));
        // Used again: it must tick again, whether it had parked or not.
        assert!(moved(now(), 3), "the ticker did not wake up");
    }
}
