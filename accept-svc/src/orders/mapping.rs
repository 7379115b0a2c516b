//! The wire form of orders: domain records and accepted events to `contoso.orders.v1` messages.

use contoso_domain::{OrderLine, OrderRecord, Quantity};
use contoso_proto::{convert::to_timestamp, events::v1::OrderAccepted, orders::v1 as pb};

use super::idempotency::corrupt;
use crate::error::ApiError;

/// The answer to `PlaceOrder`: the accepted order, as the event describes it.
pub(super) fn accepted_order(event: &OrderAccepted) -> Result<pb::Order, ApiError> {
    let lines = event
        .lines
        .iter()
        .map(|l| {
            Ok(OrderLine {
                product_id: l.product_id.clone(),
                product_name: l.product_name.clone(),
                quantity: Quantity::try_from(l.quantity).map_err(|_| corrupt("quantity"))?,
                unit_price_cents: l.unit_price_cents,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(pb::Order {
        order_id: event.order_id,
        correlation_id: event.correlation_id.clone(),
        status: pb::OrderStatus::Accepted as i32,
        created_at: Some(
            event
                .accepted_at
                .ok_or_else(|| corrupt("acceptance time"))?,
        ),
        lines: lines.iter().map(line_to_pb).collect(),
        total_cents: event.total_cents,
        currency: event.currency.clone(),
    })
}

/// A recorded order as the client sees it; "created at" is when it was accepted.
pub(super) fn record_pb(record: OrderRecord) -> pb::Order {
    pb::Order {
        order_id: record.order_id.get(),
        correlation_id: record.correlation_id.to_string(),
        status: pb::OrderStatus::from(record.status) as i32,
        created_at: Some(to_timestamp(record.accepted_at)),
        lines: record.lines.iter().map(line_to_pb).collect(),
        total_cents: record.total_cents,
        currency: record.currency,
    }
}

pub(super) fn line_to_pb(line: &OrderLine) -> pb::OrderLine {
    pb::OrderLine {
        product_id: line.product_id.clone(),
        product_name: line.product_name.clone(),
        quantity: line.quantity.get(),
        unit_price_cents: line.unit_price_cents,
        line_total_cents: line.total_cents(),
    }
}
