//! The status event consumer. Every notify-svc replica joins one durable consumer group, so each
//! event is handled by exactly one replica, which looks up the order's owner and publishes the
//! update on the backplane; the backplane carries it to every replica with a stream of that user.
//!
//! An event is acknowledged only once it is on the backplane. Anything else is nacked with a
//! delay: the broker redelivers it and, after its delivery limit, dead-letters it. Nothing is
//! dropped silently.

use std::{sync::Arc, time::Duration};

use contoso_backplane::Backplane;
use contoso_bus::{Bus, ConsumerSpec, Deliveries, Delivery, Topic};
use contoso_domain::Report;
use contoso_domain::{CorrelationId, StatusUpdate, UserId};
use contoso_state::{StateError, StatusReader, StatusWriter};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Settings, events};

/// Longest pause between attempts to rejoin the consumer group, and longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to tell the broker about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ack,
    /// Deliver again after this delay.
    Retry(Duration),
}

/// Routes status events to their owner's backplane channel.
#[derive(Debug)]
pub(crate) struct Consumer {
    state: Arc<dyn StatusReader>,
    status_writer: Arc<dyn StatusWriter>,
    backplane: Arc<dyn Backplane>,
    settings: Arc<Settings>,
}

impl Consumer {
    pub(crate) fn new(
        state: Arc<dyn StatusReader>,
        status_writer: Arc<dyn StatusWriter>,
        backplane: Arc<dyn Backplane>,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            state,
            status_writer,
            backplane,
            settings,
        }
    }

    /// Handles one delivery and acknowledges or nacks it.
    pub(crate) async fn handle(&self, delivery: Delivery) {
        let outcome = self.process(&delivery).await;
        let answered = match outcome {
            Outcome::Ack => delivery.ack().await,
            Outcome::Retry(delay) => delivery.nack(delay).await,
        };
        if let Err(error) = answered {
            // The broker redelivers after its ack wait, so the event is late, not lost.
            tracing::warn!(
                %error,
                topic = %delivery.topic,
                message_id = ?delivery.message_id,
                attempt = delivery.attempt,
                ?outcome,
                "answering the broker failed"
            );
        }
    }

    pub(crate) async fn process(&self, delivery: &Delivery) -> Outcome {
        let update = match events::decode(delivery.topic, &delivery.payload) {
            Ok(update) => update,
            Err(error) => {
                tracing::error!(
                    %error,
                    topic = %delivery.topic,
                    message_id = ?delivery.message_id,
                    attempt = delivery.attempt,
                    "malformed status event; leaving it for redelivery and the dead-letter queue"
                );
                return Outcome::Retry(self.settings.malformed_redelivery);
            }
        };
        let span = tracing::info_span!(
            "status_event",
            correlation_id = %update.correlation_id,
            topic = %delivery.topic,
            attempt = delivery.attempt,
        );
        self.route(update, delivery.attempt).instrument(span).await
    }

    async fn route(&self, update: StatusUpdate, attempt: u64) -> Outcome {
        let owner = match self.resolve_owner(update.correlation_id).await {
            Ok(Some(owner)) => owner,
            Ok(None) => {
                tracing::warn!(
                    correlation_id = %update.correlation_id,
                    attempt,
                    "owner of the order is unknown; not acknowledging, so the broker redelivers"
                );
                return Outcome::Retry(self.settings.missing_owner_redelivery);
            }
            Err(error) => {
                tracing::warn!(error = %Report(&error), "looking up the owner failed; retrying later");
                return Outcome::Retry(backoff(self.settings.retry_backoff, attempt));
            }
        };
        // Recorded before it is announced: a watch opened after this update reaches anyone finds
        // it (or a later status) in its snapshot, even if the sender's own write failed. Only
        // moves forward, so a late or repeated event changes nothing.
        if let Err(error) = self
            .status_writer
            .advance(update.correlation_id, update.status, update.order_id)
            .await
        {
            tracing::warn!(error = %Report(&error), "recording the status failed; retrying later");
            return Outcome::Retry(backoff(self.settings.retry_backoff, attempt));
        }
        match self.backplane.publish(&owner, &update).await {
            Ok(()) => {
                tracing::debug!(status = %update.status, "status update published to the backplane");
                Outcome::Ack
            }
            Err(error) => {
                tracing::warn!(%error, "publishing to the backplane failed; retrying later");
                Outcome::Retry(backoff(self.settings.retry_backoff, attempt))
            }
        }
    }

    /// The owner map is written at intake just before the event is published, and a replica of
    /// Redis may lag a little: a few short retries save a full redelivery round.
    async fn resolve_owner(&self, cid: CorrelationId) -> Result<Option<UserId>, StateError> {
        let mut delays = self.settings.owner_retry_delays.iter();
        loop {
            let found = self.state.owner(cid).await;
            match (&found, delays.next()) {
                (Ok(Some(_)), _) | (_, None) => return found,
                (_, Some(delay)) => tokio::time::sleep(*delay).await,
            }
        }
    }
}

