//! The library's own background threads (the watchdog's ticker, the stack
//! trimmer): spawned, and known to be running, before the caller goes on.
//!
//! A new thread starts under its creator's name: std names it from inside
//! the new thread, as the thread's first step. Returning before that step
//! would let whoever lists the process's threads right after building a
//! pipeline (a monitoring agent, a test comparing thread counts) see a
//! thread that still carries the creator's name and renames itself a moment
//! later. Waiting for the thread's first instruction costs one thread
//! start-up, once per process per service.

use std::io;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

/// Spawns `f` on a thread named `name` (with a `stack_size`-byte stack, or
/// std's default) and returns once it runs under its own name.
pub(crate) fn spawn<F>(name: &str, stack_size: Option<usize>, f: F) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let (started, running) = mpsc::sync_channel::<()>(1);
    let mut builder = thread::Builder::new().name(name.to_owned());
    if let Some(size) = stack_size {
        builder = builder.stack_size(size);
    }
    let handle = builder.spawn(move || {
        // The receiver may be gone only if the spawner itself unwound.
        let _ = started.send(());
        f();
    })?;
    // `Err` only if the thread died before its first step, which std's
    // thread start does not do short of an abort; the thread exists either
    // way.
    let _ = running.recv();
    Ok(handle)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::mpsc;

    /// Threads of this process whose name is `name`.
    fn named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    #[test]
    fn the_thread_carries_its_name_when_spawn_returns() {
        // Several spawns: without the wait, one check or another lands
        // before the new thread has renamed itself.
        for i in 0..10 {
            let name = format!("sw-test-svc{i}");
            let (stop, stopped) = mpsc::channel::<()>();
            let h = super::spawn(&name, Some(64 * 1024), move || {
                let _ = stopped.recv();
            })
            .expect("spawn");
            // No polling: the name must be there already.
            assert_eq!(named(&name), 1, "thread {name} not named yet");
            drop(stop);
            h.join().expect("service thread");
        }
    }
}
