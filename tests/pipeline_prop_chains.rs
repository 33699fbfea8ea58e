//! Property test: random chains of sync, async, hybrid and hook
//! middleware around a sync or async view, each layer with a random script
//! (short-circuit, retry, panic before/after `next`, `wait`, `blocking`),
//! run in every mode that accepts them. The responses and the order of events
//! must equal those of a plain synchronous reference interpreter written from
//! the crate's documented semantics:
//!
//! * every layer boundary turns a panic into the panic handler's 500, which
//!   the layers outside it see as an ordinary response;
//! * hook middleware: `process_request` in order; `process_view` of every
//!   hook, in order, right before the view (again on every retry of an inner
//!   layer); `process_exception` when the inner response came from a panic;
//!   `process_response` after the inner part and after a `process_request`
//!   short-circuit;
//! * Strict mode rejects sync-only middleware at build time, naming them.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use http::StatusCode;
use proptest::prelude::*;
use suspendware::hooks::*;
use suspendware::plan::*;
use suspendware::*;

// ---------------------------------------------------------------- scripts --

/// What a generated layer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `.sync(..)`.
    Sync,
    /// `.layer_async(..)`.
    Async,
    /// `.middleware(..)` with `Capabilities::BOTH` (the planner picks).
    Hybrid,
    /// `.hooks(..)`.
    Hook,
}

/// What a layer does with the inner part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    /// Calls it once.
    Pass,
    /// Answers without calling it (hooks: `process_request` returns `Some`).
    Short,
    /// Calls it, discards the response, calls it again (not for hooks).
    Retry,
    /// Hooks only: `process_view` returns `Some`.
    ShortView,
}

/// Where a layer panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boom {
    No,
    /// Before calling the inner part (hooks: in `process_request`).
    Before,
    /// After the inner part answered (hooks: in `process_response`).
    After,
    /// Hooks only: in `process_view`.
    InView,
}

/// What a layer (or the view) waits for before going on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pause {
    No,
    /// `tokio::task::yield_now()`.
    Yield,
    /// A 1 ms timer.
    Timer,
}

#[derive(Clone, Copy, Debug)]
struct Layer {
    kind: Kind,
    act: Act,
    boom: Boom,
    pause: Pause,
    /// Runs a closure on the blocking pool (`blocking` / `spawn_blocking`).
    blocking: bool,
    /// Hooks only: `process_exception` answers instead of the 500.
    handles_exc: bool,
}

#[derive(Clone, Copy, Debug)]
struct ViewScript {
    sync: bool,
    panics: bool,
    pause: Pause,
}

fn pause() -> impl Strategy<Value = Pause> {
    prop_oneof![3 => Just(Pause::No), 1 => Just(Pause::Yield), 1 => Just(Pause::Timer)]
}

fn layer() -> impl Strategy<Value = Layer> {
    let kind = prop_oneof![
        Just(Kind::Sync),
        Just(Kind::Async),
        Just(Kind::Hybrid),
        Just(Kind::Hook)
    ];
    kind.prop_flat_map(|kind| {
        let act = if kind == Kind::Hook {
            prop_oneof![6 => Just(Act::Pass), 1 => Just(Act::Short), 1 => Just(Act::ShortView)]
                .boxed()
        } else {
            prop_oneof![6 => Just(Act::Pass), 1 => Just(Act::Short), 2 => Just(Act::Retry)].boxed()
        };
        let boom = if kind == Kind::Hook {
            prop_oneof![
                12 => Just(Boom::No),
                1 => Just(Boom::Before),
                1 => Just(Boom::After),
                1 => Just(Boom::InView)
            ]
            .boxed()
        } else {
            prop_oneof![10 => Just(Boom::No), 1 => Just(Boom::Before), 1 => Just(Boom::After)]
                .boxed()
        };
        (act, boom, pause(), any::<bool>(), any::<bool>()).prop_map(
            move |(act, boom, pause, blocking, handles_exc)| Layer {
                kind,
                act,
                boom,
                pause,
                blocking,
                handles_exc: kind == Kind::Hook && handles_exc,
            },
        )
    })
}

fn view_script() -> impl Strategy<Value = ViewScript> {
    (any::<bool>(), prop::bool::weighted(0.2), pause()).prop_map(|(sync, panics, pause)| {
        ViewScript {
            sync,
            panics,
            pause,
        }
    })
}

