//! The REST API: the original `order-accept` HTTP contract (camelCase JSON, `offset`/`size` paging,
//! `application/problem+json` errors) on top of the internal gRPC services. Every handler calls
//! accept-svc or notify-svc over gRPC with the caller's token, exactly as a gRPC client would: the
//! business rules live there, and this module only translates shapes, field names and status codes.
//!
//! [`openapi`] documents it (`/openapi.json`, `/docs`); [`images`] serves the product images the
//! catalog points at.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{FromRequestParts, Query, rejection::QueryRejection},
    http::{StatusCode, request::Parts},
    routing::{delete, get, post},
};
use contoso_domain::UserId;
use contoso_platform::{
    auth::{AuthError, Authenticator, bearer_token},
    telemetry::{self, ServerSpan},
};
use contoso_proto::{
    catalog::v1::catalog_service_client::CatalogServiceClient,
    entitlements::v1::entitlement_service_client::EntitlementServiceClient,
    notify::v1::order_status_service_client::OrderStatusServiceClient,
    orders::v1::order_service_client::OrderServiceClient,
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    metadata::{MetadataMap, MetadataValue},
    transport::Channel,
};
use tonic_types::StatusExt as _;

use crate::{forward, problem::Problem, upstream::Upstreams};

mod entitlements;
mod events;
mod images;
pub(crate) mod openapi;
mod orders;
mod products;

/// Largest page a client may ask for, for products and orders alike.
pub(crate) const MAX_PAGE_SIZE: i32 = 100;

/// What the REST handlers share: one client per upstream (cheap clones of multiplexed channels),
/// the token check, and the gateway's shutdown, which ends open event streams.
#[derive(Debug, Clone)]
pub(crate) struct Rest {
    catalog: CatalogServiceClient<Channel>,
    orders: OrderServiceClient<Channel>,
    entitlements: EntitlementServiceClient<Channel>,
    status: OrderStatusServiceClient<Channel>,
    auth: Arc<Authenticator>,
    shutdown: CancellationToken,
    heartbeat: Duration,
}

impl Rest {
    pub(crate) fn new(
        upstreams: &Upstreams,
        auth: Arc<Authenticator>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            catalog: CatalogServiceClient::new(upstreams.accept()),
            orders: OrderServiceClient::new(upstreams.accept()),
            entitlements: EntitlementServiceClient::new(upstreams.accept()),
            status: OrderStatusServiceClient::new(upstreams.notify()),
            auth,
            shutdown,
            heartbeat: events::KEEP_ALIVE,
        }
    }
}

/// `/api/*` and `/images/*`. The OpenAPI document and docs page are [`openapi::router`].
pub(crate) fn router(rest: Rest) -> Router {
    Router::new()
        .route("/api/products", get(products::list))
        .route("/api/products/{id}", get(products::get))
        .route("/api/orders", get(orders::list).post(orders::place))
        .route("/api/orders/events", get(events::stream))
        .route("/api/orders/status/{correlation_id}", get(orders::status))
        .route("/api/orders/{id}", get(orders::get).delete(orders::delete))
        .route("/api/entitlements", get(entitlements::list))
        .route("/api/entitlements/{id}/seats", post(entitlements::assign))
        .route(
            "/api/entitlements/{id}/seats/{user_id}",
            delete(entitlements::revoke),
        )
        .route("/images/products/{file}", get(images::product))
        .with_state(rest)
}

/// The caller as the request presents it: a verified token (if any) and the headers to carry
/// upstream. A token that is present but forged, expired or malformed is refused here with 401,
/// as the gRPC side refuses it; a missing one is refused only by the routes that need a user.
#[derive(Debug)]
pub(crate) struct Caller {
    user: Option<UserId>,
    metadata: MetadataMap,
    /// The request's server span, when the route is served by a `GrpcHost`.
    server: Option<ServerSpan>,
}

impl Caller {
    /// The signed-in user, or 401.
    pub(crate) fn user(&self) -> Result<&UserId, Problem> {
        self.user.as_ref().ok_or_else(|| {
            Problem::new(StatusCode::UNAUTHORIZED)
                .with_detail("this endpoint needs a bearer token (Authorization: Bearer <token>)")
        })
    }

    /// An upstream request carrying the caller's token and tracing headers (the gateway's own
    /// trace context when it traces).
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        telemetry::inject_metadata(request.metadata_mut());
        request
    }

    /// Records the order's correlation id on the request's server span, once it is known.
    pub(crate) fn record_correlation_id(&self, correlation_id: &str) {
        if let Some(server) = &self.server {
            server.record_correlation_id(correlation_id);
        }
    }
}

