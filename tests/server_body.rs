//! A request body sent as 1-byte chunks costs about its size, not 40 times
//! it. Alone in its binary: it measures the process's peak RSS (the server
//! runs in this process), which other tests would disturb.

mod raw_http;

use std::io::Write;
use std::time::Duration;

use raw_http::{connect, read_to_close};
use suspendware::server::Server;
use suspendware::{Pipeline, Request, Response};

/// `VmHWM` (peak resident set) or `VmRSS` of this process, in bytes.
fn status_kib(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        * 1024
}

/// Resets `VmHWM` to the current RSS (Linux >= 4.0); false if not allowed.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[test]
fn one_byte_chunks_cost_at_most_a_few_times_the_body() {
    const BODY: usize = 2_621_440; // DEFAULT_BODY_LIMIT, 2.5 MiB
    let pipeline = Pipeline::builder()
        .view(|req: Request| async move {
            Response::new(format!("got {}", req.body().as_bytes().len()).into())
        })
        .build()
        .unwrap();
    let server = Server::builder()
        .addr(([127, 0, 0, 1], 0).into())
        .workers(1)
        // Measure the buffer alone: the frame limit would refuse this body.
        .body_frame_limit(BODY + 1)
        .serve(|_| pipeline.clone())
        .unwrap();
    // Warm up: the worker's first request allocates its fiber stack etc.
    let warm = raw_http::get(server.local_addr(), "/");
    assert_eq!(warm.status(), Some(200), "{warm:?}");

    let reset = reset_peak_rss();
    let before = status_kib(if reset { "VmHWM:" } else { "VmRSS:" });
    let mut s = connect(server.local_addr());
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    // 1-byte chunks, written in 60 KiB blocks (the client holds little).
    let block: Vec<u8> = b"1\r\nx\r\n".repeat(10_240);
    for _ in 0..BODY / 10_240 {
        s.write_all(&block).unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let out = read_to_close(&mut s);
    assert!(
        out.text().ends_with(&format!("got {BODY}")),
        "the whole body reached the view: {out:?}"
    );
    let grew = status_kib("VmHWM:").saturating_sub(before);
    server.shutdown(Duration::from_secs(10));
    // One body buffer (at most 2x, plus its copy while it grows) and
    // hyper's read buffer. Keeping one `Bytes` per frame cost ~100 MB.
    assert!(
        grew <= 4 * BODY + (4 << 20),
        "peak RSS grew by {} KiB for a {} KiB body (reset of VmHWM: {reset})",
        grew / 1024,
        BODY / 1024
    );
    eprintln!(
        "peak RSS grew by {} KiB for a {} KiB body in 1-byte chunks",
        grew / 1024,
        BODY / 1024
    );
}
