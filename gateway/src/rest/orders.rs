//! `/api/orders`: place, list, read, soft-delete, and the workflow status by correlation id, each
//! forwarded to accept-svc's `OrderService` for the token's user.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::JsonRejection, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use contoso_proto::{
    convert::from_timestamp,
    orders::v1::{
        self as pb, DeleteOrderRequest, GetOrderRequest, GetOrderStatusRequest, ListOrdersRequest,
        OrderLineRequest, PlaceOrderRequest,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{Caller, Rest, decimal, images, paging, query, upstream_problem};
use crate::problem::Problem;

const UPSTREAM: &str = "accept-svc";
/// Page size when the request names none (the original contract's).
const DEFAULT_SIZE: i32 = 10;
/// The request header that makes `POST /api/orders` idempotent.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Where an order is in its workflow; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) enum OrderStatus {
    Accepted,
    Processing,
    Completed,
    Failed,
}

impl OrderStatus {
    /// The name as the JSON shows it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Accepted => "Accepted",
            Self::Processing => "Processing",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
        }
    }

    pub(crate) fn from_pb(raw: i32) -> Option<Self> {
        match pb::OrderStatus::try_from(raw).ok()? {
            pb::OrderStatus::Accepted => Some(Self::Accepted),
            pb::OrderStatus::Processing => Some(Self::Processing),
            pb::OrderStatus::Completed => Some(Self::Completed),
            pb::OrderStatus::Failed => Some(Self::Failed),
            pb::OrderStatus::Unspecified => None,
        }
    }
}

/// An order as the original contract shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Order {
    /// The business id.
    id: i64,
    /// The workflow id: what `GET /api/orders/status/{correlationId}` and the event stream name.
    correlation_id: String,
    status: OrderStatus,
    /// When the order was accepted.
    created_at: DateTime<Utc>,
    /// What the customer pays, as a decimal number.
    total: f64,
    /// ISO 4217 code.
    currency: String,
    items: Vec<OrderItem>,
}

/// One line of an order, with the name and price it was accepted at.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderItem {
    product_id: String,
    product_name: String,
    image_url: String,
    unit_price: f64,
    quantity: i32,
    line_total: f64,
}

impl TryFrom<pb::Order> for Order {
    type Error = Problem;

    fn try_from(order: pb::Order) -> Result<Self, Problem> {
        let malformed = || {
            tracing::error!(
                order_id = order.order_id,
                "accept-svc sent an order without a status or time"
            );
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
                .with_detail("accept-svc sent a malformed order")
        };
        let status = OrderStatus::from_pb(order.status).ok_or_else(malformed)?;
        let created_at = order
            .created_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(malformed)?;
        Ok(Self {
            id: order.order_id,
            correlation_id: order.correlation_id,
            status,
            created_at,
            total: decimal(order.total_cents),
            currency: order.currency,
            items: order
                .lines
                .into_iter()
                .map(|l| OrderItem {
                    image_url: images::url_for(&l.product_id),
                    product_id: l.product_id,
                    product_name: l.product_name,
                    unit_price: decimal(l.unit_price_cents),
                    quantity: l.quantity,
                    line_total: decimal(l.line_total_cents),
                })
                .collect(),
        })
    }
}

/// The body of `POST /api/orders`. For the document only: [`order_lines`] reads the body.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"items": [{"productId": "AZ-104", "quantity": 2}]}))]
pub(crate) struct PlaceOrder {
    /// 1 to 50 lines, each of a different active product.
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<PlaceOrderItem>,
}

#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PlaceOrderItem {
    /// The exam code of an active product.
    product_id: String,
    /// 1..=100.
    #[schema(minimum = 1, maximum = 100)]
    quantity: i32,
}