/// Status of a layer's own answers (distinct per layer and per hook).
fn short_status(i: usize) -> u16 {
    460 + i as u16
}
fn view_short_status(i: usize) -> u16 {
    470 + i as u16
}
fn exc_status(i: usize) -> u16 {
    480 + i as u16
}

const PANIC_BODY: &str = "internal server error\n";
const VIEW_HOOKS: &str = "process_view hooks";

// -------------------------------------------------------------- reference --

/// A response as the reference sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

#[derive(Clone, Debug)]
struct RefResp {
    out: Outcome,
    /// Where the panic was, if this is the panic handler's response.
    panic_at: Option<String>,
}

impl RefResp {
    fn new(status: u16, body: impl Into<String>) -> RefResp {
        RefResp {
            out: Outcome {
                status,
                headers: BTreeMap::new(),
                body: body.into(),
            },
            panic_at: None,
        }
    }
}

/// The layer panicked (the boundary around it answers).
struct Panicked;

/// The synchronous reference interpreter.
struct Reference<'a> {
    layers: &'a [Layer],
    view: ViewScript,
    events: Vec<String>,
}

impl Reference<'_> {
    fn run(layers: &[Layer], view: ViewScript) -> (Outcome, Vec<String>) {
        let mut r = Reference {
            layers,
            view,
            events: Vec::new(),
        };
        let resp = r.layer(0);
        (resp.out, r.events)
    }

    fn ev(&mut self, s: String) {
        self.events.push(s);
    }

    fn has_hooks(&self) -> bool {
        self.layers.iter().any(|l| l.kind == Kind::Hook)
    }

    /// Layer `i` (middleware, then the `process_view` stage if there are
    /// hooks, then the view) with its panic boundary.
    fn layer(&mut self, i: usize) -> RefResp {
        let n = self.layers.len();
        let (name, res) = if i < n {
            let res = if self.layers[i].kind == Kind::Hook {
                self.hook(i)
            } else {
                self.middleware(i)
            };
            (format!("m{i}"), res)
        } else if i == n && self.has_hooks() {
            (VIEW_HOOKS.to_owned(), self.view_hooks(i))
        } else {
            ("view".to_owned(), self.view())
        };
        res.unwrap_or_else(|Panicked| RefResp {
            out: Outcome {
                status: 500,
                headers: BTreeMap::new(),
                body: PANIC_BODY.to_owned(),
            },
            panic_at: Some(name),
        })
    }

    fn effects(&mut self, name: &str, pause: Pause, blocking: bool) {
        if pause != Pause::No {
            self.ev(format!("{name}.wait"));
        }
        if blocking {
            self.ev(format!("{name}.blk"));
        }
    }

    fn middleware(&mut self, i: usize) -> Result<RefResp, Panicked> {
        let l = self.layers[i];
        let name = format!("m{i}");
        self.ev(format!("{name}>"));
        self.effects(&name, l.pause, l.blocking);
        if l.boom == Boom::Before {
            self.ev(format!("{name}!"));
            return Err(Panicked);
        }
        let mut r = match l.act {
            Act::Short => RefResp::new(short_status(i), name.clone()),
            Act::Retry => {
                let first = self.layer(i + 1);
                self.ev(format!("{name}.retry:{}", first.out.status));
                self.layer(i + 1)
            }
            Act::Pass | Act::ShortView => self.layer(i + 1),
        };
        if l.boom == Boom::After {
            self.ev(format!("{name}!"));
            return Err(Panicked);
        }
        let status = r.out.status;
        r.out
            .headers
            .insert(format!("x-{name}"), status.to_string());
        self.ev(format!("<{name}:{status}"));
        Ok(r)
    }

    fn hook(&mut self, i: usize) -> Result<RefResp, Panicked> {
        let l = self.layers[i];
        let name = format!("m{i}");
        self.ev(format!("{name}.req"));
        self.effects(&name, l.pause, l.blocking);
        if l.boom == Boom::Before {
            self.ev(format!("{name}!"));
            return Err(Panicked);
        }
        let mut r = if l.act == Act::Short {
            RefResp::new(short_status(i), name.clone())
        } else {
            let mut r = self.layer(i + 1);
            if let Some(at) = r.panic_at.clone() {
                self.ev(format!("{name}.exc@{at}"));
                if l.handles_exc {
                    r = RefResp::new(exc_status(i), format!("{name}.exc"));
                }
            }
            r
        };
        let status = r.out.status;
        self.ev(format!("{name}.resp:{status}"));
        if l.boom == Boom::After {
            self.ev(format!("{name}!"));
            return Err(Panicked);
        }
        r.out
            .headers
            .insert(format!("x-{name}"), status.to_string());
        Ok(r)
    }

    fn view_hooks(&mut self, i: usize) -> Result<RefResp, Panicked> {
        for (j, l) in self.layers.iter().enumerate() {
            if l.kind != Kind::Hook {
                continue;
            }
            self.events.push(format!("m{j}.view"));
            if l.boom == Boom::InView {
                self.events.push(format!("m{j}!"));
                return Err(Panicked);
            }
            if l.act == Act::ShortView {
                return Ok(RefResp::new(view_short_status(j), format!("m{j}.view")));
            }
        }
        Ok(self.layer(i + 1))
    }

    fn view(&mut self) -> Result<RefResp, Panicked> {
        let v = self.view;
        self.ev("view>".to_owned());
        if v.pause != Pause::No {
            self.ev("view.wait".to_owned());
        }
        if v.panics {
            self.ev("view!".to_owned());
            return Err(Panicked);
        }
        Ok(RefResp::new(200, "view"))
    }
}

