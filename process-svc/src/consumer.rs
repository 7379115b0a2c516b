//! The `orders.accepted` consumer: pulls deliveries with bounded concurrency and settles each one
//! with the broker by the class of its outcome:
//!
//! - recorded (or recorded before): ack;
//! - transient (the database unavailable): nack with a capped backoff, for as long as the outage
//!   lasts; these never count towards giving up (the broker's own delivery limit is off);
//! - of unknown cause (a statement refused, a panic): nack with backoff, and once a message has
//!   failed so `max_deliver` times on this replica, give up as for a permanent failure;
//! - permanent (the event is invalid, its customer reference does not open, its order id is
//!   taken, a product was withdrawn from sale since acceptance): announce FAILED with a reason
//!   on `orders.failed`, then dead-letter it at once;
//! - poison (not an `OrderAccepted` at all): dead-letter it at once.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use chrono::Utc;
use futures::{FutureExt, StreamExt};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, field};

use contoso_bus::{Bus, BusError, ConsumerSpec, Deliveries, Delivery, Envelope, Strikes, Topic};
use contoso_domain::{NewOrder, OrderId, OrderStatus, Report};
use contoso_platform::seal::CustomerSealer;
use contoso_proto::events::v1::SealedCustomer;
use contoso_state::StatusWriter;
use contoso_store::{OrderWriter, RecordOutcome, StoreError};

use crate::{
    CONSUMER_GROUP, Settings,
    event::{self, OrderRef},
    metrics,
};

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
    /// Failures of unknown cause per message, towards `max_deliver`.
    pub(crate) strikes: Arc<Strikes>,
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    /// Not an `OrderAccepted` with a correlation id: nothing can be done with it, not even
    /// telling its owner.
    #[error("payload is not a readable OrderAccepted")]
    Poison(#[source] event::InvalidEvent),
    #[error("unprocessable OrderAccepted")]
    Invalid(#[source] event::InvalidEvent),
    #[error("recording the order")]
    Store(#[from] StoreError),
    #[error("processing the order panicked")]
    Panicked,
}

/// How a failure is handled; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Transient,
    Unknown,
    Permanent,
    Poison,
}

impl ProcessError {
    fn class(&self) -> Class {
        match self {
            Self::Poison(_) => Class::Poison,
            Self::Invalid(_)
            | Self::Store(StoreError::OrderIdTaken(_) | StoreError::NotForSale(_)) => {
                Class::Permanent
            }
            Self::Store(StoreError::Unavailable { .. }) => Class::Transient,
            // A refused statement may be a lock or statement timeout as well as a real defect;
            // malformed stored data may be repaired. Retried, within the budget.
            Self::Store(StoreError::Query { .. } | StoreError::Corrupt { .. }) | Self::Panicked => {
                Class::Unknown
            }
        }
    }

    /// Why the order failed, in words its owner may read.
    fn user_reason(&self) -> String {
        match self {
            Self::Poison(e) | Self::Invalid(e) => e.user_reason(),
            Self::Store(StoreError::OrderIdTaken(_)) => {
                "the order's id is already taken by another order".to_owned()
            }
            Self::Store(StoreError::NotForSale(product)) => {
                format!("{product} is no longer for sale")
            }
            Self::Store(_) | Self::Panicked => "the order could not be recorded".to_owned(),
        }
    }
}

/// A failed delivery, with what is known of its order.
#[derive(Debug)]
struct Failure {
    /// The order, once the event was decoded far enough to name it.
    order: Option<Box<OrderRef>>,
    error: ProcessError,
}

impl Failure {
    fn poison(error: event::InvalidEvent) -> Self {
        Self {
            order: None,
            error: ProcessError::Poison(error),
        }
    }
}

/// What the broker is told about one delivery.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Ack,
    /// Not done yet: deliver again after the delay.
    Retry(Duration),
    /// Given up on: announce FAILED (when the order is known), then dead-letter it.
    GiveUp {
        /// The order to announce as FAILED, with the reason its owner sees.
        failed: Option<(OrderRef, String)>,
        /// Why, for the operator reading the dead letters.
        reason: String,
    },
}

