//! In-process A/B of two suspendware builds (`scripts/ab_inproc.sh`).
//!
//! Separate processes run minutes apart on this shared machine differ by
//! 10–30 % for the same binary (frequency, neighbours), which hides changes
//! of a few percent. Here both builds are linked into one binary and timed
//! in alternating chunks of a few milliseconds, so drift hits both alike;
//! the verdict is the median of the paired per-round differences. The two
//! copies' code layouts still differ: an A/A run (the same revision on both
//! sides) shows that bias, a few percent at most, which an A/B difference
//! must exceed to mean anything.

use std::time::Instant;

mod base {
    use suspendware_base as sw;
    include!("probes.rs");
}

mod cur {
    use suspendware as sw;
    include!("probes.rs");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn quartiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 4], v[3 * v.len() / 4])
}

fn main() {
    // Multi-threaded glibc from the start, as in benches/instr.rs.
    std::thread::spawn(|| loop {
        std::thread::park();
    });
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let chunk: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let scenarios: Vec<String> = args.collect();
    let scenarios = if scenarios.is_empty() {
        vec!["wait10".into(), "yield10".into(), "segs".into(), "alt5".into(), "k5".into()]
    } else {
        scenarios
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("rounds {rounds}, {chunk} requests per chunk; ns per request");
    println!("scenario  base(median)  cur(median)  cur-base(median of pairs)  IQR of pairs  rounds cur faster");
    for s in &scenarios {
        let (Some(pb), Some(pc)) = (base::pipeline(s), cur::pipeline(s)) else {
            eprintln!("unknown scenario {s} ({})", cur::NAMES.join(", "));
            std::process::exit(2);
        };
        for _ in 0..3 {
            base::run(&rt, &pb, chunk);
            cur::run(&rt, &pc, chunk);
        }
        let (mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let time = |which: bool| {
                let t = Instant::now();
                let ok = if which {
                    cur::run(&rt, &pc, chunk)
                } else {
                    base::run(&rt, &pb, chunk)
                };
                assert_eq!(ok, chunk, "every probe request succeeds");
                t.elapsed().as_nanos() as f64 / chunk as f64
            };
            // Alternate which goes first.
            let (tb, tc) = if r % 2 == 0 {
                let tb = time(false);
                (tb, time(true))
            } else {
                let tc = time(true);
                (time(false), tc)
            };
            b.push(tb);
            c.push(tc);
            d.push(tc - tb);
        }
        let faster = d.iter().filter(|x| **x < 0.0).count();
        let (q1, q3) = quartiles(&mut d.clone());
        println!(
            "{s:8}  {:12.1}  {:11.1}  {:+25.1}  [{q1:+.1}, {q3:+.1}]  {faster}/{rounds}",
            median(&mut b),
            median(&mut c),
            median(&mut d),
        );
    }
}
