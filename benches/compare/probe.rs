//! Reading the process's own counters from /proc, and a sampler thread that
//! tracks their peaks during a run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A field of /proc/self/status, e.g. `Threads` or `VmHWM` (kB values are
/// returned in KiB).
pub fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// User + system CPU time of the whole process so far.
pub fn cpu_time() -> Duration {
    stat_cpu("/proc/self/stat")
}

/// User + system CPU time of the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    stat_cpu("/proc/thread-self/stat")
}

fn stat_cpu(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the parenthesised command name come field 3 (state) onwards;
    // utime and stime are fields 14 and 15, i.e. indices 11 and 12 here.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    // USER_HZ is 100 on every Linux ABI that matters here.
    Duration::from_millis(ticks * 10)
}

/// Peaks seen by the sampler.
#[derive(Clone, Copy, Debug, Default)]
pub struct Peaks {
    /// Most OS threads at once (the sampler thread excluded).
    pub threads: u64,
    /// Largest sampled VmRSS, KiB.
    pub rss_kib: u64,
    /// Most fiber stacks in use at once (pipeline modes).
    pub stacks_in_use: u64,
    /// Most requests waiting for a stack at once.
    pub stack_waiters: u64,
    /// CPU time the sampler itself used (to subtract from the process's).
    pub own_cpu: Duration,
}

/// Something the sampler can ask for stack counters: `(in_use, waiting)`.
pub type StackProbe = Box<dyn Fn() -> (usize, usize) + Send>;

/// A thread that samples the counters every `every` until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peaks>,
}

impl Sampler {
    /// Starts sampling.
    pub fn start(every: Duration, stacks: Option<StackProbe>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let mut p = Peaks::default();
                loop {
                    let done = flag.load(Ordering::Acquire);
                    p.threads = p.threads.max(status_field("Threads").saturating_sub(1));
                    p.rss_kib = p.rss_kib.max(status_field("VmRSS"));
                    if let Some(probe) = &stacks {
                        let (in_use, waiting) = probe();
                        p.stacks_in_use = p.stacks_in_use.max(in_use as u64);
                        p.stack_waiters = p.stack_waiters.max(waiting as u64);
                    }
                    if done {
                        p.own_cpu = thread_cpu_time();
                        return p;
                    }
                    std::thread::sleep(every);
                }
            })
            .expect("spawn sampler thread");
        Sampler { stop, thread }
    }

    /// Stops the sampler after one last sample and returns the peaks.
    pub fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("sampler thread panicked")
    }
}
