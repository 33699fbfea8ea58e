//! The legacy example app on SQLite (Django's database session backend and
//! `auth_user`), served in-process on 127.0.0.1:0 by the thread-per-core
//! server and driven by a real HTTP client: login through a form, the
//! session row in the database file, the session key cycled and the CSRF
//! token rotated at login, cookies' attributes, expired sessions ignored,
//! and the watchdog naming the layer whose inline database calls block.

#[allow(dead_code)]
#[path = "../examples/legacy_app/mod.rs"]
mod app;
mod http_client;

use std::time::Duration;

use http::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{Method, StatusCode};
use rusqlite::{params, Connection, OptionalExtension};
use suspendware::server::Server;
use suspendware::{Mode, Pipeline};

use app::{AppConfig, AppState, DbCalls, DbConfig};
use http_client::{client, send, set_cookie, set_cookie_line, tokio_mt};

const FORM: &str = "application/x-www-form-urlencoded";

/// How the app is built for a test.
#[derive(Debug, Clone, Copy)]
enum Flavor {
    /// Sync middleware, Suspend mode, database calls as given.
    Suspend(DbCalls),
    /// Sync middleware held on a thread (Adapt).
    Adapt,
    /// The native-async rewrite.
    Async,
}

const FLAVORS: [Flavor; 4] = [
    Flavor::Suspend(DbCalls::Blocking),
    Flavor::Suspend(DbCalls::Inline),
    Flavor::Adapt,
    Flavor::Async,
];

fn db_config(flavor: Flavor) -> DbConfig {
    DbConfig {
        calls: match flavor {
            Flavor::Suspend(calls) => calls,
            _ => DbCalls::Blocking,
        },
        ..DbConfig::default()
    }
}

fn pipeline(state: &AppState, flavor: Flavor) -> Pipeline {
    let cfg = AppConfig {
        view_delay: Duration::ZERO,
        mode: match flavor {
            Flavor::Adapt => Mode::Adapt,
            _ => Mode::Suspend,
        },
    };
    match flavor {
        Flavor::Async => app::async_pipeline(state, &cfg),
        _ => app::pipeline(state, &cfg),
    }
    .unwrap()
}

fn serve(pipeline: &Pipeline, workers: usize) -> Server {
    let pipeline = pipeline.clone();
    Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(workers)
        .serve(move |_| pipeline.clone())
        .unwrap()
}

/// The session row as stored in the database file (read with a connection
/// of the test's own).
fn session_row(db: &std::path::Path, key: &str) -> Option<String> {
    let conn = Connection::open(db).unwrap();
    conn.query_row(
        "SELECT session_data FROM django_session WHERE session_key = ?1",
        params![key],
        |r| r.get(0),
    )
    .optional()
    .unwrap()
}

#[test]
fn login_cycles_the_session_key_rotates_the_csrf_token_and_persists_the_session() {
    for flavor in FLAVORS {
        login_flow(flavor);
    }
}

