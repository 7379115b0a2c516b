//! Where an order is in its workflow, and the update that tells its owner. Statuses only move
//! forward: a late or duplicate event never moves a status back.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{CorrelationId, OrderId};

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
}