impl Worker {
    /// Consumes until `shutdown` fires, then stops pulling and gives in-flight deliveries the
    /// drain deadline to finish.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let spec = consumer_spec(&self.settings);
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
                        let batch = gather(
                            delivery,
                            permit,
                            &mut deliveries,
                            &permits,
                            self.settings.max_batch,
                        );
                        let worker = self.clone();
                        tasks.spawn(async move {
                            // The permits go with the batch.
                            worker.handle_batch(batch).await;
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

    /// Works on a batch of deliveries: the orders of those that can be read are recorded in one
    /// transaction. Whatever goes wrong other than the database being unavailable (an order that
    /// cannot be recorded, a statement refused, a panic) sends every delivery of the batch down
    /// the one-at-a-time path, which tells which order it was and classifies each failure.
    async fn handle_batch(&self, batch: Vec<(Delivery, OwnedSemaphorePermit)>) {
        if batch.len() == 1 {
            for (delivery, _permit) in batch {
                self.handle(delivery).await;
            }
            return;
        }
        let mut readable = Vec::with_capacity(batch.len());
        let mut unreadable = Vec::new();
        for (delivery, permit) in batch {
            match event::decode(&delivery.payload).and_then(|accepted| {
                let known = accepted.order_ref();
                accepted
                    .into_order(&self.sealer)
                    .map(|order| (known, order))
            }) {
                Ok((known, order)) => readable.push((delivery, permit, known, order)),
                Err(_) => unreadable.push((delivery, permit)),
            }
        }
        let alone = futures::future::join_all(
            unreadable
                .into_iter()
                .map(|(delivery, _permit)| self.handle(delivery)),
        );
        let together = self.record_together(readable);
        tokio::join!(alone, together);
    }

    /// Records readable orders in one transaction and settles each delivery; see
    /// [`Worker::handle_batch`].
    async fn record_together(
        &self,
        batch: Vec<(Delivery, OwnedSemaphorePermit, OrderRef, NewOrder)>,
    ) {
        if batch.is_empty() {
            return;
        }
        let span = tracing::info_span!("orders", batch = batch.len());
        // One span per order, each continuing its own trace; the batch's span links to them all.
        let spans: Vec<tracing::Span> = batch
            .iter()
            .map(|(delivery, .., order)| order_span(delivery, Some(order)))
            .collect();
        for order in &spans {
            contoso_telemetry::link(&span, order);
        }
        let deliveries: Vec<&Delivery> = batch.iter().map(|(d, ..)| d).collect();
        let work = async {
            futures::future::join_all(batch.iter().zip(&spans).map(
                |((_, _, known, order), span)| {
                    self.mark_processing(order, known.customer.as_ref())
                        .instrument(span.clone())
                },
            ))
            .await;
            let events: Vec<Vec<u8>> = batch
                .iter()
                .map(|(_, _, known, order)| {
                    event::processed(order, known.customer.as_ref(), Utc::now())
                })
                .collect();
            let traceparents: Vec<Option<String>> = spans.iter().map(traceparent_of).collect();
            let orders: Vec<(&NewOrder, &[u8], Option<&str>)> = batch
                .iter()
                .zip(&events)
                .zip(&traceparents)
                .map(|(((.., order), event), traceparent)| {
                    (order, event.as_slice(), traceparent.as_deref())
                })
                .collect();
            self.orders.record_orders_traced(&orders).await
        };
        let recorded = AssertUnwindSafe(with_heartbeat(&self.settings, &deliveries, work))
            .catch_unwind()
            .instrument(span)
            .await;
        match recorded {
            Ok(Ok(outcomes)) => {
                self.wake.notify_one();
                futures::future::join_all(batch.iter().zip(outcomes).zip(&spans).map(
                    |(((delivery, _, _, order), outcome), span)| {
                        let span = span.clone();
                        async move {
                            log_outcome(order.order_id, outcome);
                            self.settle(delivery, Verdict::Ack).await;
                        }
                        .instrument(span)
                    },
                ))
                .await;
            }
            Ok(Err(e @ StoreError::Unavailable { .. })) => {
                tracing::warn!(error = %Report(&e), orders = batch.len(), "database unavailable; the batch will be retried");
                futures::future::join_all(batch.iter().map(|(delivery, ..)| {
                    let delay = retry_backoff(delivery.attempt, self.settings.max_retry_backoff);
                    self.settle(delivery, Verdict::Retry(delay))
                }))
                .await;
            }
            Ok(Err(e)) => {
                tracing::info!(error = %Report(&e), orders = batch.len(), "the batch could not be recorded together; recording its orders one by one");
                self.one_by_one(batch).await;
            }
            Err(_) => {
                tracing::error!(
                    orders = batch.len(),
                    "recording a batch panicked; recording its orders one by one"
                );
                self.one_by_one(batch).await;
            }
        }
    }

    async fn one_by_one(&self, batch: Vec<(Delivery, OwnedSemaphorePermit, OrderRef, NewOrder)>) {
        futures::future::join_all(
            batch
                .into_iter()
                .map(|(delivery, _permit, ..)| self.handle(delivery)),
        )
        .await;
    }

    async fn handle(&self, delivery: Delivery) {
        let span = order_span(&delivery, None);
        async {
            // A panic is a failure of unknown cause like any other: retried within the budget,
            // then given up on, instead of coming back after every ack wait for ever.
            let result = AssertUnwindSafe(with_heartbeat(
                &self.settings,
                &[&delivery],
                self.process(&delivery),
            ))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                // The order, so that its owner hears of the failure if it comes to that.
                let order = event::decode(&delivery.payload)
                    .ok()
                    .map(|accepted| Box::new(accepted.order_ref()));
                Err(Failure {
                    order,
                    error: ProcessError::Panicked,
                })
            });
            let strikes = match &result {
                Err(failure) if failure.error.class() == Class::Unknown => {
                    self.strikes.strike(&delivery)
                }
                _ => 0,
            };
            let verdict = verdict(&result, delivery.attempt, strikes, &self.settings);
            self.settle(&delivery, verdict).await;
        }
        .instrument(span)
        .await;
    }

