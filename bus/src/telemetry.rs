//! What the adapters record: a producer span per publish whose context travels in the message's
//! headers, a consumer span per delivery that continues the publisher's trace (OpenTelemetry
//! messaging conventions), and the bus's metrics.

use std::sync::LazyLock;

use contoso_telemetry::{
    Parent,
    metrics::{self, Counters, Gauges, Histograms, label},
};
use tracing::{Span, field};

use crate::{Envelope, Topic};

/// Where a delivery came from and who consumes it, for its span and metrics.
#[derive(Debug, Clone)]
pub struct DeliveryTrace {
    /// `messaging.system`: `nats`, `memory`.
    pub system: &'static str,
    /// The consumer group that received it.
    pub group: String,
    /// The subject (or queue) it was published on.
    pub destination: String,
    /// The publisher's trace context, as [`contoso_telemetry::headers_of`] made it.
    pub headers: Vec<(String, String)>,
}

/// The producer span of publishing `envelope` to `destination`. Enter it, then take the headers
/// to send with [`contoso_telemetry::headers_of`], so the consumer becomes its child.
pub(crate) fn publish_span(system: &'static str, destination: &str, envelope: &Envelope) -> Span {
    tracing::info_span!(
        "publish",
        otel.name = %format!("publish {destination}"),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.destination.name = %destination,
        messaging.message.id = %envelope.message_id,
        otel.status_code = field::Empty,
    )
}

/// The consumer span of handling one delivery: a child of the span that published it.
pub(crate) fn process_span(
    trace: &DeliveryTrace,
    topic: Topic,
    message_id: Option<&str>,
    attempt: u64,
) -> Span {
    let parent = Parent::from_headers(&trace.headers);
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {}", trace.destination),
        otel.kind = "consumer",
        messaging.system = trace.system,
        messaging.operation.type = "process",
        messaging.destination.name = %trace.destination,
        messaging.consumer.group.name = %trace.group,
        messaging.message.id = message_id.unwrap_or_default(),
        messaging.delivery.attempt = attempt,
        topic = %topic,
        trace_id = field::Empty,
        correlation_id = parent.correlation_id(),
    );
    parent.adopt(&span);
    if let Some(id) = contoso_telemetry::trace_id(&span) {
        span.record("trace_id", id);
    }
    span
}

/// The bus's metrics.
pub(crate) struct BusMetrics {
    pub(crate) published: Counters,
    pub(crate) publish_failures: Counters,
    pub(crate) redeliveries: Counters,
    pub(crate) ack_latency: Histograms,
    pub(crate) dead_letters: Counters,
    pub(crate) pending: Gauges,
    pub(crate) ack_pending: Gauges,
}

pub(crate) static METRICS: LazyLock<BusMetrics> = LazyLock::new(|| BusMetrics {
    published: metrics::counters(
        "contoso_messages_published",
        "Messages the broker confirmed, by topic.",
    ),
    publish_failures: metrics::counters(
        "contoso_message_publish_failures",
        "Publishes the broker did not confirm, by topic.",
    ),
    redeliveries: metrics::counters(
        "contoso_consumer_redeliveries",
        "Deliveries of a message that was delivered before, by consumer group and topic.",
    ),
    ack_latency: metrics::seconds(
        "contoso_consumer_ack_latency",
        "From receiving a delivery to acknowledging it, by consumer group and topic.",
        metrics::CALL_BUCKETS,
    ),
    dead_letters: metrics::counters(
        "contoso_dead_letters",
        "Messages moved to the dead letters, by consumer group and topic.",
    ),
    pending: metrics::gauges(
        "contoso_consumer_pending_messages",
        "Messages in the stream the consumer group has not received yet.",
    ),
    ack_pending: metrics::gauges(
        "contoso_consumer_ack_pending_messages",
        "Messages delivered to the consumer group and not acknowledged yet.",
    ),
});

pub(crate) fn topic_labels(topic: Topic) -> metrics::Labels {
    vec![label("topic", topic.suffix())]
}

pub(crate) fn group_labels(group: &str, topic: Topic) -> metrics::Labels {
    vec![label("group", group), label("topic", topic.suffix())]
}

/// Registers the bus's metrics, so a scrape shows them before the first message.
pub fn register_metrics() {
    LazyLock::force(&METRICS);
}
