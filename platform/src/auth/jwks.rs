//! An identity provider's public signing keys, read from the JSON Web Key Set file the deployment
//! mounts (`JWT_JWKS_FILE`, e.g. a ConfigMap kept in sync with the provider's `jwks_uri`). Nothing
//! is fetched over the network: a service verifies tokens with what is on disk.
//!
//! Each usable key becomes one verifier bound to one algorithm: the key's own `alg` when it names
//! one, else RS256 for an RSA key and ES256/ES384 for a P-256/P-384 key. Symmetric (`oct`) keys,
//! encryption keys and curves `jsonwebtoken` cannot verify are skipped with a warning. When a token
//! names a key that is not in the set, the file is read again (at most once per [`REREAD_AFTER`]), so
//! a rotated key is picked up without a restart; a file that fails to read then keeps the old keys.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;

use super::{AuthError, validation};

/// Shortest time between two reads of the file prompted by unknown key ids: a flood of tokens with
/// made-up `kid`s costs one small file read per interval, not one per request.
pub(super) const REREAD_AFTER: Duration = Duration::from_secs(5);

/// Why no key could check a token. Logged, never shown to the client (it sees `invalid token`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the token is signed with {0:?}, which no configured key verifies")]
    Algorithm(Algorithm),
    #[error("no key with kid {0:?} in JWT_JWKS_FILE")]
    UnknownKid(String),
    #[error(
        "the token names no key (kid) and no single {0:?} key in JWT_JWKS_FILE could have signed it"
    )]
    NoKid(Algorithm),
    #[error("key {kid:?} is for {key:?}, the token says {token:?}")]
    WrongAlgorithm {
        kid: String,
        key: Algorithm,
        token: Algorithm,
    },
}

/// One public key, bound to the single algorithm it verifies.
pub(super) struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    pub(super) key: DecodingKey,
    pub(super) validation: Validation,
}

pub(super) struct Jwks {
    path: PathBuf,
    issuer: String,
    audience: String,
    keys: RwLock<Arc<[Arc<VerifyingKey>]>>,
    last_read: Mutex<Instant>,
    reread_after: Duration,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.current();
        let kids: Vec<_> = keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        f.debug_struct("Jwks")
            .field("path", &self.path)
            .field("keys", &kids)
            .finish()
    }
}

/// The file's shape, read leniently: one key the library cannot parse is skipped, not fatal.
#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    /// Reads the file; fails (in one line naming the file) when it cannot be read or parsed, or holds
    /// no key that can verify a signature.
    pub(super) fn load(path: &Path, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        let keys = read(path, issuer, audience).map_err(|reason| AuthError::Jwks {
            path: path.display().to_string(),
            reason,
        })?;
        tracing::info!(path = %path.display(), keys = keys.len(), "identity provider keys loaded");
        Ok(Self {
            path: path.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: RwLock::new(keys.into()),
            last_read: Mutex::new(Instant::now()),
            reread_after: REREAD_AFTER,
        })
    }

    #[cfg(test)]
    pub(super) fn reread_after(mut self, interval: Duration) -> Self {
        self.reread_after = interval;
        self
    }

    fn current(&self) -> Arc<[Arc<VerifyingKey>]> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key that checks a token whose header says `kid` and `alg`. A `kid` not in the set reads
    /// the file again (when the last read is older than the interval) before giving up. Without a
    /// `kid`, the one key for `alg` is used; with several, none.
    pub(super) fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyingKey>, KeyError> {
        if let Some(key) = pick(&self.current(), kid, alg)? {
            return Ok(key);
        }
        if self.reread()
            && let Some(key) = pick(&self.current(), kid, alg)?
        {
            return Ok(key);
        }
        Err(match kid {
            Some(kid) => KeyError::UnknownKid(kid.to_owned()),
            None => KeyError::NoKid(alg),
        })
    }

    /// Reads the file again if the last read is old enough; true when the keys were replaced.
    fn reread(&self) -> bool {
        {
            let mut last = self
                .last_read
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last.elapsed() < self.reread_after {
                return false;
            }
            *last = Instant::now();
        }
        match read(&self.path, &self.issuer, &self.audience) {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "identity provider keys re-read");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys.into();
                true
            }
            Err(reason) => {
                tracing::warn!(path = %self.path.display(), %reason, "JWT_JWKS_FILE could not be re-read; keeping the keys held");
                false
            }
        }
    }
}

/// `Ok(None)` when no key matches (worth a re-read); an error when one matches by `kid` but not by
/// algorithm, or several could match a token without `kid`.
fn pick(
    keys: &[Arc<VerifyingKey>],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Option<Arc<VerifyingKey>>, KeyError> {
    match kid {
        Some(kid) => match keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            Some(key) if key.alg == alg => Ok(Some(key.clone())),
            Some(key) => Err(KeyError::WrongAlgorithm {
                kid: kid.to_owned(),
                key: key.alg,
                token: alg,
            }),
            None => Ok(None),
        },
        None => {
            let mut matching = keys.iter().filter(|k| k.alg == alg);
            match (matching.next(), matching.next()) {
                (Some(key), None) => Ok(Some(key.clone())),
                (None, _) => Ok(None),
                (Some(_), Some(_)) => Err(KeyError::NoKid(alg)),
            }
        }
    }
}

/// The file's usable keys, or why there are none.
fn read(path: &Path, issuer: &str, audience: &str) -> Result<Vec<Arc<VerifyingKey>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
    let set: KeySet =
        serde_json::from_str(&text).map_err(|e| format!("is not a JSON Web Key Set: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for (n, value) in set.keys.into_iter().enumerate() {
        let jwk = match serde_json::from_value::<Jwk>(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::warn!(path = %path.display(), key = n, error = %e, "skipping a key that cannot be parsed");
                continue;
            }
        };
        let kid = jwk.common.key_id.clone();
        match verifying_key(&jwk) {
            Ok((alg, key)) => keys.push(Arc::new(VerifyingKey {
                kid,
                alg,
                key,
                validation: validation(alg, issuer, audience),
            })),
            Err(why) => {
                tracing::warn!(path = %path.display(), key = n, ?kid, why, "skipping a key");
            }
        }
    }
    if keys.is_empty() {
        return Err("holds no RSA or EC signing key".to_owned());
    }
    Ok(keys)
}

/// The algorithm a key verifies and the key itself, or why it is not used.
fn verifying_key(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)");
    }
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match declared {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(KeyAlgorithm::RS384) => Algorithm::RS384,
            Some(KeyAlgorithm::RS512) => Algorithm::RS512,
            Some(KeyAlgorithm::PS256) => Algorithm::PS256,
            Some(KeyAlgorithm::PS384) => Algorithm::PS384,
            Some(KeyAlgorithm::PS512) => Algorithm::PS512,
            Some(_) => return Err("an RSA key for an algorithm other than a signature"),
        },
        AlgorithmParameters::EllipticCurve(params) => match (&params.curve, declared) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            _ => return Err("an EC key of a curve or algorithm that is not ES256 or ES384"),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric (oct) key: a shared secret has no place in a public key set");
        }
        _ => return Err("a key type other than RSA or EC"),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "its parameters are malformed")?;
    Ok((alg, key))
}
