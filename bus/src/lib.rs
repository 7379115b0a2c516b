//! The message bus seam. Business code publishes and consumes [`Envelope`]s through [`Bus`]; the
//! adapters (in-memory, NATS JetStream) decide how they travel. Delivery is at least once:
//! consumers are idempotent and acknowledge only after their work is durable.

use std::{fmt, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use contoso_domain::Cause;

pub mod config;
pub mod dead_letter;
pub mod memory;
pub mod nats;
#[cfg(feature = "test-support")]
pub mod recording;
pub mod telemetry;

pub use config::NatsArgs;
pub use dead_letter::{DeadLetter, DeadLetters, Strikes};
pub use memory::MemoryBus;
pub use nats::{NatsBus, NatsSettings};
pub use telemetry::DeliveryTrace;

/// The kinds of message that travel on the bus. Each maps to one subject under the configured
/// prefix (`orders.accepted`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `OrderAccepted`, published by accept-svc.
    OrderAccepted,
    /// `OrderStatusChanged` with PROCESSING, published by process-svc.
    OrderProcessing,
    /// `OrderProcessed`, published by process-svc's outbox relay.
    OrderProcessed,
    /// `OrderStatusChanged` with FAILED, published by process-svc.
    OrderFailed,
    /// `EntitlementsGranted`, published by process-svc's outbox relay with `OrderProcessed`.
    EntitlementsGranted,
}

impl Topic {
    /// Every topic, in a fixed order.
    pub const ALL: [Topic; 5] = [
        Topic::OrderAccepted,
        Topic::OrderProcessing,
        Topic::OrderProcessed,
        Topic::OrderFailed,
        Topic::EntitlementsGranted,
    ];

    /// The topics that move an order's status (what notify-svc turns into stream updates).
    pub const STATUS: [Topic; 4] = [
        Topic::OrderAccepted,
        Topic::OrderProcessing,
        Topic::OrderProcessed,
        Topic::OrderFailed,
    ];

    /// The last token of the subject.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::OrderAccepted => "accepted",
            Topic::OrderProcessing => "processing",
            Topic::OrderProcessed => "processed",
            Topic::OrderFailed => "failed",
            Topic::EntitlementsGranted => "entitlements",
        }
    }

    /// The topic whose subject ends in `suffix`, if any.
    pub fn from_suffix(suffix: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.suffix() == suffix)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Decides the subject the message travels on.
    pub topic: Topic,
    /// Deduplication id: the broker drops a second message with the same id inside its window.
    pub message_id: String,
    /// Protobuf-encoded event.
    pub payload: Bytes,
}

/// Where a newly created consumer group starts reading. An existing group keeps its position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartPolicy {
    /// From the oldest message still retained: nothing published before the group existed is
    /// missed (work queues such as `orders.accepted`).
    #[default]
    All,
    /// Only messages published after the group was created (ephemeral events such as status
    /// changes, which are stale once missed). Opening an existing group that was created with
    /// another policy recreates it.
    New,
}

/// A durable consumer: every replica that opens the same `group` shares its messages, each
/// message goes to one of them.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Durable name shared by every replica of the consuming service.
    pub group: String,
    /// Topics this group receives; at least one.
    pub topics: Vec<Topic>,
    /// Where the group starts when it is created.
    pub start: StartPolicy,
    /// Deliveries before the broker gives up on a message by itself and the adapter moves it to
    /// the dead letters; zero or negative: never (the consumer decides, see
    /// [`Delivery::dead_letter`]).
    pub max_deliver: i64,
    /// How long a delivery may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// Most unacknowledged messages in flight for this consumer.
    pub max_ack_pending: i64,
}

impl ConsumerSpec {
    /// A spec with the defaults: from the oldest message, 10 deliveries, 30 s ack wait, 256 in
    /// flight.
    pub fn new(group: impl Into<String>, topics: impl Into<Vec<Topic>>) -> Self {
        Self {
            group: group.into(),
            topics: topics.into(),
            start: StartPolicy::All,
            max_deliver: 10,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 256,
        }
    }
}

/// Why a bus operation failed. The text is for logs (with [`Report`](contoso_domain::Report),
/// which adds the source chain), not for clients.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The message may or may not be stored: retry with the same message id, which dedupes.
    #[error("the broker did not confirm {context}")]
    PublishNotConfirmed {
        /// What was published, e.g. `publishing to orders.accepted`.
        context: String,
        #[source]
        source: Cause,
    },
    /// The broker cannot be reached, or the stream cannot be set up on it.
    #[error("the broker is unavailable while {context}")]
    Unavailable {
        /// What the adapter was doing, e.g. `connecting to nats://10.0.0.7:4222`.
        context: String,
        #[source]
        source: Cause,
    },
    /// The consumer could not be created or opened.
    #[error("consumer setup failed while {context}")]
    Consumer {
        /// What the adapter was doing, e.g. `opening consumer group process-svc`.
        context: String,
        #[source]
        source: Cause,
    },
    /// The ack may not have reached the broker: expect the message again.
    #[error("acknowledging a delivery failed")]
    Ack(#[source] Cause),
    /// A dead-letter operation (capture, list, replay, purge) failed.
    #[error("dead letters: {context} failed")]
    DeadLetters {
        /// What was being done, e.g. `replaying dead letter 7`.
        context: String,
        #[source]
        source: Cause,
    },
}

