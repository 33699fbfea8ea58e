//! `compare --stack-depth K`: how deep one request's sync chain goes on its
//! coroutine stack, in `suspend` and `stackful`, and how many pages of that
//! stack one request leaves resident (what RSS per suspended request pays).
//!
//! Each of the K working layers first calls `probe`, which records an
//! address in its own frame (just below the layer's frame), into a vector
//! reserved beforehand (no allocation on the coroutine stack). After the
//! request, off the coroutine, the mapping that holds the innermost
//! address is found in `/proc/self/maps` (reading and parsing it inside
//! the innermost layer, as this probe first did, wrote ~0.7 KB deeper than
//! the request itself goes: 8,952 against 8,248 bytes at K = 5), and
//! `mincore` counts the resident pages of that mapping: the stack
//! is fresh (a new pipeline; stackful maps a new stack per coroutine) and
//! stays mapped after the request (suspendware's pool keeps it, stackful
//! caches one), so the count is what one request touched, including the
//! frames below the innermost layer (the suspension, the view's wait), and
//! the lowest byte written tells how deep the request really went.

use std::cell::RefCell;

use suspendware::{Next, Pipeline, Request, Response};

use crate::common::{self, sync_layer, ViewKind};

thread_local! {
    /// Addresses recorded by `probe`, outermost layer first.
    static ADDRS: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Records an address in a frame just below the caller's.
#[inline(never)]
pub fn probe() {
    let marker = 0u8;
    let addr = std::hint::black_box(&marker) as *const u8 as usize;
    ADDRS.with(|a| a.borrow_mut().push(addr));
}

fn mapping_of(addr: usize) -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| {
        let range = l.split_whitespace().next()?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        (a <= addr && addr < b).then_some((a, b))
    })
}

/// Resident pages of `[start, end)`.
fn resident_pages(start: usize, end: usize) -> usize {
    let page = 4096;
    let n = (end - start) / page;
    let mut vec = vec![0u8; n];
    // SAFETY: `start..end` is a whole mapping from /proc/self/maps (page
    // aligned) and `vec` has one byte per page, as mincore requires.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    vec.iter().filter(|b| **b & 1 == 1).count()
}

/// How far below `end` the stack was written: the lowest non-zero byte in
/// the lowest resident page (a fresh stack's pages are zero until touched;
/// only resident pages are read, so the scan faults nothing in).
fn deepest_written(start: usize, end: usize) -> Option<usize> {
    let page = 4096;
    let n = (end - start) / page;
    let mut vec = vec![0u8; n];
    // SAFETY: as in `resident_pages`.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    let lowest = vec.iter().position(|b| *b & 1 == 1)?;
    let base = start + lowest * page;
    // SAFETY: the page is part of the stack's mapping, readable (the guard
    // page is not resident and not part of this mapping) and resident.
    let bytes = unsafe { std::slice::from_raw_parts(base as *const u8, page) };
    let first = bytes.iter().position(|b| *b != 0)?;
    Some(end - (base + first))
}

/// `common::run_layers` (the chain of the `stackful` mode) with a probe at
/// the top of each layer.
fn run_layers_probed(
    left: usize,
    req: Request,
    inner: &mut dyn FnMut(Request) -> Response,
) -> Response {
    if left == 0 {
        return inner(req);
    }
    probe();
    sync_layer(true, req, |r| run_layers_probed(left - 1, r, inner))
}

/// `k` probed sync layers around the view: awaited by the pipeline (the
/// `suspend` shape), or `wait`ed on by a sync view on the same fiber
/// (`suspend_wait`), where the view's future and the timer's registration
/// run on the fiber stack too.
///
/// With `every_layer` false only the outermost layer probes (to find the
/// stack): the inner layers then make no probe call. They are still this
/// probe's closures, not the harness's (their frames differ with what the
/// closure captures), so the deepest byte is this pipeline's, not exactly
/// what the harness's requests write.
fn suspend_pipeline(k: usize, view: ViewKind, wait: bool, every_layer: bool) -> Pipeline {
    let mut b = Pipeline::builder();
    for i in 0..k {
        b = b.sync(suspendware::named(
            format!("probe{i}"),
            move |req: Request, next: &mut Next| {
                if every_layer || i == 0 {
                    probe();
                }
                sync_layer(true, req, |r| next.get_response(r))
            },
        ));
    }
    let b = if wait {
        b.sync_view(move |req: Request| suspendware::wait(view.run(req)))
    } else {
        b.view(move |req: Request| view.run(req))
    };
    b.build().expect("probe pipeline builds")
}

/// Runs the probe for both modes and prints a small report.
pub fn run(k: usize) -> i32 {
    if k == 0 {
        eprintln!("--stack-depth needs K >= 1");
        return 2;
    }
    let (rt, local) = crate::modes::local_runtime();
    println!(
        "K={k} working sync layers, view yields once (D=20: sleeps 20 ms); one request on a \
         fresh stack"
    );
    println!("| mode | stack size | outermost layer at (bytes below top) | bytes per further layer | innermost layer at | deepest byte written | resident stack pages after the request |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for mode in [
        "suspend",
        "suspend_wait",
        "suspend_wait D=20",
        "stackful",
        "suspend, outer probe only",
        "suspend_wait, outer probe only",
        "suspend_wait D=20, outer probe only",
    ] {
        ADDRS.with(|a| {
            let mut a = a.borrow_mut();
            a.clear();
            a.reserve(k);
        });
        local.block_on(&rt, async {
            match mode {
                m if m.starts_with("suspend") => {
                    let view = if mode.contains("D=20") {
                        ViewKind::from_ms(20)
                    } else {
                        ViewKind::Yield
                    };
                    let every_layer = !mode.ends_with("outer probe only");
                    let wait = mode.contains("wait");
                    // One request through a throwaway pipeline first: the
                    // first request of a process also runs one-time set-ups
                    // (tracing callsites, the runtime's timer) that go
                    // deeper than any later request.
                    let warm = suspend_pipeline(k, view, wait, every_layer);
                    let _ = warm.handle(common::request()).await;
                    ADDRS.with(|a| a.borrow_mut().clear());
                    let p = suspend_pipeline(k, view, wait, every_layer);
                    let _ = p.handle(common::request()).await;
                    report(mode, k);
                }
                _ => {
                    let view = ViewKind::Yield;
                    let _ = stackful::stackful(move || {
                        run_layers_probed(k, common::request(), &mut |r| {
                            stackful::wait(view.run(r))
                        })
                    })
                    .await;
                    report(mode, k);
                }
            }
        });
    }
    0
}

fn report(mode: &str, k: usize) {
    let addrs = ADDRS.with(|a| a.borrow().clone());
    let found = addrs.first().zip(addrs.last());
    let Some(((&outer, &inner), (start, end))) =
        found.and_then(|(o, i)| Some(((o, i), mapping_of(*i)?)))
    else {
        println!("| {mode} | ? | ? | ? | ? | ? | ? |");
        return;
    };
    let per_layer = if k > 1 && addrs.len() == k {
        format!("{}", (outer - inner) / (k - 1))
    } else {
        "–".into()
    };
    let resident = resident_pages(start, end);
    let deepest = deepest_written(start, end).map_or("?".into(), |d| d.to_string());
    let innermost = if addrs.len() == k {
        (end - inner).to_string()
    } else {
        "–".into()
    };
    println!(
        "| {mode} | {} KiB | {} | {per_layer} | {innermost} | {deepest} | {resident} ({} KiB) |",
        (end - start) / 1024,
        end - outer,
        resident * 4,
    );
}
