//! The fiber watchdog: names sync code that blocks its thread, and counts
//! those stalls per layer ([`crate::Pipeline::stall_stats`]).
//!
//! ## Two stages
//!
//! * **Hot path** (every resume of a fiber, watchdog on): [`Watchdog::start`]
//!   reads the coarse clock before the resume and [`Watchdog::check`]
//!   compares after it with the reading the ticker thread published
//!   (`crate::exec::ticker`; never ahead of the clock, so it can only
//!   under-state the time), reading the clock itself only when that
//!   already exceeds the threshold. One vDSO clock read per resume, no
//!   system call.
//! * **Slow path** (the wall time of one resume exceeded the threshold):
//!   wall time also counts time the thread was *runnable but descheduled*
//!   (other threads or processes had the core). Under CPU contention that
//!   blamed innocent layers (a header-only middleware "ran 24 ms" on two
//!   busy cores).
//!   So the slow path reads the thread's cumulative run-queue delay (2nd
//!   field of `/proc/thread-self/schedstat`) and subtracts the delay of the
//!   interval: only *blocked or computing* time above the threshold is
//!   warned about and counted.
//!
//! ## Where the interval's start value comes from
//!
//! The run-queue delay of the interval is `wait(t1) − wait(t0)`, but reading
//! `wait(t0)` at every resume would put a system call on the hot path. So
//! each thread keeps one snapshot `(at, wait)` and `start` refreshes it only
//! when the coarse clock has moved `refresh` (= threshold / 4, at least
//! 1 ms) past `at`. The cost: at most one `pread` of an already open file
//! per refresh period per thread that runs fibers (≈ 1 µs; at the default
//! 10 ms threshold ≤ 400 reads/s per busy thread, and none on a thread with
//! no fiber to run). Every other resume pays a thread-local compare.
//!
//! When the check trips, `at ≤ t0 < at + refresh`, so the subtracted delay
//! `wait(t1) − wait(at)` is the interval's delay plus at most `refresh` of
//! delay from before it. Hence:
//!
//! * never an innocent layer blamed for being descheduled: the estimate
//!   `elapsed − delay` is at most the true blocked/computing time (plus one
//!   coarse tick, 1–4 ms, of clock resolution; keep the threshold above it);
//! * a layer blocked or computing for longer than `threshold + refresh` is
//!   always named (plus the ticker's lag: one tick, 1 ms, when the ticker
//!   thread gets a CPU; the hot check reads its published clock); between `threshold` and `threshold + refresh` it is
//!   named unless its thread also waited for a CPU just before the resume.
//!
//! A fiber driven from inside another fiber (nested pipelines) may refresh
//! the snapshot during the outer resume (`at > t0`); the subtracted delay is
//! then smaller than the interval's, which can only blame more, never hide a
//! blocker. Where schedstat cannot be read (no procfs, a kernel without
//! `CONFIG_SCHED_INFO`) the check falls back to wall time.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::coro::coarse_now_ns;
use crate::exec::active::last_stop;
use crate::exec::chain::Chain;
use crate::exec::layers::Layers;
use crate::loom::sync::atomic::{AtomicU64, Ordering};
use crate::pipeline::plan::Segment;

/// One layer's stalls, as counted by the watchdog (see
/// [`crate::Pipeline::stall_stats`]).
///
/// Durations are blocked-or-computing time: the run-queue delay of the
/// thread (time it was runnable but another thread had the core) is not
/// part of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallStats {
    /// The layer's name: the layer that ran the longest stretch of the
    /// stalled fiber run. When no layer's stretch could be told apart (the
    /// watchdog's ticker thread could not run, or no layer ran for a whole
    /// millisecond tick), any layer of the segment may have been slow, and
    /// the segment's layers are listed joined by `", "`.
    pub layer: String,
    /// How many times a fiber ran past the threshold in this layer.
    pub count: u64,
    /// Sum of those stalls.
    pub total: Duration,
    /// The longest of them.
    pub worst: Duration,
}

/// Counters of one blame slot. Each field is updated with `Relaxed`
/// read-modify-writes: they are statistics, read independently, ordering
/// nothing else (at rest they agree with each other).
#[derive(Debug, Default)]
struct StallCell {
    count: AtomicU64,
    total_ns: AtomicU64,
    worst_ns: AtomicU64,
}

