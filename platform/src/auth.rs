//! Bearer-token authentication: JWTs checked for signature, `exp`, `iss` and `aud`. A token is
//! signed either with the shared HS256 secret (`JWT_SECRET`: the dev login, `contoso token`) or by
//! an external identity provider with one of the public keys in the JWKS file the deployment mounts
//! (`JWT_JWKS_FILE`: RS256/ES256 and kin, picked by the token's `kid`); nothing is fetched at run
//! time. The caller's user id is the token's `sub`. gRPC services put [`AuthInterceptor`] in front
//! and read the caller with [`caller`].

use std::{path::PathBuf, sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tonic::{Request, Status, metadata::MetadataMap, service::Interceptor};

use contoso_domain::{UserId, UserIdError};

mod jwks;

use jwks::Jwks;
pub use jwks::KeyError;

/// Shortest HS256 secret accepted: a shorter one is guessable offline from any token.
pub const MIN_SECRET_LEN: usize = 32;

/// The secret `contoso dev` and the tests sign with. Public: never use it in a deployment.
pub const DEV_SECRET: &str = "contoso-dev-secret-change-me-0123456789abcdef";

/// JWT settings shared by every service (12-factor: all from the environment). Neither key source
/// has a default: a service started with neither `JWT_SECRET` nor `JWT_JWKS_FILE` refuses to run
/// (see [`Authenticator::new`]).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// HS256 signing secret, at least 32 bytes (`contoso keys` makes one): verifies and issues the
    /// dev login's and `contoso token`'s tokens.
    #[arg(long = "jwt-secret", env = "JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// JSON Web Key Set of an external identity provider (its `jwks_uri` document, saved to a file
    /// the deployment keeps current): verifies the tokens it signs (RS256, ES256, ...), by `kid`.
    /// Re-read when a token names a key it does not hold yet, so a key rotation needs no restart.
    #[arg(long = "jwt-jwks-file", env = "JWT_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
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
            jwks_file: None,
            issuer: "contoso-dev".to_owned(),
            audience: "contoso-orders".to_owned(),
        }
    }

    /// These settings, with the public development secret when none was given (`contoso dev`). A
    /// JWKS file, if named, is kept: the dev login and an identity provider then work side by side.
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
    /// Signed with an algorithm or a key this service does not hold. The source stays in the log.
    #[error("invalid token")]
    NoKey(#[source] KeyError),
    #[error("invalid token")]
    InvalidSubject(#[source] UserIdError),
    #[error("issuing a token failed")]
    Issue(#[source] jsonwebtoken::errors::Error),
    /// Only a service with `JWT_SECRET` signs tokens; one that only holds an identity provider's
    /// public keys can verify but never issue.
    #[error(
        "JWT_SECRET is not set: tokens can only be verified here (with JWT_JWKS_FILE), not issued"
    )]
    CannotIssue,
    #[error(
        "JWT_SECRET is not set, nor is JWT_JWKS_FILE: give every service the same HS256 secret of at least {MIN_SECRET_LEN} bytes (`contoso keys` makes one), or the identity provider's signing keys as a JWKS file"
    )]
    MissingSecret,
    #[error("JWT_SECRET must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
    /// The JWKS file could not be read or holds no usable key. One line, so a service that refuses
    /// to start says why in one line.
    #[error("JWT_JWKS_FILE {path}: {reason}")]
    Jwks { path: String, reason: String },
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

/// What [`Authenticator::issue`] signs.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
}

/// What a verified token must yield. `aud` may be a list and `iat` absent in an identity provider's
/// token; `jsonwebtoken` checks `exp`, `iss` and `aud` itself.
#[derive(Debug, Deserialize)]
struct Subject {
    sub: String,
}

/// The checks every token passes, whoever signed it, for tokens signed with `alg`.
fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    validation.leeway = 5;
    validation
}