    async fn process(&self, delivery: &Delivery) -> Result<RecordOutcome, Failure> {
        let accepted = event::decode(&delivery.payload).map_err(Failure::poison)?;
        let span = tracing::Span::current();
        span.record("correlation_id", field::display(accepted.correlation_id));
        let known = accepted.order_ref();
        let failure = |error| Failure {
            order: Some(Box::new(known.clone())),
            error,
        };
        let order = accepted
            .into_order(&self.sealer)
            .map_err(|e| failure(ProcessError::Invalid(e)))?;
        span.record("order_id", field::display(order.order_id));

        let customer = known.customer.as_ref();
        self.mark_processing(&order, customer).await;

        let processed = event::processed(&order, customer, Utc::now());
        // The relay's publish of orders.processed continues this span's trace.
        let traceparent = traceparent_of(&span);
        let outcome = self
            .orders
            .record_order_traced(&order, &processed, traceparent.as_deref())
            .await
            .map_err(|e| failure(ProcessError::Store(e)))?;
        log_outcome(order.order_id, outcome);
        // Also on a redelivery: its outbox entry may still be waiting.
        self.wake.notify_one();
        Ok(outcome)
    }

    /// PROCESSING is a courtesy to watchers; Postgres, not Redis or the bus, is the system of
    /// record, so a failure here is logged and the order is recorded anyway.
    async fn mark_processing(&self, order: &NewOrder, customer: Option<&SealedCustomer>) {
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
            payload: event::processing(order, customer, Utc::now()).into(),
        };
        if let Err(e) = self.bus.publish(envelope).await {
            tracing::warn!(error = %Report(&e), "could not publish the PROCESSING event");
        }
    }

    async fn settle(&self, delivery: &Delivery, verdict: Verdict) {
        let settled = match &verdict {
            Verdict::Ack => {
                self.strikes.forget(delivery);
                delivery.ack().await
            }
            Verdict::Retry(delay) => delivery.nack(*delay).await,
            Verdict::GiveUp { failed, reason } => self.give_up(delivery, failed, reason).await,
        };
        if let Err(e) = settled {
            // The broker redelivers after the ack wait; recording is idempotent.
            tracing::warn!(error = %Report(&e), ?verdict, "settling the delivery with the broker failed");
        }
    }

    /// Announces FAILED (when the order is known), then dead-letters the delivery. If either step
    /// fails, the delivery is retried later and both are done again: the announcement has a
    /// message id of its own and the dead letters keep one copy per message.
    async fn give_up(
        &self,
        delivery: &Delivery,
        failed: &Option<(OrderRef, String)>,
        reason: &str,
    ) -> Result<(), BusError> {
        let done = async {
            if let Some((order, user_reason)) = failed {
                self.announce_failed(order, user_reason).await?;
            }
            delivery.dead_letter(reason).await
        }
        .await;
        match done {
            Ok(()) => {
                self.strikes.forget(delivery);
                Ok(())
            }
            Err(e) => {
                let delay = retry_backoff(delivery.attempt, self.settings.max_retry_backoff);
                tracing::warn!(error = %Report(&e), ?delay, "giving up on the order failed; will try again");
                delivery.nack(delay).await
            }
        }
    }

    /// Records FAILED in the workflow state (best effort, as PROCESSING is: notify-svc records it
    /// too when the event reaches it) and announces it on `orders.failed` with the reason.
    async fn announce_failed(&self, order: &OrderRef, reason: &str) -> Result<(), BusError> {
        let cid = order.correlation_id;
        if let Err(e) = self
            .state
            .advance(cid, OrderStatus::Failed, order.order_id)
            .await
        {
            tracing::warn!(error = %Report(&e), "could not record FAILED in workflow state");
        }
        // Announced even when the state already said FAILED: the first announcement may have
        // been lost. Watchers and notify-svc only move statuses forward, so it changes nothing
        // after COMPLETED.
        let envelope = Envelope {
            topic: Topic::OrderFailed,
            message_id: event::failed_message_id(cid),
            payload: event::failed(order, reason, Utc::now()).into(),
        };
        self.bus.publish(envelope).await?;
        metrics::ORDERS_FAILED.get_or_create(&Vec::new()).inc();
        Ok(())
    }
}

