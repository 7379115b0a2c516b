//! `contoso.entitlements.v1.EntitlementService`: the caller's entitlements and the seats a buyer
//! hands out. Every call acts for the token's `sub`. Entitlements are granted by process-svc when
//! it records an order; this service only reads them and changes seat assignments, through the
//! [`Entitlements`] role, which offers nothing else.
//!
//! An entitlement the caller neither bought nor holds a seat of answers as one that does not
//! exist (NOT_FOUND). A learner sees that they hold a seat and who bought it, never the other
//! assignees or the buyer's order.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use contoso_domain::{Entitlement, EntitlementId, UserId, parse_assignee};
use contoso_platform::auth::caller;
use contoso_proto::{
    convert::to_timestamp,
    entitlements::v1::{
        self as pb, AssignSeatRequest, AssignSeatResponse, ListEntitlementsRequest,
        ListEntitlementsResponse, RevokeSeatRequest, RevokeSeatResponse,
        entitlement_service_server::EntitlementService,
    },
};
use contoso_store::Entitlements;
use tonic::{Request, Response, Status};

use crate::error::ApiError;

/// The entitlement API over the [`Entitlements`] role.
#[derive(Debug, Clone)]
pub struct EntitlementsApi {
    store: Arc<dyn Entitlements>,
}

impl EntitlementsApi {
    pub fn new(store: Arc<dyn Entitlements>) -> Self {
        Self { store }
    }
}

/// The entitlement and the user a seat request names, checked at the edge.
fn parse_seat_request(
    entitlement_id: i64,
    user_id: &str,
) -> Result<(EntitlementId, UserId), ApiError> {
    let id = EntitlementId::new(entitlement_id)
        .ok_or_else(|| ApiError::invalid("entitlement_id", "must be a positive id"))?;
    let assignee =
        parse_assignee(user_id).map_err(|e| ApiError::invalid("user_id", e.to_string()))?;
    Ok((id, assignee))
}

/// `entitlement` as `viewer` may see it at `now`.
pub(crate) fn to_pb(
    entitlement: &Entitlement,
    viewer: &UserId,
    now: DateTime<Utc>,
) -> pb::Entitlement {
    let buyer = entitlement.is_buyer(viewer);
    let validity = entitlement.validity;
    pb::Entitlement {
        entitlement_id: entitlement.id.get(),
        product_id: entitlement.product_id.clone(),
        product_name: entitlement.product_name.clone(),
        role: if buyer {
            pb::EntitlementRole::Buyer
        } else {
            pb::EntitlementRole::Assignee
        } as i32,
        seats: entitlement.seats.get(),
        seats_used: entitlement.seats_used(),
        holds_seat: entitlement.holds_seat(viewer),
        valid_from: Some(to_timestamp(validity.from)),
        valid_until: Some(to_timestamp(validity.until)),
        active: validity.is_active(now),
        days_left: i32::try_from(validity.days_left(now)).unwrap_or(i32::MAX),
        order_id: if buyer { entitlement.order_id.get() } else { 0 },
        line_no: if buyer { entitlement.line_no } else { 0 },
        buyer: entitlement.buyer.to_string(),
        assignments: if buyer {
            entitlement
                .assignments
                .iter()
                .map(|a| pb::SeatAssignment {
                    user_id: a.assignee.to_string(),
                    assigned_at: Some(to_timestamp(a.assigned_at)),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

#[tonic::async_trait]
impl EntitlementService for EntitlementsApi {
    async fn list_entitlements(
        &self,
        request: Request<ListEntitlementsRequest>,
    ) -> Result<Response<ListEntitlementsResponse>, Status> {
        let user = caller(&request)?;
        let listed = self
            .store
            .list_entitlements(&user)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(ListEntitlementsResponse {
            entitlements: listed
                .value
                .iter()
                .map(|e| to_pb(e, &user, listed.as_of))
                .collect(),
        }))
    }

    async fn assign_seat(
        &self,
        request: Request<AssignSeatRequest>,
    ) -> Result<Response<AssignSeatResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let (id, assignee) = parse_seat_request(req.entitlement_id, &req.user_id)?;
        let now = self
            .store
            .assign_seat(&user, id, &assignee)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(entitlement_id = %id, "seat assigned");
        Ok(Response::new(AssignSeatResponse {
            entitlement: Some(to_pb(&now.value, &user, now.as_of)),
        }))
    }

    async fn revoke_seat(
        &self,
        request: Request<RevokeSeatRequest>,
    ) -> Result<Response<RevokeSeatResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let (id, assignee) = parse_seat_request(req.entitlement_id, &req.user_id)?;
        let now = self
            .store
            .revoke_seat(&user, id, &assignee)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(entitlement_id = %id, "seat revoked");
        Ok(Response::new(RevokeSeatResponse {
            entitlement: Some(to_pb(&now.value, &user, now.as_of)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: ApiError) -> String {
        match err {
            ApiError::Invalid { field, .. } => field,
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn seat_requests_name_the_bad_field() {
        assert!(parse_seat_request(4, "ann").is_ok());
        assert_eq!(
            field_of(parse_seat_request(0, "ann").unwrap_err()),
            "entitlement_id"
        );
        assert_eq!(
            field_of(parse_seat_request(-2, "ann").unwrap_err()),
            "entitlement_id"
        );
        for bad in ["", " ", " ann", "a\u{7}b"] {
            assert_eq!(
                field_of(parse_seat_request(4, bad).unwrap_err()),
                "user_id",
                "{bad:?}"
            );
        }
    }
}
