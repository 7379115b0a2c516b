//! Turns a status event from the bus into the [`StatusUpdate`] that travels to the owner's
//! streams. The topic decides the status; a payload that contradicts it is malformed.

use chrono::{DateTime, Utc};
use contoso_bus::Topic;
use contoso_domain::{CorrelationId, OrderId, OrderStatus, StatusUpdate};
use contoso_proto::convert::from_timestamp;
use contoso_proto::{
    events::v1::{OrderAccepted, OrderProcessed, OrderStatusChanged, SealedCustomer},
    orders::v1 as orders_pb,
};
use prost::Message;

/// Why a payload could not be read. Such a message is never dropped silently: it is nacked and
/// left for the broker to dead-letter.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("payload is not a valid {message}: {source}")]
    Protobuf {
        message: &'static str,
        source: prost::DecodeError,
    },
    #[error("correlation id {0:?} is not a UUID")]
    CorrelationId(String),
    #[error("{topic} event carries status {found:?}")]
    StatusMismatch { topic: Topic, found: i32 },
    #[error("{0} events carry no order status")]
    NotAStatus(Topic),
}

/// A status event: the update for the owner's streams, and the owner as the event carries it,
/// sealed (to route by when the owner map in Redis is gone).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusEvent {
    pub(crate) update: StatusUpdate,
    pub(crate) customer: Option<SealedCustomer>,
}

/// Decodes the payload of a delivery on `topic`.
pub(crate) fn decode(topic: Topic, payload: &[u8]) -> Result<StatusEvent, DecodeError> {
    match topic {
        Topic::OrderAccepted => {
            let event = OrderAccepted::decode(payload).map_err(protobuf("OrderAccepted"))?;
            let update = StatusUpdate {
                correlation_id: parse_cid(&event.correlation_id)?,
                status: OrderStatus::Accepted,
                order_id: OrderId::new(event.order_id),
                occurred_at: occurred_at(event.accepted_at.as_ref()),
                reason: String::new(),
            };
            Ok(StatusEvent {
                update,
                customer: event.customer,
            })
        }
        Topic::OrderProcessing | Topic::OrderFailed => {
            let event =
                OrderStatusChanged::decode(payload).map_err(protobuf("OrderStatusChanged"))?;
            let status = if topic == Topic::OrderFailed {
                OrderStatus::Failed
            } else {
                OrderStatus::Processing
            };
            check_status(topic, status, event.status)?;
            let update = StatusUpdate {
                correlation_id: parse_cid(&event.correlation_id)?,
                status,
                order_id: OrderId::new(event.order_id),
                occurred_at: occurred_at(event.occurred_at.as_ref()),
                reason: event.reason,
            };
            Ok(StatusEvent {
                update,
                customer: event.customer,
            })
        }
        Topic::OrderProcessed => {
            let event = OrderProcessed::decode(payload).map_err(protobuf("OrderProcessed"))?;
            let update = StatusUpdate {
                correlation_id: parse_cid(&event.correlation_id)?,
                status: OrderStatus::Completed,
                order_id: OrderId::new(event.order_id),
                occurred_at: occurred_at(event.processed_at.as_ref()),
                reason: String::new(),
            };
            Ok(StatusEvent {
                update,
                customer: event.customer,
            })
        }
        // Not among the topics notify-svc consumes (`Topic::STATUS`).
        Topic::EntitlementsGranted => Err(DecodeError::NotAStatus(topic)),
    }
}

fn protobuf(message: &'static str) -> impl FnOnce(prost::DecodeError) -> DecodeError {
    move |source| DecodeError::Protobuf { message, source }
}

fn parse_cid(raw: &str) -> Result<CorrelationId, DecodeError> {
    raw.parse()
        .map_err(|_| DecodeError::CorrelationId(raw.to_owned()))
}

/// An unset status is tolerated (the topic already says it); a different one is not.
fn check_status(topic: Topic, expected: OrderStatus, raw: i32) -> Result<(), DecodeError> {
    match orders_pb::OrderStatus::try_from(raw) {
        Ok(orders_pb::OrderStatus::Unspecified) => Ok(()),
        Ok(found) if found == orders_pb::OrderStatus::from(expected) => Ok(()),
        _ => Err(DecodeError::StatusMismatch { topic, found: raw }),
    }
}

