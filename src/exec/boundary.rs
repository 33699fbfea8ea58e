//! Panic boundaries: every layer call turns a panic into the panic
//! handler's response (Django's `convert_exception_to_response`), and lets
//! the unwinds that are not panics pass.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use crate::body::Response;
use crate::panic::{payload_message, Cancelled, PanicHandler, PanicInfo};

/// Logs a caught panic and asks the handler for the response. A
/// [`Cancelled`] payload is re-raised untouched.
///
/// Out of line and cold: it must not enlarge the frames of the layer calls
/// that can reach it (every sync layer's frame sits on a fiber stack).
#[cold]
#[inline(never)]
pub(crate) fn to_response(
    handler: &PanicHandler,
    location: &str,
    payload: Box<dyn Any + Send>,
) -> Response {
    // Not panics: a cancellation, and corosensei's forced unwind of a fiber
    // that kept catching its cancellation. Both must reach the fiber's root.
    if payload.is::<Cancelled>() || crate::coro::is_forced_unwind(&*payload) {
        panic::resume_unwind(payload);
    }
    let message = payload_message(&*payload);
    tracing::error!(
        location,
        panic = message,
        "middleware or view panicked; answering with the panic handler"
    );
    let mut resp = answer(handler, location, message);
    resp.extensions_mut().insert(PanicMarker {
        location: location.to_owned(),
        message: message.to_owned(),
    });
    // A payload whose own `Drop` panics must not escape the boundary.
    crate::coro::drop_payload(payload);
    resp
}

/// The panic handler's response. A handler that panics itself is user code
/// failing inside a boundary: its panic is logged and the default handler
/// answers. Unguarded, that panic escaped this boundary, every enclosing
/// one caught it and called the handler again, and the request's future
/// ended in a panic: the client got no response, and outer middleware saw
/// none (`core_failure_paths`).
fn answer(handler: &PanicHandler, location: &str, message: &str) -> Response {
    match panic::catch_unwind(AssertUnwindSafe(|| {
        handler(&PanicInfo { location, message })
    })) {
        Ok(resp) => resp,
        Err(again) => {
            tracing::error!(
                location,
                panic = message,
                handler_panic = payload_message(&*again),
                "the panic handler panicked; answering with the default panic handler"
            );
            crate::coro::drop_payload(again);
            crate::panic::default_panic_handler()(&PanicInfo { location, message })
        }
    }
}

/// Marks a response produced by the panic handler, so hook middleware can
/// run `process_exception` for it.
#[derive(Clone, Debug)]
pub(crate) struct PanicMarker {
    pub(crate) location: String,
    pub(crate) message: String,
}

/// Runs `f`, turning a panic into the handler's response.
#[inline]
pub(crate) fn catch_sync(
    handler: &PanicHandler,
    location: &str,
    f: impl FnOnce() -> Response,
) -> Response {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => to_response(handler, location, p),
    }
}
