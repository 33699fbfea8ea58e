//! The thread-per-core runtime: dispatch, placement, panics, cancellation
//! and graceful shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use http::StatusCode;
use suspendware::runtime::{worker_index, Dispatch, DispatchError, Runtime, RuntimeError};
use suspendware::{Next, Pipeline, Request, Response};

const LONG: Duration = Duration::from_secs(20);

fn ok_view() -> impl suspendware::View {
    |_req: Request| async { Response::new("ok".into()) }
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Increments a counter when dropped (proves a fiber's frames unwound).
struct DropMark(Arc<AtomicUsize>);
impl Drop for DropMark {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dispatch_future_is_send_and_answers_on_a_multi_thread_runtime() {
    fn assert_send<T: Send>(_: &T) {}
    let pipeline = Pipeline::builder().view(ok_view()).build().unwrap();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let handle = runtime.handle();
    let fut: Dispatch<Response> = handle.dispatch(&pipeline, Request::default());
    assert_send(&fut);
    let resp = multi_thread()
        .block_on(async move { tokio::spawn(fut).await.unwrap() })
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.body().as_bytes(), b"ok");
    assert_eq!(runtime.shutdown(LONG).cancelled, 0);
}

#[test]
fn a_fiber_stays_on_its_worker_across_suspension() {
    // The middleware records (worker, thread) before and after the view
    // suspends it; both must match and be a runtime worker.
    let pipeline = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            let before = (worker_index(), std::thread::current().id());
            let mut resp = next.get_response(req);
            let after = (worker_index(), std::thread::current().id());
            let same = before == after && before.0.is_some();
            resp.headers_mut()
                .insert("x-same-thread", same.to_string().parse().unwrap());
            resp
        })
        .view(|_req: Request| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Response::default()
        })
        .build()
        .unwrap();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let handle = runtime.handle();
    let resps = multi_thread().block_on(async move {
        let tasks: Vec<_> = (0..50)
            .map(|_| tokio::spawn(handle.dispatch(&pipeline, Request::default())))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap());
        }
        out
    });
    assert_eq!(resps.len(), 50);
    for r in resps {
        assert_eq!(r.headers()["x-same-thread"], "true");
    }
    assert!(worker_index().is_none(), "the test thread is no worker");
    runtime.shutdown(LONG);
}

#[test]
fn dispatch_picks_the_least_loaded_worker() {
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let handle = runtime.handle();
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let (where_tx, where_rx) = mpsc::channel();
    // Four held jobs: each goes to the worker with fewer in flight.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let mut gate = gate_rx.clone();
            let where_tx = where_tx.clone();
            handle.run(move || async move {
                where_tx.send(worker_index().unwrap()).unwrap();
                let _ = gate.wait_for(|open| *open).await;
            })
        })
        .collect();
    let mut placed = [0usize; 2];
    for _ in 0..4 {
        placed[where_rx.recv_timeout(LONG).unwrap()] += 1;
    }
    assert_eq!(placed, [2, 2], "held jobs must be spread evenly");
    assert_eq!((handle.in_flight(0), handle.in_flight(1)), (2, 2));
    gate_tx.send(true).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for h in held {
        rt.block_on(h).unwrap();
    }
    assert_eq!((handle.in_flight(0), handle.in_flight(1)), (0, 0));
    runtime.shutdown(LONG);
}

