//! Per-server call figures: counts and latency percentiles over a bounded window.

use std::collections::VecDeque;
use std::time::Duration;

/// Latencies of the most recent calls kept for the percentiles.
const WINDOW: usize = 2048;

#[derive(Debug, Default)]
pub(crate) struct CallStats {
    pub calls: u64,
    pub errors: u64,
    recent_ms: VecDeque<f64>,
}

impl CallStats {
    pub(crate) fn record(&mut self, elapsed: Duration, failed: bool) {
        self.calls += 1;
        if failed {
            self.errors += 1;
        }
        if self.recent_ms.len() == WINDOW {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(elapsed.as_secs_f64() * 1000.0);
    }

    /// The `q` quantile (0..=1) of the recent latencies in milliseconds; 0 with no calls.
    pub(crate) fn percentile(&self, q: f64) -> f64 {
        if self.recent_ms.is_empty() {
            return 0.0;
        }
        let mut sorted: Vec<f64> = self.recent_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index.min(sorted.len() - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_calls() {
        let mut stats = CallStats::default();
        assert!((stats.percentile(0.5)).abs() < f64::EPSILON);
        for ms in 1..=100 {
            stats.record(Duration::from_millis(ms), ms % 10 == 0);
        }
        assert_eq!(stats.calls, 100);
        assert_eq!(stats.errors, 10);
        assert!((stats.percentile(0.5) - 51.0).abs() < 1.01);
        assert!((stats.percentile(0.99) - 99.0).abs() < 1.01);
    }
}
