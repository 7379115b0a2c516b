//! The gateway's HTTP error type: RFC 9457 `application/problem+json`, in the shape the original
//! system's clients read (`type`, `title`, `status`, `detail`, `instance`, `traceId`, and for
//! validation errors `errors`, keyed by field path with a list of messages each).
//!
//! Handlers return a [`Problem`]; [`layer`] then fills in `instance` and `traceId` from the request
//! and turns any other error response of the HTTP side (a body over the limit, a timeout, a method
//! not allowed) into a problem too, so a client never has to parse two error shapes. Internal
//! causes go to the log, never into the body.

use std::collections::BTreeMap;

use axum::{
    Json,
    extract::{Request, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

pub(crate) const CONTENT_TYPE: &str = "application/problem+json";

/// Seconds a client is asked to wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "2";

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    "title": "One or more validation errors occurred.",
    "status": 400,
    "detail": "items[0].quantity: must be between 1 and 100",
    "instance": "/api/orders",
    "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
    "errors": { "items[0].quantity": ["must be between 1 and 100"] }
}))]
pub(crate) struct Problem {
    /// A URI naming the kind of problem: the section of the HTTP RFC for the status.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Short, human-readable summary of the kind of problem.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// What went wrong with this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    /// The path and query of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    /// The W3C trace id of the request (or its request id): quote it when asking for help.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    /// Validation errors: field path (`items[0].quantity`) to messages.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    errors: BTreeMap<String, Vec<String>>,
}

impl Problem {
    /// A problem whose title is the status's reason phrase.
    pub(crate) fn new(status: StatusCode) -> Self {
        Self {
            kind: type_uri(status),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            instance: None,
            trace_id: None,
            errors: BTreeMap::new(),
        }
    }

    /// 400 naming the field that is wrong and why.
    pub(crate) fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut problem = Self::new(StatusCode::BAD_REQUEST);
        problem.title = "One or more validation errors occurred.".to_owned();
        problem.detail = Some(format!("{field}: {message}"));
        problem.errors.insert(field.to_owned(), vec![message]);
        problem
    }

    /// One more field violation on a validation problem.
    pub(crate) fn and_field(mut self, field: &str, message: impl Into<String>) -> Self {
        self.errors
            .entry(field.to_owned())
            .or_default()
            .push(message.into());
        self
    }

    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND)
    }

    /// 500 for a failure that is ours; `cause` and its sources are logged, the client gets no
    /// details.
    pub(crate) fn internal(what: &str, cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %contoso_domain::Report(cause), "{what} failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR).with_detail(format!("{what} failed"))
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The field paths named under `errors`.
    #[cfg(test)]
    pub(crate) fn fields(&self) -> Vec<&str> {
        self.errors.keys().map(String::as_str).collect()
    }

    fn render(&self) -> Response {
        let status = self.status_code();
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

/// The RFC section that defines `status`, as ASP.NET Core's problem details name it.
fn type_uri(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        401 => "https://tools.ietf.org/html/rfc9110#section-15.5.2",
        403 => "https://tools.ietf.org/html/rfc9110#section-15.5.4",
        404 => "https://tools.ietf.org/html/rfc9110#section-15.5.5",
        405 => "https://tools.ietf.org/html/rfc9110#section-15.5.6",
        406 => "https://tools.ietf.org/html/rfc9110#section-15.5.7",
        408 => "https://tools.ietf.org/html/rfc9110#section-15.5.9",
        409 => "https://tools.ietf.org/html/rfc9110#section-15.5.10",
        413 => "https://tools.ietf.org/html/rfc9110#section-15.5.14",
        415 => "https://tools.ietf.org/html/rfc9110#section-15.5.16",
        422 => "https://tools.ietf.org/html/rfc9110#section-15.5.21",
        429 => "https://tools.ietf.org/html/rfc6585#section-4",
        500 => "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        502 => "https://tools.ietf.org/html/rfc9110#section-15.6.3",
        503 => "https://tools.ietf.org/html/rfc9110#section-15.6.4",
        504 => "https://tools.ietf.org/html/rfc9110#section-15.6.5",
        _ => "about:blank",
    }
}

impl IntoResponse for Problem {
    /// The rendered problem, carried along in the response's extensions so [`layer`] can add the
    /// request's `instance` and `traceId`.
    fn into_response(self) -> Response {
        let mut response = self.render();
        response.extensions_mut().insert(self);
        response
    }
}

/// A JSON body axum could not take: wrong content type (415), too large (413), not JSON or not the
/// expected shape (400/422 become 400 here, with axum's description of what was wrong with the
/// input, which names the path of a mistyped field).
impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        let mut problem = Self::new(status).with_detail(rejection.body_text());
        if status == StatusCode::BAD_REQUEST {
            problem.title = "The request body is not valid JSON of the expected shape.".to_owned();
        }
        problem
    }
}