#[test]
fn a_worker_whose_middleware_panics_keeps_serving() {
    let pipeline = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| {
            if req.headers().contains_key("x-panic") {
                panic!("middleware blew up");
            }
            next.get_response(req)
        })
        .view(ok_view())
        .build()
        .unwrap();
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let handle = runtime.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bad = http::Request::builder()
            .header("x-panic", "1")
            .body(Default::default())
            .unwrap();
        let resp = handle.dispatch(&pipeline, bad).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let resp = handle
            .dispatch(&pipeline, Request::default())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);

        // Work that panics outside any pipeline is reported, and the same
        // (only) worker still runs the next job.
        let err = handle
            .run(|| async { panic!("job blew up") })
            .await
            .unwrap_err();
        assert_eq!(
            err,
            DispatchError::Panicked {
                message: "job blew up".into()
            }
        );
        let err = handle
            .run(|| -> std::future::Ready<()> { panic!("factory blew up") })
            .await
            .unwrap_err();
        assert!(matches!(err, DispatchError::Panicked { .. }), "{err:?}");
        assert_eq!(handle.run(|| async { 7 }).await, Ok(7));
    });
    assert_eq!(runtime.shutdown(LONG).worker_panics, 0);
}

#[test]
fn shutdown_lets_requests_in_flight_finish() {
    let finished = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let done = finished.clone();
    let pipeline = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            entered_tx.lock().unwrap().send(()).unwrap();
            let resp = next.get_response(req);
            done.fetch_add(1, Ordering::SeqCst);
            resp
        })
        .view(move |_req: Request| {
            let mut gate = gate_rx.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Response::new("finished".into())
            }
        })
        .build()
        .unwrap();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let handle = runtime.handle();
    let mt = multi_thread();
    let tasks: Vec<_> = (0..20)
        .map(|_| mt.spawn(handle.dispatch(&pipeline, Request::default())))
        .collect();
    for _ in 0..20 {
        entered_rx.recv_timeout(LONG).unwrap();
    }

    let stopper = std::thread::spawn(move || runtime.shutdown(LONG));
    while !handle.is_stopping() {
        std::thread::yield_now();
    }
    let refused = mt.block_on(handle.dispatch(&pipeline, Request::default()));
    assert_eq!(refused.unwrap_err(), DispatchError::ShuttingDown);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the gate is still closed"
    );

    gate_tx.send(true).unwrap();
    for t in tasks {
        let resp = mt
            .block_on(t)
            .unwrap()
            .expect("in-flight request must complete during shutdown");
        assert_eq!(resp.body().as_bytes(), b"finished");
    }
    let report = stopper.join().unwrap();
    assert_eq!(report.cancelled, 0);
    assert_eq!(finished.load(Ordering::SeqCst), 20);
}

#[test]
fn shutdown_deadline_cancels_the_rest_and_unwinds_their_fibers() {
    let unwound = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let entered_tx = std::sync::Mutex::new(entered_tx);
    let marks = unwound.clone();
    let pipeline = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            let _mark = DropMark(marks.clone());
            entered_tx.lock().unwrap().send(()).unwrap();
            next.get_response(req)
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let runtime = Runtime::builder().workers(2).build().unwrap();
    let handle = runtime.handle();
    let mt = multi_thread();
    let tasks: Vec<_> = (0..5)
        .map(|_| mt.spawn(handle.dispatch(&pipeline, Request::default())))
        .collect();
    for _ in 0..5 {
        entered_rx.recv_timeout(LONG).unwrap();
    }
    let report = runtime.shutdown(Duration::from_millis(50));
    assert_eq!(report.cancelled, 5);
    for t in tasks {
        assert_eq!(mt.block_on(t).unwrap().unwrap_err(), DispatchError::Aborted);
    }
    assert_eq!(
        unwound.load(Ordering::SeqCst),
        5,
        "every suspended middleware frame must be dropped"
    );
    assert_eq!(pipeline.stack_stats().in_use, 0);
}

