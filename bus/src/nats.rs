//! The NATS JetStream adapter of [`Bus`]: one long-lived client, one file-backed stream holding
//! every topic under `{subject_prefix}.>`, deduplication by the `Nats-Msg-Id` header, and one
//! durable pull consumer per consumer group.
//!
//! Dead letters live in a second stream (`{stream}_DLQ` by default) on
//! `{subject_prefix}_dlq.{consumer}.{topic}`: outside the main stream's subjects, which JetStream
//! requires of two streams. Each holds the original payload and headers, plus `Contoso-Dlq-*`
//! headers with the original subject, stream sequence, consumer, delivery count, reason and time.
//! A consumer captures a message when it gives up on it ([`Delivery::dead_letter`]); a message the
//! broker gives up on by itself (`max_deliver`) is copied there from the stream when its
//! `MAX_DELIVERIES` advisory arrives.

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use async_nats::{
    Client, ConnectOptions, HeaderMap, HeaderName, HeaderValue,
    connection::State,
    header::NATS_MESSAGE_ID,
    jetstream::{
        self, AckKind, ErrorCode,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::PublishErrorKind,
        message::{Acker, PublishMessage, StreamMessage},
        stream::{self, DeleteMessageErrorKind, RawMessageErrorKind},
    },
};
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::{
    Acknowledge, Bus, BusError, ConsumerSpec, DeadLetter, DeadLetters, Deliveries, Delivery,
    DeliveryTrace, Envelope, StartPolicy, Topic, dead_letter::one_line, telemetry,
};

/// Largest pull batch. Small batches keep replicas of one group sharing the work instead of
/// one replica buffering everything.
const MAX_PULL_BATCH: usize = 64;
/// Pull requests are renewed this often; the heartbeat lets a dead connection show up as an error.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a consumer's pending counts are read for `/metrics`.
const PENDING_POLL: Duration = Duration::from_secs(10);
/// `messaging.system` of this adapter.
const SYSTEM: &str = "nats";
/// Attempts to copy a message named by a `MAX_DELIVERIES` advisory into the dead letters.
const ADVISORY_ATTEMPTS: u32 = 5;

/// The headers that carry a publisher's trace context (W3C trace context and baggage).
const TRACE_HEADERS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// The headers a dead letter carries besides the original ones.
const DLQ_SUBJECT: &str = "Contoso-Dlq-Subject";
const DLQ_STREAM: &str = "Contoso-Dlq-Stream";
const DLQ_SEQUENCE: &str = "Contoso-Dlq-Sequence";
const DLQ_CONSUMER: &str = "Contoso-Dlq-Consumer";
const DLQ_DELIVERIES: &str = "Contoso-Dlq-Deliveries";
const DLQ_REASON: &str = "Contoso-Dlq-Reason";
const DLQ_TIME: &str = "Contoso-Dlq-Time";
const DLQ_MESSAGE_ID: &str = "Contoso-Dlq-Msg-Id";
const DLQ_HEADER_PREFIX: &str = "Contoso-Dlq-";

/// Where the broker is and how the stream is laid out.
#[derive(Clone)]
pub struct NatsSettings {
    /// Server URL, or several separated by commas (a cluster seed list).
    pub url: String,
    /// The JetStream stream that holds every topic.
    pub stream: String,
    /// First subject token: [`Topic::OrderAccepted`] travels on `{subject_prefix}.accepted`.
    pub subject_prefix: String,
    /// Stream replicas: 1 on a single server, 3 on the production cluster.
    pub replicas: usize,
    /// How long the stream remembers a message id to drop a duplicate publish.
    pub duplicate_window: Duration,
    /// Longest wait for the broker to confirm a publish (also bounds JetStream API calls).
    pub publish_timeout: Duration,
    /// How long the stream keeps a message; long enough to replay or inspect dead letters, short
    /// enough that the stream's disk use stays bounded.
    pub max_age: Duration,
    /// The stream holding dead letters, on `{subject_prefix}_dlq.>`.
    pub dead_letter_stream: String,
    /// How long a dead letter is kept.
    pub dead_letter_max_age: Duration,
}

impl NatsSettings {
    /// The first subject token of dead letters.
    pub fn dead_letter_prefix(&self) -> String {
        format!("{}_dlq", self.subject_prefix)
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "ORDERS".to_owned(),
            subject_prefix: "orders".to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(5),
            max_age: Duration::from_secs(7 * 24 * 3600),
            dead_letter_stream: "ORDERS_DLQ".to_owned(),
            dead_letter_max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &redact(&self.url))
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("replicas", &self.replicas)
            .field("duplicate_window", &self.duplicate_window)
            .field("publish_timeout", &self.publish_timeout)
            .field("max_age", &self.max_age)
            .field("dead_letter_stream", &self.dead_letter_stream)
            .field("dead_letter_max_age", &self.dead_letter_max_age)
            .finish()
    }
}

