//! Bearer-token authentication: HS256 JWTs checked for signature, `exp`, `iss` and `aud`. The
//! caller's user id is the token's `sub`. gRPC services put [`AuthInterceptor`] in front and read
//! the caller with [`caller`].

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use crate::domain::UserId;

/// Shortest HS256 secret accepted: a shorter one is guessable offline from any token.
pub const MIN_SECRET_LEN: usize = 32;

/// The secret the dev stack signs with when none is configured. Never use it in production.
pub const DEV_SECRET: &str = "contoso-dev-secret-change-me-0123456789abcdef";

/// JWT settings shared by every service (12-factor: all from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// HS256 signing secret, at least 32 bytes.
    #[arg(long = "jwt-secret", env = "JWT_SECRET", hide_env_values = true, default_value = DEV_SECRET)]
    pub secret: String,
    /// Expected `iss` claim.
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER", default_value = "contoso-dev")]
    pub issuer: String,
    /// Expected `aud` claim.
    #[arg(
        long = "jwt-audience",
        env = "JWT_AUDIENCE",
        default_value = "contoso-orders"
    )]
    pub audience: String,
}

impl Default for AuthArgs {
    fn default() -> Self {
        Self {
            secret: DEV_SECRET.to_owned(),
            issuer: "contoso-dev".to_owned(),
            audience: "contoso-orders".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <token>`")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("JWT secret must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        Status::unauthenticated(err.to_string())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
}

/// Verifies tokens and, for the dev login and the CLI, issues them.
#[derive(Clone)]
pub struct Authenticator {
    issuer: String,
    audience: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(args: &AuthArgs) -> Result<Self, AuthError> {
        if args.secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        if args.secret == DEV_SECRET {
            tracing::warn!("JWT_SECRET not set: using the public development secret");
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&args.issuer]);
        validation.set_audience(&[&args.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Ok(Self {
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
            encoding: EncodingKey::from_secret(args.secret.as_bytes()),
            decoding: DecodingKey::from_secret(args.secret.as_bytes()),
            validation,
        })
    }

    /// Checks signature, expiry, issuer and audience; returns the `sub`.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        UserId::parse(data.claims.sub).map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Reads and verifies `authorization: Bearer <token>`.
    pub fn verify_metadata(&self, metadata: &MetadataMap) -> Result<UserId, AuthError> {
        let value = metadata.get("authorization").ok_or(AuthError::Missing)?;
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = bearer_token(value).ok_or(AuthError::Malformed)?;
        self.verify(token)
    }

    /// A token for `sub` valid for `ttl`.
    pub fn issue(&self, sub: &UserId, ttl: Duration) -> Result<String, AuthError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: sub.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

/// The token of a `Bearer <token>` header value (scheme case-insensitive).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller, put in the request extensions by [`AuthInterceptor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub UserId);

/// Checks bearer tokens with UNAUTHENTICATED for a bad one and records the [`Caller`]. `new` also
/// refuses requests without a token; `when_present` lets them through (for a front door whose
/// upstreams decide what is public).
#[derive(Debug, Clone)]
pub struct AuthInterceptor {
    auth: Arc<Authenticator>,
    required: bool,
}

impl AuthInterceptor {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self {
            auth,
            required: true,
        }
    }

    pub fn when_present(auth: Arc<Authenticator>) -> Self {
        Self {
            auth,
            required: false,
        }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.auth.verify_metadata(request.metadata()) {
            Ok(user) => {
                request.extensions_mut().insert(Caller(user));
                Ok(request)
            }
            Err(AuthError::Missing) if !self.required => Ok(request),
            Err(e) => Err(e.into()),
        }
    }
}

/// The caller recorded by [`AuthInterceptor`]. UNAUTHENTICATED if the interceptor did not run.
pub fn caller<T>(request: &Request<T>) -> Result<UserId, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&AuthArgs::default()).unwrap()
    }

    #[test]
    fn issued_token_verifies_to_its_subject() {
        let alice = UserId::parse("alice").unwrap();
        let token = auth().issue(&alice, Duration::from_secs(60)).unwrap();
        assert_eq!(auth().verify(&token).unwrap(), alice);
    }

    #[test]
    fn token_signed_with_another_secret_is_rejected() {
        let other = Authenticator::new(&AuthArgs {
            secret: "another-secret-that-is-long-enough-000000".into(),
            ..AuthArgs::default()
        })
        .unwrap();
        let token = other
            .issue(&UserId::parse("alice").unwrap(), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(auth().verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn token_for_another_audience_is_rejected() {
        let other = Authenticator::new(&AuthArgs {
            audience: "elsewhere".into(),
            ..AuthArgs::default()
        })
        .unwrap();
        let token = other
            .issue(&UserId::parse("alice").unwrap(), Duration::from_secs(60))
            .unwrap();
        assert!(matches!(auth().verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn expired_token_is_rejected_as_expired() {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: "alice".into(),
            iss: "contoso-dev".into(),
            aud: "contoso-orders".into(),
            iat: now - 3600,
            exp: now - 600,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(auth().verify(&token), Err(AuthError::Expired)));
    }

    #[test]
    fn short_secret_is_refused_at_startup() {
        let args = AuthArgs {
            secret: "short".into(),
            ..AuthArgs::default()
        };
        assert!(matches!(
            Authenticator::new(&args),
            Err(AuthError::WeakSecret)
        ));
    }

    #[test]
    fn when_present_lets_a_missing_token_through_but_not_a_bad_one() {
        let mut interceptor = AuthInterceptor::when_present(Arc::new(auth()));
        assert!(interceptor.call(Request::new(())).is_ok());
        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert("authorization", "Bearer forged".parse().unwrap());
        assert_eq!(
            interceptor.call(bad).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut required = AuthInterceptor::new(Arc::new(auth()));
        assert_eq!(
            required.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bearer_header_parsing_is_strict() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
