//! The legacy app: a middleware stack mirroring a new Django project's
//! `MIDDLEWARE` setting, written as blocking-style sync middleware, in front
//! of async views. Shared by `examples/legacy_server.rs` and the tests,
//! which serve it in-process.

pub mod middleware;
pub mod store;
pub mod views;

use std::time::Duration;

use suspendware::{BuildError, Mode, Pipeline, PipelineBuilder};

pub use store::{SessionStore, UserDirectory};

/// Settings of the app.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// How long `GET /` waits before answering (stands for a slow backend).
    pub view_delay: Duration,
    /// How the sync middleware meets the async views.
    pub mode: Mode,
}

/// What the middleware and views share; clones share the stores.
#[derive(Debug, Clone, Default)]
pub struct AppState {
    pub sessions: SessionStore,
    pub users: UserDirectory,
}

/// The middleware stack, outermost first, like Django's default
/// `MIDDLEWARE` (timing added outermost so it covers everything).
pub fn middleware(builder: PipelineBuilder, state: &AppState) -> PipelineBuilder {
    builder
        .sync(middleware::Timing)
        .sync(middleware::Security)
        .sync(middleware::Sessions::new(state.sessions.clone()))
        .sync(middleware::Csrf)
        .sync(middleware::Authentication::new(state.users.clone()))
        .sync(middleware::XFrameOptions)
}

/// The whole pipeline: the middleware stack around the app's router.
pub fn pipeline(state: &AppState, cfg: &AppConfig) -> Result<Pipeline, BuildError> {
    middleware(Pipeline::builder().mode(cfg.mode), state)
        .view(views::router(state.clone(), cfg.clone()))
        .build()
}
