//! Identifiers and the order status, parsed once at the edge and passed around typed.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use contoso_proto::orders::v1 as pb;

/// The caller: the JWT `sub`. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user id is empty")]
    Empty,
    #[error("user id is longer than {MAX_USER_ID_LEN} bytes")]
    TooLong,
}

impl UserId {
    pub fn parse(raw: impl Into<String>) -> Result<Self, UserIdError> {
        let raw = raw.into();
        if raw.trim().is_empty() {
            Err(UserIdError::Empty)
        } else if raw.len() > MAX_USER_ID_LEN {
            Err(UserIdError::TooLong)
        } else {
            Ok(Self(raw))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> Self {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The workflow key of one order, made at intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationId(Uuid);

impl CorrelationId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for CorrelationId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl FromStr for CorrelationId {
    type Err = uuid::Error;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(raw.trim()).map(Self)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The business id of an order: a bigint from the orders sequence, reserved at intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(i64);

impl OrderId {
    /// Order ids are positive; anything else is not an order id.
    pub fn new(raw: i64) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an order is in its workflow. Statuses only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Accepted,
    Processing,
    Completed,
    Failed,
}

impl OrderStatus {
    fn rank(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::Processing => 1,
            Self::Completed | Self::Failed => 2,
        }
    }

    /// True when moving from `self` to `next` is a step forward. A late or duplicate event never
    /// moves a status back, and a final status (COMPLETED, FAILED) never changes.
    pub fn can_advance_to(self, next: Self) -> bool {
        next.rank() > self.rank()
    }

    pub fn is_final(self) -> bool {
        self.rank() == 2
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "ACCEPTED",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = UnknownStatus;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "ACCEPTED" => Ok(Self::Accepted),
            "PROCESSING" => Ok(Self::Processing),
            "COMPLETED" => Ok(Self::Completed),
            "FAILED" => Ok(Self::Failed),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownStatus(pub String);

impl From<OrderStatus> for pb::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Accepted => Self::Accepted,
            OrderStatus::Processing => Self::Processing,
            OrderStatus::Completed => Self::Completed,
            OrderStatus::Failed => Self::Failed,
        }
    }
}

impl TryFrom<pb::OrderStatus> for OrderStatus {
    type Error = UnknownStatus;
    fn try_from(status: pb::OrderStatus) -> Result<Self, Self::Error> {
        match status {
            pb::OrderStatus::Accepted => Ok(Self::Accepted),
            pb::OrderStatus::Processing => Ok(Self::Processing),
            pb::OrderStatus::Completed => Ok(Self::Completed),
            pb::OrderStatus::Failed => Ok(Self::Failed),
            pb::OrderStatus::Unspecified => Err(UnknownStatus("UNSPECIFIED".into())),
        }
    }
}

/// One status change of one order, as it travels to the watchers of its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub correlation_id: CorrelationId,
    pub status: OrderStatus,
    pub order_id: Option<OrderId>,
    pub occurred_at: DateTime<Utc>,
    /// Why an order failed; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Converts a chrono time to the protobuf well-known timestamp.
pub fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// Converts a protobuf timestamp to chrono; `None` when it is out of range.
pub fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        use OrderStatus::*;
        assert!(Accepted.can_advance_to(Processing));
        assert!(Processing.can_advance_to(Completed));
        assert!(Accepted.can_advance_to(Failed));
        assert!(!Processing.can_advance_to(Accepted));
        assert!(!Completed.can_advance_to(Failed));
        assert!(!Completed.can_advance_to(Completed));
    }

    #[test]
    fn user_id_rejects_blank_and_oversized_values() {
        assert_eq!(UserId::parse("  "), Err(UserIdError::Empty));
        assert_eq!(UserId::parse("x".repeat(201)), Err(UserIdError::TooLong));
        assert_eq!(UserId::parse("alice").unwrap().as_str(), "alice");
    }

    #[test]
    fn order_id_must_be_positive() {
        assert!(OrderId::new(0).is_none());
        assert!(OrderId::new(-4).is_none());
        assert_eq!(OrderId::new(7).map(OrderId::get), Some(7));
    }

    #[test]
    fn correlation_id_round_trips_through_text() {
        let cid = CorrelationId::new();
        assert_eq!(cid.to_string().parse::<CorrelationId>().unwrap(), cid);
        assert!("not-a-uuid".parse::<CorrelationId>().is_err());
    }
}
