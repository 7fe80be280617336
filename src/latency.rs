//! Fixed-bucket latency histograms that Prometheus can aggregate, recorded with atomics only
//! (recording never blocks): a broker answer's time, a Raft round's, a log append's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (Prometheus `le`).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 25_000, 100_000, 500_000,
    2_000_000,
];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket of `LATENCY_BUCKETS_US`, plus one for everything above the last.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let micros = latency.as_micros().min(u64::MAX as u128) as u64;
        let bucket = LATENCY_BUCKETS_US.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (the last is +Inf), and the sum in microseconds.
    pub fn cumulative(&self) -> (Vec<u64>, u64) {
        let mut total = 0;
        let counts = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        (counts, self.sum_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets_cumulatively() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(90));
        histogram.record(Duration::from_micros(100));
        histogram.record(Duration::from_micros(1_200));
        histogram.record(Duration::from_secs(10));
        let (counts, sum) = histogram.cumulative();
        assert_eq!(counts[0], 2, "90 and 100 us are at most 100 us");
        assert_eq!(counts[5], 3, "1.2 ms is at most 1.5 ms");
        assert_eq!(counts[LATENCY_BUCKETS_US.len() - 1], 3);
        assert_eq!(counts[LATENCY_BUCKETS_US.len()], 4, "+Inf counts all");
        assert_eq!(sum, 90 + 100 + 1_200 + 10_000_000);
    }
}
