//! notify-svc's metrics: open status streams and the updates crossing the backplane.

use std::sync::LazyLock;

use contoso_telemetry::metrics::{self, Counters, Gauges};

/// Status streams open on this replica.
pub(crate) static ACTIVE_STREAMS: LazyLock<Gauges> = LazyLock::new(|| {
    metrics::gauges(
        "contoso_active_streams",
        "WatchOrderStatus streams open on this replica.",
    )
});

/// Updates published to (`direction="out"`) and received from (`direction="in"`) the backplane.
pub(crate) static BACKPLANE_MESSAGES: LazyLock<Counters> = LazyLock::new(|| {
    metrics::counters(
        "contoso_backplane_messages",
        "Status updates through the backplane: published (out) and received for a local stream (in).",
    )
});

/// Registers every metric here, so a scrape shows them before the first stream.
pub(crate) fn register() {
    LazyLock::force(&BACKPLANE_MESSAGES);
    let _ = ACTIVE_STREAMS.get_or_create(&Vec::new());
}

/// Counts a stream as open until dropped.
#[derive(Debug)]
pub(crate) struct OpenStream(());

impl OpenStream {
    pub(crate) fn new() -> Self {
        ACTIVE_STREAMS.get_or_create(&Vec::new()).inc();
        Self(())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        ACTIVE_STREAMS.get_or_create(&Vec::new()).dec();
    }
}

pub(crate) fn backplane(direction: &'static str) {
    BACKPLANE_MESSAGES
        .get_or_create(&vec![metrics::label("direction", direction)])
        .inc();
}
