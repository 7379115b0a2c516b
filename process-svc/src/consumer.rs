//! The `orders.accepted` consumer: pulls deliveries with bounded concurrency and settles each one
//! with the broker (ack, retry later, or let it run out of deliveries and be dead-lettered).

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use contoso_bus::{Bus, ConsumerSpec, Delivery, Envelope, Topic};
use contoso_domain::{NewOrder, OrderStatus, Report};
use contoso_platform::seal::CustomerSealer;
use contoso_state::StatusWriter;
use contoso_store::{OrderWriter, RecordOutcome, StoreError};

use crate::{CONSUMER_GROUP, Settings, event};

/// Longest pause between attempts to (re)open the consumer.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub(crate) struct Worker {
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) state: Arc<dyn StatusWriter>,
    pub(crate) orders: Arc<dyn OrderWriter>,
    pub(crate) sealer: Arc<CustomerSealer>,
    /// Wakes the outbox relay once an order is committed, so COMPLETED follows at once.
    pub(crate) wake: Arc<Notify>,
    pub(crate) settings: Arc<Settings>,
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error("unprocessable OrderAccepted")]
    Invalid(#[from] event::InvalidEvent),
    #[error("recording the order")]
    Store(#[from] StoreError),
}

/// What the broker is told about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ack,
    /// A transient failure: deliver again after the delay.
    Retry(Duration),
    /// It will never succeed. It is still not acked: a long nack delay lets the broker's
    /// `max_deliver` dead-letter it, so nothing is lost silently.
    Unprocessable,
}

impl Worker {
    fn spec(&self) -> ConsumerSpec {
        consumer_spec(&self.settings)
    }

