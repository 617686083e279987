//! How long the store's write transactions take, from the call to the
//! commit being durable (waiting for other writers included), kept by the
//! store itself in fixed buckets of atomic counters.
//!
//! Why here and not in the master's metrics: the store sits below the
//! shared state and knows nothing of it. The metrics read these counters
//! when they are scraped ([`CommitTimes::snapshot`]); recording one commit
//! is a few relaxed atomic additions, no lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from a commit that found its
/// group already durable (well under a millisecond) to a disk that stalls
/// for seconds.
pub const COMMIT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Commit times: per-bucket counts (the last one past every bound) and
/// their sum.
#[derive(Debug, Default)]
pub struct CommitTimes {
    counts: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

/// Commit times read at one moment, in the shape a Prometheus histogram
/// has: `(upper bound, count in that bucket alone)`, the last bound being
/// infinity.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitTimesSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl CommitTimes {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts now. Commits recorded while this reads may show in their
    /// bucket and not yet in the sum (or the other way round): a scrape is
    /// a moment, and the next one has both.
    pub fn snapshot(&self) -> CommitTimesSnapshot {
        let buckets: Vec<(f64, u64)> = COMMIT_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        CommitTimesSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_land_in_their_bucket_and_the_sum() {
        let t = CommitTimes::default();
        t.observe(Duration::from_micros(300));
        t.observe(Duration::from_millis(1));
        t.observe(Duration::from_millis(40));
        t.observe(Duration::from_secs(60));
        let s = t.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), COMMIT_BUCKETS.len() + 1);
        let at = |bound: f64| s.buckets.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n);
        // A bound is inclusive, as Prometheus's `le` says.
        assert_eq!(at(0.0005), Some(1));
        assert_eq!(at(0.001), Some(1));
        assert_eq!(at(0.05), Some(1));
        assert_eq!(at(f64::INFINITY), Some(1));
        assert_eq!(at(0.0025), Some(0));
        assert!((s.sum_seconds - 60.0413).abs() < 1e-9, "{}", s.sum_seconds);
    }
}