impl BusError {
    /// [`BusError::PublishNotConfirmed`].
    pub fn not_confirmed(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::PublishNotConfirmed {
            context: context.into(),
            source: source.into(),
        }
    }

    /// [`BusError::Unavailable`].
    pub fn unavailable(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Unavailable {
            context: context.into(),
            source: source.into(),
        }
    }

    /// [`BusError::DeadLetters`].
    pub fn dead_letters(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::DeadLetters {
            context: context.into(),
            source: source.into(),
        }
    }

    /// [`BusError::Consumer`].
    pub fn consumer(context: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Consumer {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// What a delivery's consumer says back to the broker.
#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// Done: never deliver again.
    async fn ack(&self) -> Result<(), BusError>;
    /// Not done: deliver again after `delay`.
    async fn nack(&self, delay: Duration) -> Result<(), BusError>;
    /// Tell the broker the consumer is still working (resets the ack wait).
    async fn in_progress(&self) -> Result<(), BusError>;
    /// Give up: store the message in the dead letters with `reason`, then terminate it so it is
    /// never delivered again. An error means it was not terminated (and maybe not stored).
    async fn dead_letter(&self, reason: &str) -> Result<(), BusError>;
}

/// One delivered message.
pub struct Delivery {
    /// The topic it was published on.
    pub topic: Topic,
    /// The publisher's deduplication id, when it set one.
    pub message_id: Option<String>,
    /// The published bytes, unchanged.
    pub payload: Bytes,
    /// 1 on the first delivery, 2 on the first redelivery, ...
    pub attempt: u64,
    /// The message's position in the stream: the same on every delivery of it.
    pub sequence: u64,
    acker: Box<dyn Acknowledge>,
    /// Where it came from and who consumes it (spans, metrics); `None` for deliveries made up
    /// by tests.
    trace: Option<DeliveryTrace>,
    received: std::time::Instant,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("message_id", &self.message_id)
            .field("attempt", &self.attempt)
            .field("sequence", &self.sequence)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Delivery {
    /// For adapters: wraps a message with the handle that acknowledges it.
    pub fn new(
        topic: Topic,
        message_id: Option<String>,
        payload: Bytes,
        attempt: u64,
        sequence: u64,
        acker: Box<dyn Acknowledge>,
    ) -> Self {
        Self {
            topic,
            message_id,
            payload,
            attempt,
            sequence,
            acker,
            trace: None,
            received: std::time::Instant::now(),
        }
    }

    /// For adapters: names the consumer group, the destination and the publisher's trace
    /// context, which [`Delivery::span`] continues; counts a redelivery.
    pub fn traced(mut self, trace: DeliveryTrace) -> Self {
        if self.attempt > 1 {
            telemetry::METRICS
                .redeliveries
                .get_or_create(&telemetry::group_labels(&trace.group, self.topic))
                .inc();
        }
        self.trace = Some(trace);
        self
    }

    /// The consumer span to handle this delivery in: a child of the span that published it, so
    /// the consumer's work joins the publisher's trace (and carries its correlation id).
    pub fn span(&self) -> tracing::Span {
        let unknown = DeliveryTrace {
            system: "unknown",
            group: String::new(),
            destination: self.topic.to_string(),
            headers: Vec::new(),
        };
        telemetry::process_span(
            self.trace.as_ref().unwrap_or(&unknown),
            self.topic,
            self.message_id.as_deref(),
            self.attempt,
        )
    }

    fn group(&self) -> &str {
        self.trace.as_ref().map_or("", |t| t.group.as_str())
    }

    /// Done: never deliver again. Call only after the work is durable.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.acker.ack().await?;
        telemetry::METRICS
            .ack_latency
            .get_or_create(&telemetry::group_labels(self.group(), self.topic))
            .observe(self.received.elapsed().as_secs_f64());
        Ok(())
    }

    /// Not done: deliver again after `delay`, with `attempt` one higher.
    pub async fn nack(&self, delay: Duration) -> Result<(), BusError> {
        self.acker.nack(delay).await
    }

    /// Still working: push the redelivery back by one ack wait.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.acker.in_progress().await
    }

    /// Gives up on the message: it lands in the dead letters (original subject, headers, payload,
    /// delivery count, consumer group, `reason`, time) and is never delivered again. On an error
    /// it was not terminated: nack it, and dead-letter it again on its next delivery (capturing
    /// the same delivery twice stores it once).
    pub async fn dead_letter(&self, reason: &str) -> Result<(), BusError> {
        self.acker.dead_letter(reason).await?;
        telemetry::METRICS
            .dead_letters
            .get_or_create(&telemetry::group_labels(self.group(), self.topic))
            .inc();
        Ok(())
    }
}

/// The messages of one consumer. The adapters ride out broker outages themselves (logging and
/// retrying), so the stream does not end while it is polled.
pub type Deliveries = BoxStream<'static, Result<Delivery, BusError>>;

/// Publish and consume. Implementations are cheap to share (`Arc<dyn Bus>`).
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug {
    /// Publishes and returns once the broker has durably accepted the message. An error means
    /// the caller must treat the message as not sent.
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError>;

    /// Opens, or joins, the durable consumer described by `spec`.
    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError>;

    /// True while the broker connection is usable (for `/readyz`).
    async fn is_ready(&self) -> bool;
}
