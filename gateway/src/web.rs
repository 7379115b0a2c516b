//! The SPA: static files from the web directory, and `index.html` for any other GET of a path that
//! looks like a client-side route (`/orders/42`), so deep links and refreshes work. Hashed assets
//! (`/assets/*`) are cached for a year as immutable; `index.html` is revalidated on every load, so
//! a deployment reaches every browser at its next navigation. `GET /app-config.json` tells the app
//! how to sign in: the dev login (`devAuth`), an external OpenID Connect provider (`oidc`), or both.
//!
//! The catch-all also sees whatever no other route claims, gRPC included, so it keeps the answers
//! those callers expect: UNIMPLEMENTED for an unknown gRPC method, problem+json 404 under `/api`
//! and `/dev`, and 404 for a missing asset rather than HTML served as JavaScript.

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{any, get},
};
use serde::Serialize;
use tower::ServiceExt as _;
use tower_http::services::{ServeDir, ServeFile, fs::ServeFileSystemResponseBody};

use crate::problem::Problem;

/// Path prefixes that belong to the server, never to the SPA's router.
const SERVER_PREFIXES: [&str; 2] = ["/api", "/dev"];

const NOT_BUILT: &str = "<!doctype html>\n<title>Contoso Orders</title>\n<p>The web app is not built or \
                         not configured (set <code>WEB_DIR</code>). The gRPC and grpc-web APIs are served on \
                         this port.</p>\n";

#[derive(Debug)]
enum Spa {
    Dir(PathBuf),
    NotBuilt,
}

/// Hashed file names: safe to keep forever.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `index.html` and anything not hashed: always ask the server whether it changed.
const REVALIDATE: &str = "no-cache";
/// The app loads nothing from elsewhere and runs no inline code, so the page may only use its
/// own origin (images also as `data:` URLs) and may not be framed. With an identity provider, the
/// app also calls the provider's origin (discovery and token endpoint): see [`csp`].
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; \
                   frame-ancestors 'none'";

/// The scope the app asks an identity provider for when `OIDC_SCOPE` is not set.
pub const DEFAULT_OIDC_SCOPE: &str = "openid profile";

/// The web app's sign-in with an external OpenID Connect provider (authorization code + PKCE, as a
/// public client). The gateway only tells the app about it in `/app-config.json`; the services
/// verify the provider's tokens with `JWT_JWKS_FILE`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OidcArgs {
    /// Issuer URL of the identity provider the web app signs in with, e.g.
    /// `https://login.example.com/realms/contoso` (its discovery document is
    /// `{authority}/.well-known/openid-configuration`). https, or http on a loopback host. Needs
    /// OIDC_CLIENT_ID.
    #[arg(long = "oidc-authority", env = "OIDC_AUTHORITY")]
    pub oidc_authority: Option<String>,
    /// The web app's client id at the provider: a public client (no secret) allowed the
    /// authorization code flow with PKCE and the redirect URI `{gateway origin}/auth/callback`.
    #[arg(long = "oidc-client-id", env = "OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// Scopes the app asks for (space-separated).
    #[arg(long = "oidc-scope", env = "OIDC_SCOPE", default_value = DEFAULT_OIDC_SCOPE)]
    pub oidc_scope: String,
    /// The API's resource indicator (RFC 8707 `resource`, also sent as `audience`), for providers
    /// that issue a JWT access token for an API only when it is named. Unset requests none (the
    /// provider then picks the audience, e.g. from a scope such as `api://…/.default`).
    #[arg(long = "oidc-audience", env = "OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// The provider's name on the login button ("Sign in with …"); default the authority's host.
    #[arg(long = "oidc-provider-name", env = "OIDC_PROVIDER_NAME")]
    pub oidc_provider_name: Option<String>,
}

