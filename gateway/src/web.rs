//! The SPA: static files from the web directory, and `index.html` for any other GET of a path that
//! looks like a client-side route (`/orders/42`), so deep links and refreshes work. Hashed assets
//! (`/assets/*`) are cached for a year as immutable; `index.html` is revalidated on every load, so
//! a deployment reaches every browser at its next navigation. `GET /app-config.json` tells the app
//! how to sign in.
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
/// own origin (images also as `data:` URLs) and may not be framed.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; \
                   frame-ancestors 'none'";

/// What the app needs to know before signing in.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct AppConfig {
    /// `POST /dev/token` is on.
    dev_auth: bool,
}

pub(crate) fn router(web_dir: Option<&Path>, dev_auth: bool) -> Router {
    let spa = web_dir.map_or(Spa::NotBuilt, |dir| Spa::Dir(dir.to_owned()));
    let config = AppConfig { dev_auth };
    Router::new()
        .route(
            "/app-config.json",
            get(move || async move { ([(header::CACHE_CONTROL, REVALIDATE)], Json(config)) }),
        )
        .route("/", any(serve))
        .route("/{*path}", any(serve))
        .with_state(Arc::new(spa))
}

async fn serve(State(spa): State<Arc<Spa>>, request: Request) -> Response {
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
    match &*spa {
        Spa::NotBuilt if path == "/" => Html(NOT_BUILT).into_response(),
        Spa::NotBuilt => Problem::not_found().into_response(),
        Spa::Dir(dir) if is_asset(path) => {
            let cache = if path.starts_with("/assets/") {
                IMMUTABLE
            } else {
                REVALIDATE
            };
            respond(ServeDir::new(dir).oneshot(request).await, cache)
        }
        Spa::Dir(dir) => {
            let index = ServeFile::new(dir.join("index.html"));
            respond(
                ServeDir::new(dir).fallback(index).oneshot(request).await,
                REVALIDATE,
            )
        }
    }
}

fn respond(
    result: Result<http::Response<ServeFileSystemResponseBody>, Infallible>,
    cache: &'static str,
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
                    headers.insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(CSP),
                    );
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

    #[test]
    fn file_names_are_assets_and_routes_are_not() {
        assert!(is_asset("/assets/app.js"));
        assert!(is_asset("/favicon.ico"));
        assert!(!is_asset("/orders/42"));
        assert!(!is_asset("/"));
    }
}
