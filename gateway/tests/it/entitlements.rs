//! EntitlementService through the gateway: forwarded over gRPC and grpc-web with the caller's
//! token, and the REST routes on top of it turning the upstream's refusals into the documented
//! problems (400 naming `userId`, 403, 404, 409), against a stand-in accept-svc.

use std::time::Duration;

use axum::{
    body::{Body, to_bytes},
    http::{Request as HttpRequest, StatusCode, header},
};
use contoso_domain::UserId;
use contoso_proto::entitlements::v1::{
    self as pb, AssignSeatRequest, AssignSeatResponse, ListEntitlementsRequest,
    ListEntitlementsResponse, RevokeSeatRequest, RevokeSeatResponse,
    entitlement_service_client::EntitlementServiceClient,
    entitlement_service_server::{EntitlementService, EntitlementServiceServer},
};
use gateway::{Settings, http_router};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt as _};
use tonic_web::GrpcWebClientLayer;
use tower::ServiceExt as _;

use crate::support::*;

/// Entitlement ids that make the double refuse as accept-svc would.
const NOT_BUYER: i64 = 403;
const UNKNOWN: i64 = 404;
const FULL: i64 = 409;
/// A `user_id` the double refuses as the buyer's own.
const BUYER: &str = "alice";

/// Answers like accept-svc; the authorization it was given comes back as the buyer.
#[derive(Debug, Clone, Default)]
struct EntitlementsDouble;

