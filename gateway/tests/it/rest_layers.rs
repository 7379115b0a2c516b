//! The tower-http layers around the HTTP routes, through `http_router` and `oneshot`: CORS for the
//! configured origins, compression, request ids, and the request timeout answering a problem.

use std::time::Duration;

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, Response, StatusCode, header},
};
use contoso_platform::server::ServerLimits;
use gateway::{Settings, http_router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::support::deps;

const SPA_ORIGIN: &str = "http://localhost:5173";

fn router(settings: Settings) -> Router {
    http_router(&deps(), &settings, CancellationToken::new()).expect("router")
}

async fn call(router: Router, request: Request<Body>) -> Response<Body> {
    router.oneshot(request).await.expect("infallible")
}

#[tokio::test]
async fn a_configured_origin_may_call_the_rest_api_and_others_may_not() {
    let settings = Settings {
        cors_origins: vec![SPA_ORIGIN.to_owned()],
        ..Settings::default()
    };
    let preflight = |origin: &str| {
        Request::options("/api/orders")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type,idempotency-key",
            )
            .body(Body::empty())
            .unwrap()
    };
    let allowed = call(router(settings.clone()), preflight(SPA_ORIGIN)).await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        SPA_ORIGIN
    );
    let allowed_headers = allowed.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("idempotency-key"),
        "{allowed_headers}"
    );

    let refused = call(router(settings), preflight("http://evil.example")).await;
    assert!(
        refused
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn without_configured_origins_no_cors_header_is_sent() {
    let request = Request::get("/openapi.json")
        .header(header::ORIGIN, SPA_ORIGIN)
        .body(Body::empty())
        .unwrap();
    let response = call(router(Settings::default()), request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn answers_are_compressed_for_clients_that_accept_gzip() {
    let request = Request::get("/openapi.json")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .unwrap();
    let response = call(router(Settings::default()), request).await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let plain = call(
        router(Settings::default()),
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_keeps_the_callers() {
    let fresh = call(
        router(Settings::default()),
        Request::get("/api/products/x").body(Body::empty()).unwrap(),
    )
    .await;
    let id = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let kept = call(
        router(Settings::default()),
        Request::get("/openapi.json")
            .header("x-request-id", "caller-7")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(kept.headers()["x-request-id"], "caller-7");
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_problem_after_the_request_timeout() {
    // Accepts connections and never says a word.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let settings = Settings {
        accept_url: format!("http://{addr}"),
        server: ServerLimits {
            request_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        },
        ..Settings::default()
    };
    let response = call(
        router(settings),
        Request::get("/api/products").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 504);
    assert_eq!(problem["instance"], "/api/products");
    held.abort();
}
