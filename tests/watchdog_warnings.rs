//! The fiber watchdog names middleware that block their fiber.

mod capture;

use std::time::Duration;

use http::Method;
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
