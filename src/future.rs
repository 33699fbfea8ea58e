//! The boxed future type of the middleware traits.

use std::future::Future;
use std::pin::Pin;

/// A boxed, not necessarily `Send`, future (what async middleware and views
/// return when written as trait impls).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
