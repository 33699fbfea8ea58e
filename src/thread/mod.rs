//! The thread adapters: how sync code runs on tokio's blocking pool in the
//! Adapt and ThreadHop modes (the models suspendware is compared against).
//!
//! * [`segment`] — Adapt: a run of sync middleware on one blocking-pool
//!   thread held for the request; `get_response` blocks it.
//! * [`hop`] — ThreadHop: one call of sync code on the blocking pool, with
//!   the request's context; nothing is held between hops.
//! * [`link`] — the hand-off between a held thread and its async side.

pub(crate) mod hop;
pub(crate) mod link;
pub(crate) mod segment;

pub(crate) use hop::hop;
