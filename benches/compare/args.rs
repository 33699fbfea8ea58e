//! Command-line options of the comparison harness.

use std::path::PathBuf;

use crate::modes::Mode;

pub const USAGE: &str = "\
usage: cargo bench --bench compare -- [options]
  --quick            short form: N=100,1000,10000, 0.3 s per cell, 1 run (about half a minute)
  --n LIST           concurrent requests, comma-separated (default 100,1000,10000,30000)
  --d LIST           view delays in ms, comma-separated; 0 = yield once (default 0,20)
  --modes LIST       modes to run (default suspend,tower,stackful,block_in_place,threads,
                     suspendware_async,adapt,thread_hop; thread_hold = a hand-made
                     spawn_blocking chain, a cross-check of adapt; native_async = old
                     name of suspendware_async)
  --repeats R        runs of every cell; medians are reported (default 3; 1 with --quick)
  --secs S           load duration of one cell, seconds (default 1.0)
  --k K              sync middleware layers (default 5)
  --stack-kib S      fiber stack size in KiB (default: the library's, 256)
  --blocking-ms B    the blocking workload (issue 10): the middle of K sync layers
                     sleeps B ms before and after get_response; without --modes runs
                     blk_inline,blk_blocking,blk_threads64,blk_on_thread,blk_adapt
                     (blk_threads512, blocking_threads(512), on request; the
                     blk_* modes use B=1 when it is not given)
  --gap              each client yields to the executor once between a response and its next
                     request, as a server connection does (its next request arrives later,
                     through the socket): requests of different clients interleave instead of
                     the next one starting in the poll that ended the last
  --replot           run nothing: redraw the tables and compare.svg from <out>/runs.csv
  --out DIR          output directory (default <target>/compare)";

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub ns: Vec<usize>,
    pub ds: Vec<u64>,
    pub modes: Vec<Mode>,
    pub repeats: usize,
    pub secs: f64,
    pub k: usize,
    pub stack_kib: usize,
    pub blocking_ms: u64,
    /// `--gap`: a yield between a client's response and its next request.
    pub gap: bool,
    pub out: PathBuf,
    pub quick: bool,
    pub replot: bool,
}

fn list<T: std::str::FromStr>(flag: &str, v: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| format!("{flag}: cannot parse {s:?}"))
        })
        .collect()
}

impl Options {
    /// Parses the arguments after the binary name (cargo's `--bench` flag
    /// already removed).
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = Options {
            ns: if quick {
                vec![100, 1_000, 10_000]
            } else {
                vec![100, 1_000, 10_000, 30_000]
            },
            ds: vec![0, 20],
            modes: Mode::DEFAULT.to_vec(),
            repeats: if quick { 1 } else { 3 },
            secs: if quick { 0.3 } else { 1.0 },
            k: 5,
            stack_kib: 0,
            blocking_ms: 1,
            gap: false,
            out: default_out(),
            quick,
            replot: false,
        };
        let mut modes_given = false;
        let mut blocking_given = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--quick" {
                continue;
            }
            if a == "--gap" {
                o.gap = true;
                continue;
            }
            if a == "--replot" {
                o.replot = true;
                continue;
            }
            if a == "--help" || a == "-h" {
                return Err(String::new());
            }
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--n" => o.ns = list(a, &value()?)?,
                "--d" => o.ds = list(a, &value()?)?,
                "--modes" => {
                    modes_given = true;
                    o.modes = value()?
                        .split(',')
                        .map(|s| {
                            Mode::parse(s).ok_or_else(|| format!("--modes: unknown mode {s:?}"))
                        })
                        .collect::<Result<_, _>>()?
                }
                "--repeats" => {
                    o.repeats = value()?.parse().map_err(|_| "--repeats: not a number")?
                }
                "--secs" => o.secs = value()?.parse().map_err(|_| "--secs: not a number")?,
                "--k" => o.k = value()?.parse().map_err(|_| "--k: not a number")?,
                "--stack-kib" => {
                    o.stack_kib = value()?.parse().map_err(|_| "--stack-kib: not a number")?
                }
                "--blocking-ms" => {
                    blocking_given = true;
                    o.blocking_ms = value()?
                        .parse()
                        .map_err(|_| "--blocking-ms: not a number")?
                }
                "--out" => o.out = PathBuf::from(value()?),
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if blocking_given && !modes_given {
            o.modes = Mode::BLOCKING.to_vec();
        }
        if o.ns.is_empty() || o.ds.is_empty() || o.modes.is_empty() || o.repeats == 0 {
            return Err("--n, --d, --modes and --repeats must not be empty or zero".into());
        }
        if !(o.secs > 0.0 && o.secs.is_finite()) {
            return Err("--secs must be a positive number".into());
        }
        Ok(o)
    }
}

/// `<target>/compare`, found from this binary's path
/// (`<target>/release/deps/compare-<hash>`), else `target/compare`.
fn default_out() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("compare")))
        .unwrap_or_else(|| PathBuf::from("target/compare"))
}