/// The watchdog of one pipeline: its threshold and stall counters.
#[derive(Debug)]
pub(crate) struct Watchdog {
    limit_ns: u64,
    /// How stale the thread's schedstat snapshot may get before `start`
    /// refreshes it.
    refresh_ns: u64,
    /// Slot `i < layers`: layer `i`; slot `layers + s`: "one of the layers
    /// of the fiber segment starting at `s`" (the fiber returned).
    stalls: Box<[StallCell]>,
    layers: usize,
}

/// A reading of `/proc/thread-self/schedstat` with the coarse time it was
/// taken at.
#[derive(Clone, Copy, Debug)]
struct Snapshot {
    at: u64,
    /// Cumulative run-queue delay of the thread (ns).
    wait_ns: u64,
    /// `false` until the first successful read.
    valid: bool,
}

/// The thread's schedstat file: opened on first use, `pread` at offset 0
/// re-generates it (procfs `seq_file`). `/proc/thread-self` binds to the
/// opening thread, hence one per thread.
enum SchedFile {
    Unopened,
    Open(File),
    Unavailable,
}

thread_local! {
    static SNAPSHOT: Cell<Snapshot> = const {
        Cell::new(Snapshot { at: 0, wait_ns: 0, valid: false })
    };
    static SCHED_FILE: RefCell<SchedFile> = const { RefCell::new(SchedFile::Unopened) };
}

/// The thread's cumulative run-queue delay in ns, if schedstat is readable.
fn read_wait_ns() -> Option<u64> {
    SCHED_FILE
        .try_with(|f| {
            let mut f = f.borrow_mut();
            if let SchedFile::Unopened = *f {
                *f = match File::open("/proc/thread-self/schedstat") {
                    Ok(file) => SchedFile::Open(file),
                    Err(_) => SchedFile::Unavailable,
                };
            }
            let SchedFile::Open(file) = &*f else {
                return None;
            };
            let mut buf = [0u8; 96];
            let n = file.read_at(&mut buf, 0).ok()?;
            // "<on-cpu ns> <run-queue ns> <timeslices>\n"
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            text.split_ascii_whitespace().nth(1)?.parse().ok()
        })
        .ok()
        .flatten()
}

/// Takes a fresh snapshot (the amortised part of the hot path).
#[cold]
#[inline(never)]
fn refresh(now: u64) {
    let wait_ns = read_wait_ns();
    SNAPSHOT.with(|s| {
        s.set(Snapshot {
            at: now,
            wait_ns: wait_ns.unwrap_or(0),
            valid: wait_ns.is_some(),
        })
    });
}

/// What the slow path concluded about one long resume.
struct Verdict {
    /// Wall time minus run-queue delay (ns).
    blocked_ns: u64,
    /// The run-queue delay subtracted (ns).
    runqueue_ns: u64,
}

/// Splits a resume that took `elapsed` ns (ending at `now`) into run-queue
/// delay and the rest, using the thread's snapshot; refreshes the snapshot.
fn judge(now: u64, elapsed: u64) -> Verdict {
    let snap = SNAPSHOT.with(Cell::get);
    let wait_now = read_wait_ns();
    let runqueue_ns = match wait_now {
        Some(w) if snap.valid => w.saturating_sub(snap.wait_ns).min(elapsed),
        _ => 0,
    };
    SNAPSHOT.with(|s| {
        s.set(Snapshot {
            at: now,
            wait_ns: wait_now.unwrap_or(0),
            valid: wait_now.is_some(),
        })
    });
    Verdict {
        blocked_ns: elapsed - runqueue_ns,
        runqueue_ns,
    }
}

impl Watchdog {
    /// A watchdog warning above `threshold`, with counters for `layers`
    /// layers.
    pub(crate) fn new(threshold: Duration, layers: usize) -> Watchdog {
        crate::exec::ticker::start_early();
        let limit_ns = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
        Watchdog {
            limit_ns,
            refresh_ns: (limit_ns / 4).max(1_000_000),
            stalls: (0..2 * layers).map(|_| StallCell::default()).collect(),
            layers,
        }
    }

    /// Before a resume: the coarse time, and a schedstat snapshot at most
    /// `refresh` old (module docs).
    #[inline]
    pub(crate) fn start(&self) -> u64 {
        // Only pipelines with a watchdog keep the layer-timing ticker awake
        // (without one, nothing reads its counter's differences).
        crate::exec::ticker::in_use();
        let now = coarse_now_ns();
        if now.wrapping_sub(SNAPSHOT.with(|s| s.get().at)) >= self.refresh_ns {
            refresh(now);
        }
        now
    }

