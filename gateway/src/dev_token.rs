//! `POST /dev/token`: the dev login. It signs a token for whichever user the body names, so the
//! route exists only when dev auth is switched on. Accepts the seed's `{"userId": ...}` as well as
//! `{"sub": ...}`, and answers with the token under both `accessToken` and the seed's `token`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    routing::post,
};
use chrono::{DateTime, Utc};
use contoso_domain::UserId;
use contoso_platform::auth::Authenticator;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::problem::Problem;

#[derive(Debug, Clone)]
pub(crate) struct DevLogin {
    auth: Arc<Authenticator>,
    ttl: Duration,
}

pub(crate) fn router(auth: Arc<Authenticator>, ttl: Duration) -> Router {
    Router::new()
        .route("/dev/token", post(issue))
        .with_state(DevLogin { auth, ttl })
}

/// Who to sign a token for: `sub` or, as the original clients send it, `userId`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"userId": "alice"}))]
pub(crate) struct TokenRequest {
    sub: Option<String>,
    user_id: Option<String>,
}

/// A signed token for the named user.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenResponse {
    access_token: String,
    /// The same token, under the name the seed's clients read.
    token: String,
    token_type: &'static str,
    /// Seconds until it expires.
    expires_in: u64,
    /// The user the token is for (its `sub`).
    user_id: String,
    /// When it expires.
    expires_at_utc: DateTime<Utc>,
}

impl TryFrom<TokenRequest> for UserId {
    type Error = Problem;

    /// Exactly one of `sub` and `userId` must name the user; the error names the field to fix.
    fn try_from(request: TokenRequest) -> Result<Self, Problem> {
        let given = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.trim().is_empty());
        let (field, raw) = match (given(&request.sub), given(&request.user_id)) {
            (true, true) => {
                return Err(Problem::invalid_field(
                    "userId",
                    "give either sub or userId, not both",
                ));
            }
            (true, false) => ("sub", request.sub),
            (false, true) => ("userId", request.user_id),
            (false, false) if request.user_id.is_some() && request.sub.is_none() => {
                return Err(Problem::invalid_field("userId", "must not be empty"));
            }
            (false, false) if request.sub.is_some() => {
                return Err(Problem::invalid_field("sub", "must not be empty"));
            }
            (false, false) => {
                return Err(Problem::invalid_field("sub", "is required (or userId)"));
            }
        };
        UserId::parse(raw.unwrap_or_default())
            .map_err(|e| Problem::invalid_field(field, e.to_string()))
    }
}

/// Issues a token for any user (dev mode only: the route exists only with `DEV_AUTH=true`).
#[utoipa::path(
    post, path = "/dev/token", tag = "dev",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The token", body = TokenResponse),
        (status = 400, description = "No user named, or both names given", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not application/json", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn issue(
    State(login): State<DevLogin>,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Json<TokenResponse>, Problem> {
    let Json(request) = body?;
    let user = UserId::try_from(request)?;
    let token = login
        .auth
        .issue(&user, login.ttl)
        .map_err(|e| Problem::internal("issuing a dev token", &e))?;
    tracing::info!(user = %user.as_str(), ttl_secs = login.ttl.as_secs(), "dev token issued");
    let expires_at_utc =
        Utc::now() + chrono::Duration::from_std(login.ttl).unwrap_or(chrono::Duration::MAX);
    Ok(Json(TokenResponse {
        access_token: token.clone(),
        token,
        token_type: "Bearer",
        expires_in: login.ttl.as_secs(),
        user_id: user.as_str().to_owned(),
        expires_at_utc,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(sub: Option<&str>, user_id: Option<&str>) -> TokenRequest {
        TokenRequest {
            sub: sub.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
        }
    }

    fn field_of(problem: Problem) -> String {
        let body = serde_json::to_value(problem).unwrap_or_default();
        body["errors"]
            .as_object()
            .and_then(|errors| errors.keys().next().cloned())
            .unwrap_or_default()
    }

    #[test]
    fn either_name_for_the_user_is_accepted() {
        assert_eq!(
            UserId::try_from(request(Some("alice"), None))
                .unwrap()
                .as_str(),
            "alice"
        );
        assert_eq!(
            UserId::try_from(request(None, Some("alice")))
                .unwrap()
                .as_str(),
            "alice"
        );
        // An empty alternative beside a real value is not a second user.
        assert_eq!(
            UserId::try_from(request(Some(""), Some("bob")))
                .unwrap()
                .as_str(),
            "bob"
        );
    }

    #[test]
    fn the_error_names_the_field_the_caller_used() {
        assert_eq!(
            field_of(UserId::try_from(request(None, None)).unwrap_err()),
            "sub"
        );
        assert_eq!(
            field_of(UserId::try_from(request(Some(" "), None)).unwrap_err()),
            "sub"
        );
        assert_eq!(
            field_of(UserId::try_from(request(None, Some(""))).unwrap_err()),
            "userId"
        );
        assert_eq!(
            field_of(UserId::try_from(request(Some("a"), Some("b"))).unwrap_err()),
            "userId"
        );
    }

    #[test]
    fn an_overlong_user_id_is_rejected_on_its_field() {
        let long = "x".repeat(contoso_domain::MAX_USER_ID_LEN + 1);
        assert_eq!(
            field_of(UserId::try_from(request(Some(&long), None)).unwrap_err()),
            "sub"
        );
    }
}
