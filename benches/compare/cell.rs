//! One cell of the comparison: one mode, N concurrent clients, one view
//! delay, run in a fresh child process so that its peak RSS and thread count
//! are its own.
//!
//! Load model (closed loop): N client tasks start together; each sends a
//! request, awaits the response, and sends the next until the cell's
//! duration is over (at least one request each). Throughput is completed
//! requests over the time until the last client finished.
//!
//! Before the timed part, one untimed warm-up round sends N requests at
//! once, so pools (fiber stacks, blocking threads, task memory) are at their
//! working size, as in a server under steady load. The baseline RSS is read
//! before the warm-up, so "RSS per request" includes what the pools keep.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use suspendware::{Request, Response};
use tokio::task::JoinHandle;

use crate::common::{self, ViewKind};
use crate::hist::Histogram;
use crate::modes::{self, Handler, Mode};
use crate::probe::{self, Sampler, StackProbe};

/// What a child process runs.
#[derive(Clone, Debug)]
pub struct CellSpec {
    pub mode: Mode,
    pub n: usize,
    pub d_ms: u64,
    pub secs: f64,
    pub k: usize,
    /// Fiber stack size in KiB; 0 = the library default.
    pub stack_kib: usize,
    /// Blocking-workload modes: ms the middle layer blocks before and
    /// after `get_response`.
    pub blocking_ms: u64,
    /// Each client yields once between a response and its next request
    /// (`--gap`).
    pub gap: bool,
}

impl CellSpec {
    /// The arguments that make a child run this cell.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--child".into(),
            self.mode.name().into(),
            self.n.to_string(),
            self.d_ms.to_string(),
            self.secs.to_string(),
            self.k.to_string(),
            self.stack_kib.to_string(),
            self.blocking_ms.to_string(),
            u8::from(self.gap).to_string(),
        ]
    }

    /// Parses what `to_args` produced (after `--child`).
    pub fn from_args(a: &[String]) -> Option<CellSpec> {
        Some(CellSpec {
            mode: Mode::parse(a.first()?)?,
            n: a.get(1)?.parse().ok()?,
            d_ms: a.get(2)?.parse().ok()?,
            secs: a.get(3)?.parse().ok()?,
            k: a.get(4)?.parse().ok()?,
            stack_kib: a.get(5)?.parse().ok()?,
            blocking_ms: a.get(6)?.parse().ok()?,
            gap: a.get(7)? == "1",
        })
    }
}

/// Measurements of one cell run. Field names are the CSV/JSON column names.
#[derive(Clone, Debug, Default)]
pub struct CellResult {
    pub fields: BTreeMap<&'static str, f64>,
}

/// The measured fields, in output order.
pub const FIELDS: &[&str] = &[
    "hung",
    "requests",
    "errors",
    "elapsed_s",
    "throughput_rps",
    "p50_ms",
    "p99_ms",
    "cpu_us_per_req",
    "base_threads",
    "peak_threads",
    "base_rss_mib",
    "peak_rss_mib",
    "rss_per_req_kib",
    "peak_stacks",
    "peak_stack_waiters",
];

impl CellResult {
    pub fn get(&self, k: &str) -> f64 {
        self.fields.get(k).copied().unwrap_or(f64::NAN)
    }

    /// One line for the parent: `CELL key=value ...`.
    pub fn to_line(&self) -> String {
        let mut s = String::from("CELL");
        for (k, v) in &self.fields {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    }

    /// Parses a `to_line` line.
    pub fn parse(line: &str) -> Option<CellResult> {
        let rest = line.strip_prefix("CELL")?;
        let mut fields = BTreeMap::new();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let key = FIELDS.iter().copied().find(|f| *f == k)?;
            fields.insert(key, v.parse().ok()?);
        }
        Some(CellResult { fields })
    }
}

struct Tally {
    requests: u64,
    errors: u64,
    hist: Histogram,
}

type SharedTally = Arc<Mutex<Tally>>;

/// The closed loop of one client. The tally is behind a mutex (uncontended
/// except in the multi-thread mode) so that the hang watchdog can read it.
///
/// With `gap`, the client yields once before each next request: the other
/// clients' requests run in between, as on a server where a connection's
/// next request arrives through the socket after the response went out.
/// Without it, the next request starts in the same poll that finished the
/// last one, which lets a design that keeps one spare resource (the
/// `stackful` crate's single cached stack) reuse it every time.
async fn client<F, Fut>(call: F, tally: SharedTally, deadline: Instant, gap: bool)
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    loop {
        let start = Instant::now();
        let resp = call(common::request()).await;
        let took = start.elapsed();
        {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            t.requests += 1;
            if resp.status() != http::StatusCode::OK {
                t.errors += 1;
            }
            t.hist.record(took);
        }
        if Instant::now() >= deadline {
            return;
        }
        if gap {
            tokio::task::yield_now().await;
        }
    }
}

/// How a cell's requests are started: on a `LocalSet` (current-thread
/// runtime, `!Send` handlers) or as `Send` tasks of a multi-thread runtime.
#[derive(Clone)]
enum Driver {
    Local(Rc<Handler>),
    BlockInPlace { k: usize, view: ViewKind },
}

impl Driver {
    fn client(&self, tally: SharedTally, deadline: Instant, gap: bool) -> JoinHandle<()> {
        match self {
            Driver::Local(h) => {
                let h = h.clone();
                tokio::task::spawn_local(client(move |r| h.handle(r), tally, deadline, gap))
            }
            &Driver::BlockInPlace { k, view } => tokio::spawn(client(
                move |r| modes::block_in_place_request(k, view, r),
                tally,
                deadline,
                gap,
            )),
        }
    }

