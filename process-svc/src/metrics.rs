//! process-svc's metrics: what became of the orders it consumed, how long an order took from
//! intake to COMPLETED, and the outbox backlog.

use std::sync::LazyLock;

use contoso_telemetry::metrics::{self, Counters, FloatGauge, Gauges, Histograms};

/// Orders recorded in Postgres (a redelivery of a recorded order is not counted again).
pub(crate) static ORDERS_PROCESSED: LazyLock<Counters> = LazyLock::new(|| {
    metrics::counters(
        "contoso_orders_processed",
        "Orders recorded in Postgres with their items, entitlements and outbox entry.",
    )
});

/// Orders given up on and announced FAILED.
pub(crate) static ORDERS_FAILED: LazyLock<Counters> = LazyLock::new(|| {
    metrics::counters(
        "contoso_orders_failed",
        "Orders given up on and announced FAILED.",
    )
});

/// Orders whose `orders.processed` went out.
pub(crate) static ORDERS_COMPLETED: LazyLock<Counters> = LazyLock::new(|| {
    metrics::counters(
        "contoso_orders_completed",
        "Orders announced COMPLETED (orders.processed published and the outbox entry completed).",
    )
});

/// From intake (`accepted_at`) to COMPLETED being announced.
pub(crate) static ORDER_COMPLETION: LazyLock<Histograms> = LazyLock::new(|| {
    metrics::seconds(
        "contoso_order_completion",
        "From an order's acceptance to its COMPLETED announcement.",
        metrics::FLOW_BUCKETS,
    )
});

/// Outbox entries waiting to be published.
pub(crate) static OUTBOX_BACKLOG: LazyLock<Gauges> = LazyLock::new(|| {
    metrics::gauges(
        "contoso_outbox_backlog",
        "Outbox entries not yet published.",
    )
});

/// Age of the oldest outbox entry waiting to be published.
pub(crate) static OUTBOX_OLDEST_AGE: LazyLock<FloatGauge> = LazyLock::new(|| {
    metrics::seconds_gauge(
        "contoso_outbox_oldest_age",
        "Age of the oldest outbox entry not yet published (0 when none waits).",
    )
});

/// Registers every metric here, so a scrape shows them before the first order.
pub(crate) fn register() {
    // A series exists once it has a label set: these have none, so they start at zero.
    for counter in [&ORDERS_PROCESSED, &ORDERS_FAILED, &ORDERS_COMPLETED] {
        let _ = counter.get_or_create(&Vec::new());
    }
    let _ = ORDER_COMPLETION.get_or_create(&Vec::new());
    let _ = OUTBOX_BACKLOG.get_or_create(&Vec::new());
    LazyLock::force(&OUTBOX_OLDEST_AGE);
}
