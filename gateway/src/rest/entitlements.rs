//! `/api/entitlements`: what the caller's completed orders gave them and the seats they were
//! given, and, for a buyer, assigning and revoking seats; each forwarded to accept-svc's
//! `EntitlementService` for the token's user. The rules (decision 16) are accept-svc's; this module
//! translates shapes and statuses: an entitlement the caller cannot see is 404, a learner managing
//! seats 403, a bad `userId` 400, and no seat free (or an expired entitlement) 409.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use contoso_proto::{
    convert::from_timestamp,
    entitlements::v1::{self as pb, AssignSeatRequest, ListEntitlementsRequest, RevokeSeatRequest},
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Caller, Rest, images, upstream_problem};
use crate::problem::Problem;

const UPSTREAM: &str = "accept-svc";

/// How the caller holds an entitlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) enum Role {
    /// The caller bought it and manages its seats.
    Buyer,
    /// The buyer gave the caller a seat.
    Assignee,
}

/// A seat the buyer gave to another user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Seat {
    user_id: String,
    assigned_at: DateTime<Utc>,
}

/// What one order line gave its buyer: a product for a period, with seats for a team.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": 12, "productId": "AZ-104", "productName": "Azure Administrator Associate (AZ-104) Bundle",
    "imageUrl": "/images/products/az-104.svg", "role": "Buyer", "buyer": "alice", "seats": 3,
    "seatsUsed": 2, "holdsSeat": true, "validFrom": "2027-01-31T10:00:00Z",
    "validUntil": "2028-01-31T10:00:00Z", "active": true, "daysLeft": 365, "orderId": 301,
    "lineNo": 1, "assignments": [{"userId": "bob", "assignedAt": "2027-02-01T09:00:00Z"}]
}))]
pub(crate) struct EntitlementView {
    id: i64,
    /// The product's exam code.
    product_id: String,
    /// The product's name as the order recorded it.
    product_name: String,
    image_url: String,
    role: Role,
    /// The user who bought it.
    buyer: String,
    /// Seats bought: the order line's quantity.
    seats: i32,
    /// Every assigned seat, plus the buyer's own unless all are assigned to others.
    seats_used: i32,
    /// Whether the caller holds a seat (a buyer who assigned every seat does not).
    holds_seat: bool,
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    active: bool,
    /// Whole days until `validUntil`, a started day counting as one; 0 once expired.
    days_left: i32,
    /// The order that granted it (the buyer's only).
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<i64>,
    /// The line of that order.
    #[serde(skip_serializing_if = "Option::is_none")]
    line_no: Option<i32>,
    /// Seats given to others, oldest first (shown to the buyer only).
    assignments: Vec<Seat>,
}

impl TryFrom<pb::Entitlement> for EntitlementView {
    type Error = Problem;

    fn try_from(e: pb::Entitlement) -> Result<Self, Problem> {
        let malformed = || {
            tracing::error!(
                entitlement_id = e.entitlement_id,
                "accept-svc sent an entitlement without a role or validity"
            );
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
                .with_detail("accept-svc sent a malformed entitlement")
        };
        let role = match e.role() {
            pb::EntitlementRole::Buyer => Role::Buyer,
            pb::EntitlementRole::Assignee => Role::Assignee,
            pb::EntitlementRole::Unspecified => return Err(malformed()),
        };
        let valid_from = e
            .valid_from
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(malformed)?;
        let valid_until = e
            .valid_until
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(malformed)?;
        let assignments = e
            .assignments
            .iter()
            .map(|a| {
                Some(Seat {
                    user_id: a.user_id.clone(),
                    assigned_at: a.assigned_at.as_ref().and_then(from_timestamp)?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(malformed)?;
        Ok(Self {
            id: e.entitlement_id,
            image_url: images::url_for(&e.product_id),
            product_id: e.product_id,
            product_name: e.product_name,
            role,
            buyer: e.buyer,
            seats: e.seats,
            seats_used: e.seats_used,
            holds_seat: e.holds_seat,
            valid_from,
            valid_until,
            active: e.active,
            days_left: e.days_left,
            order_id: (e.order_id > 0).then_some(e.order_id),
            line_no: (e.line_no > 0).then_some(e.line_no),
            assignments,
        })
    }
}

/// The caller's entitlements.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EntitlementList {
    items: Vec<EntitlementView>,
}

/// The body of `POST /api/entitlements/{id}/seats`. For the document only: [`assignee`] reads it.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "bob"}))]
pub(crate) struct AssignSeat {
    /// The user (their token's `sub`) to give a seat to: not the buyer, not one who holds a seat.
    /// Printable ASCII with no space at either end (anything else is a 400 naming `userId`).
    #[schema(min_length = 1, max_length = 200)]
    user_id: String,
}

/// The `userId` of an assignment body, or a 400 naming it.
fn assignee(body: &Value) -> Result<String, Problem> {
    match body.get("userId") {
        Some(Value::String(user)) => Ok(user.clone()),
        Some(_) => Err(Problem::invalid_field("userId", "must be a string")),
        None => Err(Problem::invalid_field("userId", "is required")),
    }
}

/// The entitlement id of a path, or a 400 naming `id`.
fn entitlement_id(raw: &str) -> Result<i64, Problem> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| Problem::invalid_field("id", "must be a positive whole number"))
}

fn missing_entitlement() -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
        .with_detail("accept-svc answered without the entitlement")
}