    fn one(&self) -> JoinHandle<Response> {
        match self {
            Driver::Local(h) => {
                let h = h.clone();
                tokio::task::spawn_local(async move { h.handle(common::request()).await })
            }
            &Driver::BlockInPlace { k, view } => {
                tokio::spawn(modes::block_in_place_request(k, view, common::request()))
            }
        }
    }

    fn pipeline(&self) -> Option<&suspendware::Pipeline> {
        match self {
            Driver::Local(h) => h.pipeline(),
            Driver::BlockInPlace { .. } => None,
        }
    }
}

/// How long a cell may take in all (warm-up included) before the child
/// declares it hung: 10 s plus 3× the load duration.
pub fn hang_limit(spec: &CellSpec) -> Duration {
    Duration::from_secs_f64(10.0 + 3.0 * spec.secs)
}

/// Runs the cell on a current-thread runtime with a `LocalSet` (suspendware
/// futures are `!Send`; the thread-hold modes add tokio's blocking pool,
/// 512 threads at most), or for `block_in_place` on the default
/// multi-thread runtime (one worker per core, 512 blocking threads).
///
/// A watchdog thread bounds the cell: past [`hang_limit`] it prints the
/// result so far with `hung=1` and ends the process (a hung runtime cannot
/// be shut down), so a mode that deadlocks is reported, not waited for.
pub fn run(spec: &CellSpec) -> CellResult {
    // Keep stderr readable when a mode fails every request by panicking.
    let panics = std::sync::atomic::AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if panics.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2 {
            default_hook(info);
        }
    }));
    if spec.mode.multi_thread() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let driver = Driver::BlockInPlace {
            k: spec.k,
            view: ViewKind::from_ms(spec.d_ms),
        };
        rt.block_on(measure(spec, driver))
    } else {
        let (rt, local) = modes::local_runtime();
        local.block_on(&rt, async {
            let h = Handler::new(
                spec.mode,
                spec.k,
                ViewKind::from_ms(spec.d_ms),
                spec.blocking_ms,
            );
            measure(spec, Driver::Local(Rc::new(h))).await
        })
    }
}

fn watchdog(spec: &CellSpec, tally: SharedTally, started: Instant) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let limit = hang_limit(spec);
    std::thread::Builder::new()
        .name("hang-watchdog".into())
        .spawn(move || {
            while started.elapsed() < limit {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let (requests, errors) = match tally.try_lock() {
                Ok(t) => (t.requests, t.errors),
                Err(_) => (0, 0),
            };
            let mut f = BTreeMap::new();
            f.insert("hung", 1.0);
            f.insert("requests", requests as f64);
            f.insert("errors", errors as f64);
            f.insert("elapsed_s", started.elapsed().as_secs_f64());
            println!("{}", CellResult { fields: f }.to_line());
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
            std::process::exit(0);
        })
        .expect("spawn watchdog thread");
    done
}

async fn measure(spec: &CellSpec, driver: Driver) -> CellResult {
    let tally: SharedTally = Arc::new(Mutex::new(Tally {
        requests: 0,
        errors: 0,
        hist: Histogram::new(),
    }));
    let done = watchdog(spec, tally.clone(), Instant::now());
    let _ = driver.one().await;
    let base_threads = probe::status_field("Threads");
    let base_rss = probe::status_field("VmRSS");
    let warm: Vec<_> = (0..spec.n).map(|_| driver.one()).collect();
    for w in warm {
        w.await.expect("warm-up task panicked");
    }
    let stacks: Option<StackProbe> = driver.pipeline().cloned().map(|p| {
        Box::new(move || {
            let s = p.stack_stats();
            (s.in_use, s.waiting)
        }) as StackProbe
    });
    let sampler = Sampler::start(Duration::from_millis(2), stacks);

    let cpu0 = probe::cpu_time();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(spec.secs);
    let clients: Vec<_> = (0..spec.n)
        .map(|_| driver.client(tally.clone(), deadline, spec.gap))
        .collect();
    for c in clients {
        c.await.expect("client task panicked");
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Release);
    let cpu_end = probe::cpu_time();
    let peaks = sampler.finish();
    let cpu = cpu_end.saturating_sub(cpu0).saturating_sub(peaks.own_cpu);
    let hwm = probe::status_field("VmHWM").max(peaks.rss_kib);

    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let hist = &t.hist;
    let reqs = t.requests as f64;
    let ok = (t.requests - t.errors) as f64;
    let mut f = BTreeMap::new();
    f.insert("hung", 0.0);
    f.insert("requests", reqs);
    f.insert("errors", t.errors as f64);
    f.insert("elapsed_s", elapsed.as_secs_f64());
    // Successful requests only (failed ones, e.g. a thread that could not
    // be spawned, are counted in `errors`).
    f.insert("throughput_rps", ok / elapsed.as_secs_f64());
    f.insert("p50_ms", hist.quantile(0.50).as_secs_f64() * 1e3);
    f.insert("p99_ms", hist.quantile(0.99).as_secs_f64() * 1e3);
    // Process CPU (all threads but the sampler), in 10 ms ticks.
    f.insert("cpu_us_per_req", cpu.as_secs_f64() * 1e6 / reqs);
    f.insert("base_threads", base_threads as f64);
    f.insert("peak_threads", peaks.threads.max(base_threads) as f64);
    f.insert("base_rss_mib", base_rss as f64 / 1024.0);
    f.insert("peak_rss_mib", hwm as f64 / 1024.0);
    f.insert(
        "rss_per_req_kib",
        hwm.saturating_sub(base_rss) as f64 / spec.n as f64,
    );
    f.insert("peak_stacks", peaks.stacks_in_use as f64);
    f.insert("peak_stack_waiters", peaks.stack_waiters as f64);
    CellResult { fields: f }
}
