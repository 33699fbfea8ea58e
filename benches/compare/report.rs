//! Medians of repeated runs, and the Markdown / CSV / JSON outputs.

use std::fmt::Write as _;
use std::path::Path;

use crate::cell::{CellResult, CellSpec, FIELDS};
use crate::modes::Mode;

/// One finished run of a cell.
#[derive(Clone, Debug)]
pub struct Run {
    pub spec: CellSpec,
    pub repeat: usize,
    pub result: CellResult,
}

/// The median of every field over the repeats of one (mode, N, D) cell.
#[derive(Clone, Debug)]
pub struct Summary {
    pub mode: Mode,
    pub n: usize,
    pub d_ms: u64,
    pub runs: usize,
    /// Runs that hung (did not finish within `cell::hang_limit`).
    pub hung: usize,
    pub median: CellResult,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Groups runs by cell (in the order of `ns`, `ds`, `modes`) and takes medians.
pub fn summarize(runs: &[Run], ns: &[usize], ds: &[u64], modes: &[Mode]) -> Vec<Summary> {
    let mut out = Vec::new();
    for &d in ds {
        for &n in ns {
            for &mode in modes {
                let mine: Vec<&Run> = runs
                    .iter()
                    .filter(|r| r.spec.mode == mode && r.spec.n == n && r.spec.d_ms == d)
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let hung = mine.iter().filter(|r| r.result.get("hung") > 0.0).count();
                // Medians over the runs that finished (a hung run's partial
                // counts say nothing about throughput).
                let finished: Vec<&&Run> = mine
                    .iter()
                    .filter(|r| r.result.get("hung") <= 0.0)
                    .collect();
                let mut median_result = CellResult::default();
                for f in FIELDS {
                    median_result.fields.insert(
                        f,
                        median(finished.iter().map(|r| r.result.get(f)).collect()),
                    );
                }
                out.push(Summary {
                    mode,
                    n,
                    d_ms: d,
                    runs: mine.len(),
                    hung,
                    median: median_result,
                });
            }
        }
    }
    out
}

fn find(s: &[Summary], mode: Mode, n: usize, d: u64) -> Option<&Summary> {
    s.iter().find(|x| x.mode == mode && x.n == n && x.d_ms == d)
}

fn ratio(s: &[Summary], x: &Summary, base: Mode) -> String {
    match find(s, base, x.n, x.d_ms) {
        Some(b) if b.hung < b.runs && x.hung < x.runs => format!(
            "{:.2}×",
            x.median.get("throughput_rps") / b.median.get("throughput_rps")
        ),
        _ => "–".into(),
    }
}

/// Throughput, or how many runs hung.
fn rps(x: &Summary) -> String {
    if x.hung == x.runs {
        format!("hung ({}/{})", x.hung, x.runs)
    } else if x.hung > 0 {
        format!(
            "{:.0} (hung {}/{})",
            x.median.get("throughput_rps"),
            x.hung,
            x.runs
        )
    } else {
        format!("{:.0}", x.median.get("throughput_rps"))
    }
}

/// The peers side by side: req/s and RSS/req of every mode per (N, D), and
/// suspend's ratios to tower and stackful.
pub fn peer_table(s: &[Summary], ns: &[usize], ds: &[u64], modes: &[Mode], k: usize) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n#### Peers, K={k}: req/s and RSS/req KiB (medians); suspend ÷ tower, suspend ÷ stackful\n"
    );
    md.push_str("| D ms | N |");
    for m in modes {
        let _ = write!(md, " {} |", m.name());
    }
    md.push_str(" suspend ÷ tower | suspend ÷ stackful |\n|---:|---:|");
    for _ in modes {
        md.push_str("---:|");
    }
    md.push_str("---:|---:|\n");
    for &d in ds {
        for &n in ns {
            let _ = write!(md, "| {d} | {n} |");
            for &m in modes {
                match find(s, m, n, d) {
                    Some(x) if x.hung < x.runs => {
                        let _ =
                            write!(md, " {} / {:.2} |", rps(x), x.median.get("rss_per_req_kib"));
                    }
                    Some(x) => {
                        let _ = write!(md, " {} |", rps(x));
                    }
                    None => md.push_str(" – |"),
                }
            }
            let r = |base| match find(s, Mode::Suspend, n, d) {
                Some(x) => ratio(s, x, base),
                None => "–".into(),
            };
            let _ = writeln!(md, " {} | {} |", r(Mode::Tower), r(Mode::Stackful));
        }
    }
    md
}