/// The lines of a `POST /api/orders` body. Checked by hand rather than by serde so that every
/// wrong field is named by its path (`items[1].quantity`), all at once; the business rules
/// (known product, quantity range, number of lines) are accept-svc's.
fn order_lines(body: &Value) -> Result<Vec<OrderLineRequest>, Problem> {
    let Some(items) = body.get("items") else {
        return Err(Problem::invalid_field("items", "is required"));
    };
    let Some(items) = items.as_array() else {
        return Err(Problem::invalid_field("items", "must be an array"));
    };
    let mut problem: Option<Problem> = None;
    let mut complain = |field: String, message: &str| {
        problem = Some(match problem.take() {
            None => Problem::invalid_field(&field, message),
            Some(p) => p.and_field(&field, message),
        });
    };
    let mut lines = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let product_id = item.get("productId").and_then(Value::as_str);
        if product_id.is_none() {
            complain(
                format!("items[{i}].productId"),
                "is required and must be a string",
            );
        }
        let quantity = item
            .get("quantity")
            .and_then(Value::as_i64)
            .map(|q| i32::try_from(q).unwrap_or(if q < 0 { i32::MIN } else { i32::MAX }));
        if quantity.is_none() {
            complain(
                format!("items[{i}].quantity"),
                "is required and must be a whole number",
            );
        }
        if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
            lines.push(OrderLineRequest {
                product_id: product_id.to_owned(),
                quantity,
            });
        }
    }
    match problem {
        Some(problem) => Err(problem),
        None => Ok(lines),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, Problem> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(String::new()),
        Some(value) => value.to_str().map(str::to_owned).map_err(|_| {
            Problem::invalid_field("Idempotency-Key", "must be visible ASCII characters")
        }),
    }
}

/// Places an order for the token's user.
///
/// Answers as soon as the order is accepted, with the whole order; its status then moves on
/// (see `GET /api/orders/events`). With an `Idempotency-Key`, a retry with the same body answers
/// the same order and creates nothing new.
#[utoipa::path(
    post, path = "/api/orders", tag = "orders",
    request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body (per user, 24 h) answers the same order; with another body, 409")),
    responses(
        (status = 201, description = "Accepted", body = Order, headers(("Location" = String, description = "/api/orders/{id}"))),
        (status = 400, description = "A field is wrong (named under `errors`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The key was used for another body, or its first request is still running", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The order could not be accepted now; retry (with the same key)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn place(
    State(rest): State<Rest>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, Problem> {
    caller.user()?;
    let Json(body) = body?;
    let lines = order_lines(&body)?;
    let idempotency_key = idempotency_key(&headers)?;
    let order = rest
        .orders
        .clone()
        .place_order(caller.request(PlaceOrderRequest {
            lines,
            idempotency_key,
        }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner()
        .order
        .ok_or_else(missing_order)?;
    caller.record_correlation_id(&order.correlation_id);
    let order = Order::try_from(order)?;
    let location = HeaderValue::try_from(format!("/api/orders/{}", order.id))
        .map_err(|e| Problem::internal("building the Location header", &e))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(order),
    )
        .into_response())
}

fn missing_order() -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
        .with_detail("accept-svc answered without the order")
}

/// A page of orders.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OrderPage {
    offset: i32,
    size: i32,
    /// The caller's orders over all pages.
    total: i32,
    items: Vec<Order>,
}

/// Paging of `GET /api/orders`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct OrdersQuery {
    /// Items to skip, 0 or more (default 0).
    #[param(value_type = Option<i32>, minimum = 0)]
    offset: Option<String>,
    /// Page size, 1..=100 (default 10).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 100)]
    size: Option<String>,
}

