//! The handles a middleware uses to call the rest of the pipeline.

use std::fmt;
use std::marker::PhantomData;

use crate::body::{Request, Response};
use crate::chain::Chain;
use crate::coro::{self, Resumed, Suspend};
use std::future::Future;
use std::sync::Arc;

/// The rest of the pipeline, as seen by a [`crate::SyncMiddleware`].
///
/// `Next` is `!Send`: it must be used on the fiber that received it, during
/// the middleware's `call`.
pub struct Next<'a> {
    chain: &'a Chain,
    /// Index of the next sync middleware in this segment.
    pos: usize,
    /// One past the last sync middleware of this segment.
    end: usize,
    _not_send: PhantomData<*const ()>,
}

impl<'a> Next<'a> {
    pub(crate) fn new(chain: &'a Chain, pos: usize, end: usize) -> Self {
        Next { chain, pos, end, _not_send: PhantomData }
    }

    /// Runs the inner part of the pipeline and returns its response.
    ///
    /// If the next layer is sync middleware this is a plain call on the same
    /// fiber. Otherwise the fiber suspends: the driver runs the async part
    /// on the executor and resumes the fiber with the response. May be
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
    pub fn get_response(&mut self, req: Request) -> Response {
        if !coro::in_fiber() {
            crate::panic::off_fiber("get_response");
        }
        if self.pos < self.end {
            self.chain.call_sync(self.pos, self.end, req)
        } else {
            match coro::suspend("get_response", Suspend::Inner(req)) {
                Resumed::Response(r) => r,
                Resumed::Poll => unreachable!("driver resumed get_response without a response"),
            }
        }
    }
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").field("pos", &self.pos).field("end", &self.end).finish()
    }
}

/// The rest of the pipeline, as seen by an [`crate::AsyncMiddleware`].
pub struct AsyncNext {
    chain: Arc<Chain>,
    segment: usize,
}

impl AsyncNext {
    pub(crate) fn new(chain: Arc<Chain>, segment: usize) -> Self {
        AsyncNext { chain, segment }
    }

    /// Runs the inner part of the pipeline. May be called more than once.
    pub fn run(&self, req: Request) -> impl Future<Output = Response> + 'static {
        Chain::run_segment(&self.chain, self.segment, req)
    }
}

impl fmt::Debug for AsyncNext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncNext").field("segment", &self.segment).finish()
    }
}
