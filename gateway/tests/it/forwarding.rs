//! gRPC and grpc-web calls to the gateway reach the upstream with the caller's credentials, and the
//! upstream's answers (items, end of stream, errors) come back unchanged.

use std::time::Duration;

use contoso_domain::UserId;
use contoso_platform::auth::{AuthArgs, Authenticator};
use contoso_proto::{
    catalog::v1::{ListProductsRequest, catalog_service_client::CatalogServiceClient},
    notify::v1::{WatchOrderStatusResponse, order_status_service_client::OrderStatusServiceClient},
    orders::v1::OrderStatus,
};
use futures::StreamExt as _;
use tokio::time::timeout;
use tonic::{Code, Streaming};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use tonic_types::StatusExt as _;

use crate::support::*;

fn token_for(user: &str) -> String {
    let user = UserId::parse(user).expect("valid user id");
    authenticator()
        .issue(&user, Duration::from_secs(60))
        .expect("token issued")
}

fn expected_updates(authorization: &str) -> Vec<(String, OrderStatus, String)> {
    [
        OrderStatus::Accepted,
        OrderStatus::Processing,
        OrderStatus::Completed,
    ]
    .into_iter()
    .enumerate()
    .map(|(n, status)| (format!("cid-{n}"), status, authorization.to_owned()))
    .collect()
}

/// A gateway whose notify-svc is `double` (accept-svc is down).
async fn gateway_in_front_of(double: &StatusDouble) -> RunningGateway {
    start_gateway(dead_url().await, start_double(double.clone()).await, None).await
}

/// The next item of a watch stream, or `None` at its end; it must come in time and not fail.
async fn next_item(
    stream: &mut Streaming<WatchOrderStatusResponse>,
) -> Option<WatchOrderStatusResponse> {
    timeout(DEADLINE, stream.message())
        .await
        .expect("item in time")
        .expect("no error")
}

/// A watch of [`ENDLESS`] over plain gRPC, past its three updates.
async fn endless_stream(gateway: &RunningGateway) -> Streaming<WatchOrderStatusResponse> {
    let mut client = OrderStatusServiceClient::new(grpc_channel(gateway).await);
    let mut stream = client
        .watch_order_status(watch(&[ENDLESS]))
        .await
        .expect("stream opened")
        .into_inner();
    for _ in 0..3 {
        next_item(&mut stream).await;
    }
    stream
}

#[tokio::test]
async fn watch_over_grpc_web_relays_three_updates_in_order_with_the_callers_token() {
    let gateway = gateway_in_front_of(&StatusDouble::default()).await;
    let token = token_for("alice");
    let mut request = watch(&["cid-0"]);
    bearer(&mut request, &token);

    let stream = timeout(DEADLINE, grpc_web(&gateway).watch_order_status(request))
        .await
        .expect("answered in time")
        .expect("stream opened")
        .into_inner();
    let items: Vec<_> = timeout(DEADLINE, stream.collect::<Vec<_>>())
        .await
        .expect("stream ended in time");

    let updates: Vec<_> = items
        .iter()
        .map(|i| update_of(i.as_ref().expect("no error")))
        .collect();
    assert_eq!(updates, expected_updates(&format!("Bearer {token}")));
}

#[tokio::test]
async fn watch_over_grpc_relays_three_updates_then_ends_when_the_upstream_ends() {
    let double = StatusDouble::default();
    let gateway = gateway_in_front_of(&double).await;
    let mut client = OrderStatusServiceClient::new(grpc_channel(&gateway).await);
    let token = token_for("alice");
    let mut request = watch(&["cid-0"]);
    bearer(&mut request, &token);
    request
        .metadata_mut()
        .insert("x-request-id", "req-123".parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("x-internal-user", "root".parse().expect("ascii"));

    let mut stream = client
        .watch_order_status(request)
        .await
        .expect("stream opened")
        .into_inner();
    let mut updates = Vec::new();
    for _ in 0..3 {
        let item = next_item(&mut stream).await;
        updates.push(update_of(&item.expect("an item, not the end")));
    }
    let end = next_item(&mut stream).await;

    assert_eq!(updates, expected_updates(&format!("Bearer {token}")));
    assert!(end.is_none(), "the stream should end with the upstream's");
    let seen = double.seen.lock().expect("not poisoned").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].get("x-request-id").expect("request id forwarded"),
        "req-123"
    );
    assert!(
        seen[0].get("x-internal-user").is_none(),
        "only allow-listed metadata is forwarded"
    );
}