fn login_flow(flavor: Flavor) {
    let state = AppState::open(&db_config(flavor)).unwrap();
    let db = state.db.path().to_owned();
    let server = serve(&pipeline(&state, flavor), 2);
    tokio_mt().block_on(async {
        let c = client();
        // The first page hands out the CSRF cookie.
        let home = send(&c, &server, Method::GET, "/", &[], "").await;
        assert_eq!(home.body, "hello, anonymous\n", "{flavor:?}");
        let t1 = set_cookie(&home.headers, "csrftoken").expect("csrftoken cookie");
        // A session before login (the visit counter).
        let cookies = format!("csrftoken={t1}");
        let v = send(
            &c,
            &server,
            Method::GET,
            "/visits",
            &[(COOKIE.as_str(), &cookies)],
            "",
        )
        .await;
        assert_eq!(v.body, "visits: 1\n");
        let k1 = set_cookie(&v.headers, "sessionid").expect("sessionid cookie");
        assert!(
            session_row(&db, &k1).is_some(),
            "{flavor:?}: the session is a row of django_session in {}",
            db.display()
        );

        // Log in with a form: the token in `csrfmiddlewaretoken`, the fields
        // in another order than the obvious one, and extra fields.
        let cookies = format!("csrftoken={t1}; sessionid={k1}");
        let body = format!("remember=on&csrfmiddlewaretoken={t1}&next=&username=alice");
        let login = send(
            &c,
            &server,
            Method::POST,
            "/login",
            &[(COOKIE.as_str(), &cookies), (CONTENT_TYPE.as_str(), FORM)],
            &body,
        )
        .await;
        assert_eq!(login.status, StatusCode::OK, "{flavor:?}: {}", login.body);
        assert_eq!(login.body, "logged in as alice\n");

        // Session fixation: the key is cycled, the old row is gone, the
        // data moved to the new key with the user id added.
        let k2 = set_cookie(&login.headers, "sessionid").expect("a new session cookie");
        assert_ne!(k2, k1, "{flavor:?}: the session key is cycled at login");
        assert_eq!(
            session_row(&db, &k1),
            None,
            "the old session row is deleted"
        );
        let data = session_row(&db, &k2).expect("the new session row is in the file");
        assert!(
            data.contains("_auth_user_id=1") && data.contains("visits=1"),
            "{flavor:?}: {data}"
        );
        // The CSRF token is rotated.
        let t2 = set_cookie(&login.headers, "csrftoken").expect("a new CSRF cookie");
        assert_ne!(t2, t1, "{flavor:?}: the CSRF token is rotated at login");

        // The new session authenticates; the old key does not.
        let new_cookies = format!("csrftoken={t2}; sessionid={k2}");
        let me = send(
            &c,
            &server,
            Method::GET,
            "/me",
            &[(COOKIE.as_str(), &new_cookies)],
            "",
        )
        .await;
        assert_eq!(me.body, "user alice (id 1)\n", "{flavor:?}");
        let old_cookies = format!("csrftoken={t2}; sessionid={k1}");
        let old = send(
            &c,
            &server,
            Method::GET,
            "/me",
            &[(COOKIE.as_str(), &old_cookies)],
            "",
        )
        .await;
        assert_eq!(
            old.body, "anonymous\n",
            "{flavor:?}: the fixated key is dead"
        );

        // The old token no longer passes against the new cookie; the header
        // form of the new one does, and `next=` redirects.
        let stale = send(
            &c,
            &server,
            Method::POST,
            "/login",
            &[
                (COOKIE.as_str(), &new_cookies),
                (CONTENT_TYPE.as_str(), FORM),
            ],
            &format!("username=bob&csrfmiddlewaretoken={t1}"),
        )
        .await;
        assert_eq!(stale.status, StatusCode::FORBIDDEN, "{flavor:?}");
        let bob = send(
            &c,
            &server,
            Method::POST,
            "/login",
            &[
                (COOKIE.as_str(), &new_cookies),
                (CONTENT_TYPE.as_str(), FORM),
                ("x-csrftoken", &t2),
            ],
            "next=%2Fme&username=bob",
        )
        .await;
        assert_eq!(bob.status, StatusCode::FOUND, "{flavor:?}: {}", bob.body);
        assert_eq!(bob.headers[LOCATION], "/me");
        let k3 = set_cookie(&bob.headers, "sessionid").unwrap();
        assert!(k3 != k2 && session_row(&db, &k2).is_none());
        assert!(session_row(&db, &k3).unwrap().contains("_auth_user_id=2"));
    });
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn cookies_carry_django_attributes_and_csrf_is_set_only_when_needed() {
    let state = AppState::default();
    let server = serve(&pipeline(&state, Flavor::Suspend(DbCalls::Blocking)), 1);
    tokio_mt().block_on(async {
        let c = client();
        let me = send(&c, &server, Method::GET, "/me", &[], "").await;
        assert_eq!(me.body, "anonymous\n");
        assert!(
            me.headers.get(SET_COOKIE).is_none(),
            "no view asked for a token or changed the session"
        );
        let home = send(&c, &server, Method::GET, "/", &[], "").await;
        let csrf = set_cookie_line(&home.headers, "csrftoken").unwrap();
        for attr in ["Max-Age=31449600", "expires=", "SameSite=Lax", "Path=/"] {
            assert!(csrf.contains(attr), "{csrf}");
        }
        assert!(!csrf.contains("HttpOnly"), "scripts read the CSRF cookie");
        let visits = send(&c, &server, Method::GET, "/visits", &[], "").await;
        let session = set_cookie_line(&visits.headers, "sessionid").unwrap();
        for attr in [
            "Max-Age=1209600",
            "expires=",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
        ] {
            assert!(session.contains(attr), "{session}");
        }
        assert!(set_cookie_line(&visits.headers, "csrftoken").is_none());
    });
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn csrf_rejection_carries_the_security_headers() {
    for flavor in [Flavor::Suspend(DbCalls::Blocking), Flavor::Async] {
        let state = AppState::default();
        let server = serve(&pipeline(&state, flavor), 1);
        let r = tokio_mt().block_on(async {
            send(
                &client(),
                &server,
                Method::POST,
                "/login",
                &[(CONTENT_TYPE.as_str(), FORM)],
                "username=alice",
            )
            .await
        });
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{flavor:?}");
        assert!(r.body.contains("CSRF verification failed"));
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert!(r.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        server.shutdown(Duration::from_secs(10));
    }
}

#[test]
fn expired_sessions_are_ignored() {
    let state = AppState::default();
    // A logged-in session that expired yesterday, written straight into the file.
    let conn = Connection::open(state.db.path()).unwrap();
    conn.execute(
        "INSERT INTO django_session (session_key, session_data, expire_date)
         VALUES ('expired0key', '_auth_user_id=1&visits=7',
                 strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 day'))",
        [],
    )
    .unwrap();
    let server = serve(&pipeline(&state, Flavor::Suspend(DbCalls::Inline)), 1);
    tokio_mt().block_on(async {
        let c = client();
        let cookie = [(COOKIE.as_str(), "sessionid=expired0key")];
        let me = send(&c, &server, Method::GET, "/me", &cookie, "").await;
        assert_eq!(me.body, "anonymous\n");
        let v = send(&c, &server, Method::GET, "/visits", &cookie, "").await;
        assert_eq!(v.body, "visits: 1\n");
        let key = set_cookie(&v.headers, "sessionid").unwrap();
        assert_ne!(key, "expired0key", "an expired key is not reused");
    });
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn an_in_memory_database_is_refused() {
    let cfg = DbConfig {
        path: Some(":memory:".into()),
        ..DbConfig::default()
    };
    let err = AppState::open(&cfg).unwrap_err();
    assert!(err.to_string().contains("in-memory"), "{err}");
}

/// Inline database calls block the worker thread: the watchdog counts each
/// stall in `stall_stats()` and charges it to the layer that made the call.
/// Three calls block here (save, load, save), each far above the threshold,
/// all in `Sessions`: the load runs before the view on a resume that goes
/// on through every inner layer to the innermost one's `get_response`, the
/// saves after the view on resumes that end with the fiber returning; in
/// neither case may the blame land on another layer of that resume.
#[test]
fn inline_database_calls_are_named_by_the_watchdog() {
    // Far above the watchdog's 10 ms threshold; sleeping is blocked time,
    // not time waiting for a CPU, so a busy machine does not hide it.
    let latency = Duration::from_millis(40);
    let stalls = {
        let calls = DbCalls::Inline;
        let state = AppState::open(&DbConfig {
            calls,
            latency,
            ..DbConfig::default()
        })
        .unwrap();
        let pipeline = pipeline(&state, Flavor::Suspend(calls));
        let server = serve(&pipeline, 1);
        tokio_mt().block_on(async {
            let c = client();
            let v = send(&c, &server, Method::GET, "/visits", &[], "").await;
            let key = set_cookie(&v.headers, "sessionid").unwrap();
            let cookie = format!("sessionid={key}");
            let v = send(
                &c,
                &server,
                Method::GET,
                "/visits",
                &[("cookie", &cookie)],
                "",
            )
            .await;
            assert_eq!(v.body, "visits: 2\n");
        });
        server.shutdown(Duration::from_secs(10));
        pipeline.stall_stats()
    };
    assert!(
        stalls.iter().map(|s| s.count).sum::<u64>() >= 3,
        "{stalls:?}"
    );
    assert!(
        stalls.iter().all(|s| s.layer == "Sessions"),
        "only the layer that made the calls is blamed: {stalls:?}"
    );
}
