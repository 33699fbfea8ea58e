//! The blocking workload (issue 10): K sync layers around the view, the
//! middle one blocking B ms (`std::thread::sleep`) before and after
//! `get_response`, in five variants of how that blocking call is run.
//! Selected with `--blocking-ms B` (the `blk_*` modes).

use std::time::Duration;

use suspendware::{Next, Pipeline, PipelineBuilder, Request, Response};

use crate::common::{self, ViewKind};
use crate::modes::Mode;

/// How the middle layer's blocking sleep runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    /// On the thread the layer runs on (the fiber's, or the held thread).
    Inline,
    /// In `suspendware::blocking` (the pipeline's capped blocking pool).
    Blocking,
}

fn sleep(call: Call, d: Duration) {
    match call {
        Call::Inline => std::thread::sleep(d),
        Call::Blocking => suspendware::blocking(|| std::thread::sleep(d)),
    }
}

/// The pipeline of a `blk_*` mode: `k` sync layers (`k >= 1`), layer `k / 2`
/// blocking `blocking_ms` before and after `get_response`, around `view`.
pub fn pipeline(mode: Mode, k: usize, blocking_ms: u64, view: ViewKind) -> Pipeline {
    let d = Duration::from_millis(blocking_ms);
    let (call, on_thread) = match mode {
        Mode::BlkInline | Mode::BlkAdapt => (Call::Inline, false),
        Mode::BlkBlocking | Mode::BlkThreads64 | Mode::BlkThreads512 => (Call::Blocking, false),
        Mode::BlkOnThread => (Call::Inline, true),
        other => unreachable!("{} is not a blocking-workload mode", other.name()),
    };
    let mut b: PipelineBuilder = Pipeline::builder();
    match mode {
        Mode::BlkThreads64 => b = b.blocking_threads(64),
        Mode::BlkThreads512 => b = b.blocking_threads(512),
        Mode::BlkAdapt => b = b.mode(suspendware::Mode::Adapt),
        _ => {}
    }
    let middle = k / 2;
    for i in 0..k.max(1) {
        if i == middle {
            let mw = move |req: Request, next: &mut Next| -> Response {
                common::pre(true, &req);
                sleep(call, d);
                let mut resp = next.get_response(req);
                sleep(call, d);
                common::post(true, &mut resp);
                resp
            };
            let mw = suspendware::named(format!("blocking{i}"), mw);
            b = if on_thread {
                b.sync_on_thread(mw)
            } else {
                b.sync(mw)
            };
        } else {
            let mw = move |req: Request, next: &mut Next| {
                common::sync_layer(true, req, |r| next.get_response(r))
            };
            b = b.sync(suspendware::named(format!("sync{i}"), mw));
        }
    }
    b.view(move |req: Request| view.run(req))
        .build()
        .expect("blocking bench pipeline builds")
}
