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

/// Lets the calling thread run on every CPU the process may use.
///
/// A thread inherits its creator's CPU affinity. The watchdog's ticker
/// thread is started by whichever thread first resumes a fiber, which may be
/// pinned (a thread-per-core worker, or a test pinned next to CPU hogs); a
/// ticker sharing a pinned, busy CPU would stall and mistime layers. The
/// kernel intersects the request with the process's allowed set (cgroup
/// cpuset), so asking for every CPU means "wherever this process may run".
pub(crate) fn allow_every_cpu() -> std::io::Result<()> {
    // SAFETY: `cpu_set_t` is a plain array of bits: all zeros is the empty
    // set, a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is an initialised set of exactly the size passed, and
    // pid 0 names the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
