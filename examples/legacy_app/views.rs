//! Async views and the router.

use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, StatusCode};
use suspendware::decorators::{require_http_methods, RequireMethods};
use suspendware::{LocalBoxFuture, Request, Response, View};

use super::middleware::{CurrentUser, Session, AUTH_USER_ID};
use super::{AppConfig, AppState};

fn text(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
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

/// `POST /login` with body `username=<name>`: logs the user in (stores the
/// user id in the session).
pub struct Login {
    state: AppState,
}

impl View for Login {
    fn call(&self, req: Request) -> LocalBoxFuture<'_, Response> {
        Box::pin(async move {
            let body = String::from_utf8_lossy(req.body().as_bytes()).into_owned();
            let name = body.strip_prefix("username=").unwrap_or("").trim();
            match (
                self.state.users.by_name(name).await,
                req.extensions().get::<Session>(),
            ) {
                (Some(user), Some(session)) => {
                    session.set(AUTH_USER_ID, user.id.to_string());
                    text(StatusCode::OK, format!("logged in as {}\n", user.username))
                }
                _ => text(StatusCode::UNAUTHORIZED, "unknown user\n".to_owned()),
            }
        })
    }
}

/// The app's routes.
pub struct Router {
    state: AppState,
    view_delay: Duration,
    login: RequireMethods<Login>,
}

pub fn router(state: AppState, cfg: AppConfig) -> Router {
    let login = require_http_methods(
        &[Method::POST],
        Login {
            state: state.clone(),
        },
    );
    Router {
        state,
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
                // GET /: await a timer (a slow backend), then answer.
                tokio::time::sleep(self.view_delay).await;
                let who = match user_of(&req) {
                    CurrentUser::User { username, .. } => username,
                    CurrentUser::Anonymous => "anonymous".to_owned(),
                };
                text(StatusCode::OK, format!("hello, {who}\n"))
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
                // An async lookup in the user directory.
                let name = &path["/users/".len()..];
                match self.state.users.by_name(name).await {
                    Some(u) => text(StatusCode::OK, format!("{} has id {}\n", u.username, u.id)),
                    None => text(StatusCode::NOT_FOUND, format!("no user {name}\n")),
                }
            }),
            _ => Box::pin(async move { text(StatusCode::NOT_FOUND, "not found\n".to_owned()) }),
        }
    }
}