// ------------------------------------------------------- the real layers --

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, s: String) {
    log.lock().unwrap().push(s);
}

fn scripted_panic(name: &str, log: &Log) -> ! {
    push(log, format!("{name}!"));
    panic!("scripted panic in {name}");
}

/// Silences the panic hook for the scripted panics (there are hundreds);
/// any other panic (a failed assertion) is reported as usual.
fn quiet_scripted_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.starts_with("scripted panic") {
                default(info);
            }
        }));
    });
}

fn respond(status: u16, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

/// A fresh request with the same head (for a retry; the body is empty).
fn copy_req(req: &Request) -> Request {
    let mut r = http::Request::builder()
        .method(req.method().clone())
        .uri(req.uri().clone())
        .body(Body::empty())
        .unwrap();
    *r.headers_mut() = req.headers().clone();
    r
}

fn mark(resp: &mut Response, name: &str) -> u16 {
    let status = resp.status().as_u16();
    resp.headers_mut().insert(
        format!("x-{name}").parse::<http::HeaderName>().unwrap(),
        status.into(),
    );
    status
}

/// One scripted layer; the kind decides which trait wrapper it is added as.
struct Scripted {
    i: usize,
    name: String,
    l: Layer,
    log: Log,
}

impl Scripted {
    fn ev(&self, s: String) {
        push(&self.log, s);
    }

    /// `wait` and `blocking` from sync code (fiber, held thread or hop).
    fn sync_effects(&self) {
        match self.l.pause {
            Pause::No => {}
            Pause::Yield => wait(tokio::task::yield_now()),
            Pause::Timer => wait(tokio::time::sleep(Duration::from_millis(1))),
        }
        if self.l.pause != Pause::No {
            self.ev(format!("{}.wait", self.name));
        }
        if self.l.blocking {
            let (log, name) = (self.log.clone(), self.name.clone());
            blocking(move || push(&log, format!("{name}.blk")));
        }
    }

    async fn async_effects(&self) {
        match self.l.pause {
            Pause::No => {}
            Pause::Yield => tokio::task::yield_now().await,
            Pause::Timer => tokio::time::sleep(Duration::from_millis(1)).await,
        }
        if self.l.pause != Pause::No {
            self.ev(format!("{}.wait", self.name));
        }
        if self.l.blocking {
            let (log, name) = (self.log.clone(), self.name.clone());
            tokio::task::spawn_blocking(move || push(&log, format!("{name}.blk")))
                .await
                .unwrap();
        }
    }

    fn finish(&self, mut r: Response) -> Response {
        if self.l.boom == Boom::After {
            scripted_panic(&self.name, &self.log);
        }
        let status = mark(&mut r, &self.name);
        self.ev(format!("<{}:{status}", self.name));
        r
    }

    fn call_sync(&self, req: Request, next: &mut Next) -> Response {
        self.ev(format!("{}>", self.name));
        self.sync_effects();
        if self.l.boom == Boom::Before {
            scripted_panic(&self.name, &self.log);
        }
        let r = match self.l.act {
            Act::Short => respond(short_status(self.i), self.name.clone()),
            Act::Retry => {
                let again = copy_req(&req);
                let first = next.get_response(req);
                self.ev(format!("{}.retry:{}", self.name, first.status().as_u16()));
                drop(first);
                next.get_response(again)
            }
            Act::Pass | Act::ShortView => next.get_response(req),
        };
        self.finish(r)
    }

    async fn call_async(&self, req: Request, next: AsyncNext) -> Response {
        self.ev(format!("{}>", self.name));
        self.async_effects().await;
        if self.l.boom == Boom::Before {
            scripted_panic(&self.name, &self.log);
        }
        let r = match self.l.act {
            Act::Short => respond(short_status(self.i), self.name.clone()),
            Act::Retry => {
                let again = copy_req(&req);
                let first = next.run(req).await;
                self.ev(format!("{}.retry:{}", self.name, first.status().as_u16()));
                drop(first);
                next.run(again).await
            }
            Act::Pass | Act::ShortView => next.run(req).await,
        };
        self.finish(r)
    }
}

struct SyncMw(Scripted);
impl SyncMiddleware for SyncMw {
    fn call(&self, req: Request, next: &mut Next) -> Response {
        self.0.call_sync(req, next)
    }
    fn name(&self) -> &str {
        &self.0.name
    }
}

struct AsyncMw(Scripted);
impl AsyncMiddleware for AsyncMw {
    fn call<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(self.0.call_async(req, next))
    }
    fn name(&self) -> &str {
        &self.0.name
    }
}

