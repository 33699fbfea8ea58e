// The hot-path probes, written once: `benches/instr.rs` (callgrind) and
// `scripts/ab_inproc.sh` (two builds in one binary) both `include!` this
// file inside a module where `sw` names the crate under test, so it uses
// only API that older builds have too. Every probe is N sequential requests
// on one current-thread runtime.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use sw::{wait, AsyncNext, Next, Pipeline, Request, Response};

/// Pending once (waking itself during its poll), then ready.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn pass(req: Request, next: &mut Next) -> Response {
    next.get_response(req)
}

async fn instant(_r: Request) -> Response {
    Response::new(Default::default())
}

/// The probes' names, for usage messages and smoke runs.
#[allow(dead_code)]
pub const NAMES: &[&str] = &[
    "wait", "wait10", "ready100", "yield10", "yield100", "segs", "alt5", "k5", "k10", "async5",
];

pub fn pipeline(scenario: &str) -> Option<Pipeline> {
    let b = Pipeline::builder();
    let b = match scenario {
        // One fiber; one `wait` on a future that wakes itself, then the
        // view (1 fiber, 2 suspensions).
        "wait" => b
            .sync(|req: Request, next: &mut Next| {
                wait(YieldOnce(false));
                next.get_response(req)
            })
            .view(instant),
        // One fiber; ten `wait` suspensions on a future that wakes itself.
        "wait10" => b
            .sync(|req: Request, next: &mut Next| {
                for _ in 0..10 {
                    wait(YieldOnce(false));
                }
                next.get_response(req)
            })
            .view(instant),
        // A hundred `wait`s on futures that are ready at once: the path of
        // criterion's `bridge/wait_ready_future`, no suspension.
        "ready100" => b
            .sync(|req: Request, next: &mut Next| {
                for i in 0..100u32 {
                    std::hint::black_box(wait(std::future::ready(i)));
                }
                next.get_response(req)
            })
            .view(instant),
        // As wait10 with tokio's `yield_now` (woken by the runtime after
        // the task's poll, off the fiber).
        "yield10" => b
            .sync(|req: Request, next: &mut Next| {
                for _ in 0..10 {
                    wait(tokio::task::yield_now());
                }
                next.get_response(req)
            })
            .view(instant),
        // A hundred yields on one fiber: per yield, the fiber's creation
        // and exit weigh a hundredth (criterion's `bridge/wait_yield_once`).
        "yield100" => b
            .sync(|req: Request, next: &mut Next| {
                for _ in 0..100 {
                    wait(tokio::task::yield_now());
                }
                next.get_response(req)
            })
            .view(instant),
        // Two fibers, each suspending once at `get_response`.
        "segs" => b
            .sync(pass)
            .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            .sync(pass)
            .view(instant),
        // Five sync layers, each on its own fiber (an async layer between
        // each two): five fibers, five `get_response` suspensions.
        "alt5" => b
            .sync(pass)
            .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            .sync(pass)
            .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            .sync(pass)
            .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            .sync(pass)
            .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            .sync(pass)
            .view(instant),
        // Five layers on one fiber around a view that yields once.
        "k5" => b
            .sync(pass)
            .sync(pass)
            .sync(pass)
            .sync(pass)
            .sync(pass)
            .view(|_r: Request| async {
                YieldOnce(false).await;
                Response::new(Default::default())
            }),
        // Ten layers on one fiber (criterion's `request/suspend_sync/10`):
        // `(k10 − k5) / 5` is the price of one more sync layer.
        "k10" => (0..10)
            .fold(b, |b, _| b.sync(pass))
            .view(|_r: Request| async {
                YieldOnce(false).await;
                Response::new(Default::default())
            }),
        // Five async layers and no fiber (criterion's
        // `request/async_boxed/5`): the request's path without suspension.
        "async5" => (0..5)
            .fold(b, |b, _| {
                b.layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            })
            .view(instant),
        _ => return None,
    };
    Some(b.build().expect("probe pipeline builds"))
}

/// Runs `requests` sequential requests; returns how many succeeded.
pub fn run(rt: &tokio::runtime::Runtime, p: &Pipeline, requests: u64) -> u64 {
    rt.block_on(async {
        let mut ok = 0;
        for _ in 0..requests {
            let resp = p.handle(Request::new(Default::default())).await;
            ok += u64::from(resp.status().is_success());
        }
        ok
    })
}
