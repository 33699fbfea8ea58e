//! One hop of sync code to the blocking pool.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use crate::exec::request::{RequestCtx, ThreadScope};
use crate::handoff;

/// Runs `f` on tokio's blocking pool with `ctx` as the thread's request and
/// the caller's current span entered; a panic in `f` is re-raised in the
/// awaiting task (so the stage's panic boundary turns it into a response).
///
/// Dropping the returned future (the request was cancelled) resolves the
/// hop's cancel signal: a `wait` in `f` then stops waiting and unwinds the
/// hop's thread with [`crate::panic::Cancelled`], which the hop catches and drops.
/// Without it, a hook blocked in `wait` on a future that never finishes
/// kept its blocking thread for good (`core_failure_paths`).
pub(crate) fn hop<R, F>(ctx: Arc<RequestCtx>, f: F) -> impl Future<Output = R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    let handle = tokio::runtime::Handle::try_current()
        .expect("suspendware: thread hops need a tokio runtime; run the pipeline inside one");
    let inner_span = span.clone();
    // Never sent on: the sender lives in the awaiting future below, and
    // dropping it is the signal.
    let (gone, cancelled) = handoff::oneshot::<()>();
    let join = handle.spawn_blocking(move || {
        let _scope = ThreadScope::enter(ctx, Some(cancelled));
        let _span = crate::bridge::span::entered(&inner_span);
        panic::catch_unwind(AssertUnwindSafe(f))
    });
    // In the crate's `InSpan`, as every future the crate runs in a span:
    // the subscriber's calls are contained (`bridge/span.rs`). Boxed
    // because `InSpan` needs `Unpin`; one allocation beside a thread hop.
    let wait = Box::pin(async move {
        let _gone = gone;
        match join.await {
            Ok(Ok(v)) => v,
            Ok(Err(payload)) => panic::resume_unwind(payload),
            Err(e) => panic!(
                "suspendware: a thread hop did not complete ({e}); is the runtime shutting down?"
            ),
        }
    });
    crate::bridge::span::InSpan::new(wait, span)
}
