//! What the bench records while it runs: latency histograms (HdrHistogram, microseconds, three
//! significant digits), counters, errors by status code, and their summaries in the report.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies up to an hour are recorded exactly to three significant digits; longer ones saturate.
const HIGHEST_US: u64 = 3_600_000_000;

/// A histogram of latencies in microseconds that many tasks record into.
#[derive(Debug)]
pub(crate) struct Latencies(Mutex<Histogram<u64>>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Mutex::new(
            Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds"),
        ))
    }
}

impl Latencies {
    pub(crate) fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.lock().saturating_record(us);
    }

    pub(crate) fn summary(&self) -> Latency {
        Latency::of(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        // A panic while recording leaves a histogram that is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p99_9_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// `p50 1.23 · p90 … · max …` for the table.
    pub(crate) fn line(&self) -> String {
        if self.count == 0 {
            return "-".to_owned();
        }
        format!(
            "p50 {} · p90 {} · p99 {} · p99.9 {} · max {}",
            fmt_ms(self.p50_ms),
            fmt_ms(self.p90_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.p99_9_ms),
            fmt_ms(self.max_ms)
        )
    }
}

pub(crate) fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

/// Failed calls by status code (`Unavailable`, `HTTP 503`, `client: in-flight limit`, ...).
#[derive(Debug, Default)]
pub(crate) struct Errors(Mutex<BTreeMap<String, u64>>);

impl Errors {
    pub(crate) fn add(&self, code: impl Into<String>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(code.into())
            .or_default() += 1;
    }

    pub(crate) fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A counter read while others add to it.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` and returns the value before.
    pub(crate) fn fetch_add(&self, n: u64) -> u64 {
        self.0.fetch_add(n, Ordering::Relaxed)
    }

    pub(crate) fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// `n` per `secs`, 0 for an empty interval.
pub(crate) fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let latencies = Latencies::default();
        for ms in 1..=1000 {
            latencies.record(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 1000);
        // Three significant digits: each value within 0.1 % of the exact percentile.
        assert!((summary.p50_ms - 500.0).abs() <= 0.5, "{summary:?}");
        assert!((summary.p99_ms - 990.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.max_ms - 1000.0).abs() <= 1.0, "{summary:?}");
    }

    #[test]
    fn an_empty_histogram_summarises_as_zeroes() {
        assert_eq!(Latencies::default().summary(), Latency::default());
        assert_eq!(Latency::default().line(), "-");
    }

    #[test]
    fn errors_are_counted_by_code() {
        let errors = Errors::default();
        errors.add("Unavailable");
        errors.add("Unavailable");
        errors.add("HTTP 503");
        assert_eq!(errors.total(), 3);
        assert_eq!(errors.snapshot()["Unavailable"], 2);
    }
}
