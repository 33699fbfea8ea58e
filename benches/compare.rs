//! The comparison harness: N concurrent requests through K sync middleware
//! around a view awaiting D ms, in each mode; throughput, latency, threads
//! and memory per cell. See `--help` and BENCHMARKS.md.
//!
//! `cargo bench --bench compare -- [--quick] [--n 100,1000] [--d 0,20] ...`
//!
//! Every cell runs in a fresh child process (this binary, re-executed with
//! `--child ...`), so peak RSS and thread counts belong to that cell alone;
//! the parent interleaves the modes cell by cell and repeat by repeat so that
//! the ratios between modes are taken under the same machine conditions.

#[path = "compare/args.rs"]
mod args;
#[path = "compare/blocking.rs"]
mod blocking;
#[path = "compare/cell.rs"]
mod cell;
#[path = "common/mod.rs"]
mod common;
#[path = "compare/depth.rs"]
mod depth;
#[path = "compare/hist.rs"]
mod hist;
#[path = "compare/modes.rs"]
mod modes;
#[path = "compare/plot.rs"]
mod plot;
#[path = "compare/probe.rs"]
mod probe;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/serve.rs"]
mod serve;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use args::Options;
use cell::{CellResult, CellSpec};
use report::Run;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and then it only smoke-tests the harness.
    let benching = std::env::args().any(|a| a == "--bench");
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if argv.first().map(String::as_str) == Some("--child") {
        let spec = CellSpec::from_args(&argv[1..]).unwrap_or_else(|| {
            eprintln!("compare --child: bad arguments {argv:?}");
            std::process::exit(2)
        });
        println!("{}", cell::run(&spec).to_line());
        // Leave without dropping the runtime: a mode whose threads are still
        // blocked (block_in_place, threads) would make the drop wait.
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::process::exit(0);
    }
    if argv.first().map(String::as_str) == Some("--stack-depth") {
        let k = argv.get(1).and_then(|k| k.parse().ok()).unwrap_or(5);
        std::process::exit(depth::run(k));
    }
    if argv.first().map(String::as_str) == Some("--profile") {
        std::process::exit(profile(&argv[1..]));
    }
    if argv.first().map(String::as_str) == Some("--serve") {
        std::process::exit(serve::run(&argv[1..]));
    }
    if !benching {
        std::process::exit(smoke());
    }
    let opts = match Options::parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprintln!("{}", args::USAGE);
            std::process::exit(if e.is_empty() { 0 } else { 2 })
        }
    };
    std::process::exit(orchestrate(&opts));
}

/// Runs one cell in a child process. The child bounds itself (it reports
/// `hung=1` past `cell::hang_limit`); if it does not answer 30 s after that
/// it is killed and the run is recorded as hung too.
fn run_child(spec: &CellSpec) -> Result<CellResult, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let mut child = Command::new(exe)
        .args(spec.to_args())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start child: {e}"))?;
    let limit = cell::hang_limit(spec) + Duration::from_secs(30);
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("child exceeded {limit:?}; killed, recorded as hung");
                let mut hung = CellResult::default();
                hung.fields.insert("hung", 1.0);
                return Ok(hung);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for child: {e}")),
        }
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    out.lines()
        .find_map(CellResult::parse)
        .ok_or_else(|| format!("child printed no result (stdout: {out:?})"))
}

fn first_line_of(path: &str, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(prefix))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Under `cargo test`: every default mode, a handful of requests, each in
/// its child process; fails if a cell fails or answers anything but 200.
fn smoke() -> i32 {
    let mut failed = 0;
    let mut passed = 0;
    for &mode in modes::Mode::DEFAULT.iter().chain(modes::Mode::BLOCKING) {
        let spec = CellSpec {
            mode,
            n: 20,
            d_ms: 1,
            secs: 0.05,
            k: 3,
            stack_kib: 0,
            blocking_ms: 1,
            gap: false,
        };
        match run_child(&spec) {
            Ok(r)
                if r.get("hung") == 0.0 && r.get("requests") >= 20.0 && r.get("errors") == 0.0 =>
            {
                passed += 1
            }
            Ok(r) => {
                eprintln!("compare smoke: {}: bad result {r:?}", mode.name());
                failed += 1;
            }
            Err(e) => {
                eprintln!("compare smoke: {}: {e}", mode.name());
                failed += 1;
            }
        }
    }
    println!("compare smoke (run with `cargo bench --bench compare` for the real harness)");
    println!("{passed} passed, {failed} failed");
    i32::from(failed > 0)
}