#[tokio::test]
async fn a_request_id_is_added_when_the_caller_sent_none() {
    let double = StatusDouble::default();
    let gateway = gateway_in_front_of(&double).await;
    let mut client = OrderStatusServiceClient::new(grpc_channel(&gateway).await);

    let mut stream = client
        .watch_order_status(watch(&[]))
        .await
        .expect("stream opened")
        .into_inner();
    next_item(&mut stream).await;

    let seen = double.seen.lock().expect("not poisoned").clone();
    let id = seen[0]
        .get("x-request-id")
        .expect("request id added")
        .to_str()
        .expect("ascii");
    assert!(!id.is_empty());
    assert!(
        seen[0].get("authorization").is_none(),
        "no token was sent, none is made up"
    );
}

#[tokio::test]
async fn an_upstream_permission_denied_comes_back_unchanged_over_grpc_and_grpc_web() {
    let gateway = gateway_in_front_of(&StatusDouble::default()).await;
    let mut grpc = OrderStatusServiceClient::new(grpc_channel(&gateway).await);
    let mut web = grpc_web(&gateway);

    let over_grpc = grpc
        .watch_order_status(watch(&[FORBIDDEN]))
        .await
        .expect_err("refused");
    let over_web = web
        .watch_order_status(watch(&[FORBIDDEN]))
        .await
        .expect_err("refused");

    for status in [over_grpc, over_web] {
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), DENIED_MESSAGE);
        let details = status.get_error_details();
        let info = details.error_info().expect("error info relayed");
        assert_eq!(info.reason, DENIED_REASON);
    }
}

