//! The edge of process-svc: an `orders.accepted` payload becomes a domain [`NewOrder`] here, and
//! the events process-svc emits are built here. Whatever this module rejects can never be
//! processed, however often the broker redelivers it.

use chrono::{DateTime, Utc};
use prost::Message;

use contoso_domain::{
    CorrelationId, Entitlement, NewOrder, OrderId, OrderLine, OrderStatus, Quantity,
    checked_order_total, money::is_currency_code,
};
use contoso_platform::seal::{CustomerSealer, SealError};
use contoso_proto::{
    convert::{from_timestamp, to_timestamp},
    events::v1 as ev,
    orders::v1 as pb,
};

/// Why an `OrderAccepted` cannot become an order.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvalidEvent {
    #[error("payload is not an OrderAccepted")]
    Decode(#[from] prost::DecodeError),
    #[error("{field}: {problem}")]
    Field {
        field: String,
        problem: &'static str,
    },
    #[error("customer reference")]
    Seal(#[from] SealError),
}

impl InvalidEvent {
    fn field(field: impl Into<String>, problem: &'static str) -> Self {
        Self::Field {
            field: field.into(),
            problem,
        }
    }

    /// Why the order failed, in words its owner may read (no key ids, no internals).
    pub(crate) fn user_reason(&self) -> String {
        match self {
            Self::Decode(_) => "the order could not be read".to_owned(),
            Self::Field { field, problem } => format!("the order is invalid: {field} {problem}"),
            Self::Seal(_) => "the order's customer reference could not be verified".to_owned(),
        }
    }
}

/// A decoded `OrderAccepted` whose correlation id is known, so every later log line can carry it.
#[derive(Debug)]
pub(crate) struct Accepted {
    pub(crate) correlation_id: CorrelationId,
    event: ev::OrderAccepted,
}

/// Decodes the protobuf and its correlation id; the rest is checked by [`Accepted::into_order`].
pub(crate) fn decode(payload: &[u8]) -> Result<Accepted, InvalidEvent> {
    let event = ev::OrderAccepted::decode(payload)?;
    let correlation_id = event
        .correlation_id
        .parse()
        .map_err(|_| InvalidEvent::field("correlation_id", "is not a UUID"))?;
    Ok(Accepted {
        correlation_id,
        event,
    })
}

/// The order an event names, as far as it could be read: enough to announce it FAILED to its
/// owner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderRef {
    pub(crate) correlation_id: CorrelationId,
    pub(crate) order_id: Option<OrderId>,
    /// The customer as the event carried it, sealed: passed on in the status events so that
    /// notify-svc can route them when the owner map in Redis is gone.
    pub(crate) customer: Option<ev::SealedCustomer>,
}

impl Accepted {
    /// The order id the event names, if it is a valid one.
    pub(crate) fn order_id(&self) -> Option<OrderId> {
        OrderId::new(self.event.order_id)
    }

    /// What the event names of its order.
    pub(crate) fn order_ref(&self) -> OrderRef {
        OrderRef {
            correlation_id: self.correlation_id,
            order_id: self.order_id(),
            customer: self.event.customer.clone(),
        }
    }

    /// Opens the sealed customer and checks the content, in the order the fields appear.
    pub(crate) fn into_order(self, sealer: &CustomerSealer) -> Result<NewOrder, InvalidEvent> {
        let Self {
            correlation_id,
            event,
        } = self;
        let order_id = OrderId::new(event.order_id)
            .ok_or_else(|| InvalidEvent::field("order_id", "must be positive"))?;
        let sealed = event
            .customer
            .as_ref()
            .ok_or_else(|| InvalidEvent::field("customer", "is missing"))?;
        let customer = sealer.open(correlation_id, sealed)?;
        let lines = parse_lines(event.lines)?;
        let sum = checked_order_total(&lines)
            .ok_or_else(|| InvalidEvent::field("total_cents", "overflows"))?;
        if event.total_cents != sum {
            return Err(InvalidEvent::field(
                "total_cents",
                "is not the sum of the lines",
            ));
        }
        if !is_currency_code(&event.currency) {
            return Err(InvalidEvent::field("currency", "is not an ISO 4217 code"));
        }
        let accepted_at = event
            .accepted_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| InvalidEvent::field("accepted_at", "is missing or out of range"))?;
        Ok(NewOrder {
            order_id,
            correlation_id,
            customer,
            lines,
            total_cents: sum,
            currency: event.currency,
            accepted_at,
        })
    }
}

fn parse_lines(lines: Vec<ev::OrderAcceptedLine>) -> Result<Vec<OrderLine>, InvalidEvent> {
    if lines.is_empty() {
        return Err(InvalidEvent::field("lines", "is empty"));
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            if line.product_id.trim().is_empty() {
                return Err(InvalidEvent::field(
                    format!("lines[{i}].product_id"),
                    "is empty",
                ));
            }
            let quantity = Quantity::try_from(line.quantity).map_err(|_| {
                InvalidEvent::field(format!("lines[{i}].quantity"), "must be 1..=100")
            })?;
            if line.unit_price_cents < 0 {
                return Err(InvalidEvent::field(
                    format!("lines[{i}].unit_price_cents"),
                    "is negative",
                ));
            }
            Ok(OrderLine {
                product_id: line.product_id,
                product_name: line.product_name,
                quantity,
                unit_price_cents: line.unit_price_cents,
            })
        })
        .collect()
}