/// The JetStream bus. Clones share one connection.
#[derive(Clone)]
pub struct NatsBus {
    client: Client,
    jetstream: jetstream::Context,
    stream: String,
    subject_prefix: String,
    dead_letter_stream: String,
    dead_letter_prefix: String,
    publish_timeout: Duration,
    /// The URL without credentials, for messages and logs.
    server: String,
}

impl fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBus")
            .field("server", &self.server)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("dead_letter_stream", &self.dead_letter_stream)
            .field("state", &self.client.connection_state())
            .finish()
    }
}

impl NatsBus {
    /// Connects and creates or updates the stream. An unreachable server fails at once with
    /// [`BusError::Unavailable`]; once connected, the client reconnects by itself.
    pub async fn connect(settings: NatsSettings) -> Result<NatsBus, BusError> {
        Self::open_connection(settings, true).await
    }

    /// Connects without creating or updating either stream: for tools (`contoso dlq`) that
    /// operate a deployment and must not change its streams' settings (replicas, retention) to
    /// their own defaults.
    pub async fn connect_to_existing(settings: NatsSettings) -> Result<NatsBus, BusError> {
        Self::open_connection(settings, false).await
    }

    async fn open_connection(
        settings: NatsSettings,
        manage_streams: bool,
    ) -> Result<NatsBus, BusError> {
        let server = redact(&settings.url);
        let urls: Vec<&str> = settings
            .url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(BusError::unavailable(
                "connecting",
                "no NATS server URL is configured",
            ));
        }
        // No retry_on_initial_connect: a wrong URL must stop the service at start-up, not leave
        // it waiting in the background.
        let client = ConnectOptions::new()
            .name("contoso-orders")
            .connect(urls.as_slice())
            .await
            .map_err(|e| BusError::unavailable(format!("connecting to {server}"), e))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(settings.publish_timeout)
            .build(client.clone());
        let dead_letter_prefix = settings.dead_letter_prefix();
        if manage_streams {
            Self::create_streams(&jetstream, &settings, &server).await?;
        }
        tracing::info!(%server, stream = %settings.stream, dead_letters = %settings.dead_letter_stream, "connected to NATS JetStream");