#[tokio::test]
async fn a_forged_token_is_refused_at_the_gateway_over_grpc_and_grpc_web() {
    // The double would stream its updates for any token: only the gateway can refuse this one.
    let gateway = gateway_in_front_of(&StatusDouble::default()).await;
    let forger = Authenticator::new(&AuthArgs {
        secret: Some("f".repeat(40)),
        ..AuthArgs::dev()
    })
    .expect("a forger's authenticator");
    let forged = forger
        .issue(
            &UserId::parse("alice").expect("user id"),
            Duration::from_secs(60),
        )
        .expect("a forged token");
    let forged_watch = || {
        let mut request = watch(&[]);
        bearer(&mut request, &forged);
        request
    };

    let mut grpc = OrderStatusServiceClient::new(grpc_channel(&gateway).await);
    let over_grpc = grpc.watch_order_status(forged_watch()).await;
    let over_web = grpc_web(&gateway).watch_order_status(forged_watch()).await;
    for refused in [over_grpc, over_web] {
        assert_eq!(refused.expect_err("refused").code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn a_caller_that_goes_away_ends_the_upstream_stream() {
    let double = StatusDouble::default();
    let gateway = gateway_in_front_of(&double).await;
    let stream = endless_stream(&gateway).await;
    drop(stream);

    timeout(DEADLINE, double.caller_gone.notified())
        .await
        .expect("the upstream stream is dropped once the caller leaves");
}

#[tokio::test]
async fn shutdown_ends_open_streams_with_unavailable_and_run_returns() {
    let mut gateway = gateway_in_front_of(&StatusDouble::default()).await;
    let mut stream = endless_stream(&gateway).await;

    gateway.shutdown.cancel();

    let ended = timeout(DEADLINE, stream.message())
        .await
        .expect("stream ended in time");
    assert_eq!(
        ended.expect_err("ended with a status").code(),
        Code::Unavailable
    );
    // Well inside the drain deadline: nothing is left holding the server open.
    let result = timeout(Duration::from_secs(5), &mut gateway.task)
        .await
        .expect("run returned in time");
    result
        .expect("run task did not panic")
        .expect("run ended cleanly");
}

#[tokio::test]
async fn a_call_to_an_upstream_that_is_down_answers_unavailable() {
    let gateway = start_gateway(dead_url().await, dead_url().await, None).await;
    let mut catalog = CatalogServiceClient::new(grpc_channel(&gateway).await);

    let status = timeout(
        DEADLINE,
        catalog.list_products(ListProductsRequest::default()),
    )
    .await
    .expect("answered in time")
    .expect_err("accept-svc is down");

    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        !status.message().contains("127.0.0.1"),
        "internal address leaked: {}",
        status.message()
    );
}

#[tokio::test]
async fn health_and_reflection_answer_on_the_gateway_port() {
    let gateway = start_gateway(dead_url().await, dead_url().await, None).await;
    let channel = grpc_channel(&gateway).await;

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers");
    assert_eq!(health.get_ref().status(), ServingStatus::Serving);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = timeout(DEADLINE, responses.message())
        .await
        .expect("in time")
        .expect("no error");
    let Some(MessageResponse::ListServicesResponse(list)) =
        response.and_then(|r| r.message_response)
    else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "contoso.catalog.v1.CatalogService",
        "contoso.orders.v1.OrderService",
        "contoso.notify.v1.OrderStatusService",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}

async fn get_text(http: &HttpClient, url: String) -> (http::StatusCode, String) {
    let response = http
        .get(url.parse().expect("uri"))
        .await
        .expect("GET answered");
    let status = response.status();
    let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn gateway_with_spa() -> (tempfile::TempDir, RunningGateway) {
    let web = tempfile::tempdir().expect("tempdir");
    std::fs::write(web.path().join("index.html"), "<h1>spa</h1>").expect("write index");
    let gateway = start_gateway(
        dead_url().await,
        dead_url().await,
        Some(web.path().to_owned()),
    )
    .await;
    (web, gateway)
}

#[tokio::test]
async fn the_spa_and_grpc_share_the_port() {
    let (_web, gateway) = gateway_with_spa().await;
    let http = http_client(HttpVersion::H2);

    let page = get_text(&http, format!("{}/orders/42", gateway.url())).await;
    let probe = get_text(&http, format!("{}/healthz", gateway.url())).await;
    let unknown_rpc = http
        .request(
            http::Request::post(format!("{}/contoso.nope.v1.Nope/Call", gateway.url()))
                .header("content-type", "application/grpc")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("POST answered");

    assert_eq!(page, (http::StatusCode::OK, "<h1>spa</h1>".to_owned()));
    assert_eq!(probe.0, http::StatusCode::OK);
    assert_eq!(
        unknown_rpc
            .headers()
            .get("grpc-status")
            .expect("a gRPC status"),
        "12"
    );
}

/// Browsers talk HTTP/1.1 to a plain-http origin, and so do kubelet probes; grpc-web must not
/// stand in the way of either.
#[tokio::test]
async fn browsers_get_the_spa_and_the_probes_over_http1() {
    let (_web, gateway) = gateway_with_spa().await;
    let http = http_client(HttpVersion::Http1);

    let page = get_text(&http, format!("{}/orders/42", gateway.url())).await;
    let probe = get_text(&http, format!("{}/healthz", gateway.url())).await;

    assert_eq!(page, (http::StatusCode::OK, "<h1>spa</h1>".to_owned()));
    assert_eq!(probe.0, http::StatusCode::OK);
}