/// `--profile MODE K D_MS REQUESTS`: REQUESTS sequential requests of one
/// mode through K working layers on a current-thread runtime, and nothing
/// else (no sampler, no watchdog, no histogram): for `valgrind
/// --tool=callgrind` or `perf`, where two request counts give the marginal
/// instructions per request. Not for `block_in_place` (multi-thread).
fn profile(a: &[String]) -> i32 {
    let Some((mode, k, d_ms, reqs)) = modes::mode_k_d_and::<u64>(a) else {
        eprintln!("usage: compare --profile MODE K D_MS REQUESTS (not block_in_place)");
        return 2;
    };
    let (rt, local) = modes::local_runtime();
    let ok = local.block_on(&rt, async move {
        let h = modes::Handler::new(mode, k, common::ViewKind::from_ms(d_ms), 1);
        let mut ok = 0u64;
        for _ in 0..reqs {
            let resp = h.handle(common::request()).await;
            ok += u64::from(resp.status() == http::StatusCode::OK);
        }
        ok
    });
    println!("{} requests, {ok} ok", mode.name());
    i32::from(ok != reqs)
}

/// `--replot`: the tables and the plot again from a previous `runs.csv`.
fn replot(o: &Options) -> i32 {
    let runs = match report::read_runs(&o.out.join("runs.csv"), o.secs, o.k) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: --replot: {e}");
            return 1;
        }
    };
    let mut ns: Vec<usize> = runs.iter().map(|r| r.spec.n).collect();
    let mut ds: Vec<u64> = runs.iter().map(|r| r.spec.d_ms).collect();
    ns.sort_unstable();
    ns.dedup();
    ds.sort_unstable();
    ds.dedup();
    let modes: Vec<_> = modes::Mode::ALL
        .iter()
        .copied()
        .filter(|m| runs.iter().any(|r| r.spec.mode == *m))
        .collect();
    let summary = report::summarize(&runs, &ns, &ds, &modes);
    println!("{}", report::markdown(&summary, &ds, o.k));
    println!("{}", report::peer_table(&summary, &ns, &ds, &modes, o.k));
    let svg = o.out.join("compare.svg");
    if let Err(e) = plot::draw(&svg, &summary, &ns, &ds, &modes, o.k) {
        eprintln!("error: drawing {}: {e}", svg.display());
        return 1;
    }
    eprintln!("wrote {}", svg.display());
    0
}