impl OidcArgs {
    /// The provider, when one is configured; an error for half a configuration or an authority
    /// that is not an https URL (or http on a loopback host).
    pub fn settings(&self) -> anyhow::Result<Option<OidcSettings>> {
        fn non_empty(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        match (
            non_empty(&self.oidc_authority),
            non_empty(&self.oidc_client_id),
        ) {
            (None, None) => Ok(None),
            (Some(authority), Some(client_id)) => OidcSettings::new(
                authority,
                client_id,
                &self.oidc_scope,
                non_empty(&self.oidc_audience),
            )
            .map(|settings| Some(settings.named(non_empty(&self.oidc_provider_name)))),
            _ => anyhow::bail!(
                "OIDC_AUTHORITY and OIDC_CLIENT_ID go together: set both (sign-in with an identity provider) or neither"
            ),
        }
    }
}

/// An identity provider the app signs in with, as `/app-config.json` tells the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OidcSettings {
    authority: String,
    client_id: String,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// `scheme://host[:port]` of the authority, which the page's CSP lets the app call.
    #[serde(skip)]
    origin: String,
}

impl OidcSettings {
    /// Checks the authority: an absolute https URL, or http on a loopback host (a provider on the
    /// same machine, as in development and the browser tests), without user info, query or fragment.
    pub fn new(
        authority: &str,
        client_id: &str,
        scope: &str,
        audience: Option<&str>,
    ) -> anyhow::Result<Self> {
        let invalid = |why: &str| anyhow::anyhow!("OIDC_AUTHORITY {authority:?}: {why}");
        let uri: http::Uri = authority.parse().map_err(|_| invalid("not a URL"))?;
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.authority()) else {
            return Err(invalid("not an absolute URL"));
        };
        if host.as_str().contains('@') || uri.query().is_some() || authority.contains('#') {
            return Err(invalid("must have no user info, query or fragment"));
        }
        let loopback = matches!(host.host(), "127.0.0.1" | "localhost" | "[::1]");
        match scheme {
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(invalid(
                    "must be https (http only on 127.0.0.1 or localhost)",
                ));
            }
        }
        let scope = scope.split_whitespace().collect::<Vec<_>>().join(" ");
        anyhow::ensure!(!scope.is_empty(), "OIDC_SCOPE must name at least one scope");
        Ok(Self {
            authority: authority.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            scope,
            audience: audience.map(str::to_owned),
            name: None,
            origin: format!("{scheme}://{host}"),
        })
    }

    /// These settings, with the provider's name for the login button.
    #[must_use]
    pub fn named(mut self, name: Option<&str>) -> Self {
        self.name = name.map(str::to_owned);
        self
    }
}

/// What the app needs to know before signing in.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct AppConfig {
    /// `POST /dev/token` is on.
    dev_auth: bool,
    /// Sign in with this identity provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    oidc: Option<OidcSettings>,
}

/// The page's Content-Security-Policy: [`CSP`], plus the identity provider's origin for `fetch`.
fn csp(oidc: Option<&OidcSettings>) -> HeaderValue {
    let policy = match oidc {
        None => CSP.to_owned(),
        Some(oidc) => format!("{CSP}; connect-src 'self' {}", oidc.origin),
    };
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static(CSP))
}

pub(crate) fn router(
    web_dir: Option<&Path>,
    dev_auth: bool,
    oidc: Option<&OidcSettings>,
) -> Router {
    let spa = Site {
        files: web_dir.map_or(Spa::NotBuilt, |dir| Spa::Dir(dir.to_owned())),
        csp: csp(oidc),
    };
    let config = Arc::new(AppConfig {
        dev_auth,
        oidc: oidc.cloned(),
    });
    Router::new()
        .route(
            "/app-config.json",
            get(move || async move {
                (
                    [(header::CACHE_CONTROL, REVALIDATE)],
                    Json(config.as_ref().clone()),
                )
            }),
        )
        .route("/", any(serve))
        .route("/{*path}", any(serve))
        .with_state(Arc::new(spa))
}

/// The app's files and the policy its pages are served with.
#[derive(Debug)]
struct Site {
    files: Spa,
    csp: HeaderValue,
}

