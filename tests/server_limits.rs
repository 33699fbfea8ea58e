//! The server's limits against slow, chunky and numerous clients, driven
//! with raw HTTP/1.1 on 127.0.0.1. No test asserts a wall-clock time: a
//! server that fails to act leaves the client waiting, and the client's
//! read timeout turns that into a failure.

mod raw_http;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use raw_http::{connect, get, read_to_close, wait_until, Outcome};
use suspendware::server::{Server, ServerBuilder};
use suspendware::{Next, Pipeline, Request, Response};

fn echo_len_pipeline(views: Arc<AtomicUsize>) -> Pipeline {
    Pipeline::builder()
        .view(move |req: Request| {
            views.fetch_add(1, Ordering::SeqCst);
            async move { Response::new(format!("got {}", req.body().len()).into()) }
        })
        .build()
        .unwrap()
}

fn one_worker() -> ServerBuilder {
    Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(1)
}

#[test]
fn a_trickled_body_gets_408_and_the_connection_closes() {
    let views = Arc::new(AtomicUsize::new(0));
    let pipeline = echo_len_pipeline(views.clone());
    let server = one_worker()
        .body_read_timeout(Duration::from_millis(300))
        .serve(|_| pipeline.clone())
        .unwrap();
    let mut s = connect(server.local_addr());
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab"
    )
    .unwrap();
    // Keep trickling a byte every 50 ms: the deadline covers the whole
    // body, so a trickle does not extend it.
    let mut w = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..98 {
            std::thread::sleep(Duration::from_millis(50));
            if w.write_all(b"x").is_err() {
                return;
            }
        }
    });
    let out = read_to_close(&mut s);
    assert!(
        !matches!(out, Outcome::Hung(_)),
        "the connection is still open: {out:?}"
    );
    assert_eq!(out.status(), Some(408), "{out:?}");
    assert!(out.text().contains("connection: close"), "{out:?}");
    assert_eq!(views.load(Ordering::SeqCst), 0, "the pipeline never ran");
    trickle.join().unwrap();
    // A prompt body on a new connection is served.
    let mut s = connect(server.local_addr());
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"
    )
    .unwrap();
    let out = read_to_close(&mut s);
    assert!(out.text().ends_with("got 3"), "{out:?}");
    server.shutdown(Duration::from_secs(10));
}

/// Writes a chunked POST of `chunks` 1-byte chunks and returns the answer.
fn post_one_byte_chunks(server: &Server, chunks: usize) -> Outcome {
    let mut s = connect(server.local_addr());
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    // The server may answer (and close) before the last chunk: ignore
    // write errors, the answer says what happened.
    let _ = s.write_all(&b"1\r\nx\r\n".repeat(chunks));
    let _ = s.write_all(b"0\r\n\r\n");
    read_to_close(&mut s)
}

