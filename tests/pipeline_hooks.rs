//! Hook middleware order, short-circuits and `process_exception`.

use std::sync::{Arc, Mutex};

use http::StatusCode;
use suspendware::hooks::*;
use suspendware::*;

type Log = Arc<Mutex<Vec<String>>>;

struct H {
    name: &'static str,
    log: Log,
    short_request: bool,
    short_view: bool,
    handles_exception: bool,
}

impl HookMiddleware for H {
    fn process_request(&self, _req: &mut Request) -> Option<Response> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.request", self.name));
        self.short_request
            .then(|| Response::new(format!("short by {}", self.name).into()))
    }
    fn process_view(&self, _req: &mut Request) -> Option<Response> {
        self.log.lock().unwrap().push(format!("{}.view", self.name));
        self.short_view
            .then(|| Response::new(format!("view skipped by {}", self.name).into()))
    }
    fn process_exception(&self, _h: &RequestHead, e: &ExceptionInfo) -> Option<Response> {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.exception@{}", self.name, e.location));
        self.handles_exception.then(|| {
            let mut r = Response::new(format!("handled by {}", self.name).into());
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        })
    }
    fn process_response(&self, _h: &RequestHead, resp: Response) -> Response {
        self.log
            .lock()
            .unwrap()
            .push(format!("{}.response", self.name));
        resp
    }
    fn name(&self) -> &str {
        self.name
    }
}

fn hook(name: &'static str, log: &Log) -> H {
    H {
        name,
        log: log.clone(),
        short_request: false,
        short_view: false,
        handles_exception: false,
    }
}

fn run(mode: Mode, hooks: Vec<H>, panics: bool, log: &Log) -> (StatusCode, String, Vec<String>) {
    let mut b = Pipeline::builder().mode(mode);
    for h in hooks {
        b = b.hooks(h);
    }
    let l = log.clone();
    let p = b
        .view(named("the_view", move |_r: Request| {
            let l = l.clone();
            async move {
                l.lock().unwrap().push("view".into());
                if panics {
                    panic!("boom");
                }
                Response::new("view".into())
            }
        }))
        .build()
        .unwrap();
    log.lock().unwrap().clear();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(p.handle(Request::new(Body::empty())));
    let body = String::from_utf8_lossy(r.body().as_bytes()).into_owned();
    (r.status(), body, log.lock().unwrap().clone())
}

const MODES: [Mode; 4] = [Mode::Suspend, Mode::Adapt, Mode::ThreadHop, Mode::Strict];

#[test]
fn django_order_requests_then_views_then_responses_reversed() {
    for mode in MODES {
        let log: Log = Default::default();
        let (s, body, ev) = run(mode, vec![hook("a", &log), hook("b", &log)], false, &log);
        assert_eq!((s, body.as_str()), (StatusCode::OK, "view"));
        assert_eq!(
            ev,
            [
                "a.request",
                "b.request",
                "a.view",
                "b.view",
                "view",
                "b.response",
                "a.response"
            ],
            "{mode:?}"
        );
    }
}

#[test]
fn process_request_short_circuit_still_runs_outer_responses() {
    for mode in MODES {
        let log: Log = Default::default();
        let mut b = hook("b", &log);
        b.short_request = true;
        let (s, body, ev) = run(mode, vec![hook("a", &log), b, hook("c", &log)], false, &log);
        assert_eq!((s, body.as_str()), (StatusCode::OK, "short by b"));
        assert_eq!(
            ev,
            ["a.request", "b.request", "b.response", "a.response"],
            "{mode:?}"
        );
    }
}

#[test]
fn process_view_short_circuit_skips_the_view() {
    for mode in MODES {
        let log: Log = Default::default();
        let mut a = hook("a", &log);
        a.short_view = true;
        let (_, body, ev) = run(mode, vec![a, hook("b", &log)], false, &log);
        assert_eq!(body, "view skipped by a");
        assert_eq!(
            ev,
            [
                "a.request",
                "b.request",
                "a.view",
                "b.response",
                "a.response"
            ],
            "{mode:?}"
        );
    }
}

#[test]
fn exceptions_reach_hooks_innermost_first_and_a_response_is_used() {
    for mode in MODES {
        let log: Log = Default::default();
        let mut a = hook("a", &log);
        a.handles_exception = true;
        let (s, body, ev) = run(mode, vec![a, hook("b", &log)], true, &log);
        assert_eq!(
            (s, body.as_str()),
            (StatusCode::BAD_GATEWAY, "handled by a"),
            "{mode:?}"
        );
        assert_eq!(
            ev,
            [
                "a.request",
                "b.request",
                "a.view",
                "b.view",
                "view",
                "b.exception@the_view",
                "b.response",
                "a.exception@the_view",
                "a.response"
            ],
            "{mode:?}"
        );
        // Nobody handles it: the panic handler's 500 stays.
        let (s, _, _) = run(mode, vec![hook("a", &log)], true, &log);
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
