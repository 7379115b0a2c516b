//! Idempotent intake: what a key answers once its first request has settled, and for which lines.

use contoso_domain::{PricedOrder, Report, UserId};
use contoso_proto::{
    events::v1::OrderAccepted,
    orders::v1::{self as pb, OrderLineRequest},
};
use contoso_state::StateError;
use prost::Message;

use super::OrdersApi;
use crate::error::ApiError;

impl OrdersApi {
    /// Stores what the key should answer from now on, or frees it.
    pub(super) async fn settle(&self, user: &UserId, key: &str, remembered: Option<Remembered>) {
        let settled = match remembered {
            Some(r) => {
                self.state
                    .complete_idempotency_key(user, key, &r.encode())
                    .await
            }
            None => self.state.release_idempotency_key(user, key).await,
        };
        if let Err(e) = settled {
            tracing::warn!(error = %Report(&e), "settling the idempotency key failed; it expires with its TTL");
        }
    }
}

pub(super) fn corrupt(what: &str) -> ApiError {
    ApiError::State(StateError::Corrupt {
        key: "idempotency".into(),
        detail: format!("stored intake has a bad {what}"),
    })
}

/// The lines a key was used for: product ids (as the catalog spells them, so `az-700` and
/// `AZ-700` are one product) and quantities, in the order the request gave them.
pub(super) fn request_lines(priced: &PricedOrder) -> Vec<OrderLineRequest> {
    priced
        .lines
        .iter()
        .map(|l| OrderLineRequest {
            product_id: l.product_id.clone(),
            quantity: l.quantity.get(),
        })
        .collect()
}

/// What an idempotency key answers once its first request has settled.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Remembered {
    /// The lines of the first request; `None` for a result stored before lines were kept, which
    /// answers any retry as it used to.
    pub(super) lines: Option<Vec<OrderLineRequest>>,
    pub(super) outcome: Outcome,
}

/// How the first request with a key ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// The order was accepted: every retry gets this same answer.
    Accepted(pb::Order),
    /// The broker did not confirm the publish: a retry publishes this same event again.
    Unconfirmed(OrderAccepted),
}

/// The stored form: the request's lines and the outcome, one protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredIntake {
    #[prost(message, repeated, tag = "1")]
    lines: Vec<OrderLineRequest>,
    #[prost(oneof = "StoredOutcome", tags = "2, 3")]
    outcome: Option<StoredOutcome>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum StoredOutcome {
    #[prost(message, tag = "2")]
    Accepted(pb::Order),
    #[prost(message, tag = "3")]
    Unconfirmed(OrderAccepted),
}

impl Remembered {
    /// Before lines were kept: a tag byte, then the encoded order or event.
    const ACCEPTED: u8 = b'A';
    const UNCONFIRMED: u8 = b'U';
    /// A tag byte, then a [`StoredIntake`].
    const WITH_LINES: u8 = b'L';

    pub(super) fn new(lines: Vec<OrderLineRequest>, outcome: Outcome) -> Self {
        Self {
            lines: Some(lines),
            outcome,
        }
    }

    /// True when a retry with `lines` is the same order as the first request.
    pub(super) fn same_lines(&self, lines: &[OrderLineRequest]) -> bool {
        self.lines.as_deref().is_none_or(|first| first == lines)
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let stored = StoredIntake {
            lines: self.lines.clone().unwrap_or_default(),
            outcome: Some(match &self.outcome {
                Outcome::Accepted(order) => StoredOutcome::Accepted(order.clone()),
                Outcome::Unconfirmed(event) => StoredOutcome::Unconfirmed(event.clone()),
            }),
        };
        let mut bytes = Vec::with_capacity(stored.encoded_len() + 1);
        bytes.push(Self::WITH_LINES);
        bytes.extend(stored.encode_to_vec());
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, ApiError> {
        let legacy = |outcome| Self {
            lines: None,
            outcome,
        };
        let decoded = match bytes.split_first() {
            Some((&Self::WITH_LINES, body)) => {
                let stored = StoredIntake::decode(body).map_err(|_| corrupt("body"))?;
                let outcome = match stored.outcome.ok_or_else(|| corrupt("outcome"))? {
                    StoredOutcome::Accepted(order) => Outcome::Accepted(order),
                    StoredOutcome::Unconfirmed(event) => Outcome::Unconfirmed(event),
                };
                return Ok(Self::new(stored.lines, outcome));
            }
            Some((&Self::ACCEPTED, body)) => {
                pb::Order::decode(body).map(|o| legacy(Outcome::Accepted(o)))
            }
            Some((&Self::UNCONFIRMED, body)) => {
                OrderAccepted::decode(body).map(|e| legacy(Outcome::Unconfirmed(e)))
            }
            _ => return Err(corrupt("tag")),
        };
        decoded.map_err(|_| corrupt("body"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, quantity: i32) -> OrderLineRequest {
        OrderLineRequest {
            product_id: id.into(),
            quantity,
        }
    }

    fn order() -> pb::Order {
        pb::Order {
            order_id: 42,
            correlation_id: "c".into(),
            total_cents: 1200,
            ..Default::default()
        }
    }

    #[test]
    fn encodes_and_decodes_lines_with_either_outcome() {
        let lines = vec![line("AZ-700", 2), line("AZ-104", 1)];
        for outcome in [
            Outcome::Accepted(order()),
            Outcome::Unconfirmed(OrderAccepted {
                order_id: 7,
                ..Default::default()
            }),
        ] {
            let remembered = Remembered::new(lines.clone(), outcome);
            assert_eq!(
                Remembered::decode(&remembered.encode()).unwrap(),
                remembered
            );
        }
    }

    #[test]
    fn lines_match_only_with_the_same_products_quantities_and_order() {
        let remembered = Remembered::new(
            vec![line("AZ-700", 2), line("AZ-104", 1)],
            Outcome::Accepted(order()),
        );
        assert!(remembered.same_lines(&[line("AZ-700", 2), line("AZ-104", 1)]));
        assert!(!remembered.same_lines(&[line("AZ-700", 3), line("AZ-104", 1)]));
        assert!(!remembered.same_lines(&[line("AZ-104", 1), line("AZ-700", 2)]));
        assert!(!remembered.same_lines(&[line("AZ-700", 2)]));
        assert!(!remembered.same_lines(&[line("AZ-700", 2), line("AZ-900", 1)]));
    }

    #[test]
    fn a_result_stored_before_lines_were_kept_still_answers() {
        let mut legacy = vec![Remembered::ACCEPTED];
        legacy.extend(order().encode_to_vec());
        let decoded = Remembered::decode(&legacy).unwrap();
        assert_eq!(decoded.outcome, Outcome::Accepted(order()));
        assert!(decoded.same_lines(&[line("anything", 1)]));
    }

    #[test]
    fn garbage_is_corrupt() {
        for bytes in [&b""[..], b"x", b"L\xff\xff", b"L"] {
            assert!(
                matches!(Remembered::decode(bytes), Err(ApiError::State(_))),
                "{bytes:?}"
            );
        }
    }
}
