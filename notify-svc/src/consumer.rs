//! The status event consumer. Every notify-svc replica joins one durable consumer group, so each
//! event is handled by exactly one replica, which finds the order's owner and publishes the
//! update on the backplane; the backplane carries it to every replica with a stream of that user.
//!
//! The owner is the customer the event carries, sealed (opened with the key ring accept-svc and
//! process-svc share), and the owner map in Redis is written from it when missing (`SET NX`), so
//! routing and snapshots survive Redis losing its data. An event without a customer that opens
//! (an older producer, a key this replica lacks) is routed by the owner map alone.
//!
//! An event is acknowledged only once it is on the backplane. Nothing is dropped silently:
//!
//! - Redis (state or backplane) unavailable: nacked with a backoff, for as long as the outage
//!   lasts; the broker's own delivery limit is off, so an outage never uses a message up;
//! - the owner still unknown (or a stored value unreadable): nacked with a delay, and after
//!   `max_deliver` such tries on this replica, dead-lettered;
//! - not a readable status event: dead-lettered at once.
//!
//! The group starts at new events when it is created: status events are ephemeral, and a
//! recreated durable must not replay the stream's retained days to every open stream.

use std::{sync::Arc, time::Duration};

use contoso_backplane::Backplane;
use contoso_bus::{Bus, ConsumerSpec, Deliveries, Delivery, StartPolicy, Strikes, Topic};
use contoso_domain::Report;
use contoso_domain::{CorrelationId, StatusUpdate, UserId};
use contoso_platform::seal::CustomerSealer;
use contoso_proto::events::v1::SealedCustomer;
use contoso_state::{StateError, StatusReader, StatusWriter};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Settings, events, metrics};

/// Longest pause between attempts to rejoin the consumer group, and longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What to tell the broker about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ack,
    /// A dependency is down: deliver again after this delay, however often it takes.
    Retry(Duration),
    /// Not handled, for a reason that may or may not pass: deliver again after `delay`, until
    /// the message has failed so `max_deliver` times; then give up on it with `reason`.
    Strike {
        delay: Duration,
        reason: String,
    },
    /// Can never be handled: dead-letter it now.
    GiveUp(String),
}

/// Routes status events to their owner's backplane channel.
#[derive(Debug)]
pub(crate) struct Consumer {
    state: Arc<dyn StatusReader>,
    status_writer: Arc<dyn StatusWriter>,
    backplane: Arc<dyn Backplane>,
    sealer: Arc<CustomerSealer>,
    settings: Arc<Settings>,
    strikes: Strikes,
}

