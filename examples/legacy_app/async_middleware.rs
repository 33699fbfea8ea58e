//! The same six middleware rewritten as native async middleware
//! (`AsyncMiddleware`): what the app would cost if it were rewritten rather
//! than suspended (`legacy_server --mode async`). Database calls go through
//! `tokio::task::spawn_blocking` (`Database::call_async`); everything else
//! is the shared logic of `middleware.rs`.

use std::time::Instant;

use http::header::{HeaderValue, SET_COOKIE, VARY};
use suspendware::{AsyncMiddleware, AsyncNext, LocalBoxFuture, Request, Response};

use super::middleware::{
    add_frame_options, add_render_ms, add_security_headers, cookie, csrf_reject, session_cookie,
    session_user_id, CsrfToken, CurrentUser, Session, CSRF_COOKIE, SESSION_COOKIE,
};
use super::store::{self, Database, SessionData};

/// `X-Render-MS` (async).
pub struct AsyncTiming;

impl AsyncMiddleware for AsyncTiming {
    fn call<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let start = Instant::now();
            let mut resp = next.run(req).await;
            add_render_ms(&mut resp, start);
            resp
        })
    }
}

/// `SecurityMiddleware` (async).
pub struct AsyncSecurity;

impl AsyncMiddleware for AsyncSecurity {
    fn call<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let mut resp = next.run(req).await;
            add_security_headers(&mut resp);
            resp
        })
    }
}

/// `SessionMiddleware`, database backend (async).
pub struct AsyncSessions {
    db: Database,
}

impl AsyncSessions {
    pub fn new(db: Database) -> Self {
        AsyncSessions { db }
    }
}

impl AsyncMiddleware for AsyncSessions {
    fn call<'a>(&'a self, mut req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let key = cookie(req.headers(), SESSION_COOKIE);
            let data = match key.clone() {
                Some(key) => self
                    .db
                    .call_async(move |conn| store::load_session(conn, &key))
                    .await
                    .expect("load the session"),
                None => None,
            };
            let session = match data {
                Some(data) => Session::new(key, data),
                None => Session::new(None, SessionData::new()),
            };
            req.extensions_mut().insert(session.clone());

            let mut resp = next.run(req).await;

            resp.headers_mut()
                .append(VARY, HeaderValue::from_static("Cookie"));
            if let Some(save) = session.to_save() {
                let cookie = session_cookie(&save.key);
                self.db
                    .call_async(move |conn| {
                        store::save_session(conn, &save.key, save.old.as_deref(), &save.data)
                    })
                    .await
                    .expect("save the session");
                resp.headers_mut().append(SET_COOKIE, cookie);
            }
            resp
        })
    }
}

/// `CsrfViewMiddleware` (async).
pub struct AsyncCsrf;

impl AsyncMiddleware for AsyncCsrf {
    fn call<'a>(&'a self, mut req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let cookie_token = cookie(req.headers(), CSRF_COOKIE);
            if let Some(rejection) = csrf_reject(&req, cookie_token.as_deref()) {
                return rejection;
            }
            let token = CsrfToken::from_cookie(cookie_token);
            req.extensions_mut().insert(token.clone());
            let mut resp = next.run(req).await;
            if let Some(c) = token.cookie_to_set() {
                resp.headers_mut().append(SET_COOKIE, c);
            }
            resp
        })
    }
}

/// `AuthenticationMiddleware` (async).
pub struct AsyncAuthentication {
    db: Database,
}

impl AsyncAuthentication {
    pub fn new(db: Database) -> Self {
        AsyncAuthentication { db }
    }
}

impl AsyncMiddleware for AsyncAuthentication {
    fn call<'a>(&'a self, mut req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let user = match session_user_id(&req) {
                Some(id) => self
                    .db
                    .call_async(move |conn| store::user_by_id(conn, id))
                    .await
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
            next.run(req).await
        })
    }
}

/// `XFrameOptionsMiddleware` (async).
pub struct AsyncXFrameOptions;

impl AsyncMiddleware for AsyncXFrameOptions {
    fn call<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(async move {
            let mut resp = next.run(req).await;
            add_frame_options(&mut resp);
            resp
        })
    }
}
