//! Request-local storage: the replacement for `thread_local!` in middleware.
//!
//! In a thread-per-request server, legacy code keeps "the current request"
//! or "the current user" in thread-locals. On a fiber, another request's code
//! runs on the same thread while this one is suspended, so a thread-local
//! set before `get_response` may hold the other request's value after it.
//! [`RequestLocal`] stores the value with the *request* instead: on a fiber,
//! on a held Adapt thread and inside every ThreadHop hop, `RequestLocal`
//! reads and writes the running request's own slot.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;

use crate::exec::request::{current, RequestCtx};
use crate::loom::lock;

/// A request-local value lent to one `with` closure; put back on drop (also
/// when the closure unwinds). A loan whose initialiser panicked removes the
/// placeholder instead.
struct Loan<'a> {
    ctx: &'a RequestCtx,
    key: usize,
    value: Option<Box<dyn Any + Send>>,
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        let mut locals = lock(&self.ctx.locals);
        let Some(i) = locals.iter().position(|(k, _)| *k == self.key) else {
            return;
        };
        match self.value.take() {
            Some(v) => locals[i].1 = Some(v),
            None => {
                locals.swap_remove(i);
            }
        }
    }
}

/// Error of [`RequestLocal::try_with`]: no request's sync code is running.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "RequestLocal used outside a request's sync code: it works in sync middleware, \
     hook middleware and sync views that a Pipeline runs; in async code pass values \
     through the request's extensions instead"
)]
pub struct NoRequest;

/// A per-request variable for sync code; declare it as a `static`.
///
/// ```
/// use suspendware::{Next, Request, RequestLocal, Response};
///
/// static USER: RequestLocal<Option<String>> = RequestLocal::new(|| None);
///
/// fn auth(req: Request, next: &mut Next) -> Response {
///     USER.set(Some("alice".into()));
///     let resp = next.get_response(req); // other requests may run meanwhile
///     assert_eq!(USER.get().as_deref(), Some("alice")); // still ours
///     resp
/// }
/// # let _ = auth;
/// ```
///
/// Each request starts with `init()`; the value is dropped with the request.
pub struct RequestLocal<T> {
    init: fn() -> T,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for RequestLocal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestLocal")
    }
}

impl<T: Send + 'static> RequestLocal<T> {
    /// Declares a request-local with an initialiser.
    pub const fn new(init: fn() -> T) -> Self {
        RequestLocal {
            init,
            _t: PhantomData,
        }
    }

    fn key(&'static self) -> usize {
        self as *const Self as usize
    }

    /// Runs `f` with the running request's value.
    ///
    /// The value is lent to `f` alone: no lock is held while `f` (or the
    /// initialiser) runs, so `f` may use *other* request-locals and call
    /// `get_response`.
    ///
    /// # Panics
    /// If `f` (or code it calls, e.g. an inner layer during `get_response`)
    /// uses this same local again: the value is already lent out, as with
    /// `RefCell::borrow_mut`. Copy what you need out of the closure instead.
    pub fn try_with<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> Result<R, NoRequest> {
        let ctx = current().ok_or(NoRequest)?;
        let key = self.key();
        let lent = {
            let mut locals = lock(&ctx.locals);
            match locals.iter_mut().find(|(k, _)| *k == key) {
                Some((_, slot)) => match slot.take() {
                    Some(v) => Some(v),
                    None => {
                        drop(locals);
                        self.already_lent()
                    }
                },
                None => {
                    // Marks the value as lent while `init` runs.
                    locals.push((key, None));
                    None
                }
            }
        };
        let mut loan = Loan {
            ctx: &ctx,
            key,
            value: lent,
        };
        let value = loan.value.get_or_insert_with(|| Box::new((self.init)()));
        let value = value
            .downcast_mut::<T>()
            .expect("RequestLocal key collision");
        Ok(f(value))
    }

    #[cold]
    #[track_caller]
    fn already_lent(&'static self) -> ! {
        panic!(
            "suspendware: RequestLocal<{}> at {:p} is already in use: it was used again inside \
             its own `with` closure (perhaps by an inner layer while that closure called \
             get_response). Copy the value out with `get()` or finish with it before calling \
             get_response.",
            std::any::type_name::<T>(),
            self
        )
    }

    /// Runs `f` with the running request's value.
    ///
    /// # Panics
    /// Outside a request's sync code (see [`NoRequest`]).
    pub fn with<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        self.try_with(f)
            .unwrap_or_else(|e| panic!("suspendware: {e}"))
    }

    /// Replaces the running request's value.
    pub fn set(&'static self, value: T) {
        self.with(|v| *v = value)
    }

    /// A clone of the running request's value.
    pub fn get(&'static self) -> T
    where
        T: Clone,
    {
        self.with(|v| v.clone())
    }
}
