//! Execution modes and capability flags.

use std::fmt;

/// How a pipeline runs sync code (pipeline-wide; see
/// [`crate::PipelineBuilder::mode`]). The names in quotes are those of the
/// Django forum proposal this project comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// "suspend_sync" (the default): runs of sync middleware execute on a
    /// fiber that suspends at `get_response`; no thread is held while the
    /// async part runs.
    #[default]
    Suspend,
    /// "adapt": runs of sync middleware execute on tokio's blocking pool and
    /// `get_response` blocks that thread until the async part finishes (the
    /// asgiref `sync_to_async` / `spawn_blocking` model). One thread is held
    /// per in-flight request; a warning per adapted middleware is logged at
    /// build time.
    Adapt,
    /// Django 3.1's ASGI model, for comparison: every hook of a hook
    /// middleware is its own hop to the blocking pool (no thread held while
    /// the view runs); plain sync middleware is adapted as in `Adapt`.
    ThreadHop,
    /// "async": every middleware must be async-capable; `build` fails with
    /// the names of the sync-only ones. Hook middleware counts as
    /// async-capable (its hooks hop to the blocking pool, as in Django).
    Strict,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Suspend => "suspend",
            Mode::Adapt => "adapt",
            Mode::ThreadHop => "hop",
            Mode::Strict => "strict",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "suspend" | "suspend_sync" => Ok(Mode::Suspend),
            "adapt" => Ok(Mode::Adapt),
            "hop" | "threadhop" | "thread_hop" => Ok(Mode::ThreadHop),
            "strict" | "async" => Ok(Mode::Strict),
            other => Err(format!(
                "unknown mode {other:?}: expected suspend, adapt, hop or strict"
            )),
        }
    }
}

/// What a middleware can run as (Django's `sync_capable` / `async_capable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Capabilities {
    /// Has a blocking-style implementation (`Middleware::call_sync`).
    pub sync: bool,
    /// Has an async implementation (`Middleware::call_async`).
    pub async_: bool,
}

impl Capabilities {
    /// Sync only.
    pub const SYNC: Capabilities = Capabilities {
        sync: true,
        async_: false,
    };
    /// Async only.
    pub const ASYNC: Capabilities = Capabilities {
        sync: false,
        async_: true,
    };
    /// Both: a hybrid middleware; the planner picks per pipeline.
    pub const BOTH: Capabilities = Capabilities {
        sync: true,
        async_: true,
    };
}

/// Where one layer of a built pipeline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exec {
    /// Sync code on a fiber (Suspend).
    Fiber,
    /// Sync code on a blocking-pool thread held for the request (Adapt).
    Thread,
    /// Async code on the executor (async middleware, async views, and hook
    /// middleware whose hooks hop to the blocking pool).
    Async,
}

impl Exec {
    /// Whether this runs blocking-style code in a sync context.
    pub fn is_sync(self) -> bool {
        !matches!(self, Exec::Async)
    }
}

impl fmt::Display for Exec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exec::Fiber => "sync on fiber",
            Exec::Thread => "sync on held thread",
            Exec::Async => "async",
        })
    }
}