struct HybridMw(Scripted);
impl Middleware for HybridMw {
    fn capabilities(&self) -> Capabilities {
        Capabilities::BOTH
    }
    fn call_sync(&self, req: Request, next: &mut Next) -> Response {
        self.0.call_sync(req, next)
    }
    fn call_async<'a>(&'a self, req: Request, next: AsyncNext) -> LocalBoxFuture<'a, Response> {
        Box::pin(self.0.call_async(req, next))
    }
    fn name(&self) -> &str {
        &self.0.name
    }
}

struct HookMw(Scripted);
impl HookMiddleware for HookMw {
    fn process_request(&self, _req: &mut Request) -> Option<Response> {
        let s = &self.0;
        s.ev(format!("{}.req", s.name));
        s.sync_effects();
        if s.l.boom == Boom::Before {
            scripted_panic(&s.name, &s.log);
        }
        (s.l.act == Act::Short).then(|| respond(short_status(s.i), s.name.clone()))
    }
    fn process_view(&self, _req: &mut Request) -> Option<Response> {
        let s = &self.0;
        s.ev(format!("{}.view", s.name));
        if s.l.boom == Boom::InView {
            scripted_panic(&s.name, &s.log);
        }
        (s.l.act == Act::ShortView)
            .then(|| respond(view_short_status(s.i), format!("{}.view", s.name)))
    }
    fn process_exception(&self, _head: &RequestHead, exc: &ExceptionInfo) -> Option<Response> {
        let s = &self.0;
        s.ev(format!("{}.exc@{}", s.name, exc.location));
        s.l.handles_exc
            .then(|| respond(exc_status(s.i), format!("{}.exc", s.name)))
    }
    fn process_response(&self, _head: &RequestHead, mut resp: Response) -> Response {
        let s = &self.0;
        let status = resp.status().as_u16();
        s.ev(format!("{}.resp:{status}", s.name));
        if s.l.boom == Boom::After {
            scripted_panic(&s.name, &s.log);
        }
        mark(&mut resp, &s.name);
        resp
    }
    fn name(&self) -> &str {
        &self.0.name
    }
}

fn build(
    mode: Mode,
    layers: &[Layer],
    view: ViewScript,
    log: &Log,
) -> Result<Pipeline, BuildError> {
    let mut b = Pipeline::builder().mode(mode);
    for (i, l) in layers.iter().enumerate() {
        let s = Scripted {
            i,
            name: format!("m{i}"),
            l: *l,
            log: log.clone(),
        };
        b = match l.kind {
            Kind::Sync => b.sync(SyncMw(s)),
            Kind::Async => b.layer_async(AsyncMw(s)),
            Kind::Hybrid => b.middleware(HybridMw(s)),
            Kind::Hook => b.hooks(HookMw(s)),
        };
    }
    let log = log.clone();
    if view.sync {
        b = b.sync_view(named("view", move |_req: Request| {
            push(&log, "view>".to_owned());
            match view.pause {
                Pause::No => {}
                Pause::Yield => wait(tokio::task::yield_now()),
                Pause::Timer => wait(tokio::time::sleep(Duration::from_millis(1))),
            }
            if view.pause != Pause::No {
                push(&log, "view.wait".to_owned());
            }
            if view.panics {
                scripted_panic("view", &log);
            }
            respond(200, "view".to_owned())
        }));
    } else {
        b = b.view(named("view", move |_req: Request| {
            let log = log.clone();
            async move {
                push(&log, "view>".to_owned());
                match view.pause {
                    Pause::No => {}
                    Pause::Yield => tokio::task::yield_now().await,
                    Pause::Timer => tokio::time::sleep(Duration::from_millis(1)).await,
                }
                if view.pause != Pause::No {
                    push(&log, "view.wait".to_owned());
                }
                if view.panics {
                    scripted_panic("view", &log);
                }
                respond(200, "view".to_owned())
            }
        }));
    }
    b.build()
}