        Ok(NatsBus {
            client,
            jetstream,
            stream: settings.stream,
            subject_prefix: settings.subject_prefix,
            dead_letter_stream: settings.dead_letter_stream,
            dead_letter_prefix,
            publish_timeout: settings.publish_timeout,
            server,
        })
    }

    /// Creates or updates the stream and the dead-letter stream.
    async fn create_streams(
        jetstream: &jetstream::Context,
        settings: &NatsSettings,
        server: &str,
    ) -> Result<(), BusError> {
        let config = stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas.max(1),
            duplicate_window: settings.duplicate_window,
            max_age: settings.max_age,
            ..Default::default()
        };
        jetstream
            .create_or_update_stream(config)
            .await
            .map_err(|e| {
                BusError::unavailable(
                    format!(
                        "creating or updating stream {} on {server}",
                        settings.stream
                    ),
                    e,
                )
            })?;
        let dead_letter_prefix = settings.dead_letter_prefix();
        let dead_letters = stream::Config {
            name: settings.dead_letter_stream.clone(),
            subjects: vec![format!("{dead_letter_prefix}.>")],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas.max(1),
            // Capturing the same message twice (a consumer's capture whose term was lost, or the
            // consumer's and the advisory's) stores it once.
            duplicate_window: settings.duplicate_window,
            max_age: settings.dead_letter_max_age,
            ..Default::default()
        };
        jetstream
            .create_or_update_stream(dead_letters)
            .await
            .map_err(|e| {
                BusError::unavailable(
                    format!(
                        "creating or updating stream {} on {server}",
                        settings.dead_letter_stream
                    ),
                    e,
                )
            })?;
        Ok(())
    }

    fn subject(&self, topic: Topic) -> String {
        format!("{}.{}", self.subject_prefix, topic.suffix())
    }

    fn topic_of(&self, subject: &str) -> Option<Topic> {
        let suffix = subject
            .strip_prefix(self.subject_prefix.as_str())?
            .strip_prefix('.')?;
        Topic::from_suffix(suffix)
    }

    fn consumer_config(&self, spec: &ConsumerSpec) -> Result<pull::Config, BusError> {
        if spec.group.is_empty() {
            return Err(BusError::consumer(
                "configuring a consumer",
                "the consumer group has no name",
            ));
        }
        if spec.topics.is_empty() {
            return Err(BusError::consumer(
                format!("configuring consumer group {}", spec.group),
                "it names no topics",
            ));
        }
        let mut filter_subjects: Vec<String> = spec
            .topics
            .iter()
            .map(|topic| self.subject(*topic))
            .collect();
        // The server refuses overlapping filters, so a topic listed twice must count once.
        filter_subjects.sort();
        filter_subjects.dedup();
        let deliver_policy = match spec.start {
            StartPolicy::All => DeliverPolicy::All,
            StartPolicy::New => DeliverPolicy::New,
        };
        Ok(pull::Config {
            durable_name: Some(spec.group.clone()),
            deliver_policy,
            ack_policy: AckPolicy::Explicit,
            filter_subjects,
            // -1 is JetStream's "no limit" (explicit, so updating a durable that had one lifts it).
            max_deliver: if spec.max_deliver > 0 {
                spec.max_deliver
            } else {
                -1
            },
            ack_wait: spec.ack_wait,
            max_ack_pending: spec.max_ack_pending,
            ..Default::default()
        })
    }

    /// Creates or updates the durable consumer and opens a pull stream on it.
    async fn open(&self, config: &pull::Config) -> Result<pull::Stream, BusError> {
        let group = config.durable_name.as_deref().unwrap_or_default();
        let created = self
            .jetstream
            .create_consumer_on_stream(config.clone(), self.stream.as_str())
            .await;
        let created = match created {
            Err(_) if self.replaced_for_new_start(config).await => {
                self.jetstream
                    .create_consumer_on_stream(config.clone(), self.stream.as_str())
                    .await
            }
            other => other,
        };
        let consumer: PullConsumer = created.map_err(|e| {
            BusError::consumer(
                format!(
                    "creating or updating consumer {group} on stream {}",
                    self.stream
                ),
                e,
            )
        })?;
        self.pull(&consumer, config).await
    }

    /// Re-opens a pull stream that failed (the broker restarted, the connection dropped): binds to
    /// the durable as it is, creating it only if it is gone. Its settings belong to the replica
    /// that last opened it on purpose (on start, usually the newest release): a replica re-opening
    /// after an outage must not bring its own, perhaps older, settings back.
    async fn reopen(&self, config: &pull::Config) -> Result<pull::Stream, BusError> {
        let group = config.durable_name.as_deref().unwrap_or_default();
        let existing: Result<PullConsumer, _> = self
            .jetstream
            .get_consumer_from_stream(group, self.stream.as_str())
            .await;
        let Ok(consumer) = existing else {
            // Gone (or unreadable): created (or updated) as on start.
            return self.open(config).await;
        };
        let current = &consumer.cached_info().config;
        if (
            current.max_ack_pending,
            current.ack_wait,
            current.max_deliver,
            &current.filter_subjects,
        ) != (
            config.max_ack_pending,
            config.ack_wait,
            config.max_deliver,
            &config.filter_subjects,
        ) {
            tracing::info!(
                group,
                max_ack_pending = current.max_ack_pending,
                ack_wait = ?current.ack_wait,
                max_deliver = current.max_deliver,
                "re-opening the durable consumer on the settings another replica gave it"
            );
        }
        self.pull(&consumer, config).await
    }

    /// A pull stream on `consumer`, fetching no more at once than this replica may hold.
    async fn pull(
        &self,
        consumer: &PullConsumer,
        config: &pull::Config,
    ) -> Result<pull::Stream, BusError> {
        let group = config.durable_name.as_deref().unwrap_or_default();
        let batch = usize::try_from(config.max_ack_pending)
            .ok()
            .filter(|limit| *limit > 0)
            .map_or(MAX_PULL_BATCH, |limit| limit.min(MAX_PULL_BATCH));
        consumer
            .stream()
            .max_messages_per_batch(batch)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| BusError::consumer(format!("pulling from consumer {group}"), e))
    }

    /// JetStream cannot change where an existing durable starts. A group that asks to start at
    /// new messages holds only ephemeral events, so an old durable of it that starts elsewhere
    /// (e.g. created with `All` by an earlier release) is deleted, to be created afresh. Returns
    /// whether it was.
    async fn replaced_for_new_start(&self, config: &pull::Config) -> bool {
        if config.deliver_policy != DeliverPolicy::New {
            return false;
        }
        let Some(group) = config.durable_name.as_deref() else {
            return false;
        };
        let existing: Result<PullConsumer, _> = self
            .jetstream
            .get_consumer_from_stream(group, self.stream.as_str())
            .await;
        let Ok(existing) = existing else {
            return false;
        };
        if existing.cached_info().config.deliver_policy == DeliverPolicy::New {
            return false;
        }
        match self
            .jetstream
            .delete_consumer_from_stream(group, self.stream.as_str())
            .await
        {
            Ok(_) => {
                tracing::warn!(
                    group,
                    "recreating the durable consumer so that it starts at new messages"
                );
                true
            }
            Err(error) => {
                tracing::warn!(group, %error, "deleting the durable consumer to recreate it failed");
                false
            }
        }
    }

    /// Publishes with the current (producer) span's trace context in the headers.
    async fn publish_in_span(&self, subject: String, envelope: Envelope) -> Result<(), BusError> {
        let mut message = PublishMessage::build().payload(envelope.payload);
        for (name, value) in contoso_telemetry::headers_of(&tracing::Span::current()) {
            if let (Ok(name), Ok(value)) =
                (name.parse::<HeaderName>(), value.parse::<HeaderValue>())
            {
                message = message.header(name, value);
            }
        }
        // An empty id means "no id": JetStream would not deduplicate on it anyway.
        if !envelope.message_id.is_empty() {
            let id = envelope.message_id.parse::<HeaderValue>().map_err(|e| {
                BusError::not_confirmed(
                    "publishing with a message id that is not a valid header",
                    e,
                )
            })?;
            message = message.header(NATS_MESSAGE_ID, id);
        }

        let ack = self.publish_confirmed(subject, message).await?;
        if ack.duplicate {
            tracing::debug!(
                sequence = ack.sequence,
                "duplicate publish dropped by the stream"
            );
        }
        Ok(())
    }

    /// Publishes and waits for the stream's confirmation, within the publish timeout.
    async fn publish_confirmed(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        if !self.is_ready().await {
            // While disconnected the client would buffer the message and send it after a
            // reconnect, long after the caller was told it failed: refuse it outright instead.
            return Err(BusError::not_confirmed(
                format!("publishing to {subject}"),
                format!("not connected to {}", self.server),
            ));
        }
        let confirmed = async {
            let ack = self
                .jetstream
                .send_publish(subject.clone(), message)
                .await?;
            ack.await
        };
        let outcome = tokio::time::timeout(self.publish_timeout, confirmed).await;
        match outcome {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(e)) if e.kind() != PublishErrorKind::TimedOut => Err(BusError::not_confirmed(
                format!("publishing to {subject}"),
                e,
            )),
            // Timed out, in the client or here.
            _ => Err(BusError::not_confirmed(
                format!("publishing to {subject}"),
                format!(
                    "no acknowledgement from {} within {:?}",
                    self.server, self.publish_timeout
                ),
            )),
        }
    }

    /// Stores `original` in the dead-letter stream.
    async fn capture(&self, original: &Original, reason: &str) -> Result<(), BusError> {
        let (subject, message) = original.dead_letter(&self.dead_letter_prefix, reason);
        let ack = self
            .publish_confirmed(subject, message)
            .await
            .map_err(|e| {
                BusError::dead_letters(
                    format!(
                        "capturing message {} of stream {} for {}",
                        original.stream_sequence, original.stream, original.consumer
                    ),
                    e,
                )
            })?;
        tracing::warn!(
            dead_letter = ack.sequence,
            duplicate = ack.duplicate,
            consumer = %original.consumer,
            subject = %original.subject,
            stream_sequence = original.stream_sequence,
            deliveries = original.deliveries,
            reason,
            "message dead-lettered"
        );
        Ok(())
    }

    /// Copies the messages the broker gives up on (`max_deliver`) for `group` into the dead
    /// letters, from their `MAX_DELIVERIES` advisories. Every replica of the group subscribes in
    /// one queue group, so each advisory is handled once (and a second copy would be
    /// deduplicated). Advisories are not stored: one published while no replica is connected is
    /// missed, and its message stays in the stream until `max_age` (`nats stream get` shows it).
    async fn watch_max_deliveries(&self, group: &str) -> Result<AbortOnDrop, BusError> {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{group}",
            self.stream
        );
        let mut advisories = self
            .client
            .queue_subscribe(subject.clone(), format!("contoso-dlq-{group}"))
            .await
            .map_err(|e| BusError::consumer(format!("subscribing to {subject}"), e))?;
        // The subscription is in place before any delivery of this consumer can run out.
        self.client
            .flush()
            .await
            .map_err(|e| BusError::consumer(format!("subscribing to {subject}"), e))?;
        let bus = self.clone();
        let group = group.to_owned();
        Ok(AbortOnDrop(tokio::spawn(async move {
            while let Some(advisory) = advisories.next().await {
                match serde_json::from_slice::<MaxDeliveries>(&advisory.payload) {
                    Ok(advisory) => bus.capture_advised(&group, advisory).await,
                    Err(error) => {
                        tracing::warn!(%error, group, "unreadable MAX_DELIVERIES advisory");
                    }
                }
            }
        })))
    }

    /// Keeps the group's pending and unacknowledged counts (`/metrics`) up to date while it is
    /// consumed here.
    fn watch_pending(&self, group: &str) -> AbortOnDrop {
        let bus = self.clone();
        let group = group.to_owned();
        AbortOnDrop(tokio::spawn(async move {
            let labels = vec![contoso_telemetry::metrics::label("group", group.clone())];
            let mut every = tokio::time::interval(PENDING_POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let consumer = bus
                    .jetstream
                    .get_consumer_from_stream::<pull::Config, _, _>(&group, &bus.stream)
                    .await;
                match consumer {
                    Ok(consumer) => {
                        let info = consumer.cached_info();
                        let m = &telemetry::METRICS;
                        m.pending
                            .get_or_create(&labels)
                            .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                        m.ack_pending
                            .get_or_create(&labels)
                            .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
                    }
                    Err(error) => {
                        tracing::debug!(%error, group, "reading the consumer's pending counts failed");
                    }
                }
            }
        }))
    }

    async fn capture_advised(&self, group: &str, advisory: MaxDeliveries) {
        let reason = format!(
            "the broker gave up after {} deliveries (max_deliver)",
            advisory.deliveries
        );
        let mut failures = 0;
        loop {
            let outcome = async {
                let message = self
                    .jetstream
                    .get_stream_no_info(&self.stream)
                    .await
                    .map_err(|e| BusError::dead_letters("opening the stream", e))?
                    .get_raw_message(advisory.stream_seq)
                    .await
                    .map_err(|e| {
                        BusError::dead_letters(
                            format!("reading message {} of {}", advisory.stream_seq, self.stream),
                            e,
                        )
                    })?;
                let original = Original {
                    subject: message.subject.to_string(),
                    headers: Some(message.headers),
                    payload: message.payload,
                    stream: self.stream.clone(),
                    stream_sequence: advisory.stream_seq,
                    consumer: group.to_owned(),
                    deliveries: advisory.deliveries,
                };
                self.capture(&original, &reason).await?;
                if let Some(topic) = self.topic_of(&original.subject) {
                    telemetry::METRICS
                        .dead_letters
                        .get_or_create(&telemetry::group_labels(group, topic))
                        .inc();
                }
                Ok::<(), BusError>(())
            }
            .await;
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    failures += 1;
                    tracing::warn!(error = %contoso_domain::Report(&error), group, stream_seq = advisory.stream_seq, failures, "copying a message the broker gave up on into the dead letters failed");
                    if failures >= ADVISORY_ATTEMPTS {
                        return;
                    }
                    tokio::time::sleep(MIN_BACKOFF.saturating_mul(2u32.pow(failures))).await;
                }
            }
        }
    }

    fn dead_letter_from(&self, message: StreamMessage) -> DeadLetter {
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
        };
        let subject = header(DLQ_SUBJECT).unwrap_or_else(|| message.subject.to_string());
        let dead_at = header(DLQ_TIME)
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&Utc))
            .or_else(|| DateTime::from_timestamp(message.time.unix_timestamp(), 0))
            .unwrap_or_default();
        let mut headers: Vec<(String, String)> = message
            .headers
            .iter()
            .filter(|(name, _)| is_original_header(name.as_ref()))
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |value| (name.to_string(), value.as_str().to_owned()))
            })
            .collect();
        headers.sort();
        DeadLetter {
            id: message.sequence,
            dead_at,
            topic: self.topic_of(&subject),
            subject,
            consumer: header(DLQ_CONSUMER).unwrap_or_default(),
            deliveries: header(DLQ_DELIVERIES)
                .and_then(|n| n.parse().ok())
                .unwrap_or_default(),
            reason: header(DLQ_REASON).unwrap_or_default(),
            message_id: header(DLQ_MESSAGE_ID),
            stream_sequence: header(DLQ_SEQUENCE).and_then(|n| n.parse().ok()),
            headers,
            payload: message.payload,
        }
    }

    async fn dead_letter_stream(&self) -> Result<stream::Stream<()>, BusError> {
        self.jetstream
            .get_stream_no_info(&self.dead_letter_stream)
            .await
            .map_err(|e| {
                BusError::dead_letters(format!("opening stream {}", self.dead_letter_stream), e)
            })
    }

    /// The first dead letter at or after `from`.
    async fn dead_letter_at_or_after(
        &self,
        dead_letters: &stream::Stream<()>,
        from: u64,
    ) -> Result<Option<StreamMessage>, BusError> {
        let found = dead_letters
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(format!("{}.>", self.dead_letter_prefix))
            .send()
            .await;
        match found {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BusError::dead_letters(
                format!("reading {} from {from}", self.dead_letter_stream),
                e,
            )),
        }
    }
}

