//! The per-request future that drives one sync segment's fiber.
//!
//! ## States
//!
//! ```text
//!            stack free                      fiber: Suspend::Inner (+ request)
//! Acquire ───────────────> Running{inner: None} ─────────────────────> Running{inner: Some}
//!    │ pool full: wait          ▲    │ fiber: Suspend::Pending → Pending     │ inner ready:
//!    │ (bounded), then 503      │    │ fiber returned → stack to pool, Ready │ resume with response
//!    ▼                          └────┼──────────────────────────────────────┘
//!  Done <────────────────────────────┘
//! ```
//!
//! Dropped in `Running` (the client went away): the inner future is dropped
//! first (it is the innermost part), then the fiber is unwound with a
//! cancellation so every destructor on its stack runs, then the stack goes
//! back to the pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use corosensei::stack::DefaultStack;
use http::StatusCode;

use crate::body::{Request, Response};
use crate::coro::{Cancel, Step};
use crate::exec::active;
use crate::exec::chain::{Chain, SegmentFuture};
use crate::exec::fiber_locals::{handoff, FiberLocals, RequestFiber, Resumed, Suspend};
use crate::exec::layers::Layers;
use crate::exec::next::Backend;
use crate::exec::request::RequestCtx;
use crate::future::LocalBoxFuture;
use crate::stack::StackError;

struct Acquire {
    req: Option<Request>,
    wait: LocalBoxFuture<'static, Result<DefaultStack, StackError>>,
}

pub(crate) struct FiberSegmentFuture {
    chain: Arc<Chain>,
    seg: usize,
    /// The segment's layers (for the watchdog's message).
    layers: Layers,
    /// The request's context shared with the other segments; `None` when
    /// the plan leaves it to this fiber, which makes it on first use
    /// ([`Chain::ctx_on_first_fiber`]).
    rctx: Option<Arc<RequestCtx>>,
    state: State,
}

enum State {
    /// Waiting for a stack from a full pool (the slow path: boxed, so the
    /// state moved around on the fast path stays small).
    Acquire(Box<Acquire>),
    Running {
        fiber: RequestFiber,
        /// The inner part, while the fiber waits in `get_response`.
        inner: Option<SegmentFuture>,
    },
    /// No stack could be had (map budget or mmap failure): answer 503.
    Failed(Option<StackError>),
    Done,
}

impl FiberSegmentFuture {
    pub(crate) fn new(
        chain: Arc<Chain>,
        seg: usize,
        layers: Layers,
        req: Request,
        rctx: Option<Arc<RequestCtx>>,
    ) -> Self {
        let state = match chain.pool.try_acquire() {
            Ok(Some(stack)) => start_fiber(&chain, rctx.as_ref(), stack, layers, req),
            // Full, or the process's map budget spent: wait (bounded) for
            // either to change.
            Ok(None) | Err(StackError::MapBudget { .. }) => {
                let pool = chain.pool.clone();
                State::Acquire(Box::new(Acquire {
                    req: Some(req),
                    wait: Box::pin(async move { pool.acquire().await }),
                }))
            }
            Err(e) => State::Failed(Some(e)),
        };
        FiberSegmentFuture {
            chain,
            seg,
            layers,
            rctx,
            state,
        }
    }
}

fn start_fiber(
    chain: &Arc<Chain>,
    rctx: Option<&Arc<RequestCtx>>,
    stack: DefaultStack,
    layers: Layers,
    req: Request,
) -> State {
    // The request travels boxed into the fiber: corosensei moves the body
    // closure through several frames at the root of the fiber stack, and a
    // 256-byte request inside it would be copied into each (see
    // BENCHMARKS.md, "fiber stack per request"). (Handing it over through
    // `handoff` at the first resume instead saves this allocation but costs
    // more: the request must then wait in the segment future's state, which
    // is moved three times before it is pinned; measured +200 instructions
    // per request.)
    let req = Box::new(req);
    let fiber = RequestFiber::new(
        stack,
        FiberLocals::new(rctx.cloned(), chain.clone()),
        move |locals: &FiberLocals| {
            locals.enter_depth();
            // Out of its box before the chain runs: `*req` on the box
            // binding would keep the box's memory (256 bytes) allocated
            // until this closure returns, for the whole life of the fiber;
            // moved into a temporary, the box is freed at this statement.
            let req: Request = *{ req };
            let resp = locals
                .chain()
                .call_sync(layers.start, layers.end, req, Backend::Fiber);
            handoff::put_response(resp);
        },
    );
    State::Running { fiber, inner: None }
}

fn unavailable(e: &StackError) -> Response {
    tracing::warn!(error = %e, "no fiber stack for request; answering 503");
    let mut r = Response::new(format!("service unavailable: {e}\n").into());
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    r
}

