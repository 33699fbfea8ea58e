//! Request-local storage and tracing spans stay with their request
//! when two requests interleave on one thread.

mod capture;

use std::sync::{Arc, Mutex};

use http::StatusCode;
use suspendware::hooks::*;
use suspendware::*;
use tokio::sync::oneshot;

static WHO: RequestLocal<String> = RequestLocal::new(String::new);

type Gates = Arc<Mutex<Vec<(String, oneshot::Sender<()>)>>>;

/// A pipeline whose view waits for the test to open its request's gate.
fn gated(mode: Mode, gates: &Gates, seen: &Arc<Mutex<Vec<String>>>) -> Pipeline {
    let seen2 = seen.clone();
    let gates = gates.clone();
    struct Hook(Arc<Mutex<Vec<String>>>);
    impl HookMiddleware for Hook {
        fn process_request(&self, req: &mut Request) -> Option<Response> {
            // Set in one hook, read in another (separate hops in ThreadHop).
            WHO.set(format!("hook:{}", req.uri().path()));
            None
        }
        fn process_response(&self, head: &RequestHead, resp: Response) -> Response {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} hook saw {}", head.uri.path(), WHO.get()));
            resp
        }
    }
    Pipeline::builder()
        .mode(mode)
        .sync(move |req: Request, next: &mut Next| {
            let me = req.uri().path().to_owned();
            WHO.set(me.clone());
            let _g = enter_span(tracing::info_span!("user_span", who = %me));
            tracing::info!(who = %me, "before");
            let resp = next.get_response(req);
            tracing::info!(who = %me, "after");
            seen2
                .lock()
                .unwrap()
                .push(format!("{me} sync saw {}", WHO.get()));
            resp
        })
        .hooks(Hook(seen.clone()))
        .view(move |req: Request| {
            let (tx, rx) = oneshot::channel();
            gates
                .lock()
                .unwrap()
                .push((req.uri().path().to_owned(), tx));
            async move {
                rx.await.unwrap();
                Response::new(Body::empty())
            }
        })
        .build()
        .unwrap()
}

async fn interleave(p: &Pipeline, gates: &Gates) {
    let a = tokio::task::spawn_local(
        p.handle(
            http::Request::builder()
                .uri("/a")
                .body(Body::empty())
                .unwrap(),
        ),
    );
    let b = tokio::task::spawn_local(
        p.handle(
            http::Request::builder()
                .uri("/b")
                .body(Body::empty())
                .unwrap(),
        ),
    );
    // Let both reach their views (hops and threads need real time).
    while gates.lock().unwrap().len() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    // Finish b first while a stays suspended, then a.
    let mut g = std::mem::take(&mut *gates.lock().unwrap());
    g.sort_by(|x, y| y.0.cmp(&x.0));
    for (_, tx) in g {
        tx.send(()).unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(b.await.unwrap().status(), StatusCode::OK);
    assert_eq!(a.await.unwrap().status(), StatusCode::OK);
}

#[test]
fn request_locals_follow_their_request_in_every_mode() {
    for mode in [Mode::Suspend, Mode::Adapt, Mode::ThreadHop] {
        let gates: Gates = Default::default();
        let seen: Arc<Mutex<Vec<String>>> = Default::default();
        let p = gated(mode, &gates, &seen);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(tokio::task::LocalSet::new().run_until(interleave(&p, &gates)));
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                "/a hook saw hook:/a",
                "/a sync saw hook:/a",
                "/b hook saw hook:/b",
                "/b sync saw hook:/b"
            ],
            "mode {mode:?}"
        );
    }
}

#[test]
fn request_local_outside_a_request_says_so() {
    let err = WHO.try_with(|_| ()).unwrap_err();
    assert!(
        err.to_string().contains("outside a request's sync code"),
        "{err}"
    );
}

#[test]
fn spans_never_cover_another_requests_code() {
    let gates: Gates = Default::default();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let (out, ()) = capture::capture(|| {
        let p = gated(Mode::Suspend, &gates, &seen);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(tokio::task::LocalSet::new().run_until(interleave(&p, &gates)));
    });
    let mut checked = 0;
    for line in out
        .lines()
        .filter(|l| l.contains("before") || l.contains("after"))
    {
        let me = if line.contains("who=/a") && !line.contains("who=/b") {
            "/a"
        } else {
            "/b"
        };
        let other = if me == "/a" { "/b" } else { "/a" };
        // The request span of this request, the user's span of this request,
        // and nothing of the other request.
        assert!(line.contains(&format!("uri={me}")), "{line}");
        assert!(line.contains(&format!("user_span{{who={me}}}")), "{line}");
        assert!(!line.contains(&format!("uri={other}")), "{line}");
        assert!(!line.contains(&format!("who={other}")), "{line}");
        checked += 1;
    }
    assert_eq!(checked, 4, "{out}");
}
