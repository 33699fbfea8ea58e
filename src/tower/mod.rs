//! tower integration (feature `tower`, on by default).
//!
//! * `impl Service<http::Request<B>> for Pipeline`: the pipeline as a local
//!   (`!Send` future) service, for thread-per-core servers.
//! * [`RuntimeService`]: a pipeline behind a [`crate::runtime::RuntimeHandle`], with
//!   `Send` futures, for multi-thread runtimes.
//! * [`SuspendLayer`]: sync middleware in front of any tower service (an
//!   axum `Router`, a tonic service, ...), usable with `Router::layer`.
//!
//! ## Body conversion
//!
//! The pipeline sees [`crate::Body`], a complete in-memory buffer. On the
//! way in, a request body of any `B: http_body::Body` is read to the end
//! (its trailers are dropped) before the pipeline runs, up to a limit
//! ([`DEFAULT_BODY_LIMIT`], change it with `body_limit`): a longer body is
//! answered `413 Payload Too Large`, a body that fails to read
//! `400 Bad Request`, without running the middleware. Inside
//! [`SuspendLayer`], the inner service gets the `Body` as its request body
//! (`Body` implements `http_body::Body`) and its response body is read to
//! the end (without a limit; trailers dropped) so sync middleware can look
//! at it; an error reading it becomes `500`. The response leaves as a
//! `Response<Body>` (one data frame, exact `size_hint`).

mod body;
mod layer;
mod service;
mod view;

pub use body::{BoxError, CollectResponse, DEFAULT_BODY_LIMIT};
pub use layer::SuspendLayer;
pub use service::RuntimeService;