/// `OrderStatusChanged{PROCESSING}` for `orders.processing`.
pub(crate) fn processing(
    order: &NewOrder,
    customer: Option<&ev::SealedCustomer>,
    at: DateTime<Utc>,
) -> Vec<u8> {
    ev::OrderStatusChanged {
        correlation_id: order.correlation_id.to_string(),
        order_id: order.order_id.get(),
        status: pb::OrderStatus::from(OrderStatus::Processing).into(),
        occurred_at: Some(to_timestamp(at)),
        reason: String::new(),
        customer: customer.cloned(),
    }
    .encode_to_vec()
}

/// `OrderStatusChanged{FAILED}` for `orders.failed`, with the reason its owner sees.
pub(crate) fn failed(order: &OrderRef, reason: &str, at: DateTime<Utc>) -> Vec<u8> {
    ev::OrderStatusChanged {
        correlation_id: order.correlation_id.to_string(),
        order_id: order.order_id.map_or(0, OrderId::get),
        status: pb::OrderStatus::from(OrderStatus::Failed).into(),
        occurred_at: Some(to_timestamp(at)),
        reason: reason.to_owned(),
        customer: order.customer.clone(),
    }
    .encode_to_vec()
}

/// `OrderProcessed`, stored in the outbox with the order and published by the relay.
pub(crate) fn processed(
    order: &NewOrder,
    customer: Option<&ev::SealedCustomer>,
    at: DateTime<Utc>,
) -> Vec<u8> {
    ev::OrderProcessed {
        correlation_id: order.correlation_id.to_string(),
        order_id: order.order_id.get(),
        processed_at: Some(to_timestamp(at)),
        customer: customer.cloned(),
    }
    .encode_to_vec()
}

