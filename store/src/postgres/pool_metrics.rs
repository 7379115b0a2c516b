//! How saturated the Postgres connection pool is (`/metrics`): read whenever a connection is
//! taken, which is when it matters. Every `PgStore` of the process adds to the same series.

use std::{sync::LazyLock, time::Duration};

use contoso_telemetry::metrics::{self, Gauges, Histograms, label};
use diesel_async::{AsyncPgConnection, pooled_connection::deadpool::Pool};

struct PoolMetrics {
    connections: Gauges,
    max: Gauges,
    waiting: Gauges,
    wait: Histograms,
}

static METRICS: LazyLock<PoolMetrics> = LazyLock::new(|| PoolMetrics {
    connections: metrics::gauges(
        "contoso_db_pool_connections",
        "Postgres connections of the pool, by state (in_use, idle).",
    ),
    max: metrics::gauges(
        "contoso_db_pool_max_connections",
        "The most Postgres connections the pool opens.",
    ),
    waiting: metrics::gauges(
        "contoso_db_pool_waiting",
        "Callers waiting for a Postgres connection.",
    ),
    wait: metrics::seconds(
        "contoso_db_pool_wait",
        "Time to get a Postgres connection from the pool.",
        metrics::CALL_BUCKETS,
    ),
});

pub(super) fn observe(pool: &Pool<AsyncPgConnection>, waited: Duration) {
    let status = pool.status();
    let m = &*METRICS;
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.connections
        .get_or_create(&vec![label("state", "in_use")])
        .set(count(status.size.saturating_sub(status.available)));
    m.connections
        .get_or_create(&vec![label("state", "idle")])
        .set(count(status.available));
    m.max.get_or_create(&Vec::new()).set(count(status.max_size));
    m.waiting
        .get_or_create(&Vec::new())
        .set(count(status.waiting));
    m.wait
        .get_or_create(&Vec::new())
        .observe(waited.as_secs_f64());
}