#[test]
fn a_body_in_too_many_chunks_gets_413() {
    let views = Arc::new(AtomicUsize::new(0));
    let pipeline = echo_len_pipeline(views.clone());
    let server = one_worker()
        .body_frame_limit(100)
        .serve(|_| pipeline.clone())
        .unwrap();
    let ok = post_one_byte_chunks(&server, 100);
    assert!(ok.text().ends_with("got 100"), "{ok:?}");
    let refused = post_one_byte_chunks(&server, 1000);
    assert_eq!(refused.status(), Some(413), "{refused:?}");
    assert!(
        refused.text().contains("more than 100 pieces"),
        "{refused:?}"
    );
    assert_eq!(
        views.load(Ordering::SeqCst),
        1,
        "the refused body never reached the view"
    );
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn over_max_connections_new_clients_get_503_at_once() {
    let pipeline = echo_len_pipeline(Arc::new(AtomicUsize::new(0)));
    let server = one_worker()
        .max_connections(2)
        .serve(|_| pipeline.clone())
        .unwrap();
    let addr = server.local_addr();
    // Two idle connections fill the server.
    let held: Vec<_> = (0..2).map(|_| connect(addr)).collect();
    wait_until("the server holds 2 connections", || {
        server.stats().connections == 2
    });
    // A third is answered and closed without sending anything: it cannot
    // wait for a slot that may never come.
    let mut third = connect(addr);
    let out = read_to_close(&mut third);
    assert!(
        !matches!(out, Outcome::Hung(_)),
        "the client was left waiting: {out:?}"
    );
    assert_eq!(out.status(), Some(503), "{out:?}");
    assert!(out.text().contains("connection: close"), "{out:?}");
    assert_eq!(server.stats().refused, 1);
    // A freed slot is used again.
    drop(held);
    wait_until("the idle connections are closed", || {
        server.stats().connections == 0
    });
    assert!(get(addr, "/").text().ends_with("got 0"));
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn zero_limits_are_refused_with_advice() {
    let pipeline = echo_len_pipeline(Arc::new(AtomicUsize::new(0)));
    let err = one_worker()
        .max_connections(0)
        .serve(|_| pipeline.clone())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("max_connections must be at least 1"),
        "{err}"
    );
}

/// With its only worker busy, 600 clients connect (the kernel queues
/// them); once the worker is free its accept loop takes all 600 in one
/// turn before serving any, instead of 128 per turn (tokio's task budget)
/// between rounds of serving.
#[test]
fn a_burst_queued_while_the_worker_is_busy_is_accepted_in_one_turn() {
    const N: usize = 600;
    let entered = Arc::new(AtomicUsize::new(0));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Arc::new(Mutex::new(release_rx));
    let entered_m = entered.clone();
    let pipeline = Pipeline::builder()
        .sync(move |req: Request, next: &mut Next| {
            if req.uri().path() == "/block" {
                entered_m.fetch_add(1, Ordering::SeqCst);
                // Deliberately block the worker thread (a bad middleware).
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(raw_http::IO_TIMEOUT);
            }
            next.get_response(req)
        })
        .view(|_req: Request| async { Response::new("ok".into()) })
        .build()
        .unwrap();
    let server = one_worker().serve(|_| pipeline.clone()).unwrap();
    let addr = server.local_addr();
    let blocker = std::thread::spawn(move || get(addr, "/block"));
    wait_until("the worker is blocked", || {
        entered.load(Ordering::SeqCst) == 1
    });
    let mut clients: Vec<_> = (0..N)
        .map(|_| {
            let mut s = connect(addr);
            write!(s, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            s
        })
        .collect();
    release_tx.send(()).unwrap();
    for s in &mut clients {
        let out = read_to_close(s);
        assert!(out.text().ends_with("ok"), "{out:?}");
    }
    assert!(blocker.join().unwrap().text().ends_with("ok"));
    let stats = server.stats();
    assert!(
        stats.largest_accept_batch >= N,
        "the queued burst was accepted in batches of {} (want all {N} in one turn)",
        stats.largest_accept_batch
    );
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn the_stats_name_a_layer_that_stalled_past_the_watchdog() {
    // One sync layer that blocks its thread far past a 5 ms watchdog
    // threshold before calling on (a `sleep` is not CPU wait, so the
    // watchdog counts it however busy the machine is).
    let pipeline = Pipeline::builder()
        .watchdog(Some(Duration::from_millis(5)))
        .sync(suspendware::named(
            "sleepy",
            |req: Request, next: &mut Next| -> Response {
                std::thread::sleep(Duration::from_millis(50));
                next.get_response(req)
            },
        ))
        .view(|_req: Request| async { Response::new("ok".into()) })
        .build()
        .unwrap();
    // Two workers share one pipeline: its stalls are counted once.
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(2)
        .serve(|_| pipeline.clone())
        .unwrap();
    assert!(server.stats().stalls.is_empty(), "no request yet");
    let out = get(server.local_addr(), "/");
    assert_eq!(out.status(), Some(200), "{}", out.text());
    let stats = server.stats();
    let sleepy = stats
        .stalls
        .iter()
        .find(|s| s.layer.contains("sleepy"))
        .unwrap_or_else(|| panic!("no stall of `sleepy` in {:?}", stats.stalls));
    assert_eq!(sleepy.count, 1, "one stall, counted once: {sleepy:?}");
    assert!(sleepy.worst <= sleepy.total, "{sleepy:?}");
    let report = server.shutdown(Duration::from_secs(5));
    assert_eq!(report.stats.stalls, stats.stalls, "the report keeps them");
}
