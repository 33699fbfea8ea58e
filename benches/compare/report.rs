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
                let mut median_result = CellResult::default();
                for f in FIELDS {
                    median_result
                        .fields
                        .insert(f, median(mine.iter().map(|r| r.result.get(f)).collect()));
                }
                out.push(Summary {
                    mode,
                    n,
                    d_ms: d,
                    runs: mine.len(),
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
        Some(b) => format!(
            "{:.2}×",
            x.median.get("throughput_rps") / b.median.get("throughput_rps")
        ),
        None => "–".into(),
    }
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
            "| N | mode | req/s | vs native | p50 ms | p99 ms | CPU µs/req | peak threads | peak RSS MiB \
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
                "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.2} | {} | {:.0} |",
                x.n,
                x.mode.name(),
                m.get("throughput_rps"),
                ratio(s, x, Mode::Async),
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
    let mut sum_csv = csv.replace(",repeat", ",runs");
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
        let _ = write!(sum_csv, "{},{},{},{}", x.mode.name(), x.n, x.d_ms, x.runs);
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
            "{sep}\n    {{\"mode\": \"{}\", \"n\": {}, \"d_ms\": {}, \"runs\": {}",
            x.mode.name(),
            x.n,
            x.d_ms,
            x.runs
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
            result.fields.insert(f, num(f)?);
        }
        let spec = CellSpec {
            mode,
            n: num("n")? as usize,
            d_ms: num("d_ms")? as u64,
            secs,
            k,
            stack_kib: 0,
        };
        runs.push(Run {
            spec,
            repeat: num("repeat")? as usize,
            result,
        });
    }
    Ok(runs)
}