    /// Consumes until `shutdown` fires, then stops pulling and gives in-flight deliveries the
    /// drain deadline to finish.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let spec = self.spec();
        let mut failures = 0u32;
        'consumer: while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                () = shutdown.cancelled() => break 'consumer,
                opened = self.bus.consume(&spec) => opened,
            };
            let mut deliveries = match opened {
                Ok(deliveries) => deliveries,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %Report(&e), failures, "cannot open the orders.accepted consumer; retrying");
                    pause(&shutdown, reconnect_backoff(failures)).await;
                    continue;
                }
            };
            tracing::info!(group = CONSUMER_GROUP, "consuming orders.accepted");
            loop {
                // The permit comes first, so nothing is pulled that cannot be worked on at once.
                let permit = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break 'consumer,
                    permit = permits.clone().acquire_owned() => permit,
                };
                let Ok(permit) = permit else { break 'consumer };
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break 'consumer,
                    next = deliveries.next() => next,
                };
                match next {
                    Some(Ok(delivery)) => {
                        failures = 0;
                        let worker = self.clone();
                        tasks.spawn(async move {
                            worker.handle(delivery).await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %Report(&e), failures, "receiving from orders.accepted failed");
                        pause(&shutdown, reconnect_backoff(failures)).await;
                    }
                    None => {
                        failures = failures.saturating_add(1);
                        tracing::warn!("the orders.accepted consumer ended; reopening it");
                        pause(&shutdown, reconnect_backoff(failures)).await;
                        break;
                    }
                }
                while let Some(joined) = tasks.try_join_next() {
                    log_task_end(joined);
                }
            }
        }
        self.drain(tasks).await;
    }

    async fn drain(&self, mut tasks: JoinSet<()>) {
        if tasks.is_empty() {
            return;
        }
        tracing::info!(in_flight = tasks.len(), "finishing in-flight orders");
        let finished = tokio::time::timeout(self.settings.drain_deadline, async {
            while let Some(joined) = tasks.join_next().await {
                log_task_end(joined);
            }
        })
        .await;
        if finished.is_err() {
            // Their deliveries stay unacknowledged: the broker redelivers them after the ack
            // wait, and recording is idempotent on the correlation id.
            tracing::warn!(
                abandoned = tasks.len(),
                "drain deadline passed; abandoning in-flight orders"
            );
            tasks.shutdown().await;
        }
    }

    async fn handle(&self, delivery: Delivery) {
        let span = tracing::info_span!(
            "order",
            correlation_id = field::Empty,
            order_id = field::Empty,
            message_id = delivery.message_id.as_deref().unwrap_or(""),
            attempt = delivery.attempt,
        );
        async {
            let result = self.with_heartbeat(&delivery).await;
            let verdict = verdict(&result, delivery.attempt, &self.settings);
            self.settle(&delivery, verdict).await;
        }
        .instrument(span)
        .await;
    }

    /// Works on the delivery, telling the broker now and then that it is still in progress so a
    /// slow database does not cause a redelivery to a second replica.
    async fn with_heartbeat(&self, delivery: &Delivery) -> Result<RecordOutcome, ProcessError> {
        let every = (self.settings.ack_wait / 3).max(Duration::from_millis(100));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let work = self.process(delivery);
        tokio::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return result,
                _ = heartbeat.tick() => {
                    if let Err(e) = delivery.in_progress().await {
                        tracing::debug!(error = %Report(&e), "in-progress signal failed");
                    }
                }
            }
        }
    }

    async fn process(&self, delivery: &Delivery) -> Result<RecordOutcome, ProcessError> {
        let accepted = event::decode(&delivery.payload)?;
        let span = tracing::Span::current();
        span.record("correlation_id", field::display(accepted.correlation_id));
        let order = accepted.into_order(&self.sealer)?;
        span.record("order_id", field::display(order.order_id));

        self.mark_processing(&order).await;

        let processed = event::processed(&order, Utc::now());
        let outcome = self.orders.record_order(&order, &processed).await?;
        match outcome {
            RecordOutcome::Inserted => tracing::info!("order recorded"),
            RecordOutcome::AlreadyRecorded(existing) if existing == order.order_id => {
                tracing::info!("order already recorded (a redelivery); nothing inserted");
            }
            RecordOutcome::AlreadyRecorded(existing) => {
                tracing::warn!(%existing, "correlation id already recorded under another order id");
            }
        }
        // Also on a redelivery: its outbox entry may still be waiting.
        self.wake.notify_one();
        Ok(outcome)
    }

    /// PROCESSING is a courtesy to watchers; Postgres, not Redis or the bus, is the system of
    /// record, so a failure here is logged and the order is recorded anyway.
    async fn mark_processing(&self, order: &NewOrder) {
        let announce = match self
            .state
            .advance(
                order.correlation_id,
                OrderStatus::Processing,
                Some(order.order_id),
            )
            .await
        {
            Ok(advanced) => advanced,
            Err(e) => {
                tracing::warn!(error = %Report(&e), "could not record PROCESSING in workflow state");
                true
            }
        };
        if !announce {
            // Already PROCESSING or further (a redelivery): announcing it again could show a
            // watcher a step backwards.
            tracing::debug!("status already at or past PROCESSING");
            return;
        }
        let envelope = Envelope {
            topic: Topic::OrderProcessing,
            message_id: event::processing_message_id(order.correlation_id),
            payload: event::processing(order, Utc::now()).into(),
        };
        if let Err(e) = self.bus.publish(envelope).await {
            tracing::warn!(error = %Report(&e), "could not publish the PROCESSING event");
        }
    }

    async fn settle(&self, delivery: &Delivery, verdict: Verdict) {
        let settled = match verdict {
            Verdict::Ack => delivery.ack().await,
            Verdict::Retry(delay) => delivery.nack(delay).await,
            Verdict::Unprocessable => delivery.nack(self.settings.unprocessable_delay).await,
        };
        if let Err(e) = settled {
            // The broker redelivers after the ack wait; recording is idempotent.
            tracing::warn!(error = %Report(&e), ?verdict, "settling the delivery with the broker failed");
        }
    }
}

