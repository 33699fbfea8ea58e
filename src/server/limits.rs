//! Default limits of a server, derived from the process's own limits.

use std::time::Duration;

/// Default [`crate::server::ServerBuilder::body_read_timeout`]: the whole body must
/// arrive within 30 s of the request head (like the head's own timeout).
pub(crate) const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`crate::server::ServerBuilder::header_read_timeout`].
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for how long a response write may make no progress.
pub(crate) const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest timeout the builder takes: a year, far past any real use,
/// and far from the `Instant` overflow (hyper adds the header timeout to
/// `Instant::now()`, which panics for `Duration::MAX`).
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default [`crate::server::ServerBuilder::body_frame_limit`]: a 2.5 MiB body may
/// arrive in pieces of 40 bytes on average; 1-byte chunks are cut off after
/// 64 KiB (about 30 ms of CPU) instead of costing a second per body.
pub(crate) const DEFAULT_BODY_FRAME_LIMIT: usize = 65_536;

/// Used when `RLIMIT_NOFILE` cannot be read (not Linux): the common soft
/// limit of 1024.
const FALLBACK_OPEN_FILES: u64 = 1024;

/// Largest listen backlog asked for by default (the kernel caps it at
/// `net.core.somaxconn` anyway).
const MAX_DEFAULT_BACKLOG: usize = 65_535;

/// The soft `RLIMIT_NOFILE` of this process, read from `/proc/self/limits`
/// (Linux; `None` elsewhere or when unlimited).
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  <soft>  <hard>  files"
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Default [`crate::server::ServerBuilder::max_connections`]: the open-files limit
/// less a tenth (at least 64) for the pipeline's own files (logs, database
/// sockets, files it reads), never below 16.
pub(crate) fn default_max_connections() -> usize {
    max_connections_for(open_files_limit().unwrap_or(FALLBACK_OPEN_FILES))
}

fn max_connections_for(open_files: u64) -> usize {
    let headroom = (open_files / 10).max(64);
    let n = open_files.saturating_sub(headroom).max(16);
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Default listen backlog of each worker's socket: room for a burst of as
/// many connections as the server may hold (`max_connections`), up to
/// 65,535. The kernel caps it at `net.core.somaxconn`.
pub(crate) fn default_backlog(max_connections: usize) -> i32 {
    let n = max_connections.clamp(128, MAX_DEFAULT_BACKLOG);
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `net.core.somaxconn` (Linux), the cap on every listen backlog.
pub(crate) fn somaxconn() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_soft_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63704                63704                processes \n\
                      Max open files            20000                40000                files     \n";
        assert_eq!(parse_open_files(limits), Some(20_000));
        assert_eq!(
            parse_open_files("Max open files unlimited unlimited files"),
            None
        );
    }

    #[test]
    fn max_connections_leaves_headroom() {
        assert_eq!(max_connections_for(20_000), 18_000);
        assert_eq!(max_connections_for(1024), 922);
        assert_eq!(max_connections_for(100), 36);
        assert_eq!(max_connections_for(10), 16);
    }

    #[test]
    fn backlog_follows_the_cap() {
        assert_eq!(default_backlog(18_000), 18_000);
        assert_eq!(default_backlog(10), 128);
        assert_eq!(default_backlog(1 << 20), 65_535);
    }
}
