//! One request's walk through the pipeline.
//!
//! * [`chain`] — the built chain and `run_segment`, which hands a request
//!   from segment to segment; the sync layer call with its span and panic
//!   boundary.
//! * [`next`] — `Next` / `AsyncNext`, what middleware call to go inward.
//! * [`fiber_segment`] — the future that drives one fiber segment (Suspend
//!   mode); [`fiber_locals`] — what a request's fiber carries.
//! * [`thread_segment`] and [`link`] — Adapt mode's held thread and its
//!   hand-off to the async side; [`hop`] — ThreadHop's one-call hops.
//! * [`async_segment`] — the future of one async layer (its span and
//!   panic boundary).
//! * [`stage`] — adaptors giving every layer the chain's `Middleware` shape.
//! * [`request`] — the per-request context shared by all segments.
//! * [`boundary`] — panic boundaries around every layer call.
//! * [`layers`] — a range of layer indices.
//! * [`active`] — which layer runs on the thread, and which one kept the
//!   current fiber run the longest (whom the watchdog names); [`ticker`] —
//!   the millisecond counter it times layers with.
//!
//! The walk is recursive by nature (a segment runs the next one, which may
//! call back into the chain), so this is the one room whose files may import
//! each other in a circle.

pub(crate) mod active;
pub(crate) mod async_segment;
pub(crate) mod boundary;
pub(crate) mod chain;
pub(crate) mod fiber_locals;
pub(crate) mod fiber_segment;
pub(crate) mod hop;
pub(crate) mod layers;
pub(crate) mod link;
#[cfg(all(test, loom))]
mod loom_link;
pub(crate) mod next;
pub(crate) mod orphans;
pub(crate) mod request;
pub(crate) mod stage;
pub(crate) mod thread_segment;
pub(crate) mod ticker;
pub(crate) mod watchdog;