/// Maps the outcome of one delivery (and, for a failure of unknown cause, how many such failures
/// its message has had) to what the broker is told, in one place.
fn verdict(
    result: &Result<RecordOutcome, Failure>,
    attempt: u64,
    strikes: u64,
    settings: &Settings,
) -> Verdict {
    let failure = match result {
        Ok(_) => return Verdict::Ack,
        Err(failure) => failure,
    };
    let error = &failure.error;
    let give_up = |reason: String| Verdict::GiveUp {
        failed: failure
            .order
            .as_deref()
            .map(|order| (order.clone(), error.user_reason())),
        reason,
    };
    match error.class() {
        Class::Transient => {
            let delay = retry_backoff(attempt, settings.max_retry_backoff);
            tracing::warn!(error = %Report(error), ?delay, "database unavailable; will retry");
            Verdict::Retry(delay)
        }
        Class::Unknown if strikes < settings.max_deliver.unsigned_abs().max(1) => {
            let delay = retry_backoff(strikes, settings.max_retry_backoff);
            tracing::error!(error = %Report(error), ?delay, strikes, "processing the order failed; will retry");
            Verdict::Retry(delay)
        }
        Class::Unknown => {
            tracing::error!(error = %Report(error), strikes, "processing the order keeps failing; giving up on it");
            give_up(format!("failed {strikes} times: {}", Report(error)))
        }
        Class::Permanent => {
            tracing::error!(error = %Report(error), "the order can never be processed; giving up on it");
            give_up(Report(error).to_string())
        }
        Class::Poison => {
            tracing::error!(error = %Report(error), "not an OrderAccepted; dead-lettering it");
            give_up(Report(error).to_string())
        }
    }
}

