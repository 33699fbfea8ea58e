//! Django's default middleware, as blocking-style sync middleware. Each one
//! reads like its Django counterpart: code before `get_response` runs on the
//! way in, code after on the way out, and the database is queried with plain
//! synchronous `rusqlite` calls (see `store::Database::call` for where they
//! run).
//!
//! The request state they share (the session, the CSRF token, the user) and
//! the cookie and header logic are plain functions here, used by these and
//! by the native-async rewrite in `async_middleware.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderValue, CONTENT_TYPE, COOKIE, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};
use suspendware::{Next, Request, Response, SyncMiddleware};

use super::store::{self, token, Database, SessionData, SESSION_AGE_S};

pub const SESSION_COOKIE: &str = "sessionid";
pub const CSRF_COOKIE: &str = "csrftoken";
pub const CSRF_HEADER: &str = "x-csrftoken";
/// The form field Django's `{% csrf_token %}` renders.
pub const CSRF_FIELD: &str = "csrfmiddlewaretoken";
pub const AUTH_USER_ID: &str = "_auth_user_id";
/// Django's `CSRF_COOKIE_AGE`: a year (52 weeks), in seconds.
pub const CSRF_AGE_S: u64 = 31_449_600;

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

/// A `Set-Cookie` value as Django writes it: `expires` and `Max-Age`,
/// `Path=/`, `SameSite=Lax`, and `HttpOnly` when asked.
pub fn set_cookie_value(name: &str, value: &str, max_age_s: u64, http_only: bool) -> HeaderValue {
    let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(max_age_s));
    let http_only = if http_only { "; HttpOnly" } else { "" };
    let c = format!(
        "{name}={value}; expires={expires}; Max-Age={max_age_s}{http_only}; Path=/; SameSite=Lax"
    );
    HeaderValue::from_str(&c).expect("cookie values are hex tokens")
}

/// Whether the body is a form (`application/x-www-form-urlencoded`, or no
/// content type at all, which simple clients send for a form body).
pub fn is_form(req: &Request) -> bool {
    match req.headers().get(CONTENT_TYPE).map(|v| v.to_str()) {
        None => true,
        Some(Ok(ct)) => ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }),
        Some(Err(_)) => false,
    }
}

/// Field `name` of a form body (Django's `request.POST.get(name)`): any
/// field order, percent-decoding and `+` for spaces.
pub fn form_field(req: &Request, name: &str) -> Option<String> {
    if !is_form(req) {
        return None;
    }
    form_urlencoded::parse(req.body().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `X-Render-MS`: milliseconds spent inside the stack (outermost layer).
pub struct Timing;

impl SyncMiddleware for Timing {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        let start = Instant::now();
        let mut resp = next.get_response(req);
        add_render_ms(&mut resp, start);
        resp
    }
}

pub fn add_render_ms(resp: &mut Response, start: Instant) {
    let ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
    resp.headers_mut()
        .insert("x-render-ms", HeaderValue::from_str(&ms).expect("digits"));
}

/// `SecurityMiddleware`'s default headers.
pub struct Security;

impl SyncMiddleware for Security {
    fn call(&self, req: Request, next: &mut Next<'_>) -> Response {
        let mut resp = next.get_response(req);
        add_security_headers(&mut resp);
        resp
    }
}

pub fn add_security_headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.entry("x-content-type-options")
        .or_insert(HeaderValue::from_static("nosniff"));
    h.entry("referrer-policy")
        .or_insert(HeaderValue::from_static("same-origin"));
    h.entry("cross-origin-opener-policy")
        .or_insert(HeaderValue::from_static("same-origin"));
}

/// The request's session: views and inner middleware read and change it;
/// the session middleware saves it after the response if it changed.
#[derive(Debug, Clone, Default)]
pub struct Session {
    inner: Arc<Mutex<SessionState>>,
}

#[derive(Debug, Default)]
struct SessionState {
    /// The key the request came with, if it named a live session.
    key: Option<String>,
    data: SessionData,
    modified: bool,
    /// `cycle_key` was called: save under a new key, delete the old row.
    cycled: bool,
}