/// What the caller's orders gave them and the seats others gave them: active ones first (the one
/// ending soonest first), then expired ones, with the days left.
#[utoipa::path(
    get, path = "/api/entitlements", tag = "entitlements",
    responses(
        (status = 200, description = "The caller's entitlements", body = EntitlementList),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Entitlements are unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn list(
    State(rest): State<Rest>,
    caller: Caller,
) -> Result<Json<EntitlementList>, Problem> {
    caller.user()?;
    let listed = rest
        .entitlements
        .clone()
        .list_entitlements(caller.request(ListEntitlementsRequest {}))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner();
    Ok(Json(EntitlementList {
        items: listed
            .entitlements
            .into_iter()
            .map(EntitlementView::try_from)
            .collect::<Result<_, _>>()?,
    }))
}

/// Gives another user a seat of one of the caller's entitlements (the buyer only). The buyer keeps
/// a seat of their own until they assign the last one.
#[utoipa::path(
    post, path = "/api/entitlements/{id}/seats", tag = "entitlements",
    params(("id" = i64, Path, minimum = 1, description = "The entitlement id")),
    request_body = AssignSeat,
    responses(
        (status = 200, description = "Assigned: the entitlement as it is now", body = EntitlementView),
        (status = 400, description = "The id or `userId` is wrong: malformed, the buyer, or already holding a seat (named under `errors`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller holds a seat of it but did not buy it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such entitlement of the caller's (another user's included)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No seat is free, or the entitlement has expired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is over the size limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Entitlements are unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn assign(
    State(rest): State<Rest>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<EntitlementView>, Problem> {
    caller.user()?;
    let entitlement_id = entitlement_id(&id)?;
    let Json(body) = body?;
    let user_id = assignee(&body)?;
    let entitlement = rest
        .entitlements
        .clone()
        .assign_seat(caller.request(AssignSeatRequest {
            entitlement_id,
            user_id,
        }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?
        .into_inner()
        .entitlement
        .ok_or_else(missing_entitlement)?;
    Ok(Json(EntitlementView::try_from(entitlement)?))
}

/// Takes back the seat a user was given (the buyer only).
#[utoipa::path(
    delete, path = "/api/entitlements/{id}/seats/{userId}", tag = "entitlements",
    params(
        ("id" = i64, Path, minimum = 1, description = "The entitlement id"),
        ("userId" = String, Path, min_length = 1, max_length = 200, description = "The user holding the seat: printable ASCII with no space at either end (anything else is a 400 naming `userId`)"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "The id or `userId` is malformed (named under `errors`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller holds a seat of it but did not buy it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such entitlement of the caller's, or the user holds no assigned seat of it (the buyer's own seat is not one)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Entitlements are unavailable; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn revoke(
    State(rest): State<Rest>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.user()?;
    let entitlement_id = entitlement_id(&id)?;
    rest.entitlements
        .clone()
        .revoke_seat(caller.request(RevokeSeatRequest {
            entitlement_id,
            user_id,
        }))
        .await
        .map_err(|s| upstream_problem(s, UPSTREAM))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_assignee_is_read_from_user_id_or_named_when_wrong() {
        assert_eq!(assignee(&json!({"userId": "bob"})).unwrap(), "bob");
        assert_eq!(assignee(&json!({})).unwrap_err().fields(), ["userId"]);
        assert_eq!(
            assignee(&json!({"userId": 7})).unwrap_err().fields(),
            ["userId"]
        );
    }

    #[test]
    fn entitlement_ids_must_be_positive_whole_numbers() {
        assert_eq!(entitlement_id("12").unwrap(), 12);
        for raw in ["0", "-1", "x", "1.5", ""] {
            assert_eq!(entitlement_id(raw).unwrap_err().fields(), ["id"], "{raw}");
        }
    }

    #[test]
    fn an_assignee_sees_no_order_and_a_buyer_sees_the_seats() {
        let ts = |s| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let wire = pb::Entitlement {
            entitlement_id: 4,
            product_id: "AZ-104".into(),
            role: pb::EntitlementRole::Assignee as i32,
            valid_from: ts(1),
            valid_until: ts(2),
            ..Default::default()
        };
        let view = serde_json::to_value(EntitlementView::try_from(wire.clone()).unwrap()).unwrap();
        assert_eq!(view["role"], "Assignee");
        assert_eq!(view["imageUrl"], "/images/products/az-104.svg");
        assert!(view.get("orderId").is_none() && view.get("lineNo").is_none());

        let buyer = pb::Entitlement {
            role: pb::EntitlementRole::Buyer as i32,
            order_id: 9,
            line_no: 1,
            assignments: vec![pb::SeatAssignment {
                user_id: "bob".into(),
                assigned_at: ts(1),
            }],
            ..wire.clone()
        };
        let view = serde_json::to_value(EntitlementView::try_from(buyer).unwrap()).unwrap();
        assert_eq!(
            (view["orderId"].clone(), view["lineNo"].clone()),
            (json!(9), json!(1))
        );
        assert_eq!(view["assignments"][0]["userId"], "bob");

        let broken = pb::Entitlement {
            valid_until: None,
            ..wire
        };
        assert_eq!(
            EntitlementView::try_from(broken).unwrap_err().status_code(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
