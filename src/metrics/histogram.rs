//! A fixed-bucket latency histogram of atomic counters (Prometheus' cumulative layout is built
//! when it is read).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in microseconds (100 µs to 10 s).
pub const BUCKETS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative), then one for larger values.
    counts: [AtomicU64; 17],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, micros: u64) {
        let i = BUCKETS.partition_point(|&b| b < micros);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Values observed.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Cumulative counts per bucket bound (the last is +Inf), and the sum in microseconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64) {
        let mut total = 0;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                total += c.load(Ordering::Relaxed);
                total
            })
            .collect();
        (cumulative, self.sum_micros.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets() {
        let h = Histogram::default();
        for us in [50, 100, 101, 20_000_000] {
            h.observe(us);
        }
        let (c, sum) = h.snapshot();
        assert_eq!(c[0], 2, "50 and 100 are within 100 µs");
        assert_eq!(c[1], 3);
        assert_eq!(c[15], 3);
        assert_eq!(c[16], 4, "+Inf counts everything");
        assert_eq!(sum, 20_000_251);
    }
}
