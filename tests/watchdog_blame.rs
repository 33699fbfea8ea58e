//! The watchdog blames only blocking, and
//! counts what it blames ([`Pipeline::stall_stats`]).
//!
//! The contention tests pin the test's worker thread and a few spinning
//! "hog" threads to one CPU and lower the worker's priority (nice 19), so
//! the worker is descheduled for long stretches: resumes whose wall time
//! passes the threshold while the layer itself did nothing slow. They wait
//! (bounded) until the watchdog has excused several such resumes, so they
//! prove something on any machine, and fail loudly if that never happens.

mod capture;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use suspendware::*;

/// Threshold of the contention tests: above one coarse clock tick (≤ 4 ms)
/// plus the snapshot's refresh slack (threshold / 4), well below the
/// delays a nice-19 thread sharing a CPU with three hogs sees.
const THRESHOLD: Duration = Duration::from_millis(12);

/// How long a contention test may look for excused resumes.
const PATIENCE: Duration = Duration::from_secs(60);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn req() -> Request {
    http::Request::builder()
        .uri("/")
        .body(Body::empty())
        .unwrap()
}

/// The layer of the issue: it only inserts a header.
fn x_frame_options(req: Request, next: &mut Next) -> Response {
    let mut resp = next.get_response(req);
    resp.headers_mut()
        .insert("x-frame-options", http::HeaderValue::from_static("DENY"));
    resp
}

