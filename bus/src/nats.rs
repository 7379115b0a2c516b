//! The NATS JetStream adapter of [`Bus`]: one long-lived client, one file-backed stream holding
//! every topic under `{subject_prefix}.>`, deduplication by the `Nats-Msg-Id` header, and one
//! durable pull consumer per consumer group.

use std::{fmt, time::Duration};

use async_nats::{
    Client, ConnectOptions, HeaderValue,
    connection::State,
    header::NATS_MESSAGE_ID,
    jetstream::{
        self, AckKind,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::PublishErrorKind,
        message::{Acker, PublishMessage},
        stream,
    },
};
use async_trait::async_trait;
use futures::StreamExt;

use crate::{Acknowledge, Bus, BusError, ConsumerSpec, Deliveries, Delivery, Envelope, Topic};

/// Largest pull batch. Small batches keep replicas of one group sharing the work instead of
/// one replica buffering everything.
const MAX_PULL_BATCH: usize = 64;
/// Pull requests are renewed this often; the heartbeat lets a dead connection show up as an error.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
            .field("state", &self.client.connection_state())
            .finish()
    }
}

impl NatsBus {
    /// Connects and creates or updates the stream. An unreachable server fails at once with
    /// [`BusError::Unavailable`]; once connected, the client reconnects by itself.
    pub async fn connect(settings: NatsSettings) -> Result<NatsBus, BusError> {
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
        tracing::info!(%server, stream = %settings.stream, "connected to NATS JetStream");

        Ok(NatsBus {
            client,
            jetstream,
            stream: settings.stream,
            subject_prefix: settings.subject_prefix,
            publish_timeout: settings.publish_timeout,
            server,
        })
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
        Ok(pull::Config {
            durable_name: Some(spec.group.clone()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            filter_subjects,
            max_deliver: spec.max_deliver,
            ack_wait: spec.ack_wait,
            max_ack_pending: spec.max_ack_pending,
            ..Default::default()
        })
    }

    /// Creates or updates the durable consumer and opens a pull stream on it.
    async fn open(&self, config: &pull::Config) -> Result<pull::Stream, BusError> {
        let group = config.durable_name.as_deref().unwrap_or_default();
        let consumer: PullConsumer = self
            .jetstream
            .create_consumer_on_stream(config.clone(), self.stream.as_str())
            .await
            .map_err(|e| {
                BusError::consumer(
                    format!(
                        "creating or updating consumer {group} on stream {}",
                        self.stream
                    ),
                    e,
                )
            })?;
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
}

#[async_trait]
impl Bus for NatsBus {
    #[tracing::instrument(
        skip_all,
        fields(topic = %envelope.topic, message_id = %envelope.message_id)
    )]
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        if !self.is_ready().await {
            // While disconnected the client would buffer the message and send it after a
            // reconnect, long after the caller was told it failed: refuse it outright instead.
            return Err(BusError::not_confirmed(
                format!("publishing {}", envelope.topic),
                format!("not connected to {}", self.server),
            ));
        }
        let subject = self.subject(envelope.topic);
        let mut message = PublishMessage::build().payload(envelope.payload);
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

        let confirmed = async {
            let ack = self
                .jetstream
                .send_publish(subject.clone(), message)
                .await?;
            ack.await
        };
        let outcome = tokio::time::timeout(self.publish_timeout, confirmed).await;
        match outcome {
            Ok(Ok(ack)) => {
                if ack.duplicate {
                    tracing::debug!(
                        sequence = ack.sequence,
                        "duplicate publish dropped by the stream"
                    );
                }
                Ok(())
            }
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

    #[tracing::instrument(skip_all, fields(group = %spec.group))]
    async fn consume(&self, spec: &ConsumerSpec) -> Result<Deliveries, BusError> {
        let config = self.consumer_config(spec)?;
        let messages = self.open(&config).await?;
        let subscription = Subscription {
            bus: self.clone(),
            config,
            messages: Some(messages),
            failures: 0,
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
    config: pull::Config,
    messages: Option<pull::Stream>,
    failures: u32,
}

impl Subscription {
    fn group(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    async fn next(&mut self) -> Delivery {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match self.bus.open(&self.config).await {
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
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        let (message, acker) = message.split();
        let Some(topic) = self.bus.topic_of(message.subject.as_str()) else {
            // Only possible if someone widened the consumer's filter by hand; redelivering a
            // message nobody here can read would loop until max_deliver.
            tracing::error!(
                group = self.group(),
                subject = %message.subject,
                "terminating a message on a subject that maps to no topic"
            );
            if let Err(error) = acker.ack_with(AckKind::Term).await {
                tracing::warn!(group = self.group(), %error, "terminating the message failed");
            }
            return None;
        };
        let message_id = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(NATS_MESSAGE_ID))
            .map(|id| id.as_str().to_owned());
        let attempt = u64::try_from(delivered).unwrap_or(1).max(1);
        Some(Delivery::new(
            topic,
            message_id,
            message.payload,
            attempt,
            Box::new(NatsAck(acker)),
        ))
    }
}

struct NatsAck(Acker);

#[async_trait]
impl Acknowledge for NatsAck {
    async fn ack(&self) -> Result<(), BusError> {
        // Double ack: it waits for the server's confirmation, so Ok means the message will not
        // come back, and a service draining on SIGTERM knows its acks landed before it exits,
        // instead of leaving them in a write buffer. One round trip per message is cheap next
        // to the database transaction it follows.
        self.0.double_ack().await.map_err(BusError::Ack)
    }

    async fn nack(&self, delay: Duration) -> Result<(), BusError> {
        self.0
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(BusError::Ack)
    }

    async fn in_progress(&self) -> Result<(), BusError> {
        self.0
            .ack_with(AckKind::Progress)
            .await
            .map_err(BusError::Ack)
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
