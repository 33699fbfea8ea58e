//! Django's default middleware, as blocking-style sync middleware. Each one
//! reads like its Django counterpart: code before `get_response` runs on the
//! way in, code after on the way out, and store access is a plain call
//! (`suspendware::wait` suspends the fiber, not the thread).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{HeaderValue, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};
use suspendware::{wait, Next, Request, Response, SyncMiddleware};

use super::store::{token, SessionData, SessionStore, UserDirectory};

pub const SESSION_COOKIE: &str = "sessionid";
pub const CSRF_COOKIE: &str = "csrftoken";
pub const CSRF_HEADER: &str = "x-csrftoken";
/// The session key holding the logged-in user's id (Django's name).
pub const AUTH_USER_ID: &str = "_auth_user_id";

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(text.into());
    *r.status_mut() = status;
    r
}

/// `X-Render-MS`: milliseconds spent inside the stack (outermost layer).
pub struct Timing;

impl SyncMiddleware for Timing {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        let start = Instant::now();
        let mut resp = next.get_response(req);
        let ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
        resp.headers_mut()
            .insert("x-render-ms", HeaderValue::from_str(&ms).expect("digits"));
        resp
    }
}

/// `SecurityMiddleware`'s default headers.
pub struct Security;

impl SyncMiddleware for Security {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        let mut resp = next.get_response(req);
        let h = resp.headers_mut();
        h.entry("x-content-type-options")
            .or_insert(HeaderValue::from_static("nosniff"));
        h.entry("referrer-policy")
            .or_insert(HeaderValue::from_static("same-origin"));
        h.entry("cross-origin-opener-policy")
            .or_insert(HeaderValue::from_static("same-origin"));
        resp
    }
}

/// The request's session: views and inner middleware read and change it;
/// the session middleware saves it after the response if it changed.
#[derive(Debug, Clone, Default)]
pub struct Session {
    inner: Arc<Mutex<SessionState>>,
}

#[derive(Debug, Default)]
struct SessionState {
    data: SessionData,
    modified: bool,
}

impl Session {
    fn new(data: SessionData) -> Self {
        Session {
            inner: Arc::new(Mutex::new(SessionState {
                data,
                modified: false,
            })),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.inner.lock().unwrap().data.get(key).cloned()
    }

    pub fn set(&self, key: &str, value: String) {
        let mut s = self.inner.lock().unwrap();
        s.data.insert(key.to_owned(), value);
        s.modified = true;
    }

    fn take_if_modified(&self) -> Option<SessionData> {
        let s = self.inner.lock().unwrap();
        s.modified.then(|| s.data.clone())
    }
}

/// `SessionMiddleware`: loads the session named by the cookie from the
/// store (blocking-style), saves it and sets the cookie when it changed.
pub struct Sessions {
    store: SessionStore,
}

impl Sessions {
    pub fn new(store: SessionStore) -> Self {
        Sessions { store }
    }
}

impl SyncMiddleware for Sessions {
    fn call(&self, mut req: Request, next: &mut Next<'_>) -> Response {
        let key = cookie(req.headers(), SESSION_COOKIE);
        let data = key.as_deref().and_then(|k| wait(self.store.load(k)));
        let known = data.is_some();
        let session = Session::new(data.unwrap_or_default());
        req.extensions_mut().insert(session.clone());

        let mut resp = next.get_response(req);

        resp.headers_mut()
            .append(VARY, HeaderValue::from_static("Cookie"));
        if let Some(data) = session.take_if_modified() {
            let key = key.filter(|_| known).unwrap_or_else(token);
            wait(self.store.save(&key, data));
            let c = format!("{SESSION_COOKIE}={key}; HttpOnly; Path=/; SameSite=Lax");
            resp.headers_mut()
                .append(SET_COOKIE, HeaderValue::from_str(&c).expect("hex key"));
        }
        resp
    }
}

/// `CsrfViewMiddleware` (double-submit cookie): unsafe methods need an
/// `X-CSRFToken` header equal to the `csrftoken` cookie, else 403. Hands out
/// the cookie when the client has none.
pub struct Csrf;

impl SyncMiddleware for Csrf {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        let cookie_token = cookie(req.headers(), CSRF_COOKIE);
        let safe = matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        if !safe {
            let header = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            let ok =
                matches!((&cookie_token, header), (Some(c), Some(h)) if !c.is_empty() && c == h);
            if !ok {
                tracing::warn!(method = %req.method(), path = req.uri().path(), "CSRF verification failed");
                return plain(
                    StatusCode::FORBIDDEN,
                    "CSRF verification failed. Request aborted.\n",
                );
            }
        }
        let mut resp = next.get_response(req);
        if cookie_token.is_none() {
            let c = format!("{CSRF_COOKIE}={}; Path=/; SameSite=Lax", token());
            resp.headers_mut()
                .append(SET_COOKIE, HeaderValue::from_str(&c).expect("hex token"));
        }
        resp
    }
}

/// The user a request is made by (set by [`Authentication`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CurrentUser {
    Anonymous,
    User { id: u32, username: String },
}

/// `AuthenticationMiddleware`: the user from the session's user id, looked
/// up in the directory (blocking-style).
pub struct Authentication {
    users: UserDirectory,
}

impl Authentication {
    pub fn new(users: UserDirectory) -> Self {
        Authentication { users }
    }
}

impl SyncMiddleware for Authentication {
    fn call(&self, mut req: Request, next: &mut Next<'_>) -> Response {
        let id = req
            .extensions()
            .get::<Session>()
            .and_then(|s| s.get(AUTH_USER_ID))
            .and_then(|id| id.parse().ok());
        let user = match id.and_then(|id| wait(self.users.by_id(id))) {
            Some(u) => CurrentUser::User {
                id: u.id,
                username: u.username,
            },
            None => CurrentUser::Anonymous,
        };
        req.extensions_mut().insert(user);
        next.get_response(req)
    }
}

/// `XFrameOptionsMiddleware`: `X-Frame-Options: DENY` unless set.
pub struct XFrameOptions;

impl SyncMiddleware for XFrameOptions {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        let mut resp = next.get_response(req);
        resp.headers_mut()
            .entry("x-frame-options")
            .or_insert(HeaderValue::from_static("DENY"));
        resp
    }
}