/// Middleware for the HTTP routes: every error response leaves as a problem with the request's
/// `instance` (path and query) and `traceId`. Responses that are not errors, gRPC answers and
/// problems built elsewhere pass through untouched apart from those two fields.
pub(crate) async fn layer(request: Request, next: Next) -> Response {
    let instance = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned());
    let trace_id = trace_id(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let mut problem = match response.extensions().get::<Problem>() {
        Some(problem) => problem.clone(),
        None if is_problem_or_grpc(response.headers()) => return response,
        None => Problem::new(status),
    };
    problem.instance = instance;
    problem.trace_id = trace_id;
    let (mut parts, _) = response.into_parts();
    let rendered = problem.render();
    // Keep what other layers set (CORS, request id, Allow), replacing the body and its headers.
    for (name, value) in rendered.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);
    Response::from_parts(parts, rendered.into_body())
}

fn is_problem_or_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CONTENT_TYPE) || v.starts_with("application/grpc"))
}

/// The trace id of a valid W3C `traceparent`, else the request id (set by the request-id layer).
fn trace_id(headers: &HeaderMap) -> Option<String> {
    let from_traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut parts = v.split('-');
            let (_version, trace) = (parts.next()?, parts.next()?);
            let valid = trace.len() == 32
                && trace.bytes().all(|b| b.is_ascii_hexdigit())
                && trace.bytes().any(|b| b != b'0');
            valid.then(|| trace.to_ascii_lowercase())
        });
    from_traceparent.or_else(|| {
        headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, body::to_bytes, middleware, routing::get};
    use tower::ServiceExt as _;

    use super::*;

    async fn body_of(response: Response) -> (StatusCode, HeaderMap, serde_json::Value) {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        (status, headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_invalid_field_is_a_400_problem_keyed_by_the_field() {
        let (status, headers, body) =
            body_of(Problem::invalid_field("sub", "must not be empty").into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(
            body["type"],
            "https://tools.ietf.org/html/rfc9110#section-15.5.1"
        );
        assert_eq!(body["status"], 400);
        assert_eq!(body["errors"]["sub"][0], "must not be empty");
    }

    #[tokio::test]
    async fn an_internal_problem_does_not_carry_its_cause() {
        let problem = Problem::internal(
            "issuing a token",
            &std::io::Error::other("key at /etc/secret"),
        );
        let (status, _, body) = body_of(problem.into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("/etc/secret"), "{body}");
        assert!(body.get("errors").is_none());
    }

    #[tokio::test]
    async fn unauthorized_asks_for_a_bearer_token_and_unavailable_says_when_to_retry() {
        let (_, headers, _) = body_of(Problem::new(StatusCode::UNAUTHORIZED).into_response()).await;
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        let (_, headers, _) =
            body_of(Problem::new(StatusCode::SERVICE_UNAVAILABLE).into_response()).await;
        assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER_SECS);
    }

    fn app() -> Router {
        Router::new()
            .route("/missing", get(|| async { Problem::not_found() }))
            .route("/plain", get(|| async { StatusCode::PAYLOAD_TOO_LARGE }))
            .route("/fine", get(|| async { "ok" }))
            .layer(middleware::from_fn(layer))
    }

    async fn call(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_layer_adds_instance_and_the_trace_id_of_a_traceparent() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let response = call("/missing?x=1", &[("traceparent", traceparent)]).await;
        let (status, _, body) = body_of(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["instance"], "/missing?x=1");
        assert_eq!(body["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[tokio::test]
    async fn without_a_traceparent_the_trace_id_is_the_request_id() {
        let response = call("/missing", &[("x-request-id", "req-7")]).await;
        let (_, _, body) = body_of(response).await;
        assert_eq!(body["traceId"], "req-7");
    }

    #[tokio::test]
    async fn a_bare_error_status_becomes_a_problem_and_success_is_untouched() {
        let (status, headers, body) = body_of(call("/plain", &[]).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(headers[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(body["status"], 413);
        let fine = call("/fine", &[]).await;
        assert_eq!(fine.status(), StatusCode::OK);
        assert!(fine.headers().get(header::CONTENT_TYPE).unwrap() != CONTENT_TYPE);
    }
}