/// `base` doubled per earlier attempt, capped.
fn backoff(base: Duration, attempt: u64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    base.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// The consumer group every replica joins.
pub(crate) fn spec(settings: &Settings) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(settings.consumer_group.clone(), Topic::ALL);
    spec.max_deliver = settings.max_deliver;
    spec.max_ack_pending =
        i64::try_from(settings.consumer_concurrency.saturating_mul(4)).unwrap_or(i64::MAX);
    spec
}

/// Handles deliveries with bounded concurrency until `shutdown`, rejoining the group with backoff
/// if the delivery stream ends. In-flight events finish (and are answered) before this returns.
pub(crate) async fn run(
    consumer: Arc<Consumer>,
    bus: Arc<dyn Bus>,
    spec: ConsumerSpec,
    first: Deliveries,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let mut next = Some(first);
    let mut failures: u64 = 0;
    while !shutdown.is_cancelled() {
        let deliveries = match next.take() {
            Some(deliveries) => deliveries,
            None => {
                failures += 1;
                let delay = backoff(Duration::from_secs(1), failures);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                match bus.consume(&spec).await {
                    Ok(deliveries) => deliveries,
                    Err(error) => {
                        tracing::warn!(%error, group = %spec.group, "rejoining the consumer group failed");
                        continue;
                    }
                }
            }
        };
        let handled = drain(&consumer, deliveries, concurrency, &shutdown).await;
        if handled > 0 {
            failures = 0;
        }
        if !shutdown.is_cancelled() {
            tracing::warn!(group = %spec.group, "the delivery stream ended; rejoining the consumer group");
        }
    }
    tracing::info!(group = %spec.group, "status event consumer stopped");
}

async fn drain(
    consumer: &Consumer,
    deliveries: Deliveries,
    concurrency: usize,
    shutdown: &CancellationToken,
) -> u64 {
    let mut handled = 0;
    deliveries
        .take_until(shutdown.cancelled())
        .inspect(|_| handled += 1)
        .for_each_concurrent(concurrency.max(1), |item| async move {
            match item {
                Ok(delivery) => consumer.handle(delivery).await,
                Err(error) => tracing::warn!(%error, "receiving a status event failed"),
            }
        })
        .await;
    handled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_attempt_and_is_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 1), Duration::from_millis(500));
        assert_eq!(backoff(base, 2), Duration::from_secs(1));
        assert_eq!(backoff(base, 4), Duration::from_secs(4));
        assert_eq!(backoff(base, 60), MAX_BACKOFF);
        assert_eq!(backoff(base, u64::MAX), MAX_BACKOFF);
    }

    #[test]
    fn every_replica_joins_the_same_group_on_every_status_topic() {
        let spec = spec(&Settings::default());
        assert_eq!(spec.group, "notify-svc");
        assert_eq!(spec.topics, Topic::ALL.to_vec());
    }
}