impl FromRequestParts<Rest> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, rest: &Rest) -> Result<Self, Problem> {
        let mut metadata = MetadataMap::new();
        for name in forward::TRACING_HEADERS {
            if let Some(value) = parts.headers.get(name)
                && let Ok(value) = MetadataValue::try_from(value.as_bytes())
            {
                metadata.insert(name, value);
            }
        }
        let server = parts.extensions.get::<ServerSpan>().cloned();
        let Some(header) = parts.headers.get(http::header::AUTHORIZATION) else {
            return Ok(Self {
                user: None,
                metadata,
                server,
            });
        };
        let refused =
            |e: AuthError| Problem::new(StatusCode::UNAUTHORIZED).with_detail(e.to_string());
        let text = header.to_str().map_err(|_| refused(AuthError::Malformed))?;
        let token = bearer_token(text).ok_or_else(|| refused(AuthError::Malformed))?;
        let user = rest.auth.verify(token).map_err(refused)?;
        let value = MetadataValue::try_from(text).map_err(|_| refused(AuthError::Malformed))?;
        metadata.insert("authorization", value);
        Ok(Self {
            user: Some(user),
            metadata,
            server,
        })
    }
}

/// Query parameters, or a 400 problem naming what could not be read.
pub(crate) fn query<T: DeserializeOwned>(
    query: Result<Query<T>, QueryRejection>,
) -> Result<T, Problem> {
    query.map(|Query(q)| q).map_err(|rejection| {
        Problem::new(StatusCode::BAD_REQUEST).with_detail(rejection.body_text())
    })
}

/// `offset` and `size` as the original contract has them: `offset` >= 0 (default 0), `size` in
/// 1..=100 (default `default_size`). Anything else, a non-number included, is a 400 naming the
/// parameter, never silently replaced by a default.
pub(crate) fn paging(
    offset: Option<&str>,
    size: Option<&str>,
    default_size: i32,
) -> Result<(i32, i32), Problem> {
    let offset = match offset {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| Problem::invalid_field("offset", "must be a whole number, 0 or more"))?,
    };
    let size = match size {
        None => default_size,
        Some(raw) => raw
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
            .ok_or_else(|| {
                Problem::invalid_field(
                    "size",
                    format!("must be a whole number between 1 and {MAX_PAGE_SIZE}"),
                )
            })?,
    };
    Ok((offset, size))
}

/// The problem for a failed upstream call. Codes map as the HTTP side of gRPC's own table does,
/// with the conflicts of this API (a reused idempotency key, an order still in flight, no seat
/// free on an entitlement) as 409 and a learner managing a buyer's seats (PERMISSION_DENIED) as 403;
/// field violations are renamed to the REST body's paths (`lines[0].quantity` becomes
/// `items[0].quantity`).
pub(crate) fn upstream_problem(status: Status, upstream: &'static str) -> Problem {
    let status = forward::relay(status, upstream);
    let http = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => {
            tracing::warn!(code = ?status.code(), message = status.message(), "{upstream} failed");
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
                .with_detail(format!("{upstream} could not complete the request"));
        }
    };
    // Field violations mean the request's content is wrong, whatever the code (an unknown product
    // in an order is NOT_FOUND in gRPC, but for the order it is a bad field): 400 naming them.
    let violations = status
        .get_details_bad_request()
        .map(|b| b.field_violations)
        .unwrap_or_default();
    if http.is_client_error()
        && http != StatusCode::UNAUTHORIZED
        && let Some((first, rest)) = violations.split_first()
    {
        let mut problem = Problem::invalid_field(&rest_field(&first.field), &first.description);
        for v in rest {
            problem = problem.and_field(&rest_field(&v.field), &v.description);
        }
        return problem;
    }
    Problem::new(http).with_detail(status.message())
}

