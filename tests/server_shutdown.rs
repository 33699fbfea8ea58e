//! What shutdown does to connections that have no request in the
//! pipeline, driven with raw HTTP/1.1 on 127.0.0.1. The grace is 600 s and
//! no test asserts a wall-clock time: a connection shutdown waits for
//! leaves its client reading until the client's timeout, a failure.

mod raw_http;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use raw_http::{connect, read_to_close, wait_until, Outcome, IO_TIMEOUT};
use suspendware::server::Server;
use suspendware::{Pipeline, Request, Response};

#[test]
fn shutdown_closes_half_sent_requests_at_once_and_drains_the_one_in_the_pipeline() {
    let entered = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let entered_v = entered.clone();
    let pipeline = Pipeline::builder()
        .view(move |_req: Request| {
            let (entered, mut gate) = (entered_v.clone(), gate_rx.clone());
            async move {
                entered.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                Response::new("finished".into())
            }
        })
        .build()
        .unwrap();
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(1)
        // Neither timeout may be what closes the half-sent requests.
        .header_read_timeout(Duration::from_secs(600))
        .body_read_timeout(Duration::from_secs(600))
        .serve(|_| pipeline.clone())
        .unwrap();
    let addr = server.local_addr();

    // One request in the pipeline.
    let mut in_flight = connect(addr);
    write!(
        in_flight,
        "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    wait_until("the request is in the view", || {
        entered.load(Ordering::SeqCst) == 1
    });
    // A half-sent head, and a head whose body is half-sent.
    let mut half_head = connect(addr);
    half_head.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut half_body = connect(addr);
    half_body
        .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
        .unwrap();
    wait_until("the server holds 3 connections", || {
        server.stats().connections == 3
    });

    let (report_tx, report_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = report_tx.send(server.shutdown(Duration::from_secs(600)));
    });
    // Both half-sent requests are closed while the view still holds the
    // first request: they did not wait for it, nor for the grace.
    for (what, s) in [
        ("half-sent head", &mut half_head),
        ("half-sent body", &mut half_body),
    ] {
        let out = read_to_close(s);
        assert!(
            matches!(out, Outcome::Closed(_) | Outcome::Reset(_)),
            "the {what} kept its connection during shutdown: {out:?}"
        );
    }
    assert_eq!(entered.load(Ordering::SeqCst), 1);
    gate_tx.send(true).unwrap();
    let out = read_to_close(&mut in_flight);
    assert_eq!(out.status(), Some(200), "{out:?}");
    assert!(out.text().ends_with("finished"), "{out:?}");

    let report = report_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("shutdown finished once the request in the pipeline did");
    assert_eq!(report.stats.closed_at_shutdown, 2, "{report:?}");
    assert_eq!(report.stats.drained_at_shutdown, 1, "{report:?}");
    assert_eq!(report.stats.served, 1, "{report:?}");
    assert_eq!(
        report.runtime.cancelled, 0,
        "nothing waited for the deadline"
    );
    assert_eq!(report.stats.connections, 0);
}

#[test]
fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let pipeline = Pipeline::builder()
        .view(|_req: Request| async { Response::new("hi".into()) })
        .build()
        .unwrap();
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(1)
        .serve(|_| pipeline.clone())
        .unwrap();
    let addr = server.local_addr();
    let mut idle: Vec<_> = (0..5)
        .map(|_| {
            let mut s = connect(addr);
            // One keep-alive request, answered, then idle.
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let mut buf = [0u8; 256];
            let mut got = Vec::new();
            while !got.ends_with(b"hi") {
                let n = std::io::Read::read(&mut s, &mut buf).unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&buf[..n]);
            }
            s
        })
        .collect();
    let (report_tx, report_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = report_tx.send(server.shutdown(Duration::from_secs(600)));
    });
    for s in &mut idle {
        let out = read_to_close(s);
        assert!(!matches!(out, Outcome::Hung(_)), "{out:?}");
    }
    let report = report_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("shutdown finished");
    assert_eq!(report.stats.closed_at_shutdown, 5, "{report:?}");
    assert_eq!(report.stats.served, 5);
    assert_eq!(report.runtime.cancelled, 0);
}