/// Runs `work` on `deliveries`, telling the broker now and then that they are still in progress
/// so a slow database does not cause a redelivery to a second replica; for at most
/// `max_in_progress`, so a delivery stuck on a hung call is redelivered after all.
async fn with_heartbeat<T>(
    settings: &Settings,
    deliveries: &[&Delivery],
    work: impl Future<Output = T>,
) -> T {
    let every = (settings.ack_wait / 3).max(Duration::from_millis(100));
    let started = Instant::now();
    let mut heartbeat = tokio::time::interval_at(started + every, every);
    let mut signalling = true;
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            _ = heartbeat.tick(), if signalling => {
                if started.elapsed() >= settings.max_in_progress {
                    signalling = false;
                    tracing::warn!(
                        max_in_progress = ?settings.max_in_progress,
                        "still working on the order; no more in-progress signals, so the broker redelivers it after the ack wait"
                    );
                    continue;
                }
                let signals = deliveries.iter().map(|delivery| delivery.in_progress());
                for signalled in futures::future::join_all(signals).await {
                    if let Err(e) = signalled {
                        tracing::debug!(error = %Report(&e), "in-progress signal failed");
                    }
                }
            }
        }
    }
}

/// The first delivery and whatever more is ready at once, up to `max_batch` and as far as
/// permits are free: a batch never waits for messages that have not arrived.
fn gather(
    first: Delivery,
    permit: OwnedSemaphorePermit,
    deliveries: &mut Deliveries,
    permits: &Arc<Semaphore>,
    max_batch: usize,
) -> Vec<(Delivery, OwnedSemaphorePermit)> {
    let mut batch = vec![(first, permit)];
    while batch.len() < max_batch {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            break;
        };
        // An error or the end of the stream is left for the consume loop to see next time.
        match deliveries.next().now_or_never() {
            Some(Some(Ok(delivery))) => batch.push((delivery, permit)),
            _ => break,
        }
    }
    batch
}

/// The span of one delivery's work, in the consumer span that continues the publisher's trace;
/// the order's ids are filled in once the event is read.
fn order_span(delivery: &Delivery, order: Option<&NewOrder>) -> tracing::Span {
    let consumer = delivery.span();
    let span = tracing::info_span!(
        parent: &consumer,
        "order",
        correlation_id = field::Empty,
        order_id = field::Empty,
        message_id = delivery.message_id.as_deref().unwrap_or(""),
        attempt = delivery.attempt,
    );
    if let Some(order) = order {
        span.record("correlation_id", field::display(order.correlation_id));
        span.record("order_id", field::display(order.order_id));
    }
    span
}

/// The W3C `traceparent` of `span`, stored with the order's outbox row so the relay's publish
/// continues its trace.
fn traceparent_of(span: &tracing::Span) -> Option<String> {
    contoso_telemetry::headers_of(span)
        .into_iter()
        .find_map(|(name, value)| (name == "traceparent").then_some(value))
}

