//! More concurrent requests than the process-wide stack budget: the process
//! stays healthy (other `mmap`s still succeed), the excess waits for a
//! stack or is answered 503, and every answered request is correct.
//!
//! Its own test binary: the budget ([`default_stack_budget`], 24,574 stacks
//! at the kernel's default `vm.max_map_count` of 65,530) is per process.
//! `cargo test --test stack_budget` (about 20 s in debug on 2 cores; add
//! `--release` for a few seconds).

use std::sync::Mutex;
use std::time::Duration;

use http::StatusCode;
use suspendware::stack::{default_stack_budget, DEFAULT_STACK_WAIT};
use suspendware::{Next, Pipeline, Request, Response};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const REQUESTS: usize = 40_000;

/// The two tests each fill the whole process budget: run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn request(id: usize) -> Request {
    let mut req = Request::new(Default::default());
    req.headers_mut().insert("x-id", id.into());
    req
}

/// One sync middleware (so each request holds a fiber stack while the view
/// runs) around a view that waits for the test's signal, then ~50 ms.
fn pipeline(stack_wait: Duration, release: watch::Receiver<bool>) -> Pipeline {
    Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let id = req.headers()["x-id"].clone();
            let mut resp = next.get_response(req);
            resp.headers_mut().insert("x-id", id);
            resp
        })
        .view(move |req: Request| {
            let mut release = release.clone();
            async move {
                release
                    .wait_for(|r| *r)
                    .await
                    .expect("the test keeps the sender");
                tokio::time::sleep(Duration::from_millis(50)).await;
                let id = req.headers()["x-id"].to_str().unwrap().to_owned();
                Response::new(format!("done {id}").into())
            }
        })
        .stack_wait(stack_wait)
        .build()
        .unwrap()
}

/// Lines of `/proc/self/maps`: the process's current map count.
fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// Checks that the rest of the process can still map memory while every
/// stack of the budget is in use.
fn process_is_healthy() {
    // Above malloc's mmap threshold: a fresh mapping.
    let mut big = vec![0u8; 64 << 20];
    big[(64 << 20) - 1] = 1;
    assert_eq!(big.iter().map(|&b| b as usize).sum::<usize>(), 1);
    // A new thread maps its stack and guard page.
    let t = std::thread::spawn(|| (0..1000u64).sum::<u64>());
    assert_eq!(t.join().expect("thread spawn at the peak"), 499_500);
}

struct Outcome {
    ok: usize,
    unavailable: usize,
    peak_in_use: usize,
    peak_waiting: usize,
    peak_maps: usize,
}

/// Sends `REQUESTS` requests at once; once every request has either a stack
/// (and waits in the view) or waits for one / was refused, checks the
/// process's health at that peak, then lets the views finish.
fn storm(stack_wait: Duration) -> Outcome {
    let budget = default_stack_budget();
    let (release, released) = watch::channel(false);
    let pipeline = pipeline(stack_wait, released);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let out = local.block_on(&rt, async {
        let handles: Vec<JoinHandle<Response>> = (0..REQUESTS)
            .map(|id| tokio::task::spawn_local(pipeline.handle(request(id))))
            .collect();
        // Let every request take its first steps.
        let mut rounds = 0;
        loop {
            let s = pipeline.stack_stats();
            let refused = handles.iter().filter(|h| h.is_finished()).count();
            if s.in_use == budget && s.in_use + s.waiting + refused == REQUESTS {
                break;
            }
            rounds += 1;
            assert!(
                rounds < 1_000_000,
                "requests never reached the peak: {s:?}, {refused} refused"
            );
            tokio::task::yield_now().await;
        }
        let peak = pipeline.stack_stats();
        let peak_maps = map_count();
        process_is_healthy();
        release.send(true).unwrap();

        let (mut ok, mut unavailable) = (0, 0);
        for (id, h) in handles.into_iter().enumerate() {
            let resp = h.await.expect("a request's future panicked");
            match resp.status() {
                StatusCode::OK => {
                    assert_eq!(resp.body().as_bytes(), format!("done {id}").as_bytes());
                    assert_eq!(resp.headers()["x-id"], id.to_string().as_str());
                    ok += 1;
                }
                StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
                other => panic!("request {id}: unexpected status {other}"),
            }
        }
        Outcome {
            ok,
            unavailable,
            peak_in_use: peak.in_use,
            peak_waiting: peak.waiting,
            peak_maps,
        }
    });
    let stats = pipeline.stack_stats();
    assert!(stats.is_whole(), "{stats:?}");
    // Give the budget back for the other test.
    assert_eq!(pipeline.stack_pool().trim(), stats.allocated);
    out
}

/// The default `stack_wait`: requests beyond the budget wait for a stack
/// and are served once the first ones finish (a 503 is allowed if a wait
/// ran past the 5 s bound, but none is expected).
#[test]
fn over_budget_requests_wait() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let budget = default_stack_budget();
    assert!(
        budget < REQUESTS,
        "this test needs a budget below {REQUESTS} (vm.max_map_count too high)"
    );
    let out = storm(DEFAULT_STACK_WAIT);
    eprintln!(
        "stack budget {budget}: peak {} in use, {} waiting, {} maps; {} answered 200, {} answered 503",
        out.peak_in_use, out.peak_waiting, out.peak_maps, out.ok, out.unavailable
    );
    assert_eq!(out.peak_in_use, budget);
    assert_eq!(
        out.peak_waiting,
        REQUESTS - budget,
        "every request over the budget waits"
    );
    assert_eq!(out.ok + out.unavailable, REQUESTS);
    assert!(out.ok >= budget);
}

/// `stack_wait(0)`: requests beyond the budget are refused with 503 at
/// once, and exactly the budget's worth are served.
#[test]
fn over_budget_requests_refused_without_wait() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let budget = default_stack_budget();
    assert!(
        budget < REQUESTS,
        "this test needs a budget below {REQUESTS} (vm.max_map_count too high)"
    );
    let out = storm(Duration::ZERO);
    eprintln!(
        "stack budget {budget}, no wait: {} answered 200, {} answered 503, {} maps at the peak",
        out.ok, out.unavailable, out.peak_maps
    );
    assert_eq!(out.peak_waiting, 0);
    assert_eq!(out.ok, budget);
    assert_eq!(out.unavailable, REQUESTS - budget);
}
