//! Idempotent intake: what a key answers, for which lines, and the claim a request holds until
//! its event is recorded under the key.
//!
//! A keyed `PlaceOrder` claims its key (a short "pending" claim), makes its `OrderAccepted` and
//! records it under the key with the full idempotency TTL *before* publishing it. From then on
//! every retry with the key, whatever happened to the first request (process killed, the
//! client's deadline dropping it, a lost ack), publishes that same event again and answers that
//! same order: the broker drops the duplicate message id inside its window and process-svc
//! records a correlation id once. Once the broker confirmed it, the key holds the accepted order
//! and a retry only answers.

use std::sync::Arc;

use contoso_domain::{PricedOrder, Report, UserId};
use contoso_proto::{
    events::v1::OrderAccepted,
    orders::v1::{self as pb, OrderLineRequest},
};
use contoso_state::{IntakeState, StateError};
use prost::Message;

use super::OrdersApi;
use crate::error::ApiError;

impl OrdersApi {
    /// Under a key this request just claimed: makes the event and records it (with the lines)
    /// under the key before anything is published. If another request stored its event first
    /// (this one's claim lapsed meanwhile), the key answers that one. When nothing could be
    /// recorded, the claim is freed so a retry can start afresh; so it is when this request is
    /// dropped before its event is recorded.
    pub(super) async fn remember_new_intake(
        &self,
        user: &UserId,
        key: &str,
        lines: &[OrderLineRequest],
        priced: &PricedOrder,
    ) -> Result<Outcome, ApiError> {
        let claim = Claim::new(self.state.clone(), user, key);
        let event = match self.new_event(user, priced).await {
            Ok(event) => event,
            Err(e) => {
                claim.release().await;
                return Err(e);
            }
        };
        let remembered = Remembered::new(lines.to_vec(), Outcome::Unconfirmed(event));
        match self
            .state
            .complete_idempotency_key(user, key, &remembered.encode())
            .await
        {
            Ok(None) => {
                claim.keep();
                Ok(remembered.outcome)
            }
            Ok(Some(first)) => {
                claim.keep();
                answer(key, lines, &first)
            }
            // Nothing is published; should the write have landed after all, the release leaves
            // the stored event alone and a retry publishes it.
            Err(e) => {
                claim.release().await;
                Err(e.into())
            }
        }
    }

    /// The broker confirmed the key's order: from now on a retry only answers it. Best effort:
    /// if this write is lost, the key still holds the same order's event, and a retry
    /// publishes it again (a duplicate the broker or process-svc drops).
    pub(super) async fn settle_accepted(
        &self,
        user: &UserId,
        key: &str,
        lines: &[OrderLineRequest],
        order: &pb::Order,
    ) {
        let remembered = Remembered::new(lines.to_vec(), Outcome::Accepted(order.clone()));
        if let Err(e) = self
            .state
            .replace_idempotency_result(user, key, &remembered.encode())
            .await
        {
            tracing::warn!(error = %Report(&e), "storing the confirmed order under its idempotency key failed; a retry publishes its event again");
        }
    }
}

/// What a key's stored result answers a request with `lines`: the stored outcome when the lines
/// are the same order, [`ApiError::KeyReused`] when they are not.
pub(super) fn answer(
    key: &str,
    lines: &[OrderLineRequest],
    stored: &[u8],
) -> Result<Outcome, ApiError> {
    let first = Remembered::decode(stored)?;
    // Another order under a used key is a client bug (a reused key), not a retry: neither
    // answering the first order nor placing this one would be what it meant.
    if !first.same_lines(lines) {
        return Err(ApiError::KeyReused(key.to_owned()));
    }
    Ok(first.outcome)
}

/// A claim on an idempotency key held until the request's event is recorded under it. Dropped
/// while still held (the request was dropped: the client's deadline, a drain), it is released in
/// the background rather than blocking retries for the claim TTL.
struct Claim {
    state: Arc<dyn IntakeState>,
    user: UserId,
    key: String,
    held: bool,
}

impl Claim {
    fn new(state: Arc<dyn IntakeState>, user: &UserId, key: &str) -> Self {
        Self {
            state,
            user: user.clone(),
            key: key.to_owned(),
            held: true,
        }
    }

    /// The key now holds a result: there is no claim left to free.
    fn keep(mut self) {
        self.held = false;
    }

    /// Frees the key so a retry can run again (a pending claim only; a stored result stays).
    async fn release(mut self) {
        self.held = false;
        release(self.state.as_ref(), &self.user, &self.key).await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (state, user, key) = (
            self.state.clone(),
            self.user.clone(),
            std::mem::take(&mut self.key),
        );
        runtime.spawn(async move { release(state.as_ref(), &user, &key).await });
    }
}

async fn release(state: &dyn IntakeState, user: &UserId, key: &str) {
    if let Err(e) = state.release_idempotency_key(user, key).await {
        tracing::warn!(error = %Report(&e), "releasing the idempotency key failed; it expires with its claim TTL");
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

/// What an idempotency key answers: the first request's lines and outcome.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Remembered {
    /// The lines of the first request; `None` for a result stored before lines were kept, which
    /// answers any retry as it used to.
    pub(super) lines: Option<Vec<OrderLineRequest>>,
    pub(super) outcome: Outcome,
}

/// Where the first request with a key got to.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    /// The broker confirmed the order: every retry gets this same answer.
    Accepted(pb::Order),
    /// The event, recorded before it was published; the broker has not (or not yet) confirmed
    /// it: a retry publishes this same event again and answers its order.
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