fn log_outcome(order_id: OrderId, outcome: RecordOutcome) {
    match outcome {
        RecordOutcome::Inserted => {
            metrics::ORDERS_PROCESSED.get_or_create(&Vec::new()).inc();
            tracing::info!("order recorded");
        }
        RecordOutcome::AlreadyRecorded(existing) if existing == order_id => {
            tracing::info!("order already recorded (a redelivery); nothing inserted");
        }
        RecordOutcome::AlreadyRecorded(existing) => {
            tracing::warn!(%existing, "correlation id already recorded under another order id");
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
/// runs out behind a slow database. The broker never gives up on a message by itself: it counts
/// every delivery, those during an outage included, so the worker decides (see [`verdict`]).
fn consumer_spec(settings: &Settings) -> ConsumerSpec {
    let mut spec = ConsumerSpec::new(CONSUMER_GROUP, [Topic::OrderAccepted]);
    spec.max_deliver = -1;
    spec.ack_wait = settings.ack_wait;
    spec.max_ack_pending = i64::try_from(settings.concurrency.max(1)).unwrap_or(i64::MAX);
    spec
}

#[cfg(test)]
mod tests {
    use contoso_domain::{CorrelationId, OrderId};

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

    fn failed(error: ProcessError) -> Result<RecordOutcome, Failure> {
        Err(Failure {
            order: Some(Box::new(OrderRef {
                correlation_id: CorrelationId::new(),
                order_id: OrderId::new(7),
                customer: None,
            })),
            error,
        })
    }

    #[test]
    fn an_order_id_clash_is_given_up_on_at_once_and_an_outage_is_retried_however_long() {
        let settings = Settings::default();
        let taken = failed(ProcessError::Store(StoreError::OrderIdTaken(
            OrderId::new(7).unwrap(),
        )));
        match verdict(&taken, 1, 0, &settings) {
            Verdict::GiveUp {
                failed: Some((order, user_reason)),
                reason,
            } => {
                assert_eq!(order.order_id, OrderId::new(7));
                assert_eq!(
                    user_reason,
                    "the order's id is already taken by another order"
                );
                assert!(reason.contains("order 7"), "{reason}");
            }
            other => panic!("expected to give up, got {other:?}"),
        }
        let down = failed(ProcessError::Store(StoreError::unavailable(
            "recording an order",
            "connection refused",
        )));
        assert_eq!(
            verdict(&down, 3, 0, &settings),
            Verdict::Retry(Duration::from_secs(8))
        );
        assert_eq!(
            verdict(&down, 10_000, 0, &settings),
            Verdict::Retry(settings.max_retry_backoff),
            "an outage never counts towards giving up"
        );
        let recorded = Ok(RecordOutcome::AlreadyRecorded(OrderId::new(7).unwrap()));
        assert_eq!(verdict(&recorded, 2, 0, &settings), Verdict::Ack);
    }

    #[test]
    fn a_failure_of_unknown_cause_is_retried_until_it_has_failed_max_deliver_times() {
        let settings = Settings {
            max_deliver: 3,
            ..Settings::default()
        };
        let refused = failed(ProcessError::Store(StoreError::Query {
            context: "recording an order".into(),
            constraint: None,
            source: "canceling statement due to statement timeout".into(),
        }));
        // Counted by strikes, not by the broker's delivery count (which an outage inflates).
        assert_eq!(
            verdict(&refused, 40, 1, &settings),
            Verdict::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            verdict(&refused, 41, 2, &settings),
            Verdict::Retry(Duration::from_secs(4))
        );
        assert!(matches!(
            verdict(&refused, 42, 3, &settings),
            Verdict::GiveUp {
                failed: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_poison_message_is_dead_lettered_without_announcing_anything() {
        let settings = Settings::default();
        let poison = Err(Failure::poison(
            event::decode(&[0xff, 0xff]).expect_err("garbage"),
        ));
        assert!(matches!(
            verdict(&poison, 1, 0, &settings),
            Verdict::GiveUp { failed: None, .. }
        ));
    }

    #[test]
    fn the_broker_never_gives_up_on_its_own() {
        assert!(consumer_spec(&Settings::default()).max_deliver < 1);
    }

    #[test]
    fn reconnects_back_off_up_to_ten_seconds() {
        assert_eq!(reconnect_backoff(1), Duration::from_millis(200));
        assert_eq!(reconnect_backoff(u32::MAX), MAX_RECONNECT_BACKOFF);
    }
}
