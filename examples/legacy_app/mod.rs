//! The legacy app: a middleware stack mirroring a new Django project's
//! `MIDDLEWARE` setting, written as blocking-style sync middleware, in front
//! of async views, with Django's database session backend and user table in
//! SQLite. Shared by `examples/legacy_server.rs` and the tests, which serve
//! it in-process.

pub mod async_middleware;
pub mod middleware;
pub mod store;
pub mod views;

use std::time::Duration;

use suspendware::{BuildError, Mode, Pipeline, PipelineBuilder};

// Not every user of the app names all of these (tests/server.rs uses none).
#[allow(unused_imports)]
pub use store::{Database, DbCalls, DbConfig, DbError};

/// Settings of the app.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// How long `GET /` waits before answering (stands for a slow backend).
    pub view_delay: Duration,
    /// How the sync middleware meets the async views.
    pub mode: Mode,
}

/// What the middleware and views share; clones share the database.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Database,
}

impl AppState {
    /// Opens the database (creating its tables and the demo users).
    pub fn open(cfg: &DbConfig) -> Result<AppState, DbError> {
        Ok(AppState {
            db: Database::open(cfg)?,
        })
    }
}

impl Default for AppState {
    /// A fresh database in a temporary directory (removed with the last
    /// clone), sync calls through `suspendware::blocking`.
    fn default() -> Self {
        AppState::open(&DbConfig::default()).expect("open a temporary database")
    }
}

/// The middleware stack, outermost first, like Django's default
/// `MIDDLEWARE` (timing added outermost so it covers everything).
pub fn middleware(builder: PipelineBuilder, state: &AppState) -> PipelineBuilder {
    builder
        .sync(middleware::Timing)
        .sync(middleware::Security)
        .sync(middleware::Sessions::new(state.db.clone()))
        .sync(middleware::Csrf)
        .sync(middleware::Authentication::new(state.db.clone()))
        .sync(middleware::XFrameOptions)
}

/// The same stack as native async middleware (the rewrite to compare with).
pub fn async_middleware(builder: PipelineBuilder, state: &AppState) -> PipelineBuilder {
    use async_middleware::*;
    builder
        .layer_async(AsyncTiming)
        .layer_async(AsyncSecurity)
        .layer_async(AsyncSessions::new(state.db.clone()))
        .layer_async(AsyncCsrf)
        .layer_async(AsyncAuthentication::new(state.db.clone()))
        .layer_async(AsyncXFrameOptions)
}

/// The whole pipeline: the middleware stack around the app's router.
pub fn pipeline(state: &AppState, cfg: &AppConfig) -> Result<Pipeline, BuildError> {
    // The pipeline's blocking pool is as large as the connection pool: each
    // database call holds one connection on one blocking thread.
    let threads = state.db.pool_size() as usize;
    middleware(
        Pipeline::builder().mode(cfg.mode).blocking_threads(threads),
        state,
    )
    .view(views::router(state.clone(), cfg.clone()))
    .build()
}

/// The native-async pipeline (`cfg.mode` is not used: nothing is sync).
pub fn async_pipeline(state: &AppState, cfg: &AppConfig) -> Result<Pipeline, BuildError> {
    async_middleware(Pipeline::builder(), state)
        .view(views::router(state.clone(), cfg.clone()))
        .build()
}