fn outcome(resp: &Response) -> Outcome {
    Outcome {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect(),
        body: common::text(resp),
    }
}

const MODES: [Mode; 4] = [Mode::Suspend, Mode::Adapt, Mode::ThreadHop, Mode::Strict];

/// Runs the chain in every mode on `rt` and compares with the reference.
fn check(
    rt: &tokio::runtime::Runtime,
    layers: &[Layer],
    view: ViewScript,
) -> Result<(), TestCaseError> {
    let (want, want_events) = Reference::run(layers, view);
    let sync_names: Vec<String> = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| l.kind == Kind::Sync)
        .map(|(i, _)| format!("m{i}"))
        .collect();
    for mode in MODES {
        let log: Log = Arc::default();
        let pipeline = match build(mode, layers, view, &log) {
            Ok(p) => p,
            Err(BuildError::SyncInStrict { names }) if mode == Mode::Strict => {
                prop_assert_eq!(&names, &sync_names, "Strict must name the sync-only layers");
                continue;
            }
            Err(e) => return Err(TestCaseError::fail(format!("{mode:?}: build failed: {e}"))),
        };
        prop_assert!(
            mode != Mode::Strict || sync_names.is_empty(),
            "Strict accepted sync-only middleware {:?}",
            sync_names
        );
        let resp = rt.block_on(pipeline.handle(common::req("/")));
        let events = log.lock().unwrap().clone();
        prop_assert_eq!(
            &outcome(&resp),
            &want,
            "{:?}: response\nplan:\n{}",
            mode,
            pipeline.describe()
        );
        prop_assert_eq!(
            &events,
            &want_events,
            "{:?}: events\nplan:\n{}",
            mode,
            pipeline.describe()
        );
        let stats = pipeline.stack_stats();
        prop_assert!(
            stats.is_whole(),
            "{:?}: stack pool not whole: {:?}",
            mode,
            stats
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_chains_match_the_reference_in_every_mode(
        layers in prop::collection::vec(layer(), 1..=6),
        view in view_script(),
    ) {
        quiet_scripted_panics();
        let rt = common::rt();
        check(&rt, &layers, view)?;
    }
}

// ------------------------------------------ the reference, checked by hand --

fn l(kind: Kind, act: Act, boom: Boom) -> Layer {
    Layer {
        kind,
        act,
        boom,
        pause: Pause::No,
        blocking: false,
        handles_exc: false,
    }
}

/// The reference itself, on a chain whose answer is written out by hand
/// from the docs: a retrying sync layer around a hook, an async layer and a
/// panicking view.
#[test]
fn reference_agrees_with_a_hand_written_trace() {
    let layers = [
        l(Kind::Sync, Act::Retry, Boom::No),
        l(Kind::Hook, Act::Pass, Boom::No),
        l(Kind::Async, Act::Pass, Boom::No),
    ];
    let view = ViewScript {
        sync: true,
        panics: true,
        pause: Pause::No,
    };
    let (out, events) = Reference::run(&layers, view);
    let once = [
        "m1.req",
        "m2>",
        "m1.view",
        "view>",
        "view!",
        "<m2:500",
        "m1.exc@view",
        "m1.resp:500",
    ];
    let mut want = vec!["m0>"];
    want.extend(once);
    want.push("m0.retry:500");
    want.extend(once);
    want.push("<m0:500");
    assert_eq!(events, want);
    assert_eq!(out.status, 500);
    assert_eq!(out.body, PANIC_BODY);
    let headers: Vec<_> = out
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(headers, [("x-m0", "500"), ("x-m1", "500"), ("x-m2", "500")]);

    // And the crate agrees, in every mode (Strict refuses the sync layer).
    quiet_scripted_panics();
    check(&common::rt(), &layers, view).unwrap();
}