/// What the session middleware writes after the response.
#[derive(Debug)]
pub struct SessionSave {
    pub key: String,
    /// The previous key, to delete (after `cycle_key`).
    pub old: Option<String>,
    pub data: SessionData,
}

impl Session {
    pub fn new(key: Option<String>, data: SessionData) -> Self {
        Session {
            inner: Arc::new(Mutex::new(SessionState {
                key,
                data,
                modified: false,
                cycled: false,
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

    /// Django's `cycle_key`: keep the data, save it under a new key and
    /// delete the old one (called at login against session fixation).
    pub fn cycle_key(&self) {
        let mut s = self.inner.lock().unwrap();
        s.cycled = true;
        s.modified = true;
    }

    /// What to save, if the session changed.
    pub fn to_save(&self) -> Option<SessionSave> {
        let s = self.inner.lock().unwrap();
        if !s.modified {
            return None;
        }
        let (key, old) = match &s.key {
            Some(k) if !s.cycled => (k.clone(), None),
            old => (token(), old.clone()),
        };
        Some(SessionSave {
            key,
            old,
            data: s.data.clone(),
        })
    }
}

/// The session cookie for a saved session (two weeks, `HttpOnly`).
pub fn session_cookie(key: &str) -> HeaderValue {
    set_cookie_value(SESSION_COOKIE, key, SESSION_AGE_S, true)
}

/// `SessionMiddleware` with Django's database backend: loads the row named
/// by the cookie (expired rows are ignored) before `get_response`, saves it
/// and sets the cookie after, when the session changed.
pub struct Sessions {
    db: Database,
}

impl Sessions {
    pub fn new(db: Database) -> Self {
        Sessions { db }
    }
}

impl SyncMiddleware for Sessions {
    fn call(&self, mut req: Request, next: &mut Next<'_>) -> Response {
        let key = cookie(req.headers(), SESSION_COOKIE);
        let data = match key.clone() {
            Some(key) => self
                .db
                .call(move |conn| store::load_session(conn, &key))
                .expect("load the session"),
            None => None,
        };
        let session = match data {
            Some(data) => Session::new(key, data),
            None => Session::new(None, SessionData::new()),
        };
        req.extensions_mut().insert(session.clone());

        let mut resp = next.get_response(req);

        resp.headers_mut()
            .append(VARY, HeaderValue::from_static("Cookie"));
        if let Some(save) = session.to_save() {
            let cookie = session_cookie(&save.key);
            self.db
                .call(move |conn| {
                    store::save_session(conn, &save.key, save.old.as_deref(), &save.data)
                })
                .expect("save the session");
            resp.headers_mut().append(SET_COOKIE, cookie);
        }
        resp
    }
}

/// The request's CSRF token (Django's `request.META["CSRF_COOKIE"]`):
/// views call [`get_token`] when they render a form (or, for `/`, like
/// `ensure_csrf_cookie`), the login view calls [`rotate_token`]; the CSRF
/// middleware sets the cookie on the way out only then.
#[derive(Debug, Clone, Default)]
pub struct CsrfToken {
    inner: Arc<Mutex<CsrfState>>,
}

#[derive(Debug, Default)]
struct CsrfState {
    value: Option<String>,
    needs_update: bool,
}

impl CsrfToken {
    pub fn from_cookie(value: Option<String>) -> Self {
        CsrfToken {
            inner: Arc::new(Mutex::new(CsrfState {
                value: value.filter(|v| !v.is_empty()),
                needs_update: false,
            })),
        }
    }

    /// The cookie to set on the response, if a view asked for the token.
    pub fn cookie_to_set(&self) -> Option<HeaderValue> {
        let s = self.inner.lock().unwrap();
        match (&s.value, s.needs_update) {
            (Some(v), true) => Some(set_cookie_value(CSRF_COOKIE, v, CSRF_AGE_S, false)),
            _ => None,
        }
    }
}

/// Django's `get_token`: the request's CSRF token (a new one if it came
/// without), and the cookie will be (re)set on the response.
pub fn get_token(req: &Request) -> Option<String> {
    let t = req.extensions().get::<CsrfToken>()?;
    let mut s = t.inner.lock().unwrap();
    let v = s.value.get_or_insert_with(token).clone();
    s.needs_update = true;
    Some(v)
}

/// Django's `rotate_token`: a new CSRF token for the response (at login).
pub fn rotate_token(req: &Request) {
    if let Some(t) = req.extensions().get::<CsrfToken>() {
        let mut s = t.inner.lock().unwrap();
        s.value = Some(token());
        s.needs_update = true;
    }
}

/// Django's "safe" methods (no CSRF check).
pub fn csrf_exempt_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The CSRF check of an unsafe request: the token from the
/// `csrfmiddlewaretoken` form field (POST), else the `X-CSRFToken` header,
/// must equal the cookie's. `None` when it passes, else the rejection.
pub fn csrf_reject(req: &Request, cookie_token: Option<&str>) -> Option<Response> {
    if csrf_exempt_method(req.method()) {
        return None;
    }
    let from_form = if *req.method() == Method::POST {
        form_field(req, CSRF_FIELD).filter(|v| !v.is_empty())
    } else {
        None
    };
    let given = from_form.or_else(|| {
        req.headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let ok = match (cookie_token, given.as_deref()) {
        (Some(c), Some(g)) => !c.is_empty() && constant_time_eq(c.as_bytes(), g.as_bytes()),
        _ => false,
    };
    if ok {
        return None;
    }
    tracing::warn!(method = %req.method(), path = req.uri().path(), "CSRF verification failed");
    let mut r = text(
        StatusCode::FORBIDDEN,
        "CSRF verification failed. Request aborted.\n",
    );
    // The rejection does not pass the inner middleware (XFrameOptions):
    // it carries the header itself, as Django's 403 page gets it.
    add_frame_options(&mut r);
    Some(r)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `CsrfViewMiddleware` (double-submit cookie): unsafe methods need the
/// cookie's token in the `csrfmiddlewaretoken` form field or the
/// `X-CSRFToken` header, else 403. Sets the cookie when a view asked for
/// the token (`get_token`, `rotate_token`).
pub struct Csrf;

impl SyncMiddleware for Csrf {
    fn call(&self, mut req: Request, next: &mut Next<'_>) -> Response {
        let cookie_token = cookie(req.headers(), CSRF_COOKIE);
        if let Some(rejection) = csrf_reject(&req, cookie_token.as_deref()) {
            return rejection;
        }
        let token = CsrfToken::from_cookie(cookie_token);
        req.extensions_mut().insert(token.clone());
        let mut resp = next.get_response(req);
        if let Some(c) = token.cookie_to_set() {
            resp.headers_mut().append(SET_COOKIE, c);
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

/// The user id the session names, if any.
pub fn session_user_id(req: &Request) -> Option<u32> {
    req.extensions()
        .get::<Session>()
        .and_then(|s| s.get(AUTH_USER_ID))
        .and_then(|id| id.parse().ok())
}

/// `AuthenticationMiddleware`: the user from the session's user id, loaded
/// from `auth_user`.
pub struct Authentication {
    db: Database,
}

impl Authentication {
    pub fn new(db: Database) -> Self {
        Authentication { db }
    }
}

impl SyncMiddleware for Authentication {
    fn call(&self, mut req: Request, next: &mut Next<'_>) -> Response {
        let user = match session_user_id(&req) {
            Some(id) => self
                .db
                .call(move |conn| store::user_by_id(conn, id))
                .expect("load the user"),
            None => None,
        };
        let user = match user {
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
        add_frame_options(&mut resp);
        resp
    }
}

pub fn add_frame_options(resp: &mut Response) {
    resp.headers_mut()
        .entry("x-frame-options")
        .or_insert(HeaderValue::from_static("DENY"));
}