fn orchestrate(o: &Options) -> i32 {
    if o.replot {
        return replot(o);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut facts: Vec<(&str, String)> = vec![
        ("cores", cores.to_string()),
        ("cpu", first_line_of("/proc/cpuinfo", "model name")),
        ("kernel", read_trim("/proc/sys/kernel/osrelease")),
        (
            "vm_max_map_count",
            suspendware::stack::max_map_count().to_string(),
        ),
        (
            "stack_budget",
            suspendware::stack::default_stack_budget().to_string(),
        ),
        ("loadavg_start", read_trim("/proc/loadavg")),
        ("k", o.k.to_string()),
        (
            "stack_kib",
            if o.stack_kib == 0 {
                "default".into()
            } else {
                o.stack_kib.to_string()
            },
        ),
        ("secs_per_cell", o.secs.to_string()),
        ("blocking_ms", o.blocking_ms.to_string()),
        ("gap", o.gap.to_string()),
        ("repeats", o.repeats.to_string()),
        ("quick", o.quick.to_string()),
    ];
    eprintln!(
        "compare: {} cores ({}), N={:?}, D={:?} ms, modes={:?}, K={}, {} s/cell, {} repeats",
        cores,
        facts[1].1,
        o.ns,
        o.ds,
        o.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
        o.k,
        o.secs,
        o.repeats
    );
    if o.ns
        .iter()
        .any(|&n| n > suspendware::stack::default_stack_budget())
    {
        eprintln!(
            "note: N above the stack budget ({}, from vm.max_map_count={}): suspend-mode requests beyond it wait for a \
             stack (the table shows peak stacks and waiters)",
            suspendware::stack::default_stack_budget(),
            suspendware::stack::max_map_count()
        );
    }
    let total = o.repeats * o.ns.len() * o.ds.len() * o.modes.len();
    let mut runs = Vec::with_capacity(total);
    let mut failures = 0;
    let started = Instant::now();
    let mut i = 0;
    for repeat in 0..o.repeats {
        for &n in &o.ns {
            for &d_ms in &o.ds {
                // Rotate the mode order so no mode always runs first.
                let rot = (repeat + i) % o.modes.len();
                let order: Vec<_> = o
                    .modes
                    .iter()
                    .cycle()
                    .skip(rot)
                    .take(o.modes.len())
                    .copied()
                    .collect();
                for mode in order {
                    i += 1;
                    let spec = CellSpec {
                        mode,
                        n,
                        d_ms,
                        secs: o.secs,
                        k: o.k,
                        stack_kib: o.stack_kib,
                        blocking_ms: o.blocking_ms,
                        gap: o.gap,
                    };
                    match run_child(&spec) {
                        Ok(result) if result.get("hung") > 0.0 => {
                            eprintln!(
                                "[{i:>3}/{total}] {:<12} N={n:<6} D={d_ms:<3} HUNG (no end after {:.0} s; {:.0} requests done)",
                                mode.name(),
                                cell::hang_limit(&spec).as_secs_f64(),
                                result.get("requests"),
                            );
                            runs.push(Run {
                                spec,
                                repeat,
                                result,
                            });
                        }
                        Ok(result) => {
                            eprintln!(
                                "[{i:>3}/{total}] {:<12} N={n:<6} D={d_ms:<3} {:>10.0} req/s  p99 {:>8.2} ms  threads {:>4.0}  RSS {:>7.1} MiB",
                                mode.name(),
                                result.get("throughput_rps"),
                                result.get("p99_ms"),
                                result.get("peak_threads"),
                                result.get("peak_rss_mib"),
                            );
                            runs.push(Run {
                                spec,
                                repeat,
                                result,
                            });
                        }
                        Err(e) => {
                            failures += 1;
                            eprintln!(
                                "[{i:>3}/{total}] {} N={n} D={d_ms}: FAILED: {e}",
                                mode.name()
                            );
                        }
                    }
                }
            }
        }
    }
    facts.push(("loadavg_end", read_trim("/proc/loadavg")));
    facts.push(("wall_s", format!("{:.1}", started.elapsed().as_secs_f64())));
    let summary = report::summarize(&runs, &o.ns, &o.ds, &o.modes);
    println!("{}", report::markdown(&summary, &o.ds, o.k));
    println!(
        "{}",
        report::peer_table(&summary, &o.ns, &o.ds, &o.modes, o.k)
    );
    if let Err(e) = report::write_files(&o.out, &runs, &summary, &facts) {
        eprintln!("error: writing results to {}: {e}", o.out.display());
        return 1;
    }
    let svg = o.out.join("compare.svg");
    if let Err(e) = plot::draw(&svg, &summary, &o.ns, &o.ds, &o.modes, o.k) {
        eprintln!("error: drawing {}: {e}", svg.display());
        return 1;
    }
    eprintln!(
        "wrote {0}/runs.csv, {0}/summary.csv, {0}/summary.json, {1} ({2:.0} s in all)",
        o.out.display(),
        svg.display(),
        started.elapsed().as_secs_f64()
    );
    if failures > 0 {
        eprintln!("{failures} cell run(s) failed");
        return 1;
    }
    0
}
