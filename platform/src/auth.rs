//! Bearer-token authentication: HS256 JWTs checked for signature, `exp`, `iss` and `aud`. The
//! caller's user id is the token's `sub`. gRPC services put [`AuthInterceptor`] in front and read
//! the caller with [`caller`].

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use contoso_domain::{UserId, UserIdError};

/// Shortest HS256 secret accepted: a shorter one is guessable offline from any token.
pub const MIN_SECRET_LEN: usize = 32;

/// The secret `contoso dev` and the tests sign with. Public: never use it in a deployment.
pub const DEV_SECRET: &str = "contoso-dev-secret-change-me-0123456789abcdef";

/// JWT settings shared by every service (12-factor: all from the environment). The secret has no
/// default: a service started without `JWT_SECRET` refuses to run (see [`Authenticator::new`]).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// HS256 signing secret, at least 32 bytes (`contoso keys` makes one).
    #[arg(long = "jwt-secret", env = "JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
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

impl AuthArgs {
    /// The public development settings: for `contoso dev` and tests only.
    pub fn dev() -> Self {
        Self {
            secret: Some(DEV_SECRET.to_owned()),
            issuer: "contoso-dev".to_owned(),
            audience: "contoso-orders".to_owned(),
        }
    }

    /// These settings, with the public development secret when none was given (`contoso dev`).
    pub fn or_dev_secret(mut self) -> Self {
        self.secret.get_or_insert_with(|| DEV_SECRET.to_owned());
        self
    }
}

/// A fresh random HS256 secret (32 random bytes, base64): what `contoso keys` prints.
pub fn generate_secret() -> String {
    use base64::Engine as _;
    use chacha20poly1305::aead::{OsRng, rand_core::RngCore};
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <token>`")]
    Malformed,
    #[error("token expired")]
    Expired,
    /// Bad signature, issuer, audience or claims. The source stays in the log.
    #[error("invalid token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("invalid token")]
    InvalidSubject(#[source] UserIdError),
    #[error("issuing a token failed")]
    Issue(#[source] jsonwebtoken::errors::Error),
    #[error(
        "JWT_SECRET is not set: give every service the same HS256 secret of at least {MIN_SECRET_LEN} bytes (`contoso keys` makes one)"
    )]
    MissingSecret,
    #[error("JWT_SECRET must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
}

impl From<AuthError> for Status {
    /// The client sees only this error's own stable text; the library's cause goes to the log.
    fn from(err: AuthError) -> Self {
        if let Some(source) = std::error::Error::source(&err) {
            tracing::debug!(error = source, "token refused");
        }
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
    /// Fails without a secret, or with one too short to resist an offline guess.
    pub fn new(args: &AuthArgs) -> Result<Self, AuthError> {
        let secret = args.secret.as_deref().ok_or(AuthError::MissingSecret)?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret);
        }
        if secret == DEV_SECRET {
            tracing::warn!("signing with the public development JWT secret: for development only");
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&args.issuer]);
        validation.set_audience(&[&args.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 5;
        Ok(Self {
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        })
    }

    /// Checks signature, expiry, issuer and audience; returns the `sub`.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e),
            })?;
        UserId::parse(data.claims.sub).map_err(AuthError::InvalidSubject)
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
            .map_err(AuthError::Issue)
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
        Authenticator::new(&AuthArgs::dev()).unwrap()
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
            secret: Some("another-secret-that-is-long-enough-000000".into()),
            ..AuthArgs::dev()
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
            ..AuthArgs::dev()
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
    fn a_missing_secret_is_refused_naming_the_variable() {
        let args = AuthArgs {
            secret: None,
            ..AuthArgs::dev()
        };
        let err = Authenticator::new(&args).unwrap_err();
        assert!(matches!(err, AuthError::MissingSecret));
        assert!(err.to_string().starts_with("JWT_SECRET is not set"));
    }

    #[test]
    fn a_refused_token_does_not_tell_the_client_why_the_library_refused_it() {
        let status = Status::from(auth().verify("a.b.c").unwrap_err());
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "invalid token");
    }

    #[test]
    fn generated_secrets_are_long_enough_and_differ() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        let args = AuthArgs {
            secret: Some(a),
            ..AuthArgs::dev()
        };
        assert!(Authenticator::new(&args).is_ok());
    }

    #[test]
    fn short_secret_is_refused_at_startup() {
        let args = AuthArgs {
            secret: Some("short".into()),
            ..AuthArgs::dev()
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