/// The shared HS256 secret, for signing and verifying.
#[derive(Clone)]
struct SharedSecret {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

/// Verifies tokens and, for the dev login and the CLI, issues them.
#[derive(Clone)]
pub struct Authenticator {
    issuer: String,
    audience: String,
    secret: Option<SharedSecret>,
    jwks: Option<Arc<Jwks>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("shared_secret", &self.secret.is_some())
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Fails with neither a secret nor a JWKS file, with a secret too short to resist an offline
    /// guess, or with a JWKS file that cannot be read or holds no signing key it can use.
    pub fn new(args: &AuthArgs) -> Result<Self, AuthError> {
        if args.secret.is_none() && args.jwks_file.is_none() {
            return Err(AuthError::MissingSecret);
        }
        let secret = match args.secret.as_deref() {
            None => None,
            Some(secret) if secret.len() < MIN_SECRET_LEN => return Err(AuthError::WeakSecret),
            Some(secret) => {
                if secret == DEV_SECRET {
                    tracing::warn!(
                        "signing with the public development JWT secret: for development only"
                    );
                }
                Some(SharedSecret {
                    encoding: EncodingKey::from_secret(secret.as_bytes()),
                    decoding: DecodingKey::from_secret(secret.as_bytes()),
                    validation: validation(Algorithm::HS256, &args.issuer, &args.audience),
                })
            }
        };
        let jwks = args
            .jwks_file
            .as_deref()
            .map(|path| Jwks::load(path, &args.issuer, &args.audience).map(Arc::new))
            .transpose()?;
        Ok(Self {
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
            secret,
            jwks,
        })
    }

    /// Whether [`issue`](Self::issue) can sign (the shared secret is set).
    pub fn can_issue(&self) -> bool {
        self.secret.is_some()
    }

