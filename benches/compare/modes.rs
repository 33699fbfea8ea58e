//! The execution modes the harness compares, and how each one handles a
//! request. Adding a mode is a variant here plus one arm in `Handler::new`.

use std::future::Future;
use std::pin::Pin;

use suspendware::{Pipeline, Request, Response};

use crate::common::{self, Flavor, ThreadHold, ViewKind};

/// A way of running K sync middleware around an async view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// suspendware's default: sync middleware on fibers, one thread.
    Suspend,
    /// The same logic written as async middleware: the native floor.
    Async,
    /// `Mode::Adapt`: each request's sync middleware holds a blocking-pool
    /// thread while the view runs (asgiref's `sync_to_async` model).
    Adapt,
    /// `Mode::ThreadHop` with the same logic as hook middleware: every hook
    /// is its own hop to the blocking pool (Django 3.1's ASGI model).
    ThreadHop,
    /// A hand-made thread-hold chain (`spawn_blocking` + channel), a
    /// cross-check of `Adapt`; not run unless asked for.
    ThreadHold,
}

impl Mode {
    /// Every mode, in the order they are reported.
    pub const ALL: &'static [Mode] = &[
        Mode::Suspend,
        Mode::Async,
        Mode::Adapt,
        Mode::ThreadHop,
        Mode::ThreadHold,
    ];

    /// The modes run when `--modes` is not given.
    pub const DEFAULT: &'static [Mode] =
        &[Mode::Suspend, Mode::Async, Mode::Adapt, Mode::ThreadHop];

    /// The name used on the command line and in the outputs.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Suspend => "suspend",
            Mode::Async => "native_async",
            Mode::Adapt => "adapt",
            Mode::ThreadHop => "thread_hop",
            Mode::ThreadHold => "thread_hold",
        }
    }

    /// Parses a name given by `name`.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.iter().copied().find(|m| m.name() == s)
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Response>>>;

/// What the load generator calls for each request: built inside the child's
/// runtime, used on its thread.
pub enum Handler {
    /// A suspendware pipeline (its futures are `!Send`).
    Pipeline(Pipeline),
    /// The hand-made thread-hold chain.
    ThreadHold(ThreadHold),
}

impl Handler {
    /// The handler of `mode` for `k` working layers around `view`. Must be
    /// called inside the runtime that will run the requests.
    pub fn new(mode: Mode, k: usize, view: ViewKind) -> Handler {
        match mode {
            Mode::Suspend => Handler::Pipeline(common::pipeline(Flavor::Suspend, k, true, view)),
            Mode::Async => Handler::Pipeline(common::pipeline(Flavor::Async, k, true, view)),
            Mode::Adapt => Handler::Pipeline(common::pipeline(Flavor::Adapt, k, true, view)),
            Mode::ThreadHop => {
                Handler::Pipeline(common::pipeline(Flavor::ThreadHop, k, true, view))
            }
            Mode::ThreadHold => Handler::ThreadHold(ThreadHold::new(k, true, view)),
        }
    }

    /// Starts one request.
    pub fn handle(&self, req: Request) -> BoxFut {
        match self {
            Handler::Pipeline(p) => Box::pin(p.handle(req)),
            Handler::ThreadHold(h) => Box::pin(h.handle(req)),
        }
    }

    /// The pipeline, when there is one (for its stack-pool counters).
    pub fn pipeline(&self) -> Option<&Pipeline> {
        match self {
            Handler::Pipeline(p) => Some(p),
            Handler::ThreadHold(_) => None,
        }
    }
}