#[test]
fn dropping_the_dispatch_future_cancels_the_request_on_its_worker() {
    let unwound = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (dropped_tx, dropped_rx) = mpsc::channel::<()>();
    let (entered_tx, dropped_tx) = (
        std::sync::Mutex::new(entered_tx),
        std::sync::Mutex::new(dropped_tx),
    );
    let marks = unwound.clone();
    let pipeline = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            struct Signal<'a> {
                tx: &'a std::sync::Mutex<mpsc::Sender<()>>,
                _mark: DropMark,
            }
            impl Drop for Signal<'_> {
                fn drop(&mut self) {
                    let _ = self.tx.lock().unwrap().send(());
                }
            }
            let _signal = Signal {
                tx: &dropped_tx,
                _mark: DropMark(marks.clone()),
            };
            entered_tx.lock().unwrap().send(()).unwrap();
            next.get_response(req)
        })
        .view(|_req: Request| std::future::pending::<Response>())
        .build()
        .unwrap();
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let handle = runtime.handle();
    let fut = handle.dispatch(&pipeline, Request::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The job is sent when `dispatch` returns; wait for the middleware to
    // be suspended in the view, then drop the (never polled) future.
    entered_rx.recv_timeout(LONG).unwrap();
    drop(fut);
    dropped_rx
        .recv_timeout(LONG)
        .expect("the suspended middleware must be unwound");
    // The worker serves the next job, and (an answer comes after its own
    // in-flight mark is gone) nothing else is in flight on it.
    assert_eq!(rt.block_on(handle.run(|| async { 1 })), Ok(1));
    assert_eq!(handle.in_flight(0), 0);
    assert_eq!(unwound.load(Ordering::SeqCst), 1);
    assert_eq!(pipeline.stack_stats().in_use, 0);
    let report = runtime.shutdown(LONG);
    assert_eq!(report.cancelled, 0);
}

#[test]
fn bad_configurations_are_typed_errors() {
    assert!(matches!(
        Runtime::builder().workers(0).build(),
        Err(RuntimeError::NoWorkers)
    ));
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let err = rt
        .block_on(runtime.handle().run_on(3, || async {}))
        .unwrap_err();
    assert_eq!(
        err,
        DispatchError::NoSuchWorker {
            index: 3,
            workers: 1
        }
    );
    assert!(err.to_string().contains("indices 0..1"), "{err}");
    drop(runtime); // drop without shutdown stops and joins
}

/// Prints what a cross-thread dispatch costs (run with `--nocapture`); the
/// benches hold the real measurement. Asserts only that all work completed.
#[test]
fn dispatch_cost_report() {
    const N: u32 = 20_000;
    let runtime = Runtime::builder().workers(1).build().unwrap();
    let handle = runtime.handle();
    let pipeline = Pipeline::builder()
        .sync(|req: Request, next: &mut Next| next.get_response(req))
        .view(ok_view())
        .build()
        .unwrap();
    let mt = multi_thread();
    let (p, h) = (pipeline.clone(), handle.clone());
    let (empty, dispatched, concurrent) = mt.block_on(async move {
        let t = Instant::now();
        for i in 0..N {
            assert_eq!(h.run(move || async move { i }).await, Ok(i));
        }
        let empty = t.elapsed() / N;
        let t = Instant::now();
        for _ in 0..N {
            let resp = h.dispatch(&p, Request::default()).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
        let dispatched = t.elapsed() / N;
        // 64 callers at once: the worker's queue stays non-empty, so wake-ups
        // are amortised.
        let t = Instant::now();
        let callers: Vec<_> = (0..64)
            .map(|_| {
                let (h, p) = (h.clone(), p.clone());
                tokio::spawn(async move {
                    for _ in 0..N / 64 {
                        let resp = h.dispatch(&p, Request::default()).await.unwrap();
                        assert_eq!(resp.status(), StatusCode::OK);
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        (empty, dispatched, t.elapsed() / (N / 64 * 64))
    });
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let inline = local.block_on(async {
        let t = Instant::now();
        for _ in 0..N {
            assert_eq!(
                pipeline.handle(Request::default()).await.status(),
                StatusCode::OK
            );
        }
        t.elapsed() / N
    });
    println!(
        "dispatch cost ({N} sequential round trips, debug={}): empty job {empty:?}, \
         pipeline via runtime {dispatched:?} \
         ({concurrent:?} per request with 64 concurrent callers), same pipeline inline on the caller's thread {inline:?}",
        cfg!(debug_assertions)
    );
    runtime.shutdown(LONG);
}