    /// Checks signature, expiry, issuer and audience; returns the `sub`. An HS256 token is checked
    /// with the shared secret, any other with the JWKS key its header names; a token signed with
    /// an algorithm the key does not declare is refused, so a public key never serves as an HMAC
    /// secret.
    pub fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::Invalid)?;
        let found;
        let (key, validation) = match (header.alg, &self.secret, &self.jwks) {
            (Algorithm::HS256, Some(secret), _) => (&secret.decoding, &secret.validation),
            (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512, _, _) | (_, _, None) => {
                return Err(AuthError::NoKey(KeyError::Algorithm(header.alg)));
            }
            (alg, _, Some(jwks)) => {
                found = jwks
                    .find(header.kid.as_deref(), alg)
                    .map_err(AuthError::NoKey)?;
                (&found.key, &found.validation)
            }
        };
        let data = jsonwebtoken::decode::<Subject>(token, key, validation).map_err(|e| match e
            .kind()
        {
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

    /// A token for `sub` valid for `ttl`, signed with the shared secret ([`AuthError::CannotIssue`]
    /// without one).
    pub fn issue(&self, sub: &UserId, ttl: Duration) -> Result<String, AuthError> {
        let secret = self.secret.as_ref().ok_or(AuthError::CannotIssue)?;
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: sub.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &secret.encoding)
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
        let message = err.to_string();
        assert!(message.starts_with("JWT_SECRET is not set"), "{message}");
        assert!(message.contains("JWT_JWKS_FILE"), "{message}");
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

    // --- Tokens of an external identity provider, verified with the keys of a JWKS file. ---

    const TEST_JWKS: &str = include_str!("../tests/data/test-jwks.json");
    const RSA_DER: &[u8] = include_bytes!("../tests/data/test-rs256.pkcs1.der");
    const EC_DER: &[u8] = include_bytes!("../tests/data/test-es256.pkcs8.der");
    const IDP: &str = "https://idp.example.test";

    /// A JWKS file (the test's RSA and EC keys unless `contents` says otherwise).
    fn jwks_file(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    fn idp_args(file: &tempfile::NamedTempFile) -> AuthArgs {
        AuthArgs {
            secret: None,
            jwks_file: Some(file.path().to_owned()),
            issuer: IDP.into(),
            audience: "contoso-orders".into(),
        }
    }

    /// A token as an identity provider signs it: `aud` a list, no `iat`.
    fn idp_token(alg: Algorithm, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_der(RSA_DER),
            Algorithm::ES256 => EncodingKey::from_ec_der(EC_DER),
            other => panic!("no test key for {other:?}"),
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn claims(sub: &str) -> serde_json::Value {
        serde_json::json!({
            "sub": sub,
            "iss": IDP,
            "aud": ["contoso-orders"],
            "exp": jsonwebtoken::get_current_timestamp() + 300,
            "scope": "openid profile",
        })
    }

    #[test]
    fn rs256_and_es256_tokens_of_the_identity_provider_verify_by_kid() {
        let file = jwks_file(TEST_JWKS);
        let auth = Authenticator::new(&idp_args(&file)).unwrap();
        let rs = idp_token(Algorithm::RS256, Some("test-rsa"), claims("ada"));
        assert_eq!(auth.verify(&rs).unwrap().as_str(), "ada");
        let es = idp_token(Algorithm::ES256, Some("test-ec"), claims("grace"));
        assert_eq!(auth.verify(&es).unwrap().as_str(), "grace");
    }

    #[test]
    fn identity_provider_tokens_pass_the_same_issuer_audience_and_expiry_checks() {
        let file = jwks_file(TEST_JWKS);
        let auth = Authenticator::new(&idp_args(&file)).unwrap();
        let with = |key: &str, value: serde_json::Value| {
            let mut c = claims("ada");
            c[key] = value;
            idp_token(Algorithm::RS256, Some("test-rsa"), c)
        };
        for token in [
            with("iss", "https://elsewhere.example.test".into()),
            with("aud", serde_json::json!(["another-api"])),
            with("sub", "".into()),
        ] {
            let err = auth.verify(&token).unwrap_err();
            assert_eq!(Status::from(err).message(), "invalid token");
        }
        let expired = with("exp", (jsonwebtoken::get_current_timestamp() - 600).into());
        assert!(matches!(auth.verify(&expired), Err(AuthError::Expired)));
    }

    #[test]
    fn a_token_naming_an_unknown_key_or_the_wrong_algorithm_for_its_key_is_refused() {
        let file = jwks_file(TEST_JWKS);
        let auth = Authenticator::new(&idp_args(&file)).unwrap();
        let unknown = idp_token(Algorithm::RS256, Some("rotated-away"), claims("ada"));
        assert!(matches!(
            auth.verify(&unknown),
            Err(AuthError::NoKey(KeyError::UnknownKid(kid))) if kid == "rotated-away"
        ));
        // The EC key's kid on an RSA signature.
        let mismatched = idp_token(Algorithm::RS256, Some("test-ec"), claims("ada"));
        assert!(matches!(
            auth.verify(&mismatched),
            Err(AuthError::NoKey(KeyError::WrongAlgorithm { .. }))
        ));
        let status = Status::from(auth.verify(&unknown).unwrap_err());
        assert_eq!(status.message(), "invalid token");
    }

    #[test]
    fn without_a_kid_the_one_key_for_the_algorithm_is_used() {
        let file = jwks_file(TEST_JWKS);
        let auth = Authenticator::new(&idp_args(&file)).unwrap();
        let token = idp_token(Algorithm::ES256, None, claims("ada"));
        assert_eq!(auth.verify(&token).unwrap().as_str(), "ada");
    }

    #[test]
    fn an_hmac_token_made_with_the_public_key_as_secret_is_refused() {
        // The classic confusion: sign HS256 with bytes an attacker can read (the JWKS).
        let file = jwks_file(TEST_JWKS);
        let auth = Authenticator::new(&idp_args(&file)).unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("test-rsa".into());
        let forged = jsonwebtoken::encode(
            &header,
            &claims("mallory"),
            &EncodingKey::from_secret(TEST_JWKS.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            auth.verify(&forged),
            Err(AuthError::NoKey(KeyError::Algorithm(Algorithm::HS256)))
        ));
    }

    #[test]
    fn with_only_a_jwks_file_tokens_verify_but_none_can_be_issued() {
        let file = jwks_file(TEST_JWKS);
        let auth = Authenticator::new(&idp_args(&file)).unwrap();
        assert!(!auth.can_issue());
        let ada = UserId::parse("ada").unwrap();
        assert!(matches!(
            auth.issue(&ada, Duration::from_secs(60)),
            Err(AuthError::CannotIssue)
        ));
        // A dev token (HS256) finds no secret to check it against.
        let dev = Authenticator::new(&AuthArgs {
            issuer: IDP.into(),
            ..AuthArgs::dev()
        })
        .unwrap()
        .issue(&ada, Duration::from_secs(60))
        .unwrap();
        assert!(matches!(auth.verify(&dev), Err(AuthError::NoKey(_))));
    }

    #[test]
    fn the_shared_secret_and_the_jwks_file_work_side_by_side() {
        let file = jwks_file(TEST_JWKS);
        let auth = Authenticator::new(&idp_args(&file).or_dev_secret()).unwrap();
        assert!(auth.can_issue());
        let ada = UserId::parse("ada").unwrap();
        let dev = auth.issue(&ada, Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify(&dev).unwrap(), ada);
        let idp = idp_token(Algorithm::RS256, Some("test-rsa"), claims("grace"));
        assert_eq!(auth.verify(&idp).unwrap().as_str(), "grace");
    }

    #[test]
    fn a_rotated_key_is_read_from_the_file_once_the_reread_interval_passed() {
        let only_ec = serde_json::json!({
            "keys": [serde_json::from_str::<serde_json::Value>(TEST_JWKS).unwrap()["keys"][1]]
        })
        .to_string();
        let file = jwks_file(&only_ec);
        let mut auth = Authenticator::new(&idp_args(&file)).unwrap();
        let token = idp_token(Algorithm::RS256, Some("test-rsa"), claims("ada"));
        assert!(matches!(
            auth.verify(&token),
            Err(AuthError::NoKey(KeyError::UnknownKid(_)))
        ));

        // The provider rotates: the file now holds the RSA key too. Just read, it is not read again.
        std::fs::write(file.path(), TEST_JWKS).unwrap();
        assert!(auth.verify(&token).is_err(), "re-read before the interval");

        // Once the interval has passed, the unknown kid prompts a read that finds it.
        std::fs::write(file.path(), &only_ec).unwrap();
        let jwks = Jwks::load(file.path(), IDP, "contoso-orders").unwrap();
        auth.jwks = Some(Arc::new(jwks.reread_after(Duration::ZERO)));
        assert!(auth.verify(&token).is_err());
        std::fs::write(file.path(), TEST_JWKS).unwrap();
        assert_eq!(auth.verify(&token).unwrap().as_str(), "ada");

        // A file broken mid-rotation keeps the keys held.
        std::fs::write(file.path(), "{not json").unwrap();
        assert_eq!(auth.verify(&token).unwrap().as_str(), "ada");
    }

    #[test]
    fn a_jwks_file_that_cannot_be_used_is_refused_at_start_in_one_line_naming_it() {
        let missing = AuthArgs {
            jwks_file: Some("/nonexistent/jwks.json".into()),
            ..AuthArgs::dev()
        };
        let err = Authenticator::new(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with("JWT_JWKS_FILE /nonexistent/jwks.json: cannot be read"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");

        let not_json = jwks_file("<html>");
        let err = Authenticator::new(&idp_args(&not_json))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a JSON Web Key Set"), "{err}");

        let symmetric = jwks_file(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#);
        let err = Authenticator::new(&idp_args(&symmetric))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("holds no RSA or EC signing key"), "{err}");
    }

    #[test]
    fn keys_that_cannot_verify_are_skipped_and_the_rest_are_used() {
        let mut set: serde_json::Value = serde_json::from_str(TEST_JWKS).unwrap();
        let keys = set["keys"].as_array_mut().unwrap();
        keys.push(
            serde_json::json!({"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}),
        );
        keys.push(serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "secret"}));
        keys.push(serde_json::json!({"kty": "WHAT", "kid": "odd"}));
        let file = jwks_file(&set.to_string());
        let auth = Authenticator::new(&idp_args(&file)).unwrap();
        let token = idp_token(Algorithm::RS256, Some("test-rsa"), claims("ada"));
        assert_eq!(auth.verify(&token).unwrap().as_str(), "ada");
    }
}
