//! Conversions between the domain types and their wire forms, in one place.

use chrono::{DateTime, Utc};
use contoso_domain::{BillingPeriod, OrderStatus, UnknownStatus};

use crate::{catalog::v1 as catalog_pb, orders::v1 as pb};

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

impl From<BillingPeriod> for catalog_pb::BillingPeriod {
    fn from(period: BillingPeriod) -> Self {
        match period {
            BillingPeriod::Monthly => Self::Monthly,
            BillingPeriod::Annual => Self::Annual,
        }
    }
}