/// A missing or out-of-range event time is not worth losing the update over: use the time the
/// event was handled.
fn occurred_at(at: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    at.and_then(from_timestamp).unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contoso_proto::convert::to_timestamp;

    #[test]
    fn each_topic_maps_to_its_status_with_the_order_id() {
        let cid = CorrelationId::new();
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let accepted = OrderAccepted {
            correlation_id: cid.to_string(),
            order_id: 9,
            accepted_at: Some(to_timestamp(at)),
            ..OrderAccepted::default()
        };
        let update = decode(Topic::OrderAccepted, &accepted.encode_to_vec())
            .unwrap()
            .update;
        assert_eq!(
            (
                update.correlation_id,
                update.status,
                update.order_id,
                update.occurred_at
            ),
            (cid, OrderStatus::Accepted, OrderId::new(9), at)
        );

        let processed = OrderProcessed {
            correlation_id: cid.to_string(),
            order_id: 9,
            ..OrderProcessed::default()
        };
        let update = decode(Topic::OrderProcessed, &processed.encode_to_vec())
            .unwrap()
            .update;
        assert_eq!(
            (update.status, update.order_id),
            (OrderStatus::Completed, OrderId::new(9))
        );

        let failed = OrderStatusChanged {
            correlation_id: cid.to_string(),
            status: orders_pb::OrderStatus::Failed.into(),
            reason: "card declined".into(),
            ..OrderStatusChanged::default()
        };
        let update = decode(Topic::OrderFailed, &failed.encode_to_vec())
            .unwrap()
            .update;
        assert_eq!(
            (update.status, update.order_id),
            (OrderStatus::Failed, None)
        );
        assert_eq!(update.reason, "card declined");
    }

    #[test]
    fn a_status_change_without_a_status_takes_it_from_the_topic() {
        let event = OrderStatusChanged {
            correlation_id: CorrelationId::new().to_string(),
            ..Default::default()
        };
        let update = decode(Topic::OrderProcessing, &event.encode_to_vec())
            .unwrap()
            .update;
        assert_eq!(update.status, OrderStatus::Processing);
    }

    #[test]
    fn every_status_event_passes_on_the_sealed_customer_it_carries() {
        let cid = CorrelationId::new();
        let sealed = SealedCustomer {
            key_id: "k1".into(),
            nonce: vec![1; 12],
            ciphertext: vec![2; 20],
        };
        let payloads = [
            (
                Topic::OrderAccepted,
                OrderAccepted {
                    correlation_id: cid.to_string(),
                    customer: Some(sealed.clone()),
                    ..OrderAccepted::default()
                }
                .encode_to_vec(),
            ),
            (
                Topic::OrderProcessing,
                OrderStatusChanged {
                    correlation_id: cid.to_string(),
                    customer: Some(sealed.clone()),
                    ..OrderStatusChanged::default()
                }
                .encode_to_vec(),
            ),
            (
                Topic::OrderProcessed,
                OrderProcessed {
                    correlation_id: cid.to_string(),
                    customer: Some(sealed.clone()),
                    ..OrderProcessed::default()
                }
                .encode_to_vec(),
            ),
        ];
        for (topic, payload) in payloads {
            let event = decode(topic, &payload).unwrap();
            assert_eq!(event.customer.as_ref(), Some(&sealed), "{topic}");
        }
        let without = OrderProcessed {
            correlation_id: cid.to_string(),
            ..OrderProcessed::default()
        };
        assert_eq!(
            decode(Topic::OrderProcessed, &without.encode_to_vec())
                .unwrap()
                .customer,
            None
        );
    }

    #[test]
    fn a_status_that_contradicts_the_topic_is_malformed() {
        let event = OrderStatusChanged {
            correlation_id: CorrelationId::new().to_string(),
            status: orders_pb::OrderStatus::Completed.into(),
            ..Default::default()
        };
        assert!(matches!(
            decode(Topic::OrderProcessing, &event.encode_to_vec()),
            Err(DecodeError::StatusMismatch { .. })
        ));
    }

    #[test]
    fn garbage_and_bad_correlation_ids_are_malformed() {
        assert!(matches!(
            decode(Topic::OrderAccepted, &[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf { .. })
        ));
        let event = OrderProcessed {
            correlation_id: "order-1".into(),
            ..Default::default()
        };
        assert!(matches!(
            decode(Topic::OrderProcessed, &event.encode_to_vec()),
            Err(DecodeError::CorrelationId(_))
        ));
    }
}
