//! Planning: which execution each layer gets, how layers group into
//! segments, and what a request costs in switches.
//!
//! Like Django's `load_middleware`, the planner walks from the view
//! outwards, tracking whether the layer inside is async, and gives each
//! hybrid the mode of its inner neighbour (no switch between them). Single-
//! mode layers get their only mode; hook middleware runs sync (on the fiber
//! or held thread) except in ThreadHop and Strict modes, where each hook hops.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::exec::layers::Layers;
use crate::pipeline::error::BuildError;
use crate::pipeline::middleware::{Middleware, View};
use crate::pipeline::mode::{Exec, Mode};

/// What a layer is, for planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A middleware with capability flags.
    Plain,
    /// Hook middleware.
    Hook,
    /// The `process_view` hooks of all hook middleware, before the view.
    ViewHooks,
    /// A sync middleware forced onto a held thread in every mode.
    ThreadBound,
    /// The sync view.
    SyncView,
    /// The async view.
    AsyncView,
}

pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) mw: Arc<dyn Middleware>,
    /// The async view, also reachable without the `Middleware` adaptor: an
    /// inner async segment calls it directly, without building the
    /// `AsyncNext` a view never uses (its `Arc<Chain>` and
    /// `Arc<RequestCtx>` clones are four locked instructions per request;
    /// see `exec/async_segment.rs`). `None` for every other layer.
    pub(crate) view: Option<Arc<dyn View>>,
    /// Set by [`plan`].
    pub(crate) exec: Exec,
}

/// A step of a request's path through the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// These layers, sync, on one fiber.
    Fiber(Layers),
    /// These layers, sync, on one held blocking-pool thread.
    Thread(Layers),
    /// The async layer at this index.
    Async(usize),
}

fn sync_exec(mode: Mode) -> Exec {
    match mode {
        Mode::Suspend => Exec::Fiber,
        _ => Exec::Thread,
    }
}

/// Chooses every entry's `exec` and returns the segments.
pub(crate) fn plan(entries: &mut [Entry], mode: Mode) -> Result<Vec<Segment>, BuildError> {
    let mut rejected = Vec::new();
    // The view is innermost; "inner is async" starts from its choice.
    let mut inner: Option<Exec> = None;
    for e in entries.iter_mut().rev() {
        let caps = e.mw.capabilities();
        if !caps.sync && !caps.async_ {
            return Err(BuildError::NoCapability {
                name: e.name.clone(),
            });
        }
        let exec = match e.kind {
            Kind::AsyncView => Exec::Async,
            Kind::SyncView | Kind::Hook | Kind::ViewHooks => match mode {
                Mode::Suspend => Exec::Fiber,
                Mode::Adapt => Exec::Thread,
                Mode::ThreadHop | Mode::Strict => Exec::Async,
            },
            Kind::ThreadBound => {
                if mode == Mode::Strict {
                    rejected.push(e.name.clone());
                }
                Exec::Thread
            }
            Kind::Plain => match (caps.sync, caps.async_) {
                (true, false) => {
                    if mode == Mode::Strict {
                        rejected.push(e.name.clone());
                    }
                    sync_exec(mode)
                }
                (false, true) => Exec::Async,
                _ => match (mode, inner) {
                    (Mode::Strict, _) => Exec::Async,
                    (_, Some(Exec::Async)) | (_, None) => Exec::Async,
                    (_, Some(_)) => sync_exec(mode),
                },
            },
        };
        e.exec = exec;
        inner = Some(exec);
    }
    if !rejected.is_empty() {
        rejected.reverse();
        return Err(BuildError::SyncInStrict { names: rejected });
    }
    Ok(segments(entries))
}

fn segments(entries: &[Entry]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let exec = entries[i].exec;
        if exec == Exec::Async {
            out.push(Segment::Async(i));
            i += 1;
            continue;
        }
        let start = i;
        while i < entries.len() && entries[i].exec == exec {
            i += 1;
        }
        out.push(match exec {
            Exec::Fiber => Segment::Fiber(Layers::new(start, i)),
            _ => Segment::Thread(Layers::new(start, i)),
        });
    }
    out
}

/// The plan of a built pipeline, as [`crate::Pipeline::describe`] shows it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The pipeline's mode.
    pub mode: Mode,
    /// `(name, execution)` per layer, outermost first, the view last.
    pub layers: Vec<(String, Exec)>,
    /// Sync↔async boundaries on a request's path (the server side counts as
    /// async). A request crosses each twice, in and out.
    pub boundaries: usize,
    /// Blocking-pool hops per request that reaches the view (hook hooks and
    /// sync views run in hop form), not counting `process_exception`.
    pub hops: usize,
    /// Segments: the indices of their layers (end exclusive) and how they
    /// run.
    pub segments: Vec<(Range<usize>, Exec)>,
}

impl Plan {
    pub(crate) fn of(mode: Mode, entries: &[Entry], segs: &[Segment]) -> Plan {
        let layers: Vec<(String, Exec)> =
            entries.iter().map(|e| (e.name.clone(), e.exec)).collect();
        let mut boundaries = 0;
        let mut prev = Exec::Async;
        for e in entries {
            if e.exec != prev {
                boundaries += 1;
            }
            prev = e.exec;
        }
        let hops = entries
            .iter()
            .filter(|e| e.exec == Exec::Async)
            .map(|e| match e.kind {
                Kind::ViewHooks => 1,
                Kind::Hook => 2,
                Kind::SyncView => 1,
                _ => 0,
            })
            .sum();
        let segments = segs
            .iter()
            .map(|s| match *s {
                Segment::Fiber(l) => (l.range(), Exec::Fiber),
                Segment::Thread(l) => (l.range(), Exec::Thread),
                Segment::Async(i) => (i..i + 1, Exec::Async),
            })
            .collect();
        Plan {
            mode,
            layers,
            boundaries,
            hops,
            segments,
        }
    }

    /// Context switches per request: each boundary crossed in and out.
    pub fn switches(&self) -> usize {
        self.boundaries * 2
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mode: {}", self.mode)?;
        for (n, (range, exec)) in self.segments.iter().enumerate() {
            writeln!(f, "segment {} ({exec}):", n + 1)?;
            for (name, _) in &self.layers[range.clone()] {
                writeln!(f, "    {name}")?;
            }
        }
        writeln!(
            f,
            "sync/async boundaries: {} ({} switches per request), blocking-pool hops per request: {}",
            self.boundaries,
            self.switches(),
            self.hops
        )
    }
}
