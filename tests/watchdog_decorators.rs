//! The fiber watchdog, and method decorators on sync and async views.

mod capture;

use std::time::Duration;

use http::{Method, StatusCode};
use suspendware::decorators::*;
use suspendware::*;

fn run(p: &Pipeline, method: Method) -> Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = http::Request::builder()
        .method(method)
        .uri("/")
        .body(Body::empty())
        .unwrap();
    rt.block_on(p.handle(req))
}

fn watched(name: &'static str, sleep: Duration, threshold: Duration) -> Pipeline {
    Pipeline::builder()
        .watchdog(Some(threshold))
        .sync(named(name, move |req: Request, next: &mut Next| {
            // Blocking the fiber (the thing the watchdog exists to catch).
            std::thread::sleep(sleep);
            next.get_response(req)
        }))
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap()
}

#[test]
fn watchdog_names_a_middleware_that_blocks_the_fiber() {
    let (out, _) = capture::capture(|| {
        run(
            &watched(
                "sleepy",
                Duration::from_millis(60),
                PipelineBuilder::DEFAULT_WATCHDOG,
            ),
            Method::GET,
        )
    });
    let line = out
        .lines()
        .find(|l| l.contains("without suspending"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("middleware=\"sleepy\"") || line.contains("middleware=sleepy"),
        "{line}"
    );
    assert!(line.contains("suspendware::blocking"), "{line}");
}

#[test]
fn watchdog_stays_silent_for_a_middleware_that_does_not_block() {
    // The threshold is raised above the default so that a test machine that
    // deschedules this thread for a few ms (CI runs tests in parallel on two
    // cores) cannot fake a "slow" middleware; what is checked is that a
    // middleware that never blocks does not trigger the watchdog.
    let p = watched("quick", Duration::ZERO, Duration::from_millis(250));
    let (out, _) = capture::capture(|| {
        for _ in 0..100 {
            run(&p, Method::GET);
        }
    });
    assert!(!out.contains("without suspending"), "{out}");
}

#[test]
fn watchdog_can_be_turned_off() {
    let p = Pipeline::builder()
        .watchdog(None)
        .sync(|req: Request, next: &mut Next| {
            std::thread::sleep(Duration::from_millis(30));
            next.get_response(req)
        })
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap();
    let (out, _) = capture::capture(|| run(&p, Method::GET));
    assert!(!out.contains("without suspending"), "{out}");
}

fn check_405(p: &Pipeline) {
    let ok = run(p, Method::GET);
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.body().as_bytes(), b"fine");
    let ok = run(p, Method::HEAD);
    assert_eq!(ok.status(), StatusCode::OK);
    let no = run(p, Method::POST);
    assert_eq!(no.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(no.headers()["allow"], "GET, HEAD");
}

#[test]
fn require_http_methods_wraps_async_views() {
    for mode in [Mode::Suspend, Mode::Adapt, Mode::ThreadHop, Mode::Strict] {
        let p = Pipeline::builder()
            .mode(mode)
            .view(require_http_methods(
                &[Method::GET, Method::HEAD],
                |_r: Request| async {
                    tokio::task::yield_now().await;
                    Response::new("fine".into())
                },
            ))
            .build()
            .unwrap();
        check_405(&p);
    }
}

#[test]
fn require_http_methods_wraps_sync_views() {
    for mode in [Mode::Suspend, Mode::Adapt, Mode::ThreadHop, Mode::Strict] {
        let p = Pipeline::builder()
            .mode(mode)
            .sync_view(require_http_methods(
                &[Method::GET, Method::HEAD],
                |_r: Request| {
                    // A sync view may use the bridge like sync middleware.
                    let n = wait(async { 1 });
                    assert_eq!(n, 1);
                    Response::new("fine".into())
                },
            ))
            .build()
            .unwrap();
        check_405(&p);
    }
}

#[test]
fn require_get_and_post() {
    let p = Pipeline::builder()
        .view(require_post(|_r: Request| async {
            Response::new(Body::empty())
        }))
        .build()
        .unwrap();
    let r = run(&p, Method::GET);
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let p = Pipeline::builder()
        .sync_view(require_get(|_r: Request| Response::new(Body::empty())))
        .build()
        .unwrap();
    assert_eq!(run(&p, Method::GET).status(), StatusCode::OK);
    assert_eq!(run(&p, Method::DELETE).headers()["allow"], "GET");
}