/// A `MAX_DELIVERIES` advisory (`io.nats.jetstream.advisory.v1.max_deliver`).
#[derive(Debug, serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

/// Aborts the task when dropped: the advisory watcher lives as long as its consume stream.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A header of the original message (not one the broker acts on, nor one of ours).
fn is_original_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !lower.starts_with("nats-") && !lower.starts_with(&DLQ_HEADER_PREFIX.to_ascii_lowercase())
}

/// What a dead letter is made of: the message as the stream holds it and who gave up on it.
#[derive(Debug, Clone)]
struct Original {
    subject: String,
    headers: Option<HeaderMap>,
    payload: Bytes,
    stream: String,
    stream_sequence: u64,
    consumer: String,
    deliveries: u64,
}

impl Original {
    /// The dead-letter subject and message.
    fn dead_letter(&self, prefix: &str, reason: &str) -> (String, PublishMessage) {
        let last_token = self.subject.rsplit('.').next().unwrap_or("unknown");
        let subject = format!("{prefix}.{}.{last_token}", self.consumer);
        let mut headers = HeaderMap::new();
        if let Some(original) = &self.headers {
            for (name, values) in original.iter() {
                if is_original_header(name.as_ref()) {
                    for value in values {
                        headers.append(name.clone(), value.clone());
                    }
                }
            }
            if let Some(id) = original.get(NATS_MESSAGE_ID) {
                headers.insert(DLQ_MESSAGE_ID, id.clone());
            }
        }
        let line = |value: &str| HeaderValue::from(one_line(value).as_str());
        headers.insert(DLQ_SUBJECT, line(&self.subject));
        headers.insert(DLQ_STREAM, line(&self.stream));
        headers.insert(DLQ_SEQUENCE, self.stream_sequence.to_string());
        headers.insert(DLQ_CONSUMER, line(&self.consumer));
        headers.insert(DLQ_DELIVERIES, self.deliveries.to_string());
        headers.insert(DLQ_REASON, line(reason));
        headers.insert(DLQ_TIME, Utc::now().to_rfc3339());
        // One dead letter per message and consumer, however often it is captured.
        headers.insert(
            NATS_MESSAGE_ID,
            line(&format!(
                "{}:{}:{}",
                self.stream, self.stream_sequence, self.consumer
            )),
        );
        let message = PublishMessage::build()
            .payload(self.payload.clone())
            .headers(headers);
        (subject, message)
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        let subject = self.subject(envelope.topic);
        let span = telemetry::publish_span(SYSTEM, &subject, &envelope);
        let topic = envelope.topic;
        let published = self
            .publish_in_span(subject, envelope)
            .instrument(span.clone())
            .await;
        let outcome = if published.is_ok() {
            &telemetry::METRICS.published
        } else {
            span.record("otel.status_code", "ERROR");
            &telemetry::METRICS.publish_failures
        };
        outcome.get_or_create(&telemetry::topic_labels(topic)).inc();
        published
    }