impl Future for FiberSegmentFuture {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Acquire(acq) => match acq.wait.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(stack)) => {
                        let req = acq.req.take().expect("request taken twice");
                        this.state =
                            start_fiber(&this.chain, this.rctx.as_ref(), stack, this.layers, req);
                    }
                    Poll::Ready(Err(e)) => {
                        this.state = State::Done;
                        return Poll::Ready(unavailable(&e));
                    }
                },
                State::Running { fiber, inner } => {
                    // Resume with the inner part's response if it was
                    // running, else (first poll, or woken after `wait`) poll.
                    let input = match inner {
                        Some(f) => match Pin::new(f).poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(r) => {
                                *inner = None;
                                // Taken by `get_response` as the fiber resumes.
                                handoff::put_response(r);
                                Resumed::Response
                            }
                        },
                        None => {
                            // Woken while a `blocking` closure still runs
                            // (another wake-up reached the fiber's waker):
                            // resuming would only block this thread on it.
                            if let Some(job) = fiber.scoped_job() {
                                if job.poll_done(cx).is_pending() {
                                    return Poll::Pending;
                                }
                            }
                            Resumed::Poll
                        }
                    };
                    let t0 = this.chain.watchdog.as_ref().map(|w| w.start());
                    let run = active::begin_run();
                    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        fiber.resume(cx.waker(), input)
                    }));
                    if let (Some(w), Some(t0)) = (&this.chain.watchdog, t0) {
                        w.check(&this.chain, this.layers, t0);
                    }
                    active::end_run(run);
                    match step {
                        Ok(Step::Suspended(Suspend::Pending)) => return Poll::Pending,
                        Ok(Step::Suspended(Suspend::Inner)) => {
                            // Takes the request the fiber left in `handoff`.
                            *inner = Some(Chain::inner_segment(
                                &this.chain,
                                this.seg + 1,
                                this.rctx.as_ref(),
                            ));
                        }
                        Ok(Step::Done(())) => {
                            let resp = handoff::take_response();
                            this.finish();
                            return Poll::Ready(resp);
                        }
                        Err(payload) => {
                            // Every middleware call is already wrapped in a
                            // panic boundary, so this is a panic from the
                            // boundary machinery itself; still answer.
                            this.finish();
                            let handler = &this.chain.panic_handler;
                            return Poll::Ready(crate::exec::boundary::to_response(
                                handler, "fiber", payload,
                            ));
                        }
                    }
                }
                State::Failed(e) => {
                    let e = e
                        .take()
                        .expect("FiberSegmentFuture polled after completion");
                    this.state = State::Done;
                    return Poll::Ready(unavailable(&e));
                }
                State::Done => panic!("FiberSegmentFuture polled after completion"),
            }
        }
    }
}

impl FiberSegmentFuture {
    /// Returns the fiber's stack to the pool (or accounts for its loss).
    fn finish(&mut self) {
        if let State::Running { fiber, inner, .. } = std::mem::replace(&mut self.state, State::Done)
        {
            // The stack goes back even if the inner future's drop panics.
            let slot = StackSlot {
                chain: &self.chain,
                fiber: Some(fiber),
            };
            drop(inner);
            drop(slot);
        }
    }
}

/// A fiber whose stack returns to the pool when this is dropped (cancelling
/// the fiber first if it has not finished), or whose slot is given back if
/// the stack could not be recovered.
struct StackSlot<'a> {
    chain: &'a Chain,
    fiber: Option<RequestFiber>,
}

impl Drop for StackSlot<'_> {
    fn drop(&mut self) {
        if let Some(fiber) = self.fiber.take() {
            return_stack(self.chain, fiber);
        }
    }
}

/// Ends `fiber` (cancelling it if it has not finished) and gives its stack
/// back to the pool, or its slot if the stack could not be recovered.
pub(crate) fn return_stack(chain: &Chain, mut fiber: RequestFiber) {
    if !fiber.is_done() {
        report_cancel(fiber.cancel());
    }
    // Done (or given up on): `into_stack` only joins and takes the stack.
    match fiber.into_stack() {
        Some(stack) => chain.pool.release(stack),
        None => chain.pool.forget_one(),
    }
}

impl Drop for FiberSegmentFuture {
    fn drop(&mut self) {
        // `finish` runs however this ends: a panic from the inner future's
        // destructor (or from a payload's) must not keep the stack's slot.
        let this = FinishOnDrop(self);
        if let State::Running { fiber, inner, .. } = &mut this.0.state {
            // Innermost first: the async part, then the fiber's frames.
            drop(inner.take());
            if fiber.scoped_job().is_some() {
                // A `blocking` closure on another thread still borrows this
                // fiber's frames: the fiber may not unwind, and its stack
                // (still counted in use) may not be reused, until the closure
                // returns. Keep it aside without blocking this thread.
                if let State::Running { fiber, .. } =
                    std::mem::replace(&mut this.0.state, State::Done)
                {
                    super::orphans::adopt(this.0.chain.clone(), fiber);
                }
                return;
            }
            report_cancel(fiber.cancel());
        }
    }
}

/// Runs [`FiberSegmentFuture::finish`] when dropped, also during an unwind.
struct FinishOnDrop<'a>(&'a mut FiberSegmentFuture);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Logs what a cancellation's unwind could not keep to itself.
fn report_cancel(outcome: Cancel) {
    match outcome {
        Cancel::Finished | Cancel::Unwound => {}
        Cancel::Forced => tracing::warn!(
            "a cancelled request's middleware kept catching its cancellation; its fiber was \
             force-unwound (re-raise suspendware::Cancelled from catch_unwind)"
        ),
        Cancel::Panicked(p) => {
            tracing::error!(
                panic = %crate::panic::payload_message(&*p),
                "middleware panicked while a cancelled request was unwinding"
            );
            crate::coro::drop_payload(p);
        }
    }
}
