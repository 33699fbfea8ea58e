//! Instruction-count probes of the fiber core's hot path, for
//! `valgrind --tool=callgrind` (`scripts/instr.sh` runs it at two request
//! counts and prints the marginal instructions per request).
//!
//! `instr SCENARIO REQUESTS` runs REQUESTS sequential requests on one
//! current-thread runtime and nothing else. Scenarios:
//!
//! * `wait`: one sync layer that `wait`s on a future pending once, then
//!   calls `get_response`; an instant async view (1 fiber, 2 suspensions);
//! * `wait10`: as `wait`, with ten `wait`s (so `(wait10 − wait) / 9` is
//!   the price of one more `wait` suspension, without the fiber's creation);
//! * `yield10`: as `wait10` with tokio's `yield_now`, which does not wake
//!   during its poll: it keeps a clone of the waker and the runtime wakes it
//!   after the task's poll, off the fiber (the path of every wake that comes
//!   from elsewhere: timers, I/O, channels);
//! * `segs`: sync → async → sync → async view (2 fibers, 2 `get_response`
//!   suspensions);
//! * `k5`: five pass-through sync layers around an async view that yields
//!   once (1 fiber, 1 suspension, the per-layer cost five times).
//!
//! Instructions do not depend on the machine's load, unlike the wall-clock
//! micro benches; they are how BENCHMARKS.md prices small hot-path changes.
//! Without arguments (`cargo test --all-targets`) it runs each scenario a few
//! times as a smoke test.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use suspendware::{wait, AsyncNext, Next, Pipeline, Request, Response};

/// A future that is pending once (waking itself), then ready.
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

fn pipeline(scenario: &str) -> Option<Pipeline> {
    let b = Pipeline::builder();
    let b = match scenario {
        "wait" => b
            .sync(|req: Request, next: &mut Next| {
                wait(YieldOnce(false));
                next.get_response(req)
            })
            .view(|_r: Request| async { Response::new(Default::default()) }),
        "wait10" => b
            .sync(|req: Request, next: &mut Next| {
                for _ in 0..10 {
                    wait(YieldOnce(false));
                }
                next.get_response(req)
            })
            .view(|_r: Request| async { Response::new(Default::default()) }),
        "yield10" => b
            .sync(|req: Request, next: &mut Next| {
                for _ in 0..10 {
                    wait(tokio::task::yield_now());
                }
                next.get_response(req)
            })
            .view(|_r: Request| async { Response::new(Default::default()) }),
        "segs" => b
            .sync(pass)
            .layer_async(|req: Request, next: AsyncNext| async move { next.run(req).await })
            .sync(pass)
            .view(|_r: Request| async { Response::new(Default::default()) }),
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
        _ => return None,
    };
    Some(b.build().expect("probe pipeline builds"))
}

fn run(scenario: &str, requests: u64) -> Option<u64> {
    let p = pipeline(scenario)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    Some(rt.block_on(async {
        let mut ok = 0;
        for _ in 0..requests {
            let resp = p.handle(Request::new(Default::default())).await;
            ok += u64::from(resp.status().is_success());
        }
        ok
    }))
}

fn main() {
    // glibc takes single-thread shortcuts (no locked instructions in malloc
    // and free, no cancellation bookkeeping around system calls) until a
    // second thread exists. A server always has several, and a pipeline
    // with a watchdog starts suspendware's ticker thread; a build without
    // one would be counted in the cheaper mode. One idle thread from the
    // start puts every build in the same, realistic one.
    std::thread::spawn(|| loop {
        std::thread::park();
    });
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        for s in ["wait", "wait10", "yield10", "segs", "k5"] {
            assert_eq!(run(s, 50), Some(50), "scenario {s}");
        }
        println!(
            "instr smoke: wait, wait10, yield10, segs, k5 ok (run scripts/instr.sh for counts)"
        );
        return;
    }
    let requests = args.get(1).and_then(|n| n.parse().ok());
    match (run(&args[0], requests.unwrap_or(0)), requests) {
        (Some(ok), Some(n)) if ok == n => println!("{} {n} requests ok", args[0]),
        (Some(ok), Some(n)) => {
            eprintln!("{}: only {ok} of {n} requests succeeded", args[0]);
            std::process::exit(1);
        }
        _ => {
            eprintln!("usage: instr wait|wait10|yield10|segs|k5 REQUESTS");
            std::process::exit(2);
        }
    }
}
