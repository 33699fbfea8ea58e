//! Reporting stack overflow on a fiber instead of a bare `SIGSEGV`.
//!
//! Every fiber stack has a `PROT_NONE` guard page below its usable range
//! (corosensei's `DefaultStack`); Rust's stack probes make an overflow touch
//! it. The thread running a fiber records that guard page's range in the
//! thread-local `RUNNING` (set and restored around every resume). A signal
//! handler, installed once and chained to whatever handler was there before
//! (std's own overflow reporter for thread stacks), checks the fault address
//! against that range: on a match it writes a message naming the fiber's
//! stack size and how to raise it, then aborts, as wasmtime does; otherwise
//! it hands the signal on unchanged.
//!
//! The handler runs on the thread's alternate signal stack (the faulting
//! stack is unusable). std gives every thread it spawns one; [`set_running`]
//! adds one to threads that lack it.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::OnceLock;

/// The guard page below a fiber stack, and the top of that stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuardRange {
    lo: usize,
    hi: usize,
    /// The stack's top (`Stack::base()`); `0` for no fiber. The usable size
    /// is `base - hi`.
    base: usize,
}

impl GuardRange {
    const NONE: GuardRange = GuardRange {
        lo: 0,
        hi: 0,
        base: 0,
    };

    /// The guard page of a stack whose `Stack::limit()` is `limit` and
    /// whose `Stack::base()` is `base`.
    ///
    /// corosensei's `limit()` is the lowest address of the stack *including*
    /// its guard page (`DefaultStack`: the start of the mapping, whose first
    /// page is `PROT_NONE`), so the guard page is `[limit, limit + page)`.
    pub(crate) fn of_stack(limit: usize, base: usize) -> GuardRange {
        let page = page_size();
        GuardRange {
            lo: limit,
            hi: limit.saturating_add(page),
            base,
        }
    }

    /// The top of the stack.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// The lowest usable address of the stack: the end of its guard page.
    pub(crate) fn usable_from(&self) -> usize {
        self.hi
    }

    fn contains(&self, addr: usize) -> bool {
        self.lo <= addr && addr < self.hi
    }
}

thread_local! {
    /// Whether this thread's alternate signal stack has been checked.
    static ALT_CHECKED: Cell<bool> = const { Cell::new(false) };
    static RUNNING: Cell<GuardRange> = const { Cell::new(GuardRange::NONE) };
    static ALT_STACK: AltStack = const { AltStack { checked: Cell::new(false), map: Cell::new(ptr::null_mut()) } };
}

/// Records `g` as the guard range of the fiber about to run on this thread;
/// returns the previous value so the caller can restore it.
#[inline]
pub(crate) fn set_running(g: GuardRange) -> GuardRange {
    // Fast path: one destructor-less thread-local read. `ALT_STACK` has a
    // destructor, so touching it costs a registration check every time.
    if g.base != 0 && !ALT_CHECKED.with(|c| c.get()) {
        ALT_CHECKED.with(|c| c.set(true));
        ALT_STACK.with(AltStack::ensure);
    }
    RUNNING.with(|r| r.replace(g))
}

/// The guard range recorded for this thread (tests).
#[cfg(all(test, not(loom)))]
pub(crate) fn current_running() -> GuardRange {
    RUNNING.with(|r| r.get())
}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: `sysconf` has no preconditions.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

struct Saved {
    segv: libc::sigaction,
    bus: libc::sigaction,
}

// SAFETY: `sigaction` is plain data (a handler address, flags and a mask);
// it is written once before publication through the `OnceLock` and only read
// afterwards.
unsafe impl Sync for Saved {}
// SAFETY: as above; no thread affinity.
unsafe impl Send for Saved {}

static PREVIOUS: OnceLock<Saved> = OnceLock::new();

/// Installs the handler once per process.
pub(crate) fn install() {
    PREVIOUS.get_or_init(|| {
        let mut act = zeroed_action();
        act.sa_sigaction = handler as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `act.sa_mask` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        let mut segv = zeroed_action();
        let mut bus = zeroed_action();
        // SAFETY: a fully initialised action whose handler is an `extern "C"`
        // function of the `SA_SIGINFO` shape; a valid out-pointer.
        unsafe { libc::sigaction(libc::SIGSEGV, &act, &mut segv) };
        // SAFETY: as above.
        unsafe { libc::sigaction(libc::SIGBUS, &act, &mut bus) };
        Saved { segv, bus }
    });
}

