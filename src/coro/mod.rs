//! The coroutine room: the only module of the crate that contains `unsafe`.
//!
//! * [`fiber`] wraps a corosensei coroutine that runs one segment of sync
//!   middleware for one request, and keeps the thread-local "which fiber is
//!   running on this thread" pointer that [`crate::wait`] and
//!   [`crate::Next::get_response`] use to find their way back to the driver.
//! * [`overflow`] installs a `SIGSEGV`/`SIGBUS` handler that recognises a
//!   fault in the guard page of the fiber running on the faulting thread and
//!   reports it before aborting.
//!
//! Everything outside this module is safe code built on the small API below.
#![allow(unsafe_code)]

pub(crate) mod fiber;
pub(crate) mod overflow;

pub(crate) use fiber::{
    coarse_now_ns, current_waker, in_fiber, last_stop, suspend, with_current, Fiber, FiberStep,
    Resumed, Suspend,
};
