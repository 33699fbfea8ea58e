//! Method decorators (`require_http_methods` and friends) on sync and async
//! views.

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