    #[tracing::instrument(skip_all, fields(group = %spec.group))]
    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError> {
        let config = self.consumer_config(spec)?;
        let advisories = if config.max_deliver > 0 {
            Some(self.watch_max_deliveries(&spec.group).await?)
        } else {
            None
        };
        let messages = self.open(&config).await?;
        let gauges = self.watch_pending(&spec.group);
        let subscription = Subscription {
            target: Arc::new(DeadLetterTarget {
                bus: self.clone(),
                group: spec.group.clone(),
            }),
            bus: self.clone(),
            config,
            messages: Some(messages),
            failures: 0,
            _advisories: advisories,
            _pending: gauges,
        };
        let deliveries = futures::stream::unfold(subscription, |mut subscription| async move {
            let delivery = subscription.next().await;
            Some((Ok(delivery), subscription))
        });
        Ok(deliveries.boxed())
    }

    async fn is_ready(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

/// The state behind one consume stream. It outlives broker outages: any error from the pull
/// stream drops it and opens a new one (re-creating the consumer if the server lost it) after a
/// backoff, so the caller's stream never ends.
struct Subscription {
    bus: NatsBus,
    target: Arc<DeadLetterTarget>,
    config: pull::Config,
    messages: Option<pull::Stream>,
    failures: u32,
    _advisories: Option<AbortOnDrop>,
    _pending: AbortOnDrop,
}

impl Subscription {
    fn group(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    async fn next(&mut self) -> Delivery {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.bus.reopen(&self.config).await {
                    Ok(messages) => {
                        tracing::info!(group = self.group(), "pull consumer re-opened");
                        self.messages = Some(messages);
                    }
                    Err(error) => {
                        tracing::warn!(
                            group = self.group(),
                            %error,
                            "re-opening the pull consumer failed"
                        );
                        self.back_off().await;
                    }
                }
                continue;
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    self.failures = 0;
                    if let Some(delivery) = self.delivery(message).await {
                        return delivery;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(
                        group = self.group(),
                        %error,
                        "pull consumer failed; re-opening it"
                    );
                    self.messages = None;
                    self.back_off().await;
                }
                None => {
                    tracing::warn!(group = self.group(), "pull consumer ended; re-opening it");
                    self.messages = None;
                    self.back_off().await;
                }
            }
        }
    }

    async fn back_off(&mut self) {
        let delay = MIN_BACKOFF
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        tokio::time::sleep(delay).await;
    }

    async fn delivery(&self, message: jetstream::Message) -> Option<Delivery> {
        let (delivered, stream, stream_sequence) = message
            .info()
            .map(|info| (info.delivered, info.stream.to_owned(), info.stream_sequence))
            .unwrap_or((1, self.bus.stream.clone(), 0));
        let attempt = u64::try_from(delivered).unwrap_or(1).max(1);
        let (message, acker) = message.split();
        let original = Original {
            subject: message.subject.to_string(),
            headers: message.headers.clone(),
            payload: message.payload.clone(),
            stream,
            stream_sequence,
            consumer: self.group().to_owned(),
            deliveries: attempt,
        };
        let ack = NatsAck {
            acker,
            original,
            target: Arc::clone(&self.target),
        };
        let Some(topic) = self.bus.topic_of(message.subject.as_str()) else {
            // Only possible if someone widened the consumer's filter by hand; redelivering a
            // message nobody here can read would loop for ever.
            tracing::error!(
                group = self.group(),
                subject = %message.subject,
                "dead-lettering a message on a subject that maps to no topic"
            );
            if let Err(error) = ack.dead_letter("its subject maps to no topic").await {
                tracing::warn!(group = self.group(), error = %contoso_domain::Report(&error), "dead-lettering the message failed");
            }
            return None;
        };
        let message_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        let headers = message
            .headers
            .as_ref()
            .map(|headers| {
                TRACE_HEADERS
                    .iter()
                    .filter_map(|name| {
                        headers
                            .get(*name)
                            .map(|value| ((*name).to_owned(), value.as_str().to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(
            Delivery::new(
                topic,
                message_id,
                message.payload,
                attempt,
                stream_sequence,
                Box::new(ack),
            )
            .traced(DeliveryTrace {
                system: SYSTEM,
                group: self.group().to_owned(),
                destination: message.subject.to_string(),
                headers,
            }),
        )
    }
}

/// Where a consume stream's dead letters go.
struct DeadLetterTarget {
    bus: NatsBus,
    group: String,
}

struct NatsAck {
    acker: Acker,
    original: Original,
    target: Arc<DeadLetterTarget>,
}

#[async_trait]
impl Acknowledge for NatsAck {
    async fn ack(&self) -> Result<(), BusError> {
        // Double ack: it waits for the server's confirmation, so Ok means the message will not
        // come back, and a service draining on SIGTERM knows its acks landed before it exits,
        // instead of leaving them in a write buffer. One round trip per message is cheap next
        // to the database transaction it follows.
        self.acker.double_ack().await.map_err(BusError::Ack)
    }

    async fn nack(&self, delay: Duration) -> Result<(), BusError> {
        self.acker
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(BusError::Ack)
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(BusError::Ack)
    }

    async fn dead_letter(&self, reason: &str) -> Result<(), BusError> {
        // Stored first, terminated second: a failure in between leaves the message to come back
        // and be captured again, which the dead-letter stream deduplicates.
        self.target.bus.capture(&self.original, reason).await?;
        tracing::debug!(group = %self.target.group, "terminating the dead-lettered message");
        self.acker
            .double_ack_with(AckKind::Term)
            .await
            .map_err(BusError::Ack)
    }
}

#[async_trait]
impl DeadLetters for NatsBus {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let dead_letters = self.dead_letter_stream().await?;
        let mut found = Vec::new();
        let mut from = 1;
        while found.len() < limit {
            let Some(message) = self.dead_letter_at_or_after(&dead_letters, from).await? else {
                break;
            };
            from = message.sequence + 1;
            found.push(self.dead_letter_from(message));
        }
        Ok(found)
    }

    async fn get(&self, id: u64) -> Result<Option<DeadLetter>, BusError> {
        if id == 0 {
            return Ok(None);
        }
        let dead_letters = self.dead_letter_stream().await?;
        let found = self.dead_letter_at_or_after(&dead_letters, id).await?;
        Ok(found
            .filter(|message| message.sequence == id)
            .map(|message| self.dead_letter_from(message)))
    }

    async fn replay(&self, id: u64) -> Result<bool, BusError> {
        let Some(letter) = self.get(id).await? else {
            return Ok(false);
        };
        let context = || format!("replaying dead letter {id}");
        let mut message = PublishMessage::build().payload(letter.payload.clone());
        let mut headers = HeaderMap::new();
        for (name, value) in &letter.headers {
            let name =
                HeaderName::from_str(name).map_err(|e| BusError::dead_letters(context(), e))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| BusError::dead_letters(context(), e))?;
            headers.append(name, value);
        }
        let replay_id = HeaderValue::from_str(&letter.replay_message_id())
            .map_err(|e| BusError::dead_letters(context(), e))?;
        headers.insert(NATS_MESSAGE_ID, replay_id);
        message = message.headers(headers);
        let ack = self
            .publish_confirmed(letter.subject.clone(), message)
            .await
            .map_err(|e| BusError::dead_letters(context(), e))?;
        tracing::info!(
            dead_letter = id,
            subject = %letter.subject,
            sequence = ack.sequence,
            duplicate = ack.duplicate,
            "dead letter replayed"
        );
        // Published first, removed second: a failure in between leaves the entry to be replayed
        // again, and the same replay id keeps the stream from storing it twice.
        self.purge(id).await?;
        Ok(true)
    }

    async fn purge(&self, id: u64) -> Result<bool, BusError> {
        if self.get(id).await?.is_none() {
            return Ok(false);
        }
        let dead_letters = self.dead_letter_stream().await?;
        match dead_letters.delete_message(id).await {
            Ok(deleted) => Ok(deleted),
            Err(e)
                if matches!(
                    e.kind(),
                    DeleteMessageErrorKind::JetStream(ref js)
                        if js.error_code() == ErrorCode::NO_MESSAGE_FOUND
                        || js.error_code() == ErrorCode::SEQUENCE_NOT_FOUND
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(BusError::dead_letters(
                format!("purging dead letter {id}"),
                e,
            )),
        }
    }
}

/// The URL(s) with any `user:password@` replaced, so credentials never reach logs or errors.
fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = match url.split_once("://") {
                Some((scheme, rest)) => (format!("{scheme}://"), rest),
                None => (String::new(), url),
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, tail) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}***@{host}{tail}"),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_credentials_and_keeps_hosts() {
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact("nats://user:secret@nats:4222"),
            "nats://***@nats:4222"
        );
        assert_eq!(
            redact("tok@nats:4222, nats://a:b@other"),
            "***@nats:4222,nats://***@other"
        );
        assert_eq!(redact("nats://host/p@th"), "nats://host/p@th");
    }

    #[test]
    fn settings_debug_does_not_print_the_password() {
        let settings = NatsSettings {
            url: "nats://user:secret@nats:4222".to_owned(),
            ..Default::default()
        };
        assert!(!format!("{settings:?}").contains("secret"));
    }

    #[tokio::test]
    async fn an_empty_url_is_unavailable() {
        let settings = NatsSettings {
            url: " , ".to_owned(),
            ..Default::default()
        };
        assert!(matches!(
            NatsBus::connect(settings).await,
            Err(BusError::Unavailable { .. })
        ));
    }
}
