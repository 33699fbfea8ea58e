//! Adapt mode: a run of sync middleware on one blocking-pool thread held for
//! the request.
//!
//! The thread runs the layers; when the innermost of them calls
//! `get_response`, it sends the request to the async side (this future) and
//! blocks until the response comes back. The async side runs the inner part
//! on the executor, like the fiber driver does.
//!
//! ## Why this cannot deadlock
//!
//! A thread held by an outer segment waits for the inner part, which may
//! itself need blocking-pool threads (an inner held-thread segment, hops,
//! `spawn_blocking` in a view). With one `spawn_blocking` per layer and the
//! pool's 512 threads, 5 layers deadlock at ~110 concurrent requests: the
//! pool fills with outer layers whose inner layers queue behind them.
//! Here (1) a run of consecutive sync layers shares one thread, and (2) a
//! request must hold an admission permit before its first held thread, and
//! keeps it until its last one is done. Permits = `threads / (S + 1)` where
//! `S` is the number of held-thread segments per request; so held threads
//! never exceed `S/(S+1)` of the pool and at least one thread per admitted
//! request stays free for its inner hops. Requests beyond that wait for a
//! permit without holding any thread.
//!
//! The messages between the thread and this future go through
//! [`super::link`].
//!
//! ## Cancellation
//!
//! Dropping this future drops the reply sender the thread is blocked on (or
//! the queue it would push to): its `get_response` raises the
//! [`Cancelled`] unwind, the thread's frames unwind and it returns to the
//! pool. A thread blocked in `wait` meanwhile is woken by the link's cancel
//! signal and unwinds the same way. No thread stays blocked. The request's
//! admission permit goes back only when the thread has ended.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::link::{self, AsyncEnd};
use crate::body::{Request, Response};
use crate::exec::chain::Chain;
use crate::exec::layers::Layers;
use crate::exec::next::Backend;
use crate::exec::request::{RequestCtx, ThreadScope};
use crate::future::LocalBoxFuture;
use crate::loom::lock;
use crate::panic::Cancelled;

/// Admission control for held threads (see the module docs).
pub(crate) struct AdaptAdmission {
    permits: Arc<Semaphore>,
    limit: usize,
}

impl AdaptAdmission {
    /// `threads`: blocking-pool threads this pipeline may use;
    /// `segments`: held-thread segments per request.
    pub(crate) fn new(threads: usize, segments: usize) -> AdaptAdmission {
        let limit = (threads / (segments + 1)).max(1);
        AdaptAdmission {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// Requests admitted to held threads at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

pub(crate) struct ThreadSegmentFuture {
    chain: Arc<Chain>,
    seg: usize,
    layers: Layers,
    rctx: Arc<RequestCtx>,
    /// Whether this segment took the request's permit (and must give it back).
    owns_permit: bool,
    state: State,
}

// Lives inside one boxed future per segment; boxing the request again would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
enum State {
    Admit {
        req: Option<Request>,
        acquire: LocalBoxFuture<'static, OwnedSemaphorePermit>,
    },
    Running(AsyncEnd<Request, Response, LocalBoxFuture<'static, Response>>),
    Done,
}

impl ThreadSegmentFuture {
    pub(crate) fn new(
        chain: Arc<Chain>,
        seg: usize,
        layers: Layers,
        req: Request,
        rctx: Arc<RequestCtx>,
    ) -> Self {
        let mut this = ThreadSegmentFuture {
            chain,
            seg,
            layers,
            rctx,
            owns_permit: false,
            state: State::Done,
        };
        if lock(&this.rctx.permit.0).is_some() {
            this.state = this.spawn(req);
        } else {
            this.owns_permit = true;
            let sem = this.chain.adapt.permits.clone();
            this.state = State::Admit {
                req: Some(req),
                acquire: Box::pin(async move {
                    sem.acquire_owned()
                        .await
                        .expect("adapt admission semaphore is never closed")
                }),
            };
        }
        this
    }

    fn spawn(&self, req: Request) -> State {
        let (mut link, async_end) = link::link();
        let chain = self.chain.clone();
        let rctx = self.rctx.clone();
        let Layers { start, end } = self.layers;
        let span = tracing::Span::current();
        let handle = tokio::runtime::Handle::try_current()
            .expect("suspendware: Adapt mode needs a tokio runtime; run the pipeline inside one");
        handle.spawn_blocking(move || {
            let _scope = ThreadScope::enter(rctx, link.cancel_signal());
            let _span = crate::bridge::span::entered(&span);
            let run = panic::catch_unwind(AssertUnwindSafe(|| {
                chain.call_sync(start, end, req, Backend::Thread(&link))
            }));
            match run {
                // The async side may be gone (cancelled): then the response
                // is simply dropped here.
                Ok(resp) => link.done(resp),
                Err(p) if p.is::<Cancelled>() => {}
                Err(p) => {
                    let resp =
                        crate::exec::boundary::to_response(&chain.panic_handler, "adapt thread", p);
                    link.done(resp);
                }
            }
        });
        State::Running(async_end)
    }

    fn release_permit(&mut self) {
        if self.owns_permit {
            self.owns_permit = false;
            lock(&self.rctx.permit.0).take();
        }
    }
}

impl Future for ThreadSegmentFuture {
    type Output = Response;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Admit { req, acquire } => {
                    let permit = match acquire.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(p) => p,
                    };
                    *lock(&this.rctx.permit.0) = Some(permit);
                    let req = req.take().expect("request taken twice");
                    this.state = this.spawn(req);
                }
                State::Running(end) => {
                    let (chain, seg, rctx) = (&this.chain, this.seg, &this.rctx);
                    let out = match end.poll(cx, |req| {
                        Chain::run_segment(chain, seg + 1, req, rctx.clone())
                    }) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(out) => out,
                    };
                    this.state = State::Done;
                    this.release_permit();
                    let resp = out.unwrap_or_else(|| {
                        let p: Box<dyn std::any::Any + Send> =
                            Box::new("the Adapt-mode thread ended without a response");
                        crate::exec::boundary::to_response(
                            &this.chain.panic_handler,
                            "adapt thread",
                            p,
                        )
                    });
                    return Poll::Ready(resp);
                }
                State::Done => panic!("ThreadSegmentFuture polled after completion"),
            }
        }
    }
}

impl Drop for ThreadSegmentFuture {
    fn drop(&mut self) {
        // Dropping `Running` drops the inner future and the reply sender the
        // thread may be blocked on, which unwinds it (module docs). Until it
        // has, the thread is still held: the permit stays in the request's
        // context, which that thread holds too (its `ThreadScope`), and goes
        // back when the last holder ends. Given back here, a new request
        // could take a thread beside one still held, beyond the admission
        // limit that keeps Adapt mode free of deadlock.
        let held = matches!(self.state, State::Running(_));
        self.state = State::Done;
        if !held {
            self.release_permit();
        }
    }
}
