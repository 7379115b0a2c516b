//! Idempotent intake: what a key answers once its first request has settled.

use contoso_domain::{Report, UserId};
use contoso_proto::{events::v1::OrderAccepted, orders::v1 as pb};
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

/// What an idempotency key answers once its first request has settled.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Remembered {
    /// The order was accepted: every retry gets this same answer.
    Accepted(pb::Order),
    /// The broker did not confirm the publish: a retry publishes this same event again.
    Unconfirmed(OrderAccepted),
}

impl Remembered {
    const ACCEPTED: u8 = b'A';
    const UNCONFIRMED: u8 = b'U';

    pub(super) fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Self::Accepted(order) => (Self::ACCEPTED, order.encode_to_vec()),
            Self::Unconfirmed(event) => (Self::UNCONFIRMED, event.encode_to_vec()),
        };
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(tag);
        bytes.extend(body);
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, ApiError> {
        let decoded = match bytes.split_first() {
            Some((&Self::ACCEPTED, body)) => pb::Order::decode(body).map(Self::Accepted),
            Some((&Self::UNCONFIRMED, body)) => OrderAccepted::decode(body).map(Self::Unconfirmed),
            _ => return Err(corrupt("tag")),
        };
        decoded.map_err(|_| corrupt("body"))
    }
}
