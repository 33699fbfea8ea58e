//! Which layer runs on this thread now, and which one kept the current
//! fiber run the longest: what the watchdog names when a run stalls.
//!
//! A *run* is one resumption of a fiber, from the driver's resume to the
//! fiber's next suspension (or return). One run can pass through several
//! layers: after `get_response` returns, the innermost layer's
//! post-processing, then the next one's, and so on. Naming the layer that
//! was running when the fiber stopped blamed the innermost layer for a
//! database call made by an outer one (the demo's `XFrameOptions` took the
//! blame for `Sessions`' queries). So every layer entry and exit charges
//! the interval since the previous one to the layer that ran during it,
//! and the run remembers its longest single interval and that interval's
//! layer.
//!
//! ## Cost
//!
//! Per sync layer: two relaxed loads of a process-wide millisecond counter
//! ([`crate::exec::ticker`]: a background thread advances it while fibers
//! run) and a handful of `Cell` operations on one const-initialised,
//! destructor-less thread-local. (A hardware clock read per transition,
//! even `rdtsc`, cost 230–260 ns per request through five layers on this
//! project's virtual machines; the counter costs a memory read.) This
//! replaced a per-layer lookup of the running fiber's locals (two
//! `CURRENT` reads and `TypeId` checks per layer). Per resume: the driver
//! saves and restores the four words below.
//!
//! Resolution is the counter's 1 ms: stretches are compared in whole
//! ticks, so a layer that blocked for the watchdog's threshold (10 ms by
//! default) stands out from layers that took microseconds; between layers
//! that both blocked for about the same time, either may be named.
//!
//! ## Ownership
//!
//! The state is per OS thread, and fibers nest (a pipeline driven from
//! inside another's fiber), so the driver brackets each resume with
//! [`begin_run`] / [`end_run`], and a fiber keeps its own active layer
//! across a suspension (`FiberLocals`' hooks call [`stop`] and
//! [`resume_in`]). The time a nested run takes is charged, in the outer
//! run, to the outer layer that drove it: to the outer fiber's thread that
//! layer was blocking.

use std::cell::Cell;

use crate::exec::ticker;

/// No layer is running.
pub(crate) const NO_LAYER: usize = usize::MAX;

/// The thread's run accounting (see the module docs).
struct Run {
    /// Innermost layer running on this thread, `NO_LAYER` when none.
    active: Cell<usize>,
    /// Tick of the last layer entry or exit (or of the run's start).
    last: Cell<u64>,
    /// Longest single interval of the current run, in ticks.
    worst: Cell<u64>,
    /// The layer that ran during `worst`.
    worst_layer: Cell<usize>,
}

thread_local! {
    static RUN: Run = const {
        Run {
            active: Cell::new(NO_LAYER),
            last: Cell::new(0),
            worst: Cell::new(0),
            worst_layer: Cell::new(NO_LAYER),
        }
    };
    /// The layer to blame for the run that just stopped on this thread
    /// (see [`stop`]); read by the driver's watchdog right after the resume.
    static LAST_STOP: Cell<usize> = const { Cell::new(NO_LAYER) };
}

impl Run {
    /// Charges the interval up to `now` to `layer`.
    #[inline(always)]
    fn charge(&self, layer: usize, now: u64) {
        let d = now.wrapping_sub(self.last.replace(now));
        if d > self.worst.get() {
            self.worst.set(d);
            self.worst_layer.set(layer);
        }
    }
}

/// Layer `pos` starts running on this thread; returns the layer it runs
/// inside (to give back to [`leave`]).
#[inline(always)]
pub(crate) fn enter(pos: usize) -> usize {
    let now = ticker::now();
    RUN.with(|r| {
        let outer = r.active.replace(pos);
        r.charge(outer, now);
        outer
    })
}

/// Layer `pos` stops running; `outer` (from [`enter`]) runs again.
#[inline(always)]
pub(crate) fn leave(pos: usize, outer: usize) {
    let now = ticker::now();
    RUN.with(|r| {
        r.charge(pos, now);
        r.active.set(outer);
    });
}

/// The thread's accounting, saved by a driver around one resume.
#[derive(Clone, Copy)]
pub(crate) struct Saved {
    active: usize,
    last: u64,
    worst: u64,
    worst_layer: usize,
}

/// The driver is about to resume a fiber: start a fresh run.
#[inline]
pub(crate) fn begin_run() -> Saved {
    let now = ticker::now();
    RUN.with(|r| {
        let saved = Saved {
            active: r.active.get(),
            last: r.last.replace(now),
            worst: r.worst.replace(0),
            worst_layer: r.worst_layer.replace(NO_LAYER),
        };
        // Until the fiber reinstates its own (`resume_in`), or its first
        // layer enters.
        r.active.set(NO_LAYER);
        saved
    })
}

/// The resume returned: give the thread back its previous accounting.
#[inline]
pub(crate) fn end_run(s: Saved) {
    RUN.with(|r| {
        r.active.set(s.active);
        r.last.set(s.last);
        r.worst.set(s.worst);
        r.worst_layer.set(s.worst_layer);
    });
}

/// The running fiber stops (suspends or returns): closes the run and
/// records whom to blame for it; returns the fiber's active layer, to be
/// reinstated by [`resume_in`].
#[inline]
pub(crate) fn stop() -> usize {
    let now = ticker::now();
    RUN.with(|r| {
        let active = r.active.get();
        r.charge(active, now);
        let blame = match r.worst_layer.get() {
            NO_LAYER => active,
            worst => worst,
        };
        LAST_STOP.with(|c| c.set(blame));
        active
    })
}

/// A fiber continues inside layer `active` (after a suspension).
#[inline]
pub(crate) fn resume_in(active: usize) {
    RUN.with(|r| r.active.set(active));
}

/// The layer that kept the fiber the driver just resumed the longest
/// (`NO_LAYER` if none ran).
pub(crate) fn last_stop() -> usize {
    LAST_STOP.with(|c| c.get())
}

// Not under loom: the ticker's counter reads zero there (no thread).
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_longest_interval_is_blamed_not_the_innermost_layer() {
        ticker::in_use(); // as the watchdog does before every resume
        let saved = begin_run();
        let a = enter(0); // outer layer
        let b = enter(1); // inner layer, quick
        leave(1, b);
        // The outer layer's post-processing is the slow part.
        std::thread::sleep(std::time::Duration::from_millis(100));
        leave(0, a);
        let inner = enter(1);
        assert_eq!(stop(), 1, "the fiber stopped inside layer 1");
        assert_eq!(last_stop(), 0, "but layer 0 ran the longest");
        resume_in(1);
        leave(1, inner);
        end_run(saved);
        RUN.with(|r| assert_eq!(r.active.get(), NO_LAYER));
    }

    #[test]
    fn a_nested_run_leaves_the_outer_run_as_it_was() {
        ticker::in_use(); // as the watchdog does before every resume
        let outer = begin_run();
        let a = enter(3);
        let inner = begin_run();
        let b = enter(0);
        leave(0, b);
        stop();
        end_run(inner);
        RUN.with(|r| assert_eq!(r.active.get(), 3));
        // The outer layer's own stretch, long against the 1 ms tick.
        std::thread::sleep(std::time::Duration::from_millis(100));
        leave(3, a);
        stop();
        assert_eq!(last_stop(), 3);
        end_run(outer);
    }
}
