//! Raw HTTP/1.1 over `TcpStream` on 127.0.0.1 for the server tests: every
//! read and write is bounded by a timeout, so a server that hangs makes the
//! test fail instead of waiting forever.

// Each test binary uses a part of these helpers.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long any single read or write may block before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A connected client with read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the test server");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// What the server sent until it closed the connection.
#[derive(Debug)]
pub enum Outcome {
    /// Bytes, then a clean close (FIN).
    Closed(String),
    /// Bytes, then a reset.
    Reset(String),
    /// Nothing more within [`IO_TIMEOUT`]: the server kept the connection.
    Hung(String),
}

impl Outcome {
    /// What arrived before the close.
    pub fn text(&self) -> &str {
        match self {
            Outcome::Closed(t) | Outcome::Reset(t) | Outcome::Hung(t) => t,
        }
    }

    /// The status code of the first response, if one arrived.
    pub fn status(&self) -> Option<u16> {
        self.text()
            .strip_prefix("HTTP/1.1 ")?
            .get(..3)?
            .parse()
            .ok()
    }
}

/// Reads until the server closes the connection (or [`IO_TIMEOUT`]).
pub fn read_to_close(s: &mut TcpStream) -> Outcome {
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Outcome::Closed(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Outcome::Hung(String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return Outcome::Reset(String::from_utf8_lossy(&got).into_owned()),
        }
    }
}

/// Sends `GET path` with `Connection: close` and returns the response.
pub fn get(addr: SocketAddr, path: &str) -> Outcome {
    let mut s = connect(addr);
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    read_to_close(&mut s)
}

/// Calls `cond` every few milliseconds until it holds; panics with `what`
/// after [`IO_TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
