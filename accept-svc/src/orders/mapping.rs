//! The wire form of orders: domain records and accepted events to `contoso.orders.v1` messages.

use chrono::{DateTime, Utc};
use contoso_domain::{
    CorrelationId, OrderId, OrderLine, OrderRecord, OrderStatus, PricedOrder, Quantity,
};
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

fn order_pb(
    order_id: OrderId,
    cid: CorrelationId,
    status: OrderStatus,
    created_at: DateTime<Utc>,
    priced: &PricedOrder,
) -> pb::Order {
    pb::Order {
        order_id: order_id.get(),
        correlation_id: cid.to_string(),
        status: pb::OrderStatus::from(status) as i32,
        created_at: Some(to_timestamp(created_at)),
        lines: priced.lines.iter().map(line_to_pb).collect(),
        total_cents: priced.total_cents,
        currency: priced.currency.clone(),
    }
}

pub(super) fn record_pb(record: OrderRecord) -> pb::Order {
    let priced = PricedOrder {
        lines: record.lines,
        total_cents: record.total_cents,
        currency: record.currency,
    };
    order_pb(
        record.order_id,
        record.correlation_id,
        record.status,
        record.accepted_at,
        &priced,
    )
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
