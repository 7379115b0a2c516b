//! Intake: a `PlaceOrder` becomes an `OrderAccepted` event (fresh correlation id, a reserved order
//! id, the sealed customer, the priced lines), recorded in the workflow state and published; the
//! caller gets an answer only once the broker confirmed it.
//!
//! An unconfirmed publish is tried again with the same message id a few times within the request
//! (the broker drops a duplicate inside its window) before the caller gets UNAVAILABLE. An order
//! whose publish was not confirmed may be in the stream all the same, so its workflow keys (owner
//! map, status, in-flight entry) are never removed: they expire with their TTL. A keyed retry
//! publishes the same event again (see [`super::idempotency`]); a keyless one cannot be matched.

use std::{sync::LazyLock, time::Duration};

use contoso_telemetry::metrics::{self, Counters};

use chrono::{SubsecRound, Utc};
use contoso_bus::{BusError, Envelope, Topic};
use contoso_domain::{CorrelationId, OrderId, PricedOrder, Report, UserId};
use contoso_proto::{
    convert::to_timestamp,
    events::v1::{OrderAccepted, OrderAcceptedLine},
    orders::v1::{self as pb, PlaceOrderRequest},
};
use contoso_state::IdempotencyClaim;
use prost::Message;
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    OrdersApi,
    idempotency::{Outcome, answer, corrupt, request_lines},
    mapping::accepted_order,
    parse,
};
use crate::error::ApiError;

/// Orders whose `OrderAccepted` the broker confirmed.
pub(crate) static ORDERS_ACCEPTED: LazyLock<Counters> = LazyLock::new(|| {
    metrics::counters(
        "contoso_orders_accepted",
        "Orders accepted: OrderAccepted confirmed by the broker.",
    )
});

/// Publish attempts within one request before it answers UNAVAILABLE.
const PUBLISH_ATTEMPTS: u32 = 3;
/// Pause before the second attempt, doubled before each later one.
const PUBLISH_BACKOFF: Duration = Duration::from_millis(100);
/// All attempts of one request end within this, whatever the broker adapter's own publish
/// timeout (JetStream's is 5 s): no attempt starts, nor keeps waiting, past it.
const PUBLISH_BUDGET: Duration = Duration::from_secs(10);

impl OrdersApi {
    pub(super) async fn place(
        &self,
        user: &UserId,
        req: PlaceOrderRequest,
    ) -> Result<pb::Order, ApiError> {
        let priced = parse::price(&req.lines, &self.catalog)?;
        let Some(key) = parse::idempotency_key(&req.idempotency_key)? else {
            let event = self.new_event(user, &priced).await?;
            return self.publish_accepted(user, &event).await;
        };
        let lines = request_lines(&priced);
        let (outcome, replay) = match self.state.claim_idempotency_key(user, &key).await? {
            IdempotencyClaim::Completed(stored) => (answer(&key, &lines, &stored)?, true),
            IdempotencyClaim::InFlight => return Err(ApiError::InFlight),
            IdempotencyClaim::Claimed => (
                self.remember_new_intake(user, &key, &lines, &priced)
                    .await?,
                false,
            ),
        };
        let event = match outcome {
            Outcome::Accepted(order) => return Ok(order),
            Outcome::Unconfirmed(event) => event,
        };
        // The event is recorded under the key: whatever stops this request from here on, a
        // retry publishes this same event and answers this same order. Only a retry asks
        // Postgres whether that already happened; a new intake never waits on it.
        let recorded = if replay {
            self.already_recorded(&event).await
        } else {
            None
        };
        let order = match recorded {
            Some(order) => order,
            None => self.publish_accepted(user, &event).await?,
        };
        self.settle_accepted(user, &key, &lines, &order).await;
        Ok(order)
    }