/// The Markdown tables (one per view delay).
pub fn markdown(s: &[Summary], ds: &[u64], k: usize) -> String {
    let mut md = String::new();
    for &d in ds {
        let view = if d == 0 {
            "view yields once (D=0)".to_string()
        } else {
            format!("view awaits {d} ms")
        };
        let _ = writeln!(md, "\n#### K={k} sync middleware, {view} (medians)\n");
        md.push_str(
            "| N | mode | req/s | vs tower | p50 ms | p99 ms | CPU µs/req | peak threads | peak RSS MiB \
             | RSS/req KiB | peak stacks (waiting) | errors |\n",
        );
        md.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for x in s.iter().filter(|x| x.d_ms == d) {
            let m = &x.median;
            let stacks = if m.get("peak_stacks") > 0.0 {
                format!(
                    "{:.0} ({:.0})",
                    m.get("peak_stacks"),
                    m.get("peak_stack_waiters")
                )
            } else {
                "–".into()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.2} | {} | {:.0} |",
                x.n,
                x.mode.name(),
                rps(x),
                ratio(s, x, Mode::Tower),
                m.get("p50_ms"),
                m.get("p99_ms"),
                m.get("cpu_us_per_req"),
                m.get("peak_threads"),
                m.get("peak_rss_mib"),
                m.get("rss_per_req_kib"),
                stacks,
                m.get("errors"),
            );
        }
    }
    md
}

/// Writes `runs.csv` (every run), `summary.csv` and `summary.json` (medians
/// plus the machine facts) into `dir`.
pub fn write_files(
    dir: &Path,
    runs: &[Run],
    s: &[Summary],
    facts: &[(&str, String)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut csv = String::from("mode,n,d_ms,repeat");
    for f in FIELDS {
        csv.push(',');
        csv.push_str(f);
    }
    csv.push('\n');
    let mut sum_csv = csv.replace(",repeat", ",runs,hung_runs");
    for r in runs {
        let _ = write!(
            csv,
            "{},{},{},{}",
            r.spec.mode.name(),
            r.spec.n,
            r.spec.d_ms,
            r.repeat
        );
        for f in FIELDS {
            let _ = write!(csv, ",{}", r.result.get(f));
        }
        csv.push('\n');
    }
    for x in s {
        let _ = write!(
            sum_csv,
            "{},{},{},{},{}",
            x.mode.name(),
            x.n,
            x.d_ms,
            x.runs,
            x.hung
        );
        for f in FIELDS {
            let _ = write!(sum_csv, ",{}", x.median.get(f));
        }
        sum_csv.push('\n');
    }
    std::fs::write(dir.join("runs.csv"), csv)?;
    std::fs::write(dir.join("summary.csv"), sum_csv)?;

    let mut js = String::from("{\n  \"machine\": {");
    for (i, (k, v)) in facts.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(js, "{sep}\n    \"{k}\": \"{}\"", json_escape(v));
    }
    js.push_str("\n  },\n  \"cells\": [");
    for (i, x) in s.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            js,
            "{sep}\n    {{\"mode\": \"{}\", \"n\": {}, \"d_ms\": {}, \"runs\": {}, \"hung_runs\": {}",
            x.mode.name(),
            x.n,
            x.d_ms,
            x.runs,
            x.hung
        );
        for f in FIELDS {
            let v = x.median.get(f);
            if v.is_finite() {
                let _ = write!(js, ", \"{f}\": {v}");
            } else {
                let _ = write!(js, ", \"{f}\": null");
            }
        }
        js.push('}');
    }
    js.push_str("\n  ]\n}\n");
    std::fs::write(dir.join("summary.json"), js)
}

fn json_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

/// Reads back a `runs.csv` written by [`write_files`] (for `--replot`).
pub fn read_runs(path: &Path, secs: f64, k: usize) -> Result<Vec<Run>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("runs.csv is empty")?
        .split(',')
        .collect();
    let mut runs = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        let col = |name: &str| -> Result<&str, String> {
            let i = header
                .iter()
                .position(|h| *h == name)
                .ok_or(format!("no column {name}"))?;
            cols.get(i).copied().ok_or(format!("short line: {line}"))
        };
        let num = |name: &str| -> Result<f64, String> {
            col(name)?
                .parse()
                .map_err(|_| format!("bad {name} in: {line}"))
        };
        let mode = Mode::parse(col("mode")?).ok_or(format!("unknown mode in: {line}"))?;
        let mut result = CellResult::default();
        for f in FIELDS {
            // `hung` is newer than some recorded runs.csv files.
            let v = if *f == "hung" && !header.contains(&"hung") {
                0.0
            } else {
                num(f)?
            };
            result.fields.insert(f, v);
        }
        let spec = CellSpec {
            mode,
            n: num("n")? as usize,
            d_ms: num("d_ms")? as u64,
            secs,
            k,
            stack_kib: 0,
            // Not in runs.csv (it is in summary.json's machine facts).
            blocking_ms: 0,
            // Not in runs.csv either (summary.json's machine facts).
            gap: false,
        };
        runs.push(Run {
            spec,
            repeat: num("repeat")? as usize,
            result,
        });
    }
    Ok(runs)
}