/// A proto field path as the REST body names it: `lines[2].product_id` -> `items[2].productId`.
pub(crate) fn rest_field(path: &str) -> String {
    path.split('.')
        .map(|segment| {
            let (name, index) = segment
                .find('[')
                .map_or((segment, ""), |at| segment.split_at(at));
            let name = match name {
                "lines" => "items".to_owned(),
                "order_id" | "entitlement_id" => "id".to_owned(),
                "correlation_ids" => "correlationId".to_owned(),
                "idempotency_key" => "Idempotency-Key".to_owned(),
                other => camel_case(other),
            };
            format!("{name}{index}")
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Minor units as the decimal number the REST contract shows (`1999` -> `19.99`).
pub(crate) fn decimal(cents: i64) -> f64 {
    // Exact for any realistic price: f64 holds integers to 2^53, and the division rounds to the
    // nearest double, which prints as the two-decimal value.
    cents as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt as _};

    use super::*;

    #[test]
    fn proto_paths_become_rest_paths() {
        assert_eq!(rest_field("lines[2].quantity"), "items[2].quantity");
        assert_eq!(rest_field("lines[0].product_id"), "items[0].productId");
        assert_eq!(rest_field("lines"), "items");
        assert_eq!(rest_field("order_id"), "id");
        assert_eq!(rest_field("correlation_ids[3]"), "correlationId[3]");
        assert_eq!(rest_field("idempotency_key"), "Idempotency-Key");
        assert_eq!(rest_field("offset"), "offset");
        assert_eq!(rest_field("user_id"), "userId");
        assert_eq!(rest_field("entitlement_id"), "id");
    }

    #[test]
    fn paging_defaults_bounds_and_non_numbers() {
        assert_eq!(paging(None, None, 12).unwrap(), (0, 12));
        assert_eq!(paging(Some("5"), Some("100"), 12).unwrap(), (5, 100));
        for (offset, size, field) in [
            (Some("-1"), None, "offset"),
            (Some("x"), None, "offset"),
            (None, Some("0"), "size"),
            (None, Some("101"), "size"),
            (None, Some("ten"), "size"),
            (None, Some(""), "size"),
        ] {
            let problem = paging(offset, size, 12).unwrap_err();
            assert_eq!(problem.status_code(), StatusCode::BAD_REQUEST);
            assert_eq!(problem.fields(), [field], "{offset:?} {size:?}");
        }
    }

    #[test]
    fn upstream_codes_map_to_http_statuses() {
        for (code, http) in [
            (Code::NotFound, StatusCode::NOT_FOUND),
            (Code::PermissionDenied, StatusCode::FORBIDDEN),
            (Code::AlreadyExists, StatusCode::CONFLICT),
            (Code::Aborted, StatusCode::CONFLICT),
            (Code::FailedPrecondition, StatusCode::CONFLICT),
            (Code::Unauthenticated, StatusCode::UNAUTHORIZED),
            (Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS),
            (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (Code::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
            (Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let problem = upstream_problem(Status::new(code, "upstream text"), "accept-svc");
            assert_eq!(problem.status_code(), http, "{code:?}");
        }
    }

    #[test]
    fn field_violations_are_renamed_into_errors() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "lines[1].quantity: must be between 1 and 100",
            ErrorDetails::with_bad_request_violation(
                "lines[1].quantity",
                "must be between 1 and 100",
            ),
        );
        let problem = upstream_problem(status, "accept-svc");
        assert_eq!(problem.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(problem.fields(), ["items[1].quantity"]);
    }

    #[test]
    fn a_not_found_about_a_field_of_the_body_is_a_400_naming_it() {
        let status = Status::with_error_details(
            Code::NotFound,
            "lines[0].product_id: product \"NOPE\" is not in the catalog",
            ErrorDetails::with_bad_request_violation(
                "lines[0].product_id",
                "is not in the catalog",
            ),
        );
        let problem = upstream_problem(status, "accept-svc");
        assert_eq!(problem.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(problem.fields(), ["items[0].productId"]);
        let plain = upstream_problem(Status::not_found("order 7 not found"), "accept-svc");
        assert_eq!(plain.status_code(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn seat_refusals_become_403_409_and_a_400_naming_user_id() {
        let not_buyer = Status::permission_denied(
            "only the buyer of an entitlement assigns and revokes its seats",
        );
        let problem = upstream_problem(not_buyer, "accept-svc");
        assert_eq!(problem.status_code(), StatusCode::FORBIDDEN);
        let full = upstream_problem(
            Status::failed_precondition("no seat is free: all 3 seats are assigned"),
            "accept-svc",
        );
        assert_eq!(full.status_code(), StatusCode::CONFLICT);
        let own = Status::with_error_details(
            Code::InvalidArgument,
            "user_id: the buyer holds a seat of their own",
            ErrorDetails::with_bad_request_violation(
                "user_id",
                "the buyer holds a seat of their own",
            ),
        );
        let problem = upstream_problem(own, "accept-svc");
        assert_eq!(problem.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(problem.fields(), ["userId"]);
    }

    #[test]
    fn cents_render_as_decimals() {
        assert_eq!(serde_json::json!(decimal(1999)).to_string(), "19.99");
        assert_eq!(serde_json::json!(decimal(13499)).to_string(), "134.99");
        assert_eq!(serde_json::json!(decimal(0)).to_string(), "0.0");
    }
}