    /// The order of `event` as it was accepted, when process-svc has already recorded it (a
    /// retry after the first request published it and stopped before its key was settled):
    /// nothing needs restoring in the workflow state nor publishing again. `None` when it is not
    /// recorded, or Postgres cannot tell right now (the retry then publishes again, which the
    /// broker or process-svc drops as a duplicate).
    async fn already_recorded(&self, event: &OrderAccepted) -> Option<pb::Order> {
        let cid: CorrelationId = event.correlation_id.parse().ok()?;
        match self.orders.get_order_by_correlation(cid).await {
            Ok(Some(_)) => accepted_order(event).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %Report(&e), correlation_id = %cid, "looking up a replayed order failed; publishing it again");
                None
            }
        }
    }

    /// A new intake: fresh correlation id, a reserved order id, the sealed customer and the
    /// priced lines.
    pub(super) async fn new_event(
        &self,
        user: &UserId,
        priced: &PricedOrder,
    ) -> Result<OrderAccepted, ApiError> {
        let cid = CorrelationId::new();
        let order_id = self
            .ids
            .next(self.id_wait)
            .await
            .ok_or(ApiError::NoOrderId)?;
        Ok(OrderAccepted {
            correlation_id: cid.to_string(),
            order_id: order_id.get(),
            customer: Some(self.sealer.seal(cid, user)?),
            lines: priced
                .lines
                .iter()
                .map(|l| OrderAcceptedLine {
                    product_id: l.product_id.clone(),
                    product_name: l.product_name.clone(),
                    quantity: l.quantity.get(),
                    unit_price_cents: l.unit_price_cents,
                })
                .collect(),
            total_cents: priced.total_cents,
            currency: priced.currency.clone(),
            // Microseconds, as Postgres keeps them: the order sorts and reads the same before and
            // after it is recorded.
            accepted_at: Some(to_timestamp(Utc::now().trunc_subsecs(6))),
        })
    }

    /// Records the workflow state (with the order's snapshot in the caller's in-flight set, so
    /// their next `GetOrder` and `ListOrders` show it) and publishes `OrderAccepted`, answering
    /// only once the broker confirmed it. Recording again an order already recorded (a keyed
    /// retry) restores only missing keys. If the broker never confirmed it, the keys stay: the
    /// message may be in the stream, and process-svc and notify-svc need them then.
    async fn publish_accepted(
        &self,
        user: &UserId,
        event: &OrderAccepted,
    ) -> Result<pb::Order, ApiError> {
        let order = accepted_order(event)?;
        let cid: CorrelationId = order
            .correlation_id
            .parse()
            .map_err(|_| corrupt("correlation id"))?;
        let order_id = OrderId::new(order.order_id).ok_or_else(|| corrupt("order id"))?;
        let span =
            tracing::info_span!("accept_order", correlation_id = %cid, order_id = order_id.get());
        // Every span of the order from here on, in this process and the next, carries its id.
        contoso_telemetry::correlate(&span, &order.correlation_id);
        async {
            let held = self
                .state
                .record_accepted(cid, user, order_id, &order.encode_to_vec())
                .await?;
            let envelope = Envelope {
                topic: Topic::OrderAccepted,
                message_id: cid.to_string(),
                payload: event.encode_to_vec().into(),
            };
            if let Err(e) = self.publish_confirmed(envelope).await {
                tracing::warn!(error = %Report(&e), "OrderAccepted not confirmed; its workflow keys stay until their TTL, as it may be in the stream");
                return Err(e.into());
            }
            tracing::info!(lines = order.lines.len(), total_cents = order.total_cents, "order accepted");
            ORDERS_ACCEPTED.get_or_create(&Vec::new()).inc();
            self.prune_inflight_in_background(user, held);
            Ok(order)
        }
        .instrument(span)
        .await
    }

    /// Publishes `envelope`, trying again with the same message id (which the broker
    /// deduplicates) up to [`PUBLISH_ATTEMPTS`] times within [`PUBLISH_BUDGET`].
    async fn publish_confirmed(&self, envelope: Envelope) -> Result<(), BusError> {
        let deadline = Instant::now() + PUBLISH_BUDGET;
        let mut backoff = PUBLISH_BACKOFF;
        let mut attempt = 1;
        loop {
            let published = tokio::time::timeout_at(deadline, self.bus.publish(envelope.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(BusError::not_confirmed(
                        format!("publishing {}", envelope.topic),
                        format!("no confirmation within {PUBLISH_BUDGET:?}"),
                    ))
                });
            match published {
                Ok(()) => return Ok(()),
                Err(e) if attempt < PUBLISH_ATTEMPTS && Instant::now() + backoff < deadline => {
                    tracing::info!(attempt, retry_in = ?backoff, error = %Report(&e), "OrderAccepted not confirmed; publishing it again");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