impl Consumer {
    pub(crate) fn new(
        state: Arc<dyn StatusReader>,
        status_writer: Arc<dyn StatusWriter>,
        backplane: Arc<dyn Backplane>,
        sealer: Arc<CustomerSealer>,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            state,
            status_writer,
            backplane,
            sealer,
            settings,
            strikes: Strikes::new(),
        }
    }

    /// Handles one delivery and acknowledges, nacks or dead-letters it.
    pub(crate) async fn handle(&self, delivery: Delivery) {
        // A child of the span that published the event: the order's trace goes on here.
        let span = delivery.span();
        self.settle(delivery).instrument(span).await;
    }

    async fn settle(&self, delivery: Delivery) {
        let outcome = match self.process(&delivery).await {
            Outcome::Strike { delay, reason } => {
                let strikes = self.strikes.strike(&delivery);
                if strikes >= self.settings.max_deliver.unsigned_abs().max(1) {
                    Outcome::GiveUp(format!("{reason} (after {strikes} tries)"))
                } else {
                    Outcome::Retry(delay)
                }
            }
            other => other,
        };
        let answered = match &outcome {
            Outcome::Ack => {
                self.strikes.forget(&delivery);
                delivery.ack().await
            }
            Outcome::Retry(delay) => delivery.nack(*delay).await,
            Outcome::GiveUp(reason) => {
                tracing::error!(
                    topic = %delivery.topic,
                    message_id = ?delivery.message_id,
                    attempt = delivery.attempt,
                    reason,
                    "giving up on a status event; dead-lettering it"
                );
                match delivery.dead_letter(reason).await {
                    Ok(()) => {
                        self.strikes.forget(&delivery);
                        Ok(())
                    }
                    // Not terminated: it comes back, and is dead-lettered again then.
                    Err(error) => {
                        tracing::warn!(error = %Report(&error), "dead-lettering the status event failed; retrying later");
                        delivery
                            .nack(backoff(self.settings.retry_backoff, delivery.attempt))
                            .await
                    }
                }
            }
            Outcome::Strike { .. } => unreachable!("strikes are counted above"),
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
        let events::StatusEvent { update, customer } =
            match events::decode(delivery.topic, &delivery.payload) {
                Ok(event) => event,
                Err(error) => {
                    return Outcome::GiveUp(format!("malformed status event: {error}"));
                }
            };
        let span = tracing::info_span!(
            "status_event",
            correlation_id = %update.correlation_id,
            topic = %delivery.topic,
            attempt = delivery.attempt,
        );
        self.route(update, customer.as_ref(), delivery.attempt)
            .instrument(span)
            .await
    }

    async fn route(
        &self,
        update: StatusUpdate,
        customer: Option<&SealedCustomer>,
        attempt: u64,
    ) -> Outcome {
        let owner = match self.resolve_owner(update.correlation_id, customer).await {
            Ok(Some(owner)) => owner,
            Ok(None) => {
                tracing::warn!(
                    correlation_id = %update.correlation_id,
                    attempt,
                    "owner of the order is unknown; not acknowledging, so the broker redelivers"
                );
                return Outcome::Strike {
                    delay: self.settings.missing_owner_redelivery,
                    reason:
                        "the owner of the order is unknown (order:map expired or never written)"
                            .to_owned(),
                };
            }
            Err(error) => return self.state_failed(&error, attempt, "looking up the owner"),
        };
        // Recorded before it is announced: a watch opened after this update reaches anyone finds
        // it (or a later status) in its snapshot, even if the sender's own write failed. Only
        // moves forward, so a late or repeated event changes nothing.
        if let Err(error) = self
            .status_writer
            .advance(update.correlation_id, update.status, update.order_id)
            .await
        {
            return self.state_failed(&error, attempt, "recording the status");
        }
        // The stream update leaves here for every replica serving the owner.
        let publish = tracing::info_span!(
            "publish",
            otel.name = "publish status update",
            otel.kind = "producer",
            messaging.system = "backplane",
            messaging.operation.type = "send",
            messaging.destination.name = "notify:user",
            status = %update.status,
        );
        match self
            .backplane
            .publish(&owner, &update)
            .instrument(publish)
            .await
        {
            Ok(()) => {
                metrics::backplane("out");
                tracing::debug!(status = %update.status, "status update published to the backplane");
                Outcome::Ack
            }
            Err(error) => {
                tracing::warn!(%error, "publishing to the backplane failed; retrying later");
                Outcome::Retry(backoff(self.settings.retry_backoff, attempt))
            }
        }
    }

    /// Redis down is retried for as long as it lasts; a value it holds that cannot be read
    /// counts towards giving up.
    fn state_failed(&self, error: &StateError, attempt: u64, doing: &str) -> Outcome {
        match error {
            StateError::Unavailable { .. } => {
                tracing::warn!(error = %Report(error), "{doing} failed; retrying later");
                Outcome::Retry(backoff(self.settings.retry_backoff, attempt))
            }
            StateError::Corrupt { .. } => {
                tracing::error!(error = %Report(error), "{doing} failed");
                Outcome::Strike {
                    delay: backoff(self.settings.retry_backoff, attempt),
                    reason: format!("{doing} failed: {}", Report(error)),
                }
            }
        }
    }

    /// The customer the event carries, with the owner map restored from it if it is gone; or,
    /// when the event carries none that opens, the owner map. That map is written at intake just
    /// before the event is published, and a replica of Redis may lag a little: a few short
    /// retries save a full redelivery round.
    async fn resolve_owner(
        &self,
        cid: CorrelationId,
        customer: Option<&SealedCustomer>,
    ) -> Result<Option<UserId>, StateError> {
        let sealed_owner = customer.and_then(|sealed| {
            self.sealer
                .open(cid, sealed)
                .inspect_err(|error| {
                    tracing::warn!(error = %Report(error), "the event's customer reference does not open; routing by the owner map");
                })
                .ok()
        });
        if let Some(owner) = sealed_owner {
            self.status_writer.restore_owner(cid, &owner).await?;
            return Ok(Some(owner));
        }
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

/// The consumer group every replica joins: from new events on, and without a broker delivery
/// limit (the consumer decides when to give up, see [`Consumer::handle`]).
pub(crate) fn spec(settings: &Settings) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(settings.consumer_group.clone(), Topic::STATUS);
    spec.start = StartPolicy::New;
    spec.max_deliver = -1;
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
        assert_eq!(spec.topics, Topic::STATUS.to_vec());
    }

    #[test]
    fn the_group_starts_at_new_events_and_the_broker_never_gives_up_on_its_own() {
        let spec = spec(&Settings::default());
        assert_eq!(spec.start, StartPolicy::New);
        assert!(spec.max_deliver < 1);
    }
}
