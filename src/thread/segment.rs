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
//! ## Cancellation
//!
//! Dropping this future drops the reply sender the thread is blocked on (or
//! the channel it would send to): its `get_response` raises the
//! [`Cancelled`] unwind, the thread's frames unwind and it returns to the
//! pool. No thread stays blocked.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::body::{Request, Response};
use crate::chain::Chain;
use crate::context::{RequestCtx, ThreadScope};
use crate::handoff::{self, Closed};
use crate::loom::lock;
use crate::loom::sync::Mutex;
use crate::middleware::LocalBoxFuture;
use crate::next::Backend;
use crate::panic::Cancelled;

/// Messages from the held thread to the async side.
enum ToAsync {
    /// Run the inner part with this request; answer on the sender.
    Inner(Request, handoff::Sender<Response>),
    /// The segment finished.
    Done(Response),
}

/// The held thread's end of the link.
pub(crate) struct ThreadLink {
    tx: mpsc::UnboundedSender<ToAsync>,
}

impl ThreadLink {
    /// Blocks this thread until the inner part answers `req`.
    #[inline(never)]
    pub(crate) fn inner(&self, req: Request) -> Response {
        let (reply_tx, reply_rx) = handoff::oneshot();
        if self.tx.send(ToAsync::Inner(req, reply_tx)).is_err() {
            panic::resume_unwind(Box::new(Cancelled));
        }
        match reply_rx.recv_blocking() {
            Ok(r) => r,
            // The async side was dropped: the request is cancelled.
            Err(Closed) => panic::resume_unwind(Box::new(Cancelled)),
        }
    }
}

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

/// The request-wide permit, kept in the request's context by the outermost
/// held-thread segment.
#[derive(Default)]
pub(crate) struct PermitSlot(Mutex<Option<OwnedSemaphorePermit>>);

pub(crate) struct ThreadSegmentFuture {
    chain: Arc<Chain>,
    seg: usize,
    start: usize,
    end: usize,
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
    Running {
        rx: mpsc::UnboundedReceiver<ToAsync>,
        inner: Option<(LocalBoxFuture<'static, Response>, handoff::Sender<Response>)>,
    },
    Done,
}

impl ThreadSegmentFuture {
    pub(crate) fn new(
        chain: Arc<Chain>,
        seg: usize,
        start: usize,
        end: usize,
        req: Request,
        rctx: Arc<RequestCtx>,
    ) -> Self {
        let mut this = ThreadSegmentFuture {
            chain,
            seg,
            start,
            end,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let chain = self.chain.clone();
        let rctx = self.rctx.clone();
        let (start, end) = (self.start, self.end);
        let span = tracing::Span::current();
        let handle = tokio::runtime::Handle::try_current()
            .expect("suspendware: Adapt mode needs a tokio runtime; run the pipeline inside one");
        handle.spawn_blocking(move || {
            let _scope = ThreadScope::enter(rctx);
            let _span = span.enter();
            let link = ThreadLink { tx };
            let run = panic::catch_unwind(AssertUnwindSafe(|| {
                chain.call_sync(start, end, req, Backend::Thread(&link))
            }));
            match run {
                Ok(resp) => {
                    // The async side may be gone (cancelled): then the
                    // response is simply dropped here.
                    let _ = link.tx.send(ToAsync::Done(resp));
                }
                Err(p) if p.is::<Cancelled>() => {}
                Err(p) => {
                    let resp = crate::panic::to_response(&chain.panic_handler, "adapt thread", p);
                    let _ = link.tx.send(ToAsync::Done(resp));
                }
            }
        });
        State::Running { rx, inner: None }
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
                State::Running { rx, inner } => {
                    if let Some((fut, _)) = inner {
                        match fut.as_mut().poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(r) => {
                                let (_, reply) = inner.take().expect("inner present");
                                // Err: the thread is gone (cannot happen while
                                // it waits on this reply); nothing to do.
                                let _ = reply.send(r);
                            }
                        }
                    }
                    match rx.poll_recv(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(ToAsync::Inner(req, reply))) => {
                            let fut = Chain::run_segment(
                                &this.chain,
                                this.seg + 1,
                                req,
                                this.rctx.clone(),
                            );
                            *inner = Some((fut, reply));
                        }
                        Poll::Ready(Some(ToAsync::Done(resp))) => {
                            this.state = State::Done;
                            this.release_permit();
                            return Poll::Ready(resp);
                        }
                        Poll::Ready(None) => {
                            this.state = State::Done;
                            this.release_permit();
                            let p: Box<dyn std::any::Any + Send> =
                                Box::new("the Adapt-mode thread ended without a response");
                            let resp = crate::panic::to_response(
                                &this.chain.panic_handler,
                                "adapt thread",
                                p,
                            );
                            return Poll::Ready(resp);
                        }
                    }
                }
                State::Done => panic!("ThreadSegmentFuture polled after completion"),
            }
        }
    }
}

impl Drop for ThreadSegmentFuture {
    fn drop(&mut self) {
        // Dropping `Running` drops the inner future and the reply sender the
        // thread may be blocked on, which unwinds it (module docs).
        self.state = State::Done;
        self.release_permit();
    }
}
