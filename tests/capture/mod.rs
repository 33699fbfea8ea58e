//! Captures `tracing` output of a closure as text.
//!
//! One global subscriber per test binary (installed on first use) writes
//! each event into the buffer of the thread that emitted it, if that thread
//! is capturing. A global subscriber avoids the callsite-interest races of
//! per-thread `with_default` subscribers when tests run in parallel.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Once;

thread_local! {
    static BUF: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

pub struct ThreadBuf;

impl Write for ThreadBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        BUF.with(|buf| {
            if let Some(v) = buf.borrow_mut().as_mut() {
                v.extend_from_slice(b);
            }
        });
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let sub = tracing_subscriber::fmt()
            .with_writer(|| ThreadBuf)
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::set_global_default(sub).expect("no other global subscriber");
    });
}

/// Runs `f`, returning what `tracing` printed on this thread meanwhile.
#[allow(dead_code)]
pub fn capture<R>(f: impl FnOnce() -> R) -> (String, R) {
    install();
    BUF.with(|b| *b.borrow_mut() = Some(Vec::new()));
    let r = f();
    let out = BUF.with(|b| b.borrow_mut().take().unwrap_or_default());
    (String::from_utf8_lossy(&out).into_owned(), r)
}