/// `EntitlementsGranted`: what order `order_id`'s lines granted, published by the relay with the
/// order's `OrderProcessed`.
pub(crate) fn entitlements_granted(
    cid: CorrelationId,
    order_id: OrderId,
    granted: &[Entitlement],
) -> Vec<u8> {
    ev::EntitlementsGranted {
        correlation_id: cid.to_string(),
        order_id: order_id.get(),
        grants: granted
            .iter()
            .map(|e| ev::GrantedEntitlement {
                entitlement_id: e.id.get(),
                line_no: e.line_no,
                product_id: e.product_id.clone(),
                product_name: e.product_name.clone(),
                seats: e.seats.get(),
                valid_from: Some(to_timestamp(e.validity.from)),
                valid_until: Some(to_timestamp(e.validity.until)),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// Message ids make republishing idempotent: the broker drops a second copy inside its window.
pub(crate) fn processing_message_id(cid: CorrelationId) -> String {
    format!("{cid}:processing")
}

pub(crate) fn processed_message_id(cid: CorrelationId) -> String {
    format!("{cid}:processed")
}

pub(crate) fn entitlements_message_id(cid: CorrelationId) -> String {
    format!("{cid}:entitlements")
}

pub(crate) fn failed_message_id(cid: CorrelationId) -> String {
    format!("{cid}:failed")
}

#[cfg(test)]
mod tests {
    use contoso_domain::UserId;
    use contoso_platform::seal::DEV_SEAL_KEYS;

    use super::*;

    fn sealer() -> CustomerSealer {
        CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap()
    }

    fn valid_event(cid: CorrelationId) -> ev::OrderAccepted {
        let user = UserId::parse("alice").unwrap();
        ev::OrderAccepted {
            correlation_id: cid.to_string(),
            order_id: 42,
            customer: Some(sealer().seal(cid, &user).unwrap()),
            lines: vec![
                ev::OrderAcceptedLine {
                    product_id: "AZ-700".into(),
                    product_name: "Designing Azure Networking".into(),
                    quantity: 2,
                    unit_price_cents: 1_500,
                },
                ev::OrderAcceptedLine {
                    product_id: "AZ-104".into(),
                    product_name: "Azure Administrator".into(),
                    quantity: 1,
                    unit_price_cents: 999,
                },
            ],
            total_cents: 3_999,
            currency: "USD".into(),
            accepted_at: Some(to_timestamp(Utc::now())),
        }
    }

    fn parse(event: &ev::OrderAccepted) -> Result<NewOrder, InvalidEvent> {
        decode(&event.encode_to_vec())?.into_order(&sealer())
    }

    fn rejected_field(event: &ev::OrderAccepted) -> String {
        match parse(event) {
            Err(InvalidEvent::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_event_becomes_a_new_order_with_the_opened_customer() {
        let cid = CorrelationId::new();
        let order = parse(&valid_event(cid)).unwrap();
        assert_eq!(order.correlation_id, cid);
        assert_eq!(order.order_id.get(), 42);
        assert_eq!(order.customer.as_str(), "alice");
        assert_eq!(order.lines.len(), 2);
        assert_eq!(order.lines[0].unit_price_cents, 1_500);
        assert_eq!(order.total_cents, 3_999);
    }

    #[test]
    fn garbage_bytes_are_a_decode_error() {
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff]),
            Err(InvalidEvent::Decode(_))
        ));
    }

    #[test]
    fn a_correlation_id_that_is_not_a_uuid_is_rejected() {
        let mut event = valid_event(CorrelationId::new());
        event.correlation_id = "order-1".into();
        assert_eq!(rejected_field(&event), "correlation_id");
    }

    #[test]
    fn a_customer_sealed_for_another_order_does_not_open() {
        let mut event = valid_event(CorrelationId::new());
        event.customer = valid_event(CorrelationId::new()).customer;
        assert!(matches!(
            parse(&event),
            Err(InvalidEvent::Seal(SealError::Tampered))
        ));
    }

    #[test]
    fn an_order_without_lines_is_rejected() {
        let mut event = valid_event(CorrelationId::new());
        event.lines.clear();
        event.total_cents = 0;
        assert_eq!(rejected_field(&event), "lines");
    }

    #[test]
    fn quantities_outside_one_to_a_hundred_are_rejected() {
        for quantity in [0, -1, 101] {
            let mut event = valid_event(CorrelationId::new());
            event.lines[1].quantity = quantity;
            assert_eq!(rejected_field(&event), "lines[1].quantity");
        }
    }

    #[test]
    fn a_negative_price_is_rejected() {
        let mut event = valid_event(CorrelationId::new());
        event.lines[0].unit_price_cents = -1;
        assert_eq!(rejected_field(&event), "lines[0].unit_price_cents");
    }

    #[test]
    fn a_total_that_is_not_the_sum_of_the_lines_is_rejected() {
        let mut event = valid_event(CorrelationId::new());
        event.total_cents += 1;
        assert_eq!(rejected_field(&event), "total_cents");
    }

    #[test]
    fn a_total_that_overflows_is_rejected() {
        let mut event = valid_event(CorrelationId::new());
        event.lines[0].unit_price_cents = i64::MAX;
        assert_eq!(rejected_field(&event), "total_cents");
    }

    #[test]
    fn a_non_positive_order_id_is_rejected() {
        let mut event = valid_event(CorrelationId::new());
        event.order_id = 0;
        assert_eq!(rejected_field(&event), "order_id");
    }

    #[test]
    fn a_missing_acceptance_time_is_rejected() {
        let mut event = valid_event(CorrelationId::new());
        event.accepted_at = None;
        assert_eq!(rejected_field(&event), "accepted_at");
    }

    #[test]
    fn emitted_events_carry_the_order_its_status_and_the_sealed_customer() {
        let event = valid_event(CorrelationId::new());
        let accepted = decode(&event.encode_to_vec()).unwrap();
        let named = accepted.order_ref();
        let order = accepted.into_order(&sealer()).unwrap();
        let customer = named.customer.as_ref();
        assert_eq!(customer, event.customer.as_ref());
        let changed =
            ev::OrderStatusChanged::decode(processing(&order, customer, Utc::now()).as_slice())
                .unwrap();
        assert_eq!(changed.status(), pb::OrderStatus::Processing);
        assert_eq!(changed.order_id, 42);
        assert_eq!(changed.customer.as_ref(), customer);
        let done =
            ev::OrderProcessed::decode(processed(&order, customer, Utc::now()).as_slice()).unwrap();
        assert_eq!(done.correlation_id, order.correlation_id.to_string());
        assert_eq!(done.customer.as_ref(), customer);
        assert_eq!(
            processed_message_id(order.correlation_id),
            format!("{}:processed", order.correlation_id)
        );
        let cid = order.correlation_id;
        let failed =
            ev::OrderStatusChanged::decode(failed(&named, "no stock", Utc::now()).as_slice())
                .unwrap();
        assert_eq!(failed.status(), pb::OrderStatus::Failed);
        assert_eq!((failed.order_id, failed.reason.as_str()), (42, "no stock"));
        assert_eq!(failed.customer.as_ref(), customer);
        assert_eq!(failed_message_id(cid), format!("{cid}:failed"));
    }

    #[test]
    fn reasons_for_the_owner_name_the_problem_without_internals() {
        let mut event = valid_event(CorrelationId::new());
        event.customer = valid_event(CorrelationId::new()).customer;
        let sealed = parse(&event).unwrap_err();
        assert_eq!(
            sealed.user_reason(),
            "the order's customer reference could not be verified"
        );
        let mut event = valid_event(CorrelationId::new());
        event.lines[1].quantity = 0;
        assert_eq!(
            parse(&event).unwrap_err().user_reason(),
            "the order is invalid: lines[1].quantity must be 1..=100"
        );
    }
}