fn pipeline(threshold: Duration, inner: Option<(&'static str, fn())>) -> Pipeline {
    let mut b = Pipeline::builder()
        .watchdog(Some(threshold))
        .sync(named("XFrameOptions", x_frame_options));
    if let Some((name, slow)) = inner {
        // Innermost sync layer: slow before it suspends in get_response,
        // so the fiber stops in it and it is the one named.
        b = b.sync(named(name, move |req: Request, next: &mut Next| {
            slow();
            next.get_response(req)
        }));
    }
    b.view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap()
}

fn sleep_40ms() {
    std::thread::sleep(Duration::from_millis(40));
}

/// This thread's CPU time (not wall time: a spin measured in wall time
/// would mostly wait for the CPU under contention).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant supported by Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Computes for 40 ms of this thread's CPU time.
fn spin_40ms_of_cpu() {
    let start = thread_cpu_time();
    while thread_cpu_time() - start < Duration::from_millis(40) {
        std::hint::spin_loop();
    }
}

/// The first CPU this process may run on.
fn some_allowed_cpu() -> usize {
    // SAFETY: an all-zero cpu_set_t is a valid (empty) set; the kernel
    // writes at most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(rc, 0, "sched_getaffinity");
        (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("some CPU is allowed")
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: as above; pid 0 is the calling thread; `cpu` is an allowed
    // CPU below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
    }
}

/// Runs `f` on a thread pinned to one CPU with three spinning hogs, at
/// nice 19 (raising one's own nice needs no privilege; only that thread
/// is affected, and it ends with `f`).
fn on_contended_cpu<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let cpu = some_allowed_cpu();
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for _ in 0..3 {
            let stop = stop.clone();
            s.spawn(move || {
                pin_to(cpu);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let worker = s.spawn(|| {
            pin_to(cpu);
            // SAFETY: plain system calls on the calling thread's own id.
            let rc =
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
            assert_eq!(rc, 0, "setpriority(nice 19)");
            f()
        });
        let r = worker.join();
        stop.store(true, Ordering::Relaxed);
        r.unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

const EXCUSED: &str = "not blaming its middleware";
const BLAMED: &str = "without suspending";

/// Runs requests through `p` on the contended CPU until the watchdog has
/// excused `want` resumes (or `PATIENCE` ran out); returns everything it
/// logged and the number excused.
fn drive_until_excused(p: &Pipeline, want: usize) -> (String, usize) {
    on_contended_cpu(|| {
        let rt = rt();
        let deadline = Instant::now() + PATIENCE;
        let mut log = String::new();
        let mut excused = 0;
        while excused < want && Instant::now() < deadline {
            let (out, ()) = capture::capture(|| {
                for _ in 0..50 {
                    let resp = rt.block_on(p.handle(req()));
                    assert_eq!(resp.headers()["x-frame-options"], "DENY");
                }
            });
            excused += out.matches(EXCUSED).count();
            log.push_str(&out);
        }
        (log, excused)
    })
}

#[test]
fn a_header_only_middleware_under_a_cpu_hog_on_its_core_stays_silent() {
    let p = pipeline(THRESHOLD, None);
    let (log, excused) = drive_until_excused(&p, 3);
    assert!(
        excused >= 3,
        "in {PATIENCE:?} the hogs never delayed a resume past {THRESHOLD:?}, so this test \
         proved nothing (excused {excused}):\n{log}"
    );
    let blamed: Vec<&str> = log.lines().filter(|l| l.contains(BLAMED)).collect();
    assert!(blamed.is_empty(), "innocent layer blamed:\n{blamed:#?}");
    assert_eq!(p.stall_stats(), vec![], "nothing stalled");
}

fn assert_named(log: &str, name: &str) {
    let line = log
        .lines()
        .find(|l| l.contains(BLAMED))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(
        line.contains(&format!("middleware={name}"))
            || line.contains(&format!("middleware=\"{name}\"")),
        "{line}"
    );
    assert!(line.contains("suspendware::blocking"), "{line}");
}

#[test]
fn a_middleware_that_sleeps_past_the_threshold_under_a_cpu_hog_is_named() {
    let p = pipeline(THRESHOLD, Some(("Sleepy", sleep_40ms)));
    let (log, ()) = on_contended_cpu(|| {
        let rt = rt();
        capture::capture(|| {
            rt.block_on(p.handle(req()));
        })
    });
    assert_named(&log, "Sleepy");
    let stats = p.stall_stats();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!((stats[0].layer.as_str(), stats[0].count), ("Sleepy", 1));
}

#[test]
fn a_middleware_that_spins_past_the_threshold_is_named() {
    let p = pipeline(THRESHOLD, Some(("Spinner", spin_40ms_of_cpu)));
    let (log, ()) = capture::capture(|| {
        rt().block_on(p.handle(req()));
    });
    assert_named(&log, "Spinner");
    let stats = p.stall_stats();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!((stats[0].layer.as_str(), stats[0].count), ("Spinner", 1));
}

#[test]
fn stall_stats_count_a_sleeping_layer_by_name_and_not_an_innocent_one() {
    let p = pipeline(
        PipelineBuilder::DEFAULT_WATCHDOG,
        Some(("Sleepy", sleep_40ms)),
    );
    let rt = rt();
    for _ in 0..3 {
        rt.block_on(p.handle(req()));
    }
    let stats = p.stall_stats();
    assert_eq!(stats.len(), 1, "only the sleeping layer stalled: {stats:?}");
    let s = &stats[0];
    assert_eq!((s.layer.as_str(), s.count), ("Sleepy", 3));
    // Each stall is at least the 40 ms sleep minus the check's slack (one
    // coarse tick ≤ 4 ms, the snapshot's refresh period 2.5 ms): lower
    // bounds that follow from the sleep, not from the machine's speed.
    assert!(s.worst >= Duration::from_millis(30), "{s:?}");
    assert!(s.total >= 3 * Duration::from_millis(30), "{s:?}");
    assert!(s.total >= s.worst && s.worst * 3 >= s.total, "{s:?}");
}

#[test]
fn stall_stats_are_empty_with_the_watchdog_off() {
    let p = Pipeline::builder()
        .watchdog(None)
        .sync(named("Sleepy", |req: Request, next: &mut Next| {
            sleep_40ms();
            next.get_response(req)
        }))
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap();
    rt().block_on(p.handle(req()));
    assert_eq!(p.stall_stats(), vec![]);
}

/// Sessions-style outer layer around the header-only layer: one fiber run
/// passes through both, and only the outer one blocks.
fn outer_blocks(before: bool) -> Pipeline {
    Pipeline::builder()
        .watchdog(Some(PipelineBuilder::DEFAULT_WATCHDOG))
        .sync(named("Sessions", move |req: Request, next: &mut Next| {
            if before {
                sleep_40ms(); // "load the session row"
            }
            let resp = next.get_response(req);
            if !before {
                sleep_40ms(); // "save the session row"
            }
            resp
        }))
        .sync(named("XFrameOptions", x_frame_options))
        .view(|_r: Request| async { Response::new(Body::empty()) })
        .build()
        .unwrap()
}

fn assert_only_sessions_blamed(p: &Pipeline) {
    let (log, ()) = capture::capture(|| {
        let rt = rt();
        for _ in 0..2 {
            let resp = rt.block_on(p.handle(req()));
            assert_eq!(resp.headers()["x-frame-options"], "DENY");
        }
    });
    assert_named(&log, "Sessions");
    assert!(
        !log.lines()
            .any(|l| l.contains(BLAMED) && l.contains("XFrameOptions")),
        "the header-only layer was blamed:\n{log}"
    );
    let stats = p.stall_stats();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!((stats[0].layer.as_str(), stats[0].count), ("Sessions", 2));
}

#[test]
fn an_outer_layer_blocking_before_the_inner_layer_suspends_is_named_not_the_inner_one() {
    // The fiber stops in XFrameOptions' get_response, but Sessions ran the
    // 40 ms of that run.
    assert_only_sessions_blamed(&outer_blocks(true));
}

#[test]
fn an_outer_layer_blocking_after_the_inner_layer_returned_is_named() {
    // The run after the view: XFrameOptions' post-processing, then
    // Sessions' 40 ms, then the fiber returns.
    assert_only_sessions_blamed(&outer_blocks(false));
}
