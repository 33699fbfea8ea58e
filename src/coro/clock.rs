//! The coarse monotonic clock.

/// A monotonic clock reading in nanoseconds from `CLOCK_MONOTONIC_COARSE`:
/// a vDSO read (no system call, a few ns) with tick resolution (1–4 ms),
/// which is what the fiber watchdog needs for its ~10 ms threshold.
pub(crate) fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE is
    // supported on every Linux this crate targets (since 2.6.32).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A cheap, monotonic-per-thread tick counter for *comparing* short
/// intervals measured on one thread (which layer of a fiber run took the
/// longest): the time-stamp counter on x86_64 (one instruction, no
/// calibration needed for comparisons), the coarse clock elsewhere.
#[inline(always)]
pub(crate) fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` has no preconditions: it reads a counter every
        // x86_64 CPU has and touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        coarse_now_ns()
    }
}
