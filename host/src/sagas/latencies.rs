//! The time between two steps, as a histogram of fixed logarithmic buckets:
//! merged by adding counts, stored as one array, read back as quantiles
//! within a quarter of their value.

/// How many buckets: bucket `i` holds times in (1.25^(i-1), 1.25^i] ms, so
/// the last one holds everything above about 18 days.
pub const BUCKETS: usize = 96;
const FACTOR: f64 = 1.25;

/// Counts per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latencies {
    counts: Vec<i64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies { counts: vec![0; BUCKETS] }
    }
}

impl Latencies {
    /// From a stored array; a wrong length (another version's) is read as
    /// far as it goes.
    pub fn from_counts(stored: &[i64]) -> Latencies {
        let mut l = Latencies::default();
        for (slot, c) in l.counts.iter_mut().zip(stored) {
            *slot = (*c).max(0);
        }
        l
    }

    pub fn counts(&self) -> &[i64] {
        &self.counts
    }

    /// Adds one time, in milliseconds (negative times count as 0).
    pub fn add(&mut self, ms: f64) {
        let i = bucket(ms);
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    pub fn total(&self) -> i64 {
        self.counts.iter().fold(0i64, |a, c| a.saturating_add(*c))
    }

    /// The `q` quantile (0 < q ≤ 1) in milliseconds: the upper bound of the
    /// bucket it falls in. None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as i64).max(1);
        let mut seen = 0i64;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                return Some(upper_ms(i));
            }
        }
        Some(upper_ms(BUCKETS - 1))
    }
}

fn bucket(ms: f64) -> usize {
    if !ms.is_finite() {
        return if ms > 0.0 { BUCKETS - 1 } else { 0 };
    }
    if ms <= 1.0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = (ms.ln() / FACTOR.ln()).ceil() as usize;
    i.min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in milliseconds.
#[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
fn upper_ms(i: usize) -> f64 {
    FACTOR.powi(i as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut l = Latencies::default();
        for ms in 1..=1000 {
            l.add(f64::from(ms));
        }
        for (q, want) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let got = l.quantile(q).unwrap();
            assert!(got >= want && got <= want * FACTOR, "q{q}: {got} for {want}");
        }
        assert_eq!(Latencies::default().quantile(0.99), None);
    }

    #[test]
    fn every_time_has_a_bucket() {
        let mut l = Latencies::default();
        for ms in [-5.0, 0.0, 0.5, f64::NAN, f64::INFINITY, 1e30] {
            l.add(ms);
        }
        assert_eq!(l.total(), 6);
        assert_eq!(Latencies::from_counts(l.counts()), l);
        assert_eq!(Latencies::from_counts(&[3, -1]).total(), 3);
    }
}