    /// After a resume that started at `t0` and ran layers `start..end`.
    ///
    /// The common case reads no clock: the ticker's published reading
    /// (`ticker::clock_ns_lagging`) is never ahead of the clock, so a resume
    /// it shows under the threshold was under it (a vDSO clock read was
    /// ~6% of a one-layer request's time, BENCHMARKS.md). Only above it is
    /// the clock itself read, and the real elapsed time judged.
    #[inline]
    pub(crate) fn check(&self, chain: &Chain, layers: Layers, t0: u64) {
        if let Some(lagging) = crate::exec::ticker::clock_ns_lagging() {
            if lagging.saturating_sub(t0) <= self.limit_ns {
                return;
            }
        }
        let now = coarse_now_ns();
        let elapsed = now.saturating_sub(t0);
        if elapsed > self.limit_ns {
            self.slow(chain, layers, now, elapsed);
        }
    }

    /// Warns (and counts) when the fiber really blocked or computed longer
    /// than the threshold without suspending: sync code is blocking the
    /// thread (and every request on it). The fix is
    /// `suspendware::blocking(..)` for blocking I/O or
    /// `suspendware::wait(..)` for async work — the analogue of Django's
    /// `SynchronousOnlyOperation`.
    #[cold]
    #[inline(never)]
    fn slow(&self, chain: &Chain, layers: Layers, now: u64, elapsed: u64) {
        let Layers { start, end } = layers;
        let v = judge(now, elapsed);
        let wall_ms = elapsed / 1_000_000;
        let runqueue_ms = v.runqueue_ns / 1_000_000;
        if v.blocked_ns <= self.limit_ns {
            tracing::debug!(
                wall_ms,
                runqueue_ms,
                "a fiber took {wall_ms} ms of wall time but waited {runqueue_ms} ms of it for a \
                 CPU; not blaming its middleware"
            );
            return;
        }
        // The layer that ran the longest stretch of this run (see
        // `crate::exec::active`); outside the segment (none ran), any
        // layer of it may have been the slow one.
        let layer = last_stop();
        let slot = if layers.contains(layer) {
            layer
        } else if end - start == 1 {
            start
        } else {
            self.layers + start
        };
        let name = self.slot_name(chain, slot);
        if let Some(cell) = self.stalls.get(slot) {
            cell.count.fetch_add(1, Ordering::Relaxed);
            cell.total_ns.fetch_add(v.blocked_ns, Ordering::Relaxed);
            cell.worst_ns.fetch_max(v.blocked_ns, Ordering::Relaxed);
        }
        let elapsed_ms = v.blocked_ns / 1_000_000;
        tracing::warn!(
            middleware = %name,
            elapsed_ms,
            wall_ms,
            runqueue_ms,
            "sync code ran {elapsed_ms} ms on a fiber without suspending, blocking every request \
             on this thread; wrap blocking calls in suspendware::blocking(..) or await async \
             work with suspendware::wait(..)"
        );
    }

    /// The name reported for a blame slot.
    fn slot_name(&self, chain: &Chain, slot: usize) -> String {
        if slot < self.layers {
            return chain.name(slot).to_owned();
        }
        let start = slot - self.layers;
        let end = chain
            .segments
            .iter()
            .find_map(|s| match *s {
                Segment::Fiber(l) if l.start == start => Some(l.end),
                _ => None,
            })
            .unwrap_or(start + 1);
        (start..end)
            .map(|i| chain.name(i))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One entry per blame slot that counted a stall: layers outermost
    /// first, then the "one of these layers" slots.
    pub(crate) fn stats(&self, chain: &Chain) -> Vec<StallStats> {
        self.stalls
            .iter()
            .enumerate()
            .filter_map(|(slot, cell)| {
                let count = cell.count.load(Ordering::Relaxed);
                (count > 0).then(|| StallStats {
                    layer: self.slot_name(chain, slot),
                    count,
                    total: Duration::from_nanos(cell.total_ns.load(Ordering::Relaxed)),
                    worst: Duration::from_nanos(cell.worst_ns.load(Ordering::Relaxed)),
                })
            })
            .collect()
    }
}
