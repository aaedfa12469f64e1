//! Fixed-bucket histograms that live in shared memory: a count per bucket and a sum, all
//! atomics, so that all-zero bytes are an empty histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::tally::bump;

/// Most buckets a histogram has, `+Inf` included.
pub const MAX_BUCKETS: usize = 16;

/// A histogram's bucket bounds, in the integer unit it is observed in, and how many of that
/// unit make the unit it is shown in (bytes: 1; microseconds shown as seconds: 1,000,000).
#[derive(Debug)]
pub struct Buckets {
    pub bounds: &'static [u64],
    pub per_shown_unit: u64,
}

const KIB: u64 = 1024;
const MICROS: u64 = 1_000_000;

/// `blackhole_message_size_bytes`: 1 KiB to 64 MiB, four times larger each step.
pub const MESSAGE_SIZE: Buckets = Buckets {
    bounds: &[
        KIB,
        4 * KIB,
        16 * KIB,
        64 * KIB,
        256 * KIB,
        KIB * KIB,
        4 * KIB * KIB,
        16 * KIB * KIB,
        64 * KIB * KIB,
    ],
    per_shown_unit: 1,
};

/// `blackhole_session_duration_seconds`: 10 ms to 15 minutes, in microseconds.
pub const SESSION_DURATION: Buckets = Buckets {
    bounds: &[
        10_000,
        50_000,
        100_000,
        500_000,
        MICROS,
        5 * MICROS,
        10 * MICROS,
        30 * MICROS,
        60 * MICROS,
        300 * MICROS,
        900 * MICROS,
    ],
    per_shown_unit: MICROS,
};

/// `blackhole_delay_lateness_seconds`: 0.5 ms to 1 s, in microseconds.
pub const DELAY_LATENESS: Buckets = Buckets {
    bounds: &[
        500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, MICROS,
    ],
    per_shown_unit: MICROS,
};

const _: () = {
    assert!(MESSAGE_SIZE.bounds.len() < MAX_BUCKETS);
    assert!(SESSION_DURATION.bounds.len() < MAX_BUCKETS);
    assert!(DELAY_LATENESS.bounds.len() < MAX_BUCKETS);
};

/// One histogram's counts. Which [`Buckets`] it has is its owner's knowledge, not stored.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the one after the last bound is `+Inf`.
    counts: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

impl Histogram {
    /// Counts `value` in the first bucket whose bound is at least `value`.
    #[inline]
    pub fn observe(&self, buckets: &Buckets, value: u64) {
        let bucket = buckets.bounds.partition_point(|&bound| bound < value);
        bump(&self.counts[bucket], 1);
        bump(&self.sum, value);
    }
}

/// A histogram's figures summed over tallies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramTotals {
    pub counts: [u64; MAX_BUCKETS],
    pub sum: u64,
}

impl HistogramTotals {
    pub fn add(&mut self, histogram: &Histogram) {
        for (total, count) in self.counts.iter_mut().zip(&histogram.counts) {
            *total = total.wrapping_add(count.load(Relaxed));
        }
        self.sum = self.sum.wrapping_add(histogram.sum.load(Relaxed));
    }

    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0, |sum, &c| sum.wrapping_add(c))
    }

    /// For each bound and then `+Inf`, observations at or below it (Prometheus's `le`).
    pub fn cumulative<'a>(&'a self, buckets: &'a Buckets) -> impl Iterator<Item = u64> + 'a {
        self.counts[..=buckets.bounds.len()]
            .iter()
            .scan(0u64, |running, &c| {
                *running = running.wrapping_add(c);
                Some(*running)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(histogram: &Histogram) -> HistogramTotals {
        let mut totals = HistogramTotals::default();
        totals.add(histogram);
        totals
    }

    #[test]
    fn a_value_on_a_bound_falls_in_that_bucket() {
        let histogram = Histogram::default();
        for value in [
            0,
            1024,
            1025,
            64 * KIB * KIB,
            64 * KIB * KIB + 1,
            u64::MAX / 2,
        ] {
            histogram.observe(&MESSAGE_SIZE, value);
        }
        let totals = totals(&histogram);
        assert_eq!(totals.counts[..3], [2, 1, 0]);
        assert_eq!(totals.counts[8], 1, "64 MiB itself");
        assert_eq!(totals.counts[9], 2, "past the last bound: +Inf");
        assert_eq!(totals.count(), 6);
    }

    #[test]
    fn cumulative_counts_end_with_every_observation() {
        let histogram = Histogram::default();
        for micros in [100, 700, 700, 2_000_000] {
            histogram.observe(&DELAY_LATENESS, micros);
        }
        let totals = totals(&histogram);
        let cumulative: Vec<u64> = totals.cumulative(&DELAY_LATENESS).collect();
        assert_eq!(cumulative.len(), DELAY_LATENESS.bounds.len() + 1);
        assert_eq!(cumulative[..3], [1, 3, 3]);
        assert_eq!(cumulative.last(), Some(&4));
        assert_eq!(totals.sum, 2_001_500);
    }

    #[test]
    fn bounds_rise() {
        for buckets in [&MESSAGE_SIZE, &SESSION_DURATION, &DELAY_LATENESS] {
            assert!(
                buckets.bounds.windows(2).all(|w| w[0] < w[1]),
                "{buckets:?}"
            );
        }
    }
}
