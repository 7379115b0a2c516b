//! Intake: a `PlaceOrder` becomes an `OrderAccepted` event (fresh correlation id, a reserved order
//! id, the sealed customer, the priced lines), recorded in the workflow state and published; the
//! caller gets an answer only once the broker confirmed it.

use chrono::{SubsecRound, Utc};
use contoso_bus::{Envelope, Topic};
use contoso_domain::{CorrelationId, OrderId, PricedOrder, Report, UserId};
use contoso_proto::{
    convert::to_timestamp,
    events::v1::{OrderAccepted, OrderAcceptedLine},
    orders::v1::{self as pb, PlaceOrderRequest},
};
use contoso_state::IdempotencyClaim;
use prost::Message;
use tracing::Instrument;

use super::{
    OrdersApi,
    idempotency::{Outcome, Remembered, corrupt, request_lines},
    mapping::accepted_order,
    parse,
};
use crate::error::ApiError;

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
        let event = match self.state.claim_idempotency_key(user, &key).await? {
            IdempotencyClaim::Completed(stored) => {
                let first = Remembered::decode(&stored)?;
                // Another order under a used key is a client bug (a reused key), not a retry:
                // neither answering the first order nor placing this one would be what it meant.
                if !first.same_lines(&lines) {
                    return Err(ApiError::KeyReused(key));
                }
                match first.outcome {
                    Outcome::Accepted(order) => return Ok(order),
                    // The first attempt's publish was not confirmed, so its event may or may not
                    // be in the stream: publish the very same event again. The broker drops it
                    // as a duplicate inside its window, and process-svc records a correlation id
                    // once.
                    Outcome::Unconfirmed(event) => event,
                }
            }
            IdempotencyClaim::InFlight => return Err(ApiError::InFlight),
            IdempotencyClaim::Claimed => match self.new_event(user, &priced).await {
                Ok(event) => event,
                Err(e) => {
                    self.settle(user, &key, None).await;
                    return Err(e);
                }
            },
        };
        let result = self.publish_accepted(user, &event).await;
        let remembered = match &result {
            Ok(order) => Some(Remembered::new(lines, Outcome::Accepted(order.clone()))),
            Err(ApiError::Bus(_)) => Some(Remembered::new(lines, Outcome::Unconfirmed(event))),
            // Nothing was published: a retry may start afresh.
            Err(_) => None,
        };
        self.settle(user, &key, remembered).await;
        result
    }

    /// A new intake: fresh correlation id, a reserved order id, the sealed customer and the
    /// priced lines.
    async fn new_event(
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
    /// only once the broker confirmed it; if it did not, the workflow keys are removed again.
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
            if let Err(e) = self.bus.publish(envelope).await {
                tracing::warn!(error = %Report(&e), "OrderAccepted not confirmed; rolling back the intake");
                if let Err(forget) = self.state.forget(cid, user, order_id).await {
                    tracing::warn!(error = %Report(&forget), "removing the workflow keys failed; they expire with their TTL");
                }
                return Err(e.into());
            }
            tracing::info!(lines = order.lines.len(), total_cents = order.total_cents, "order accepted");
            self.prune_inflight_in_background(user, held);
            Ok(order)
        }
        .instrument(span)
        .await
    }
}