/// The caller's orders, newest first, including those accepted but not yet processed.
#[utoipa::path(
    get, path = "/api/orders", tag = "orders",
    params(OrdersQuery),
    responses(
        (status = 200, description = "A page of the caller's orders", body = OrderPage),
        (status = 400, description = "A paging parameter is out of range or not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Order history is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(rest): State<Rest>,
    caller: Caller,
    params: Result<Query<OrdersQuery>, QueryRejection>,
) -> Result<Json<OrderPage>, Problem> {
    caller.user()?;
    let params = query(params)?;
    let (offset, size) = paging(
        params.offset.as_deref(),
        params.size.as_deref(),
        DEFAULT_SIZE,
    )?;
    let page = rest
        .orders
        .clone()
        .list_orders(caller.request(ListOrdersRequest { offset, size }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner();
    Ok(Json(OrderPage {
        offset,
        size,
        total: page.total,
        items: page
            .orders
            .into_iter()
            .map(Order::try_from)
            .collect::<Result<_, _>>()?,
    }))
}

/// The order id of a path, or a 400 naming `id`.
fn order_id(raw: &str) -> Result<i64, Problem> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| Problem::invalid_field("id", "must be a positive whole number"))
}

/// One of the caller's orders, as soon as it is accepted.
#[utoipa::path(
    get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "The id is not a positive whole number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's (another user's and deleted ones included)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Order history is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn get(
    State(rest): State<Rest>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Order>, Problem> {
    caller.user()?;
    let order_id = order_id(&id)?;
    let order = rest
        .orders
        .clone()
        .get_order(caller.request(GetOrderRequest { order_id }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner()
        .order
        .ok_or_else(missing_order)?;
    Ok(Json(Order::try_from(order)?))
}

/// Soft-deletes one of the caller's orders: it leaves the history; what it bought stays.
#[utoipa::path(
    delete, path = "/api/orders/{id}", tag = "orders",
    params(("id" = i64, Path, minimum = 1, description = "The order id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a positive whole number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The order is still being processed; retry once it is completed", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Order history is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn delete(
    State(rest): State<Rest>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    caller.user()?;
    let order_id = order_id(&id)?;
    rest.orders
        .clone()
        .delete_order(caller.request(DeleteOrderRequest { order_id }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The workflow status of one of the caller's orders.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusView {
    correlation_id: String,
    status: OrderStatus,
    /// The order id, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<i64>,
    /// When the status last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<DateTime<Utc>>,
}

/// The current workflow status of one of the caller's orders, by correlation id; from the
/// workflow state while it lasts, then from the order history.
#[utoipa::path(
    get, path = "/api/orders/status/{correlationId}", tag = "orders",
    params(("correlationId" = uuid::Uuid, Path, description = "The order's correlation id")),
    responses(
        (status = 200, description = "The status", body = StatusView),
        (status = 400, description = "The correlation id is not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order of the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The status is unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn status(
    State(rest): State<Rest>,
    caller: Caller,
    Path(correlation_id): Path<String>,
) -> Result<Json<StatusView>, Problem> {
    caller.user()?;
    let answer = rest
        .orders
        .clone()
        .get_order_status(caller.request(GetOrderStatusRequest { correlation_id }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner();
    let status = OrderStatus::from_pb(answer.status).ok_or_else(|| {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail("accept-svc sent no status")
    })?;
    Ok(Json(StatusView {
        correlation_id: answer.correlation_id,
        status,
        order_id: (answer.order_id > 0).then_some(answer.order_id),
        updated_at: answer.updated_at.as_ref().and_then(from_timestamp),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_well_formed_body_becomes_lines_in_order() {
        let lines = order_lines(&json!({"items": [
            {"productId": "AZ-104", "quantity": 2},
            {"productId": "AZ-900", "quantity": 1, "note": "ignored"}
        ]}))
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].product_id, "AZ-104");
        assert_eq!(lines[0].quantity, 2);
    }

    #[test]
    fn every_wrong_field_is_named_by_its_path() {
        let problem = order_lines(&json!({"items": [
            {"productId": "AZ-104", "quantity": "two"},
            {"quantity": 1},
            {"productId": "AZ-900", "quantity": 1.5}
        ]}))
        .unwrap_err();
        assert_eq!(
            problem.fields(),
            [
                "items[0].quantity",
                "items[1].productId",
                "items[2].quantity"
            ]
        );
    }

    #[test]
    fn missing_or_mistyped_items_are_named() {
        assert_eq!(order_lines(&json!({})).unwrap_err().fields(), ["items"]);
        assert_eq!(
            order_lines(&json!({"items": {}})).unwrap_err().fields(),
            ["items"]
        );
    }

    #[test]
    fn a_huge_quantity_stays_out_of_range_instead_of_wrapping() {
        let lines =
            order_lines(&json!({"items": [{"productId": "A", "quantity": 4_294_967_297_i64}]}))
                .unwrap();
        assert_eq!(lines[0].quantity, i32::MAX);
    }

    #[test]
    fn order_ids_must_be_positive_whole_numbers() {
        assert_eq!(order_id("42").unwrap(), 42);
        for raw in ["0", "-1", "abc", "1.5", ""] {
            assert_eq!(order_id(raw).unwrap_err().fields(), ["id"], "{raw}");
        }
    }
}
