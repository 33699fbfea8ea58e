//! A fiber's context is never reachable once it starts dropping: a span
//! guard that outlives its fiber (kept in a thread-local) and a subscriber
//! that calls fiber APIs while closing spans see "no fiber", and dropping
//! that guard later on another fiber leaves that fiber's spans alone.
//!
//! One test in its own binary: it installs a thread-default subscriber.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use suspendware::{enter_span, Next, Pipeline, Request, RequestLocal, Response, SpanGuard};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

static WHO: RequestLocal<&'static str> = RequestLocal::new(|| "unset");

thread_local! {
    static KEPT: RefCell<Option<SpanGuard>> = const { RefCell::new(None) };
}

/// On every span close, asks which request (if any) is reachable; on every
/// event, records the name of the current span.
struct Probe(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Probe {
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let name = ctx.span(&id).map(|s| s.name()).unwrap_or("?");
        if name == "probe" {
            return;
        }
        let who = WHO.try_with(|w| *w).unwrap_or("no request");
        // A fiber API called from inside a close: must not touch a
        // half-dropped context.
        drop(enter_span(tracing::info_span!("probe")));
        self.0.lock().unwrap().push(format!("close {name}: {who}"));
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let span = ctx.lookup_current().map(|s| s.name()).unwrap_or("none");
        let _ = event;
        self.0.lock().unwrap().push(format!("event in {span}"));
    }
}

#[test]
fn a_span_guard_outliving_its_fiber_reaches_no_dropped_context() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sub = tracing_subscriber::registry().with(Probe(log.clone()));
    let _default = tracing::subscriber::set_default(sub);

    let first = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            WHO.set("first");
            // Kept past the end of this fiber.
            KEPT.with(|k| *k.borrow_mut() = Some(enter_span(tracing::info_span!("kept"))));
            next.get_response(req)
        })
        .view(|_req: Request| async { Response::new("1".into()) })
        .build()
        .unwrap();
    let second = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            WHO.set("second");
            let _g = enter_span(tracing::info_span!("own"));
            // The first request's guard, dropped on this fiber.
            KEPT.with(|k| k.borrow_mut().take());
            tracing::info!("after dropping the kept guard");
            next.get_response(req)
        })
        .view(|_req: Request| async { Response::new("2".into()) })
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(first.handle(Request::new(Default::default())));
    rt.block_on(second.handle(Request::new(Default::default())));

    let log = log.lock().unwrap().clone();
    let kept: Vec<_> = log.iter().filter(|l| l.starts_with("close kept")).collect();
    assert_eq!(kept, vec!["close kept: no request"], "{log:#?}");
    assert!(
        log.contains(&"event in own".to_owned()),
        "dropping another fiber's guard popped this fiber's span: {log:#?}"
    );
}
