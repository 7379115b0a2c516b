//! The process's one Prometheus registry. Each crate declares its metrics once (a `LazyLock`
//! static calling one of the constructors here) and records into them; the platform serves
//! [`encode`] on `/metrics`. Several services in one process (`contoso dev`) share it, as a scrape
//! of that process should show.
//!
//! Names follow Prometheus conventions: the registry appends `_total` to counters and the unit
//! (`_seconds`) to histograms registered with one, so names are given without them.

use std::sync::{LazyLock, atomic::AtomicU64};

use parking_lot::Mutex;
use prometheus_client::{
    encoding::text,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::{Registry, Unit},
};

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// Label pairs of one series, e.g. `[("topic", "accepted".into())]`.
pub type Labels = Vec<(&'static str, String)>;

/// A counter per label set.
pub type Counters = Family<Labels, Counter>;
/// A gauge per label set.
pub type Gauges = Family<Labels, Gauge>;
/// A histogram per label set, with the buckets it was declared with.
pub type Histograms = Family<Labels, Histogram, Buckets>;
/// A gauge holding a fractional value (an age in seconds).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets for calls within a service, 1 ms to 10 s.
pub const CALL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Latency buckets for an order's way through the system, 5 ms to 5 min.
pub const FLOW_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bucket bounds of a histogram family.
#[derive(Debug, Clone, Copy)]
pub struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Registers a counter family: exposed as `{name}_total`.
pub fn counters(name: &str, help: &str) -> Counters {
    let family = Counters::default();
    REGISTRY.lock().register(name, help, family.clone());
    family
}

/// Registers a gauge family.
pub fn gauges(name: &str, help: &str) -> Gauges {
    let family = Gauges::default();
    REGISTRY.lock().register(name, help, family.clone());
    family
}

/// Registers a gauge of fractional seconds: exposed as `{name}_seconds`.
pub fn seconds_gauge(name: &str, help: &str) -> FloatGauge {
    let gauge = FloatGauge::default();
    REGISTRY
        .lock()
        .register_with_unit(name, help, Unit::Seconds, gauge.clone());
    gauge
}

/// Registers a histogram family of durations: exposed as `{name}_seconds`.
pub fn seconds(name: &str, help: &str, buckets: &'static [f64]) -> Histograms {
    let family = Histograms::new_with_constructor(Buckets(buckets));
    REGISTRY
        .lock()
        .register_with_unit(name, help, Unit::Seconds, family.clone());
    family
}

/// Every metric of the process in the OpenMetrics text format ([`CONTENT_TYPE`]).
pub fn encode() -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = text::encode(&mut out, &REGISTRY.lock());
    out
}

/// Shorthand for one label pair.
pub fn label(name: &'static str, value: impl Into<String>) -> (&'static str, String) {
    (name, value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_are_exposed_with_their_conventional_suffixes() {
        let orders = counters("test_registry_orders", "Orders seen by the test.");
        orders.get_or_create(&vec![label("kind", "a")]).inc();
        let latency = seconds(
            "test_registry_latency",
            "Latency seen by the test.",
            CALL_BUCKETS,
        );
        latency.get_or_create(&vec![]).observe(0.003);

        let text = encode();
        assert!(
            text.contains("test_registry_orders_total{kind=\"a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_registry_latency_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_registry_latency_seconds_count 1"),
            "{text}"
        );
    }
}
