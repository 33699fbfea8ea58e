//! The handles a middleware uses to call the rest of the pipeline.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::body::{Request, Response};
use crate::coro::{self, Place};
use crate::exec::chain::Chain;
use crate::exec::fiber_locals::{handoff, Resumed, Suspend};
use crate::exec::link::ThreadLink;
use crate::exec::request::RequestCtx;

/// Where the sync code holding a `Next` runs.
#[derive(Clone, Copy)]
pub(crate) enum Backend<'a> {
    /// On a fiber: the end of the segment suspends it.
    Fiber,
    /// On a held thread: the end of the segment blocks it.
    Thread(&'a ThreadLink),
}

/// The rest of the pipeline, as seen by sync middleware.
///
/// `Next` is `!Send`: it must be used on the fiber (or thread) that
/// received it, during the middleware's `call`.
///
/// ```compile_fail
/// fn must_be_send<T: Send>() {}
/// must_be_send::<suspendware::Next<'static>>();
/// ```
pub struct Next<'a> {
    chain: &'a Chain,
    /// Index of the next layer of this segment.
    pos: usize,
    /// One past the last layer of this segment.
    end: usize,
    backend: Backend<'a>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> Next<'a> {
    pub(crate) fn new(chain: &'a Chain, pos: usize, end: usize, backend: Backend<'a>) -> Self {
        Next {
            chain,
            pos,
            end,
            backend,
            _not_send: PhantomData,
        }
    }

    /// Runs the inner part of the pipeline and returns its response.
    ///
    /// If the next layer is sync this is a plain call. Otherwise, on a fiber
    /// (Suspend mode) the fiber suspends while the async part runs on the
    /// executor; on a held thread (Adapt mode) the thread blocks. May be
    /// called more than once per request (each call runs the inner part
    /// again).
    ///
    /// A panic in the inner part arrives here as the panic handler's
    /// response (500 by default), as in Django, so outer middleware still
    /// sees and may decorate it.
    ///
    /// # Panics
    /// If called off the fiber that runs this middleware (e.g. from another
    /// thread), with a message saying so.
    // Inlined into the caller, the user's layer: its frame and this one
    // (with `Chain::call_sync`, also inlined) become one frame per sync
    // layer on the fiber stack, sharing slots for the request and response
    // temporaries. Measured with five layers (BENCHMARKS.md, issue 13 third
    // round): the deepest byte of a request's stack drops under two pages,
    // 14.7-14.9 -> 10.7-10.9 KiB of RSS per suspended request in the
    // comparison harness, at the same instruction count within ~2 %.
    #[inline(always)]
    pub fn get_response(&mut self, req: Request) -> Response {
        match self.backend {
            Backend::Fiber => {
                if coro::place() == Place::Off {
                    crate::panic::off_fiber("get_response");
                }
                if self.pos < self.end {
                    self.chain.call_sync(self.pos, self.end, req, self.backend)
                } else {
                    suspend_for_inner(req)
                }
            }
            Backend::Thread(link) => {
                if self.pos < self.end {
                    self.chain.call_sync(self.pos, self.end, req, self.backend)
                } else {
                    block_for_inner(link, req)
                }
            }
        }
    }
}

/// The end of a fiber segment: hand the request to the driver and wait for
/// the inner part's response. Out of line so `get_response`'s frame (one per
/// sync layer on the fiber stack) does not carry this path's temporaries.
#[inline(never)]
fn suspend_for_inner(req: Request) -> Response {
    handoff::put_request(req);
    match coro::suspend::<Suspend, Resumed>(Suspend::Inner) {
        Ok(Resumed::Response) => handoff::take_response(),
        Ok(Resumed::Poll) => unreachable!("driver resumed get_response without a response"),
        Err(place) => refused(place),
    }
}

/// The fiber may not suspend here (see [`coro::suspend`]): the request never
/// left; take it back and answer as the refusal requires. Cold and out of
/// line, so `suspend_for_inner`'s frame holds none of this.
#[cold]
#[inline(never)]
fn refused(place: Place) -> Response {
    drop(handoff::take_request());
    match place {
        Place::Unwinding => inner_during_unwind(),
        _ => crate::panic::off_fiber("get_response"),
    }
}

/// `get_response` called by a destructor during an unwind: the fiber cannot
/// suspend for the inner part (see `crate::bridge`), and a panic here would
/// abort the process. The inner part is not run.
#[cold]
fn inner_during_unwind() -> Response {
    tracing::error!(
        "get_response was called while this middleware's fiber was unwinding (a panic or a \
         cancelled request); the inner part was not run"
    );
    let mut r = Response::new("internal server error\n".into());
    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// The end of a held-thread segment: hand the request to the async side and
/// block until it answers. Out of line for the same reason as
/// [`suspend_for_inner`]. A dropped async side means the request was
/// cancelled: unwind this thread's frames.
#[inline(never)]
fn block_for_inner(link: &ThreadLink, req: Request) -> Response {
    match link.inner(req) {
        Ok(resp) => resp,
        Err(_closed) => std::panic::resume_unwind(Box::new(crate::panic::Cancelled)),
    }
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("pos", &self.pos)
            .field("end", &self.end)
            .finish()
    }
}

/// The rest of the pipeline, as seen by async middleware.
pub struct AsyncNext {
    chain: Arc<Chain>,
    segment: usize,
    rctx: Arc<RequestCtx>,
}

impl AsyncNext {
    pub(crate) fn new(chain: Arc<Chain>, segment: usize, rctx: Arc<RequestCtx>) -> Self {
        AsyncNext {
            chain,
            segment,
            rctx,
        }
    }

    /// Runs the inner part of the pipeline. May be called more than once.
    pub fn run(&self, req: Request) -> impl Future<Output = Response> + 'static {
        Chain::run_segment(&self.chain, self.segment, req, self.rctx.clone())
    }

    pub(crate) fn request_ctx(&self) -> Arc<RequestCtx> {
        self.rctx.clone()
    }
}

impl fmt::Debug for AsyncNext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncNext")
            .field("segment", &self.segment)
            .finish()
    }
}