fn echo(metadata: &MetadataMap) -> String {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn entitlement(id: i64, buyer: String, assignments: &[&str]) -> pb::Entitlement {
    let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    pb::Entitlement {
        entitlement_id: id,
        product_id: "AZ-104".into(),
        product_name: "Azure Administrator".into(),
        role: pb::EntitlementRole::Buyer as i32,
        seats: 3,
        seats_used: i32::try_from(assignments.len()).unwrap() + 1,
        holds_seat: true,
        valid_from: ts(1_800_000_000),
        valid_until: ts(1_831_536_000),
        active: true,
        days_left: 365,
        order_id: 301,
        line_no: 1,
        buyer,
        assignments: assignments
            .iter()
            .map(|u| pb::SeatAssignment {
                user_id: (*u).into(),
                assigned_at: ts(1_800_000_100),
            })
            .collect(),
    }
}

fn refusal(id: i64, user: &str, assigning: bool) -> Option<Status> {
    match id {
        NOT_BUYER => Some(Status::permission_denied(
            "only the buyer of an entitlement assigns and revokes its seats",
        )),
        UNKNOWN => Some(Status::not_found("no such entitlement")),
        FULL => Some(Status::failed_precondition(
            "no seat is free: all 3 seats are assigned",
        )),
        _ if assigning && user == BUYER => Some(Status::with_error_details(
            Code::InvalidArgument,
            "user_id: the buyer holds a seat of their own and cannot be assigned one",
            ErrorDetails::with_bad_request_violation(
                "user_id",
                "the buyer holds a seat of their own and cannot be assigned one",
            ),
        )),
        _ => None,
    }
}

#[tonic::async_trait]
impl EntitlementService for EntitlementsDouble {
    async fn list_entitlements(
        &self,
        request: Request<ListEntitlementsRequest>,
    ) -> Result<Response<ListEntitlementsResponse>, Status> {
        Ok(Response::new(ListEntitlementsResponse {
            entitlements: vec![entitlement(7, echo(request.metadata()), &["bob"])],
        }))
    }

    async fn assign_seat(
        &self,
        request: Request<AssignSeatRequest>,
    ) -> Result<Response<AssignSeatResponse>, Status> {
        let req = request.get_ref();
        if let Some(refused) = refusal(req.entitlement_id, &req.user_id, true) {
            return Err(refused);
        }
        Ok(Response::new(AssignSeatResponse {
            entitlement: Some(entitlement(
                req.entitlement_id,
                echo(request.metadata()),
                &[req.user_id.as_str()],
            )),
        }))
    }

    async fn revoke_seat(
        &self,
        request: Request<RevokeSeatRequest>,
    ) -> Result<Response<RevokeSeatResponse>, Status> {
        let req = request.get_ref();
        if let Some(refused) = refusal(req.entitlement_id, &req.user_id, false) {
            return Err(refused);
        }
        if req.user_id != "bob" {
            return Err(Status::not_found(
                "this user holds no assigned seat of this entitlement",
            ));
        }
        Ok(Response::new(RevokeSeatResponse {
            entitlement: Some(entitlement(
                req.entitlement_id,
                echo(request.metadata()),
                &[],
            )),
        }))
    }
}

async fn start_entitlements_double() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind double");
    let addr = listener.local_addr().expect("double addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EntitlementServiceServer::new(EntitlementsDouble))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn token_for(user: &str) -> String {
    let user = UserId::parse(user).expect("valid user id");
    authenticator()
        .issue(&user, Duration::from_secs(60))
        .expect("token issued")
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

#[tokio::test]
async fn entitlement_calls_reach_accept_svc_with_the_token_over_grpc_and_grpc_web() {
    let gateway = start_gateway(start_entitlements_double().await, dead_url().await, None).await;
    let token = token_for("alice");

    let mut grpc = EntitlementServiceClient::new(grpc_channel(&gateway).await);
    let listed = grpc
        .list_entitlements(with_token(ListEntitlementsRequest {}, &token))
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(listed.entitlements.len(), 1);
    assert_eq!(listed.entitlements[0].buyer, format!("Bearer {token}"));

    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let service = tower::ServiceBuilder::new()
        .layer(GrpcWebClientLayer::new())
        .service(http);
    let mut web =
        EntitlementServiceClient::with_origin(service, gateway.url().parse().expect("uri"));
    let assigned = web
        .assign_seat(with_token(
            AssignSeatRequest {
                entitlement_id: 7,
                user_id: "carol".into(),
            },
            &token,
        ))
        .await
        .expect("assigned")
        .into_inner()
        .entitlement
        .expect("entitlement");
    assert_eq!(assigned.assignments[0].user_id, "carol");
    assert_eq!(assigned.buyer, format!("Bearer {token}"));

    let refused = web
        .revoke_seat(with_token(
            RevokeSeatRequest {
                entitlement_id: NOT_BUYER,
                user_id: "bob".into(),
            },
            &token,
        ))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // A forged token stops at the gateway.
    let forged = grpc
        .list_entitlements(with_token(ListEntitlementsRequest {}, "not.a.token"))
        .await
        .expect_err("refused");
    assert_eq!(forged.code(), Code::Unauthenticated);
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Value,
}

async fn rest(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    let settings = Settings {
        accept_url: start_entitlements_double().await,
        ..Settings::default()
    };
    let router = http_router(&deps(), &settings, CancellationToken::new()).expect("router");
    let mut request = HttpRequest::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .expect("request");
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON")
    };
    Answer {
        status,
        content_type,
        body,
    }
}

#[tokio::test]
async fn the_rest_routes_answer_the_documented_statuses() {
    let token = token_for("alice");
    let t = Some(token.as_str());

    let listed = rest("GET", "/api/entitlements", t, None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let item = &listed.body["items"][0];
    assert_eq!(item["id"], 7);
    assert_eq!(item["role"], "Buyer");
    assert_eq!(
        (item["seats"].clone(), item["seatsUsed"].clone()),
        (3.into(), 2.into())
    );
    assert_eq!(item["daysLeft"], 365);
    assert_eq!(item["orderId"], 301);
    assert_eq!(item["assignments"][0]["userId"], "bob");
    assert!(item["validUntil"].is_string(), "{item}");

    let assigned = rest(
        "POST",
        "/api/entitlements/7/seats",
        t,
        Some(r#"{"userId":"carol"}"#),
    )
    .await;
    assert_eq!(assigned.status, StatusCode::OK, "{}", assigned.body);
    assert_eq!(assigned.body["assignments"][0]["userId"], "carol");
    let revoked = rest("DELETE", "/api/entitlements/7/seats/bob", t, None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);

    let seat = |id: i64, user: &str| {
        (
            format!("/api/entitlements/{id}/seats"),
            format!(r#"{{"userId":"{user}"}}"#),
        )
    };
    for ((path, body), status, field) in [
        (seat(NOT_BUYER, "carol"), StatusCode::FORBIDDEN, None),
        (seat(UNKNOWN, "carol"), StatusCode::NOT_FOUND, None),
        (seat(FULL, "carol"), StatusCode::CONFLICT, None),
        (seat(7, BUYER), StatusCode::BAD_REQUEST, Some("userId")),
        (seat(0, "carol"), StatusCode::BAD_REQUEST, Some("id")),
        (
            ("/api/entitlements/7/seats".into(), "{}".into()),
            StatusCode::BAD_REQUEST,
            Some("userId"),
        ),
    ] {
        let answer = rest("POST", &path, t, Some(&body)).await;
        assert_eq!(answer.status, status, "{path} {body}: {}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json");
        if let Some(field) = field {
            assert!(
                answer.body["errors"].get(field).is_some(),
                "{}",
                answer.body
            );
        }
    }
    for (path, status) in [
        ("/api/entitlements/7/seats/dee", StatusCode::NOT_FOUND),
        ("/api/entitlements/403/seats/bob", StatusCode::FORBIDDEN),
        ("/api/entitlements/7/seats/alice", StatusCode::NOT_FOUND),
        ("/api/entitlements/x/seats/bob", StatusCode::BAD_REQUEST),
    ] {
        let answer = rest("DELETE", path, t, None).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json");
    }
    for (method, path) in [
        ("GET", "/api/entitlements"),
        ("POST", "/api/entitlements/7/seats"),
        ("DELETE", "/api/entitlements/7/seats/bob"),
    ] {
        let answer = rest(method, path, None, Some(r#"{"userId":"carol"}"#)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}
