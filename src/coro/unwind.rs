//! The two unwinds that are not panics: cancellation and forced unwinding.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::OnceLock;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, Yielder};

/// The unwind payload used to cancel a suspended fiber (the request's
/// future was dropped). It is not a panic: it is never logged, never given
/// to the panic handler, and the panic hook does not see it (it is raised
/// with `resume_unwind`). Code that catches unwinds in middleware must
/// re-raise it; the pipeline's own boundaries do.
#[derive(Debug)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("suspendware: request cancelled while its middleware was suspended")
    }
}

/// Whether `payload` is corosensei's forced-unwind payload (a fiber being
/// torn down after it kept catching its cancellation). Like [`Cancelled`],
/// it must pass through every boundary untouched.
pub(crate) fn is_forced_unwind(payload: &(dyn Any + Send)) -> bool {
    (*payload).type_id() == forced_unwind_type()
}

/// corosensei keeps its forced-unwind payload type private; learn its
/// `TypeId` once by catching it on a throwaway coroutine and passing it on.
#[cold]
fn forced_unwind_type() -> TypeId {
    static TYPE: OnceLock<TypeId> = OnceLock::new();
    *TYPE.get_or_init(|| {
        let seen: Rc<Cell<Option<TypeId>>> = Rc::new(Cell::new(None));
        let out = seen.clone();
        let stack = DefaultStack::new(64 * 1024)
            .expect("suspendware: could not map a 64 KiB stack to identify the forced unwind");
        let mut co = Coroutine::with_stack(stack, move |y: &Yielder<(), ()>, ()| {
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| y.suspend(()))) {
                out.set(Some((*p).type_id()));
                panic::resume_unwind(p);
            }
        });
        let _ = co.resume(());
        co.force_unwind();
        seen.get()
            .expect("suspendware: corosensei's forced unwind did not pass the probe")
    })
}

/// Runs `f`, user code that the crate calls on one of its own cleanup
/// paths (a value's destructor, a tracing subscriber's callback from a
/// fiber's hooks), and contains a panic from it: logs `message` with the
/// panic's and drops the payload.
///
/// On those paths a panic has nowhere good to go. During an unwind (a
/// cancelled request's fiber, a panic passing) it would abort the process;
/// inside corosensei's teardown of a coroutine it would leave the coroutine
/// half dropped; in a fiber's hooks it would replace a cancellation with a
/// panic. The report goes through `tracing`, whose subscriber may be what
/// panicked, so it is contained as well (and then lost).
pub(crate) fn contain(message: &'static str, f: impl FnOnce()) {
    let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) else {
        return;
    };
    let report = panic::catch_unwind(AssertUnwindSafe(|| {
        tracing::error!(
            panic = %crate::panic::payload_message(&*payload),
            "{message}"
        );
    }));
    if let Err(again) = report {
        drop_payload(again);
    }
    drop_payload(payload);
}

/// Drops a caught panic payload. A payload whose own `Drop` panics would
/// otherwise turn a contained panic into an escaping one; that second
/// payload is leaked instead.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}
