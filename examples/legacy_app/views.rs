//! Async views and the router. Views query the database as async code does:
//! `Database::call_async` (`spawn_blocking` with a pooled connection).

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use http::{Method, StatusCode};
use suspendware::decorators::{require_http_methods, RequireMethods};
use suspendware::{LocalBoxFuture, Request, Response, View};

use super::middleware::{
    form_field, get_token, is_form, rotate_token, CurrentUser, Session, AUTH_USER_ID,
};
use super::store::{self, Database};
use super::{AppConfig, AppState};

fn text(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn user_of(req: &Request) -> CurrentUser {
    req.extensions()
        .get::<CurrentUser>()
        .cloned()
        .unwrap_or(CurrentUser::Anonymous)
}

/// Django's `url_has_allowed_host_and_scheme` for this demo: a local path.
fn safe_next(next: &str) -> bool {
    next.starts_with('/') && !next.starts_with("//") && !next.contains('\\')
}

/// `POST /login` with a form body (`application/x-www-form-urlencoded`):
/// `username=<name>`, optionally `next=<local path>` and any other fields
/// (e.g. `csrfmiddlewaretoken`), in any order. On success, like Django's
/// `login()`: the session key is cycled (session fixation), the user id is
/// stored in the session and the CSRF token is rotated; answers 200, or 302
/// to `next`.
pub struct Login {
    db: Database,
}

impl View for Login {
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response> {
        Box::pin(async move {
            if !is_form(&req) {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "send the login as application/x-www-form-urlencoded\n".to_owned(),
                );
            }
            let name = form_field(&req, "username").unwrap_or_default();
            let user = self
                .db
                .call_async(move |conn| store::user_by_name(conn, name.trim()))
                .await
                .expect("look up the user");
            let (Some(user), Some(session)) = (user, req.extensions().get::<Session>()) else {
                return text(StatusCode::UNAUTHORIZED, "unknown user\n".to_owned());
            };
            session.cycle_key();
            session.set(AUTH_USER_ID, user.id.to_string());
            rotate_token(&req);
            match form_field(&req, "next").filter(|n| safe_next(n)) {
                Some(next) => {
                    let mut r = text(StatusCode::FOUND, String::new());
                    if let Ok(v) = HeaderValue::from_str(&next) {
                        r.headers_mut().insert(LOCATION, v);
                    }
                    r
                }
                None => text(StatusCode::OK, format!("logged in as {}\n", user.username)),
            }
        })
    }
}

/// The app's routes.
pub struct Router {
    db: Database,
    view_delay: Duration,
    login: RequireMethods<Login>,
}

pub fn router(state: AppState, cfg: AppConfig) -> Router {
    let login = require_http_methods(
        &[Method::POST],
        Login {
            db: state.db.clone(),
        },
    );
    Router {
        db: state.db,
        view_delay: cfg.view_delay,
        login,
    }
}

impl View for Router {
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response> {
        let path = req.uri().path().to_owned();
        match path.as_str() {
            "/login" => self.login.call(req),
            "/" => Box::pin(async move {
                // GET /: the page a client loads first, so it hands out the
                // CSRF cookie (Django's `ensure_csrf_cookie`). It awaits a
                // timer (a slow backend) when there is a delay, and no timer
                // at all when there is none.
                get_token(&req);
                if !self.view_delay.is_zero() {
                    tokio::time::sleep(self.view_delay).await;
                }
                let who = match user_of(&req) {
                    CurrentUser::User { username, .. } => username,
                    CurrentUser::Anonymous => "anonymous".to_owned(),
                };
                text(StatusCode::OK, format!("hello, {who}\n"))
            }),
            "/csrf" => Box::pin(async move {
                // The token for a form (what `{% csrf_token %}` renders).
                let token = get_token(&req).unwrap_or_default();
                text(StatusCode::OK, format!("{token}\n"))
            }),
            "/me" => Box::pin(async move {
                match user_of(&req) {
                    CurrentUser::User { id, username } => {
                        text(StatusCode::OK, format!("user {username} (id {id})\n"))
                    }
                    CurrentUser::Anonymous => text(StatusCode::OK, "anonymous\n".to_owned()),
                }
            }),
            "/visits" => Box::pin(async move {
                let Some(session) = req.extensions().get::<Session>() else {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "no session middleware\n".to_owned(),
                    );
                };
                let n = session
                    .get("visits")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                session.set("visits", n.to_string());
                text(StatusCode::OK, format!("visits: {n}\n"))
            }),
            p if p.starts_with("/users/") => Box::pin(async move {
                // An async lookup in `auth_user`.
                let name = path["/users/".len()..].to_owned();
                let found = {
                    let name = name.clone();
                    self.db
                        .call_async(move |conn| store::user_by_name(conn, &name))
                        .await
                        .expect("look up the user")
                };
                match found {
                    Some(u) => text(StatusCode::OK, format!("{} has id {}\n", u.username, u.id)),
                    None => text(StatusCode::NOT_FOUND, format!("no user {name}\n")),
                }
            }),
            _ => Box::pin(async move { text(StatusCode::NOT_FOUND, "not found\n".to_owned()) }),
        }
    }
}
