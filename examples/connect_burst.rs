//! Opens many connections to a local server at once (one `GET` each) and
//! reports the answers and the kernel's listen-queue overflow counters
//! (`TcpExt ListenOverflows`/`ListenDrops` in `/proc/net/netstat`, which
//! count for the whole network namespace). Loopback only.
//!
//! ```text
//! cargo run --release --example connect_burst -- --addr 127.0.0.1:8000 -c 10000
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
#[command(about = "A burst of connections to a loopback server")]
struct Args {
    /// Server address (must be on 127.0.0.0/8).
    #[arg(long)]
    addr: SocketAddr,
    /// Connections opened at once.
    #[arg(short = 'c', default_value_t = 10_000)]
    connections: usize,
    /// Seconds each connection may take in all before it counts as failed.
    #[arg(long, default_value_t = 60)]
    timeout_s: u64,
}

/// `(ListenOverflows, ListenDrops)`.
fn listen_overflows() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let lines: Vec<_> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (names, values) = (lines.first()?, lines.get(1)?);
    let map: BTreeMap<_, _> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .collect();
    Some((
        map.get("ListenOverflows")?.parse().ok()?,
        map.get("ListenDrops")?.parse().ok()?,
    ))
}

async fn one(addr: SocketAddr) -> String {
    let mut s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return format!("connect: {}", e.kind()),
    };
    if let Err(e) = s
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
    {
        return format!("write: {}", e.kind());
    }
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf).await {
        Ok(_) if buf.starts_with(b"HTTP/1.1 ") => String::from_utf8_lossy(&buf[9..12]).into(),
        Ok(_) => "closed".into(),
        Err(e) => format!("read: {}", e.kind()),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.addr.ip().is_loopback(), "loopback addresses only");
    let before = listen_overflows();
    let started = Instant::now();
    let limit = Duration::from_secs(args.timeout_s);
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(async move {
                let t0 = Instant::now();
                let r = tokio::time::timeout(limit, one(args.addr)).await;
                (r.unwrap_or_else(|_| "timeout".into()), t0.elapsed())
            })
        })
        .collect();
    let mut answers = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (a, took) = t.await.unwrap();
        *answers.entry(a).or_insert(0usize) += 1;
        slowest = slowest.max(took);
    }
    let after = listen_overflows();
    let delta = before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1));
    println!(
        "burst: {} connections at once: answers {answers:?}, slowest {:.2} s, wall {:.2} s, \
         TcpExt ListenOverflows/ListenDrops delta {delta:?}",
        args.connections,
        slowest.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
