//! Turning panics into responses, and telling them apart from cancellation.

use std::any::Any;
use std::sync::Arc;

use http::StatusCode;

use crate::body::Response;

pub use crate::coro::Cancelled;

/// What the panic handler learns about a panic.
#[derive(Debug)]
pub struct PanicInfo<'a> {
    /// Name of the middleware or view that panicked.
    pub location: &'a str,
    /// The panic message (`"<non-string panic payload>"` for other payloads).
    pub message: &'a str,
}

/// Builds the response for a request whose middleware or view panicked.
pub type PanicHandler = Arc<dyn Fn(&PanicInfo<'_>) -> Response + Send + Sync>;

/// The default handler: `500 Internal Server Error` with a short body.
pub fn default_panic_handler() -> PanicHandler {
    Arc::new(|_info: &PanicInfo<'_>| {
        let mut r = Response::new("internal server error\n".into());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// The message of a panic payload.
pub(crate) fn payload_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

/// The panic raised when a suspending function is called where no fiber runs.
#[cold]
#[track_caller]
pub(crate) fn off_fiber(api: &'static str) -> ! {
    let hint = match api {
        "wait" => {
            "suspendware::wait() only works in sync code that a Pipeline runs on a fiber \
             (a SyncMiddleware, a sync view, or code they call). In async code, `.await` \
             the future instead."
        }
        "blocking" => {
            "suspendware::blocking() only works in sync code that a Pipeline runs on a fiber. \
             In async code use tokio::task::spawn_blocking(..).await; in plain threads call \
             the function directly."
        }
        "sleep" => {
            "suspendware::sleep() only works in sync code that a Pipeline runs on a fiber (or on \
             its held threads). In async code use tokio::time::sleep(..).await; in plain \
             threads std::thread::sleep."
        }
        "SyncIo" => {
            "suspendware::io::SyncIo only reads and writes in sync code that a Pipeline runs on a \
             fiber (or on its held threads). In async code use the stream's AsyncRead/AsyncWrite \
             with .await."
        }
        _ => {
            "Next::get_response() must be called by the middleware that received the Next, \
             on the same thread, during its call (not from another thread or after it returned)."
        }
    };
    panic!("suspendware: {api}() called outside a suspendware fiber. {hint}")
}