/// An all-zero `sigaction` (empty mask, no flags, `SIG_DFL`).
fn zeroed_action() -> libc::sigaction {
    // SAFETY: `sigaction` is a plain C struct of integers, a sigset_t and a
    // handler address, for all of which all-zero bytes are a valid value.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, uctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` for SA_SIGINFO handlers.
    let info_ref = unsafe { &*info };
    // SAFETY: `si_addr` is defined for SIGSEGV and SIGBUS, the only signals
    // this handler is installed for.
    let addr = unsafe { info_ref.si_addr() } as usize;
    // `RUNNING` has a const initialiser and no destructor: reading it
    // allocates nothing and cannot fail, so it is async-signal-safe.
    let g = RUNNING.with(|r| r.get());
    if g.base != 0 && g.contains(addr) {
        report_and_abort(g.base - g.hi);
    }
    let Some(saved) = PREVIOUS.get() else { return };
    let prev = if sig == libc::SIGBUS {
        &saved.bus
    } else {
        &saved.segv
    };
    if prev.sa_sigaction == libc::SIG_DFL || prev.sa_sigaction == libc::SIG_IGN {
        // Not ours: put the old disposition back and return, so the faulting
        // instruction runs again and the default action (a core dump) happens.
        // SAFETY: `prev` is a valid action saved by `install`.
        unsafe { libc::sigaction(sig, prev, ptr::null_mut()) };
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the saved handler was installed with SA_SIGINFO, so it has
        // this signature; we pass it our own, valid arguments.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(prev.sa_sigaction) };
        f(sig, info, uctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes only the
        // signal number.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev.sa_sigaction) };
        f(sig);
    }
}

/// Writes the overflow message with `write(2)` (no allocation, no locks)
/// and aborts.
fn report_and_abort(stack_size: usize) -> ! {
    let mut buf = [0u8; 512];
    let mut n = 0;
    let mut put = |s: &[u8]| {
        let take = s.len().min(buf.len() - n);
        buf[n..n + take].copy_from_slice(&s[..take]);
        n += take;
    };
    // Not only middleware runs on a fiber: a sync view, a hook, the panic
    // handler and futures passed to `wait` do too.
    put(
        b"\nsuspendware: code on a fiber (sync middleware or view, a hook, the panic \
          handler, or a future passed to wait) overflowed its fiber stack of ",
    );
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = stack_size;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b" bytes (it hit the guard page). Raise the size with \
          Pipeline::builder().stack_size(bytes), or move the deep recursion \
          into suspendware::blocking(..). Aborting.\n");
    // SAFETY: `write` is async-signal-safe; `buf[..n]` is initialised memory.
    unsafe { libc::write(2, buf.as_ptr().cast(), n) };
    // SAFETY: `abort` is async-signal-safe and takes no arguments.
    unsafe { libc::abort() }
}

/// A per-thread alternate signal stack, created only for threads that had
/// none (std-spawned threads and the main thread already have one).
struct AltStack {
    /// Whether this thread's alternate stack has been checked.
    checked: Cell<bool>,
    /// The mapping this thread installed, or null (none needed or failed).
    map: Cell<*mut libc::c_void>,
}

const ALT_SIZE: usize = 64 * 1024;

impl AltStack {
    fn ensure(&self) {
        if self.checked.replace(true) {
            return;
        }
        let mut old = libc::stack_t {
            ss_sp: ptr::null_mut(),
            ss_flags: 0,
            ss_size: 0,
        };
        // SAFETY: queries the current alternate stack into a valid out-pointer.
        unsafe { libc::sigaltstack(ptr::null(), &mut old) };
        if old.ss_flags & libc::SS_DISABLE == 0 {
            return; // std (or someone) already gave this thread one
        }
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // touched.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                ALT_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return;
        }
        let st = libc::stack_t {
            ss_sp: map,
            ss_flags: 0,
            ss_size: ALT_SIZE,
        };
        // SAFETY: `map` is ALT_SIZE writable bytes that stay mapped until
        // this thread-local is destroyed (Drop below disables it first).
        unsafe { libc::sigaltstack(&st, ptr::null_mut()) };
        self.map.set(map);
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let map = self.map.get();
        if map.is_null() {
            return;
        }
        let st = libc::stack_t {
            ss_sp: ptr::null_mut(),
            ss_flags: libc::SS_DISABLE,
            ss_size: 0,
        };
        // SAFETY: disables this thread's alternate stack (a valid request).
        unsafe { libc::sigaltstack(&st, ptr::null_mut()) };
        // SAFETY: `map` is the mapping this thread installed as its alternate
        // stack, no longer in use since the line above.
        unsafe { libc::munmap(map, ALT_SIZE) };
    }
}
