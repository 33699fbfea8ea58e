//! Warming a suspended fiber's stack just before it runs again.
//!
//! With thousands of requests suspended on a thread, a fiber's stack has
//! left the caches by the time its request resumes it: the other fibers'
//! stacks, ~8 KiB each, went through the caches meanwhile. The resume then
//! walks the stack one miss after another, each waiting for the one before:
//! the switch reloads the registers saved at the suspension point, the
//! fiber's hooks read its header and locals in the root frame at the top of
//! the stack, and every return loads its caller's frame. Prefetching those
//! two regions first (a few KiB, one instruction per cache line) lets the
//! misses overlap instead.
//!
//! Measured in the comparison harness (K = 5 sync layers, D = 0; the
//! prefetch on against off, same binary, BENCHMARKS.md "Seventh round
//! (issue 13)"): +15–23 % requests per second at N = 10,000, about level at
//! 1,000, and, always on, 2–8 % *fewer* at 10–300, where the stacks are still
//! cached and the ~70 prefetches per resume are pure cost. Hence the
//! prefetch runs only while the thread holds more than [`COLD_ABOVE`]
//! fibers, counted by [`Live`].
//!
//! Only x86_64 has the prefetch (stable Rust offers no portable one); on
//! other targets [`Warmth::before_resume`] does nothing.

use std::cell::Cell;

/// Bytes warmed at the top of the stack: the fiber's header and hooks and
/// the root frames (the harness's outermost layer starts 2.8 KiB below the
/// top), and the outer layers' frames.
const TOP_BYTES: usize = 4096;

/// Bytes warmed upward from where the fiber suspended: the suspension
/// point's frames and the innermost caller it returns into first. (Swept
/// at N = 1,000 and 10,000: 0, 256, 512, 1,024 and 2,048 bytes, with 3,072,
/// 4,096 and 6,144 at the top; 512 and 4,096 did best, more prefetches cost
/// more than they hid.)
const AT_SUSPENSION_BYTES: usize = 512;

/// Fibers alive on this thread above which their stacks are taken to be
/// cold on resume: 512 × ~8 KiB is past a core's L2 cache.
pub(super) const COLD_ABOVE: usize = 512;

/// A cache line.
const LINE: usize = 64;

thread_local! {
    /// Fibers alive on this thread (fibers never change thread).
    static LIVE: Cell<usize> = const { Cell::new(0) };
    /// Where the last fiber to suspend on this thread did (an address in
    /// the suspension point's frame), for its driver to read as the switch
    /// returns.
    static SUSPENDED_AT: Cell<usize> = const { Cell::new(0) };
}

/// Counts a fiber among this thread's live fibers while it exists.
struct Live;

impl Live {
    fn new() -> Live {
        LIVE.with(|l| l.set(l.get() + 1));
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.with(|l| l.set(l.get() - 1));
    }
}

/// Called by the suspension point right before the switch, with an address
/// in its own frame.
#[inline]
pub(super) fn note_suspension(addr: usize) {
    SUSPENDED_AT.with(|s| s.set(addr));
}

/// Where a fiber last suspended, for its driver to warm its stack from.
/// One word: the fiber's state is moved by value on the hot path, and two
/// more words took its driver's state (120 → 136 bytes) past the size the
/// compiler still copies inline: three more `memcpy` calls per request.
pub(super) struct Warmth {
    /// Where the fiber last suspended; `0` before its first suspension.
    suspended_at: usize,
    _live: Live,
}

impl Warmth {
    /// For a new fiber.
    pub(super) fn new() -> Warmth {
        Warmth {
            suspended_at: 0,
            _live: Live::new(),
        }
    }

    /// Prefetches the regions the coming resume touches first, if this
    /// thread holds enough fibers for them to be cold. The fiber's stack is
    /// usable from `limit` (above its guard page) up to `base` (its top).
    #[inline]
    pub(super) fn before_resume(&self, limit: usize, base: usize) {
        // Not before the first run: the pool hands out the stack released
        // most recently (LIFO), still warm; prefetching it cost 1-9 % at
        // N = 1,000 and gained nothing at 10,000. With requests interleaved
        // as on a server (`compare --gap`), where that stack has cooled, it
        // gained nothing either (BENCHMARKS.md, "Ninth round").
        if self.suspended_at == 0 || LIVE.with(Cell::get) <= COLD_ABOVE {
            return;
        }
        #[cfg(test)]
        WARMED.with(|w| w.set(w.get() + 1));
        let top = base.saturating_sub(TOP_BYTES).max(limit);
        if self.suspended_at > limit && self.suspended_at < top {
            prefetch(
                self.suspended_at,
                (self.suspended_at + AT_SUSPENSION_BYTES).min(top),
            );
        }
        prefetch(top, base);
    }

    /// Records where the fiber suspended, as its resume returns with a
    /// suspension (the fiber's own was the last on this thread: any fiber
    /// it drove suspended before it did).
    #[inline]
    pub(super) fn after_suspension(&mut self) {
        self.suspended_at = SUSPENDED_AT.with(Cell::get);
    }
}

/// Prefetches the cache lines of `[lo, hi)` into every cache level.
#[inline(always)]
fn prefetch(lo: usize, hi: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let mut a = lo & !(LINE - 1);
        while a < hi {
            // SAFETY: a prefetch is a hint. It never faults, whatever the
            // address, and changes no memory or register the program can
            // see. (`_mm_prefetch` is an `unsafe fn` only as an intrinsic
            // of the SSE target feature, which every x86_64 CPU has.)
            unsafe { _mm_prefetch::<_MM_HINT_T0>(a as *const i8) };
            a += LINE;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (lo, hi);
}

#[cfg(test)]
pub(super) fn live() -> usize {
    LIVE.with(Cell::get)
}

#[cfg(test)]
thread_local! {
    /// Resumes this thread warmed (the tests' view of the threshold).
    static WARMED: Cell<usize> = const { Cell::new(0) };
}

#[cfg(test)]
pub(super) fn warmed() -> usize {
    WARMED.with(Cell::get)
}

#[cfg(test)]
impl Warmth {
    /// Where the fiber last suspended.
    pub(super) fn suspended_at(&self) -> usize {
        self.suspended_at
    }
}
