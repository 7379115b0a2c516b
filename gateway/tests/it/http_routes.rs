//! The HTTP side through `http_router` and `oneshot`: the dev login, the SPA's static files and
//! `/app-config.json`.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Method, Request, StatusCode, header},
};
use contoso_platform::auth::{AuthArgs, Authenticator};
use gateway::{OidcSettings, Settings, http_router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::support::{authenticator, deps};

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(router: Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body")
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

/// A problem+json answer with `status`.
fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.text());
    assert_eq!(answer.content_type, "application/problem+json");
}

/// A 200 with an HTML page.
fn assert_html(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.content_type.starts_with("text/html"),
        "{}",
        answer.content_type
    );
}

fn dev_router() -> Router {
    let settings = Settings {
        dev_auth: true,
        dev_token_ttl: Duration::from_secs(600),
        ..Settings::default()
    };
    http_router(&deps(), &settings, CancellationToken::new()).unwrap()
}

fn post_json(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

async fn assert_token_for_alice(body: Value) {
    let answer = send(dev_router(), post_json("/dev/token", &body.to_string())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let json = answer.json();
    let token = json["accessToken"].as_str().expect("accessToken");
    assert_eq!(json["token"], token, "token must equal accessToken");
    assert_eq!(json["expiresIn"], 600);
    assert_eq!(json["userId"], "alice");
    assert!(json["expiresAtUtc"].is_string(), "{json}");
    let user = authenticator().verify(token).expect("the token verifies");
    assert_eq!(user.as_str(), "alice");
}

async fn assert_problem_naming(body: &str, field: &str) {
    let answer = send(dev_router(), post_json("/dev/token", body)).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    let json = answer.json();
    assert_eq!(json["status"], 400);
    assert_eq!(
        json["type"],
        "https://tools.ietf.org/html/rfc9110#section-15.5.1"
    );
    assert_eq!(json["instance"], "/dev/token");
    assert!(json["errors"][field][0].is_string(), "{json}");
}

#[tokio::test]
async fn dev_token_for_sub_verifies_to_that_user() {
    assert_token_for_alice(json!({ "sub": "alice" })).await;
}

#[tokio::test]
async fn dev_token_for_the_seeds_user_id_verifies_to_that_user() {
    assert_token_for_alice(json!({ "userId": "alice" })).await;
}

#[tokio::test]
async fn dev_token_without_a_user_is_a_problem_naming_sub() {
    assert_problem_naming("{}", "sub").await;
}

#[tokio::test]
async fn dev_token_with_an_empty_sub_is_a_problem_naming_sub() {
    assert_problem_naming(r#"{"sub":""}"#, "sub").await;
}

#[tokio::test]
async fn dev_token_with_malformed_json_is_a_400_problem() {
    let answer = send(dev_router(), post_json("/dev/token", "{\"sub\":")).await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["status"], 400);
}

#[tokio::test]
async fn dev_token_with_a_non_json_content_type_is_a_415_problem() {
    let request = Request::post("/dev/token")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"sub":"alice"}"#))
        .expect("request");
    let answer = send(dev_router(), request).await;
    assert_problem(&answer, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn dev_token_route_does_not_exist_when_dev_auth_is_off() {
    let router = http_router(&deps(), &Settings::default(), CancellationToken::new()).unwrap();
    let answer = send(router, post_json("/dev/token", r#"{"sub":"alice"}"#)).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

const INDEX: &str = "<h1>contoso</h1>";

fn spa() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), INDEX).expect("index");
    std::fs::create_dir(dir.path().join("assets")).expect("assets dir");
    std::fs::write(dir.path().join("assets/app.js"), "console.log(1)").expect("app.js");
    let settings = Settings {
        web_dir: Some(dir.path().to_owned()),
        ..Settings::default()
    };
    let router = http_router(&deps(), &settings, CancellationToken::new()).unwrap();
    (dir, router)
}

/// The SPA answers `path` with its index page.
async fn assert_index_at(path: &str) {
    let (_dir, router) = spa();
    let answer = send(router, get(path)).await;
    assert_html(&answer);
    assert_eq!(answer.text(), INDEX);
}

#[tokio::test]
async fn the_spa_index_is_served_at_the_root() {
    assert_index_at("/").await;
}

#[tokio::test]
async fn an_unknown_spa_route_gets_the_index() {
    assert_index_at("/orders/42").await;
}

#[tokio::test]
async fn a_real_file_is_served_with_its_content_type() {
    let (_dir, router) = spa();
    let answer = send(router, get("/assets/app.js")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.content_type.contains("javascript"),
        "{}",
        answer.content_type
    );
    assert_eq!(answer.text(), "console.log(1)");
}

#[tokio::test]
async fn a_missing_asset_is_404_not_the_index() {
    let (_dir, router) = spa();
    let answer = send(router, get("/assets/missing.js")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_ne!(answer.text(), INDEX);
}

#[tokio::test]
async fn unknown_api_paths_are_problem_404s_not_the_index() {
    let (_dir, router) = spa();
    let answer = send(router, get("/api/nothing-here")).await;
    assert_problem(&answer, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_spa_fallback_answers_get_only() {
    let (_dir, router) = spa();
    let request = Request::builder()
        .method(Method::POST)
        .uri("/orders/42")
        .body(Body::empty())
        .expect("request");
    let answer = send(router, request).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn without_a_web_dir_the_root_says_the_spa_is_not_built() {
    let router = http_router(&deps(), &Settings::default(), CancellationToken::new()).unwrap();
    let answer = send(router, get("/")).await;
    assert_html(&answer);
    assert!(answer.text().contains("not built"), "{}", answer.text());
}

#[tokio::test]
async fn run_refuses_a_web_dir_without_an_index_html() {
    let empty = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let settings = Settings {
        web_dir: Some(empty.path().to_owned()),
        ..Settings::default()
    };

    let result = tokio::time::timeout(
        crate::support::DEADLINE,
        gateway::run(
            listener,
            deps(),
            settings,
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .expect("run returns at once");

    let err = result.expect_err("a web dir without index.html is a configuration error");
    assert!(format!("{err:#}").contains("index.html"), "{err:#}");
}

/// The `Cache-Control` the SPA answers `path` with.
async fn cache_control_of(path: &str) -> String {
    let (_dir, router) = spa();
    let response = router.oneshot(get(path)).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn hashed_assets_are_immutable_and_the_index_is_revalidated() {
    assert!(
        cache_control_of("/assets/app.js")
            .await
            .contains("immutable")
    );
    assert_eq!(cache_control_of("/").await, "no-cache");
    assert_eq!(cache_control_of("/orders/42").await, "no-cache");
}

#[tokio::test]
async fn the_app_page_allows_only_its_own_origin_and_is_never_sniffed() {
    let (_dir, router) = spa();
    let page = router.oneshot(get("/orders/42")).await.expect("infallible");
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test]
async fn the_app_config_says_whether_the_dev_login_is_on() {
    let answer = send(dev_router(), get("/app-config.json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json(), json!({ "devAuth": true }));
    let router = http_router(&deps(), &Settings::default(), CancellationToken::new()).unwrap();
    assert_eq!(
        send(router, get("/app-config.json")).await.json(),
        json!({ "devAuth": false })
    );
}

fn oidc(audience: Option<&str>) -> OidcSettings {
    OidcSettings::new(
        "https://login.example.test/realms/contoso/",
        "contoso-shop",
        "openid  profile",
        audience,
    )
    .expect("a valid authority")
}

#[tokio::test]
async fn the_app_config_names_the_identity_provider_when_one_is_configured() {
    let settings = Settings {
        dev_auth: true,
        oidc: Some(oidc(Some("urn:contoso:orders")).named(Some("Contoso ID"))),
        ..Settings::default()
    };
    let router = http_router(&deps(), &settings, CancellationToken::new()).unwrap();
    let answer = send(router, get("/app-config.json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json(),
        json!({
            "devAuth": true,
            "oidc": {
                "authority": "https://login.example.test/realms/contoso",
                "clientId": "contoso-shop",
                "scope": "openid profile",
                "audience": "urn:contoso:orders",
                "name": "Contoso ID",
            },
        })
    );

    // Without an audience the app requests none; without the dev login it offers only the provider.
    let settings = Settings {
        oidc: Some(oidc(None)),
        ..Settings::default()
    };
    let router = http_router(&deps(), &settings, CancellationToken::new()).unwrap();
    let json = send(router, get("/app-config.json")).await.json();
    assert_eq!(json["devAuth"], false);
    assert!(json["oidc"].get("audience").is_none(), "{json}");
    assert!(json["oidc"].get("name").is_none(), "{json}");
}

#[tokio::test]
async fn with_an_identity_provider_the_app_page_may_call_its_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), INDEX).expect("index");
    let settings = Settings {
        web_dir: Some(dir.path().to_owned()),
        oidc: Some(oidc(None)),
        ..Settings::default()
    };
    let router = http_router(&deps(), &settings, CancellationToken::new()).unwrap();
    let page = router
        .oneshot(get("/auth/callback?code=x&state=y"))
        .await
        .expect("infallible");
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "the callback is an app route"
    );
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("connect-src 'self' https://login.example.test"),
        "{csp}"
    );
}

#[tokio::test]
async fn the_dev_login_needs_the_shared_secret() {
    let jwks = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        jwks.path(),
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"PDDe8uloh4p93qdRpNvaR_QN8L6hQOiSAIZ6cyQbzrc","y":"sNGWqf2RzugVhTU8SuBa-reTAE3cuMmB7KjR7534MHI"}]}"#,
    )
    .expect("write");
    let auth = Authenticator::new(&AuthArgs {
        secret: None,
        jwks_file: Some(jwks.path().to_owned()),
        ..AuthArgs::dev()
    })
    .expect("a JWKS file alone verifies");
    let deps = gateway::Deps {
        auth: Arc::new(auth),
        ..deps()
    };
    let settings = Settings {
        dev_auth: true,
        ..Settings::default()
    };
    let err = http_router(&deps, &settings, CancellationToken::new()).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "DEV_AUTH needs JWT_SECRET: the dev login signs its tokens with it"
    );
}
