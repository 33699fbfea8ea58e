//! A fixed-size log-linear latency histogram (about 1.6 % resolution), so
//! recording latencies costs no memory that grows with the request count
//! (the harness measures RSS).

use std::time::Duration;

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Covers up to 2^40 ns (about 18 minutes).
const BUCKETS: usize = 41 * SUB;

/// Counts of latencies by bucket.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }

    fn bucket(ns: u64) -> usize {
        if ns < SUB as u64 {
            return ns as usize;
        }
        let msb = 63 - ns.leading_zeros();
        let shift = msb - SUB_BITS;
        let sub = ((ns >> shift) as usize) & (SUB - 1);
        (((shift + 1) as usize) * SUB + sub).min(BUCKETS - 1)
    }

    /// The lower bound of bucket `i`, in ns.
    fn lower(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let shift = (i / SUB - 1) as u32;
        ((SUB + i % SUB) as u64) << shift
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }

    /// The latency at quantile `q` (0..=1), as the lower bound of its bucket.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(Self::lower(i));
            }
        }
        Duration::from_nanos(Self::lower(BUCKETS - 1))
    }
}