async fn serve(State(site): State<Arc<Site>>, request: Request) -> Response {
    if is_grpc(&request) {
        return tonic::Status::unimplemented("unknown service or method").into_http::<Body>();
    }
    let path = request.uri().path();
    let is_server_path = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if SERVER_PREFIXES.into_iter().any(is_server_path) {
        return Problem::not_found().into_response();
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = Problem::new(StatusCode::METHOD_NOT_ALLOWED).into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match &site.files {
        Spa::NotBuilt if path == "/" => Html(NOT_BUILT).into_response(),
        Spa::NotBuilt => Problem::not_found().into_response(),
        Spa::Dir(dir) if is_asset(path) => {
            let cache = if path.starts_with("/assets/") {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            respond(ServeDir::new(dir).oneshot(request).await, cache, &site.csp)
        }
        Spa::Dir(dir) => {
            let index = ServeFile::new(dir.join("index.html"));
            respond(
                ServeDir::new(dir).fallback(index).oneshot(request).await,
                REVALIDATE,
                &site.csp,
            )
        }
    }
}

fn respond(
    result: Result<http::Response<ServeFileSystemResponseBody>, Infallible>,
    cache: &'static str,
    csp: &HeaderValue,
) -> Response {
    match result {
        Ok(mut response) => {
            let headers = response.headers_mut();
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            if response.status().is_success() {
                let headers = response.headers_mut();
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
                let is_html = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/html"));
                if is_html {
                    headers.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
                }
            }
            response.map(Body::new)
        }
        Err(never) => match never {},
    }
}

/// gRPC or grpc-web: tonic-web wraps each known service, so a call to an unknown one arrives here
/// untranslated.
fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A request for a file (`/assets/app.js`) rather than a client-side route (`/orders/42`).
fn is_asset(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oidc(authority: &str) -> anyhow::Result<OidcSettings> {
        OidcSettings::new(authority, "shop", DEFAULT_OIDC_SCOPE, None)
    }

    #[test]
    fn an_authority_is_https_or_http_on_a_loopback_host() {
        assert!(oidc("https://login.example.com/realms/contoso").is_ok());
        assert!(oidc("http://127.0.0.1:9000").is_ok());
        assert!(oidc("http://localhost:9000/").is_ok());
        for bad in [
            "http://login.example.com",
            "login.example.com",
            "/realms/contoso",
            "ftp://127.0.0.1",
            "https://user@login.example.com",
            "https://login.example.com/?tenant=x",
            "https://login.example.com/#x",
        ] {
            let err = oidc(bad).expect_err(bad).to_string();
            assert!(err.starts_with("OIDC_AUTHORITY"), "{err}");
        }
    }

    #[test]
    fn with_an_identity_provider_the_page_may_call_its_origin_only() {
        let settings = oidc("https://login.example.com/realms/contoso/").unwrap();
        assert_eq!(
            settings.authority,
            "https://login.example.com/realms/contoso"
        );
        let policy = csp(Some(&settings));
        let policy = policy.to_str().unwrap();
        assert!(policy.starts_with(CSP), "{policy}");
        assert!(
            policy.ends_with("; connect-src 'self' https://login.example.com"),
            "{policy}"
        );
        assert_eq!(csp(None), CSP);
    }

    #[test]
    fn half_an_identity_provider_configuration_is_refused() {
        let args = |authority: Option<&str>, client: Option<&str>| OidcArgs {
            oidc_authority: authority.map(str::to_owned),
            oidc_client_id: client.map(str::to_owned),
            oidc_scope: DEFAULT_OIDC_SCOPE.to_owned(),
            oidc_audience: None,
            oidc_provider_name: None,
        };
        assert_eq!(args(None, None).settings().unwrap(), None);
        assert_eq!(args(Some(" "), Some("")).settings().unwrap(), None);
        for half in [
            args(Some("https://idp.example"), None),
            args(None, Some("shop")),
        ] {
            let err = half.settings().unwrap_err().to_string();
            assert!(err.contains("OIDC_AUTHORITY and OIDC_CLIENT_ID"), "{err}");
        }
        assert!(
            args(Some("https://idp.example"), Some("shop"))
                .settings()
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn file_names_are_assets_and_routes_are_not() {
        assert!(is_asset("/assets/app.js"));
        assert!(is_asset("/favicon.ico"));
        assert!(!is_asset("/orders/42"));
        assert!(!is_asset("/"));
    }
}