/// Maps the outcome of one delivery to what the broker is told, in one place.
fn verdict(
    result: &Result<RecordOutcome, ProcessError>,
    attempt: u64,
    settings: &Settings,
) -> Verdict {
    match result {
        Ok(_) => Verdict::Ack,
        Err(e @ ProcessError::Invalid(_)) => {
            tracing::error!(error = %Report(e), "cannot be processed; not acking it, so the broker dead-letters it after max_deliver");
            Verdict::Unprocessable
        }
        Err(e @ ProcessError::Store(StoreError::OrderIdTaken(_))) => {
            tracing::error!(error = %Report(e), "order id clash; not acking it, so the broker dead-letters it after max_deliver");
            Verdict::Unprocessable
        }
        Err(e @ ProcessError::Store(StoreError::Unavailable { .. })) => {
            let delay = retry_backoff(attempt, settings.max_retry_backoff);
            tracing::warn!(error = %Report(e), ?delay, "database unavailable; will retry");
            Verdict::Retry(delay)
        }
        // Not known to be permanent: retried, and dead-lettered if it never succeeds.
        Err(e @ ProcessError::Store(_)) => {
            let delay = retry_backoff(attempt, settings.max_retry_backoff);
            tracing::error!(error = %Report(e), ?delay, "recording the order failed; will retry");
            Verdict::Retry(delay)
        }
    }
}

/// `min(2^attempt s, cap)`: attempt 1 waits 2 s, attempt 2 waits 4 s, ...
pub(crate) fn retry_backoff(attempt: u64, cap: Duration) -> Duration {
    let exponent = u32::try_from(attempt.min(16)).unwrap_or(16);
    Duration::from_secs(1u64 << exponent).min(cap)
}

fn reconnect_backoff(failures: u32) -> Duration {
    let millis = 100u64.saturating_mul(1u64 << failures.min(10));
    Duration::from_millis(millis).min(MAX_RECONNECT_BACKOFF)
}

/// Waits `delay` unless shutdown comes first.
async fn pause(shutdown: &CancellationToken, delay: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {},
        () = tokio::time::sleep(delay) => {},
    }
}

fn log_task_end(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!(error = %e, "a delivery handler panicked; the message will be redelivered");
    }
}

/// The durable consumer: the broker hands this replica no more unacknowledged messages than it
/// works on at once, so none waits in a local buffer while its ack wait (and a delivery attempt)
/// runs out behind a slow database.
fn consumer_spec(settings: &Settings) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(CONSUMER_GROUP, [Topic::OrderAccepted]);
    spec.max_deliver = settings.max_deliver;
    spec.ack_wait = settings.ack_wait;
    spec.max_ack_pending = i64::try_from(settings.concurrency.max(1)).unwrap_or(i64::MAX);
    spec
}

#[cfg(test)]
mod tests {
    use contoso_domain::OrderId;

    use super::*;

    #[test]
    fn the_consumer_is_never_handed_more_than_it_works_on_at_once() {
        for concurrency in [1, 16, 300] {
            let settings = Settings {
                concurrency,
                ..Settings::default()
            };
            assert_eq!(
                consumer_spec(&settings).max_ack_pending,
                concurrency as i64,
                "concurrency {concurrency}"
            );
        }
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let cap = Duration::from_secs(60);
        assert_eq!(retry_backoff(1, cap), Duration::from_secs(2));
        assert_eq!(retry_backoff(2, cap), Duration::from_secs(4));
        assert_eq!(retry_backoff(5, cap), Duration::from_secs(32));
        assert_eq!(retry_backoff(6, cap), cap);
        assert_eq!(retry_backoff(u64::MAX, cap), cap);
    }

    #[test]
    fn an_order_id_clash_is_left_for_the_dead_letter_queue_and_an_outage_is_retried() {
        let settings = Settings::default();
        let taken = Err(ProcessError::Store(StoreError::OrderIdTaken(
            OrderId::new(7).unwrap(),
        )));
        assert_eq!(verdict(&taken, 1, &settings), Verdict::Unprocessable);
        let down = Err(ProcessError::Store(StoreError::unavailable(
            "recording an order",
            "connection refused",
        )));
        assert_eq!(
            verdict(&down, 3, &settings),
            Verdict::Retry(Duration::from_secs(8))
        );
        let recorded = Ok(RecordOutcome::AlreadyRecorded(OrderId::new(7).unwrap()));
        assert_eq!(verdict(&recorded, 2, &settings), Verdict::Ack);
    }

    #[test]
    fn reconnects_back_off_up_to_ten_seconds() {
        assert_eq!(reconnect_backoff(1), Duration::from_millis(200));
        assert_eq!(reconnect_backoff(u32::MAX), MAX_RECONNECT_BACKOFF);
    }
}
