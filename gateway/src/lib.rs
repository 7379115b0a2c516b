//! gateway: the one origin the browser talks to. It serves gRPC and grpc-web for the catalog, the
//! orders, the entitlements and the live status stream by forwarding each call to the internal service that owns it,
//! the REST API on top of the same calls ([`rest`]: `/api/*`, `/openapi.json`, `/docs`, product
//! images), the SPA's static files, and, in dev mode only, issues tokens at `POST /dev/token`.
//!
//! Everything listens on one port through [`GrpcHost`], which adds health, reflection, grpc-web,
//! `/healthz` and `/readyz`.

// A `Problem` is the HTTP error of every route here and is returned by value on the error path
// only; boxing it would make every handler noisier for no measurable gain.
#![allow(clippy::result_large_err)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
};
use contoso_platform::{
    auth::{AuthInterceptor, Authenticator},
    server::{GrpcHost, Readiness, ServerLimits},
};
use contoso_proto::{
    catalog::v1::catalog_service_server::CatalogServiceServer,
    entitlements::v1::entitlement_service_server::EntitlementServiceServer,
    notify::v1::order_status_service_server::OrderStatusServiceServer,
    orders::v1::order_service_server::OrderServiceServer,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

mod dev_token;
mod forward;
mod problem;
mod rest;
mod upstream;
mod web;

use forward::{CatalogForwarder, EntitlementForwarder, OrderForwarder, StatusForwarder};
use upstream::Upstreams;
pub use web::{DEFAULT_OIDC_SCOPE, OidcArgs, OidcSettings};

/// Largest HTTP request body the gateway's own routes accept (JSON bodies are small).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the gateway runs on. It owns no data: the upstream services are reached through
/// [`Settings`], so the only adapter is the token authority used by the dev login.
#[derive(Debug, Clone)]
pub struct Deps {
    pub auth: Arc<Authenticator>,
    /// Draining only: the upstreams report their own readiness, and tying ours to theirs would take
    /// every gateway out of rotation whenever one backend blips.
    pub readiness: Readiness,
}

/// Where the upstreams are and which optional routes are on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// accept-svc's gRPC endpoint (catalog, orders, entitlements), e.g. `http://accept-svc:50051`.
    pub accept_url: String,
    /// notify-svc's gRPC endpoint (status streams), e.g. `http://notify-svc:50052`.
    pub notify_url: String,
    /// The built SPA (must contain `index.html`); `None` serves a short note at `/` instead.
    pub web_dir: Option<PathBuf>,
    /// Enables `POST /dev/token`. Anyone can then mint a token for any user: never in production.
    pub dev_auth: bool,
    /// Lifetime of tokens issued by the dev login.
    pub dev_token_ttl: Duration,
    /// The identity provider the web app signs in with (`/app-config.json`); the services verify
    /// its tokens with the keys of `JWT_JWKS_FILE`.
    pub oidc: Option<OidcSettings>,
    /// Origins whose scripts may call the REST API from a browser (CORS), e.g. the original SPA on
    /// another port; empty allows the gateway's own origin only.
    pub cors_origins: Vec<String>,
    pub server: ServerLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            accept_url: "http://127.0.0.1:50051".to_owned(),
            notify_url: "http://127.0.0.1:50052".to_owned(),
            web_dir: None,
            dev_auth: false,
            dev_token_ttl: Duration::from_secs(3600),
            oidc: None,
            cors_origins: Vec::new(),
            server: ServerLimits::default(),
        }
    }
}

/// Serves gRPC, grpc-web and HTTP on `listener` until `shutdown` fires. Fails at once on a
/// malformed upstream URL or a web directory without `index.html`; an upstream that is down is not
/// an error here (its calls answer UNAVAILABLE until it is back).
pub async fn run(
    listener: TcpListener,
    deps: Deps,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(dir) = &settings.web_dir {
        let index = dir.join("index.html");
        anyhow::ensure!(
            index.is_file(),
            "web directory {} has no index.html",
            dir.display()
        );
    }
    if settings.dev_auth {
        tracing::warn!("dev login enabled: POST /dev/token issues a token for any user");
    }
    let upstreams = Upstreams::lazy(&settings.accept_url, &settings.notify_url)
        .context("configuring the upstream gRPC channels")?;
    tracing::info!(accept = %settings.accept_url, notify = %settings.notify_url, "forwarding to upstreams");

    let http = http_routes(&deps, &settings, &upstreams, shutdown.child_token())?;
    let tokens = AuthInterceptor::when_present(deps.auth.clone());
    let max_message = settings.server.max_message_bytes;
    GrpcHost::new(deps.readiness.clone())
        .limits(settings.server.clone())
        .add_service(InterceptedService::new(
            CatalogServiceServer::new(CatalogForwarder::new(upstreams.accept()))
                .max_decoding_message_size(max_message),
            tokens.clone(),
        ))
        .add_service(InterceptedService::new(
            OrderServiceServer::new(OrderForwarder::new(upstreams.accept()))
                .max_decoding_message_size(max_message),
            tokens.clone(),
        ))
        .add_service(InterceptedService::new(
            EntitlementServiceServer::new(EntitlementForwarder::new(upstreams.accept()))
                .max_decoding_message_size(max_message),
            tokens.clone(),
        ))
        .add_service(InterceptedService::new(
            OrderStatusServiceServer::new(StatusForwarder::new(
                upstreams.notify(),
                shutdown.child_token(),
            ))
            .max_decoding_message_size(max_message),
            tokens,
        ))
        .merge_http(http)
        .serve(listener, shutdown)
        .await
}

/// The plain-HTTP side of the gateway: the REST API with its docs and images, the dev login (when
/// enabled) and the SPA, whose catch-all only answers paths no other route claims. Every response
/// carries an `x-request-id`; every error is `application/problem+json`.
/// `shutdown` ends open event streams.
pub fn http_router(
    deps: &Deps,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<Router> {
    let upstreams = Upstreams::lazy(&settings.accept_url, &settings.notify_url)?;
    http_routes(deps, settings, &upstreams, shutdown)
}

fn http_routes(
    deps: &Deps,
    settings: &Settings,
    upstreams: &Upstreams,
    shutdown: CancellationToken,
) -> anyhow::Result<Router> {
    let rest = rest::Rest::new(upstreams, deps.auth.clone(), shutdown);
    let mut router = rest::router(rest).merge(rest::openapi::router(settings.dev_auth));
    if settings.dev_auth {
        anyhow::ensure!(
            deps.auth.can_issue(),
            "DEV_AUTH needs JWT_SECRET: the dev login signs its tokens with it"
        );
        router = router.merge(dev_token::router(deps.auth.clone(), settings.dev_token_ttl));
    }
    let mut router = router
        .merge(web::router(
            settings.web_dir.as_deref(),
            settings.dev_auth,
            settings.oidc.as_ref(),
        ))
        // Layers run outside in from the last one: the request id first, so the trace and
        // every problem carry it.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            settings.server.request_timeout,
        ))
        // Inside compression: a problem it writes is compressed like any other body.
        .layer(middleware::from_fn(problem::layer))
        .layer(CompressionLayer::new());
    if let Some(cors) = cors(&settings.cors_origins)? {
        router = router.layer(cors);
    }
    Ok(router
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid)))
}

/// CORS for the configured origins (`CORS_ALLOWED_ORIGINS`); `None` when there are none.
fn cors(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o.trim_end_matches('/'))
                .with_context(|| format!("CORS_ALLOWED_ORIGINS: {o:?} is not a valid origin"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("tracestate"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}
