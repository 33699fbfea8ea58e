//! Instruction-count probes of the fiber core's hot path, for
//! `valgrind --tool=callgrind` (`scripts/instr.sh` runs it at two request
//! counts and prints the marginal instructions per request).
//!
//! `instr SCENARIO REQUESTS` runs REQUESTS sequential requests on one
//! current-thread runtime and nothing else. The scenarios are the probes of
//! `benches/probes.rs` (shared with `scripts/ab_inproc.sh`):
//!
//! * `wait`: one sync layer that `wait`s on a future pending once, then
//!   calls `get_response`; an instant async view (1 fiber, 2 suspensions);
//! * `wait10`: as `wait`, with ten `wait`s (so `(wait10 − wait) / 9` is
//!   the price of one more `wait` suspension, without the fiber's creation);
//! * `ready100`: a hundred `wait`s on ready futures (no suspension);
//! * `yield10`, `yield100`: ten or a hundred `wait`s on tokio's `yield_now`,
//!   which does not wake during its poll: it keeps a clone of the waker and
//!   the runtime wakes it after the task's poll, off the fiber (the path of
//!   every wake that comes from elsewhere: timers, I/O, channels);
//! * `segs`: sync → async → sync → async view (2 fibers, 2 `get_response`
//!   suspensions);
//! * `alt5`: five sync layers with an async layer between each two (5
//!   fibers);
//! * `k5`: five pass-through sync layers around an async view that yields
//!   once (1 fiber, 1 suspension, the per-layer cost five times);
//! * `k10`: as `k5` with ten layers (`(k10 − k5) / 5` per sync layer);
//! * `async5`: five async layers around an instant view, no fiber.
//!
//! Instructions do not depend on the machine's load, unlike the wall-clock
//! micro benches; they are how BENCHMARKS.md prices small hot-path changes.
//! Without arguments (`cargo test --all-targets`) it runs each scenario a few
//! times as a smoke test.

mod probes {
    use suspendware as sw;
    include!("probes.rs");
}

fn run(scenario: &str, requests: u64) -> Option<u64> {
    let p = probes::pipeline(scenario)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    Some(probes::run(&rt, &p, requests))
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
        for s in probes::NAMES {
            assert_eq!(run(s, 50), Some(50), "scenario {s}");
        }
        println!(
            "instr smoke: {} ok (run scripts/instr.sh for counts)",
            probes::NAMES.join(", ")
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
            eprintln!("usage: instr {} REQUESTS", probes::NAMES.join("|"));
            std::process::exit(2);
        }
    }
}
