//! The gateway's HTTP error type: RFC 9457 `application/problem+json`, with the offending fields
//! listed under `errors` so a client can point at the input it got wrong. Every HTTP route returns
//! its failures as a [`Problem`]; internal causes go to the log, never into the body.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

pub(crate) const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Problem {
    #[serde(rename = "type")]
    kind: &'static str,
    title: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl Problem {
    /// A problem whose title is the status's reason phrase.
    pub(crate) fn new(status: StatusCode) -> Self {
        Self {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: None,
            errors: Vec::new(),
        }
    }

    /// 400 naming the field that is wrong and why.
    pub(crate) fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            title: "Invalid request".to_owned(),
            detail: Some(format!("{field}: {message}")),
            errors: vec![FieldError {
                field: field.to_owned(),
                message,
            }],
            ..Self::new(StatusCode::BAD_REQUEST)
        }
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

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut response = (status, Json(self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
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
        let title = match status {
            StatusCode::BAD_REQUEST => "Invalid request".to_owned(),
            other => other.canonical_reason().unwrap_or("Error").to_owned(),
        };
        Self {
            title,
            ..Self::new(status)
        }
        .with_detail(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    async fn body_of(problem: Problem) -> (StatusCode, String, serde_json::Value) {
        let response = problem.into_response();
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        let bytes = to_bytes(response.into_body(), 64 * 1024).await.unwrap();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn an_invalid_field_is_a_400_problem_naming_the_field() {
        let (status, content_type, body) =
            body_of(Problem::invalid_field("sub", "must not be empty")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(content_type, CONTENT_TYPE);
        assert_eq!(body["type"], "about:blank");
        assert_eq!(body["title"], "Invalid request");
        assert_eq!(body["status"], 400);
        assert_eq!(body["errors"][0]["field"], "sub");
        assert_eq!(body["errors"][0]["message"], "must not be empty");
    }

    #[tokio::test]
    async fn an_internal_problem_does_not_carry_its_cause() {
        let (status, _, body) = body_of(Problem::internal(
            "issuing a token",
            &std::io::Error::other("key at /etc/secret"),
        ))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("/etc/secret"), "{body}");
        assert!(body.get("errors").is_none());
    }
}
