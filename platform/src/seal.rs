//! The sealed customer reference. Broker messages carry no readable user id, yet process-svc must
//! know the customer without depending on ephemeral Redis state; so accept-svc encrypts the user id
//! with ChaCha20-Poly1305 under a key shared with process-svc, bound to the correlation id (the
//! associated data), and tagged with a key id so keys can rotate.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    ChaCha20Poly1305, Key, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};
use contoso_proto::events::v1::SealedCustomer;

use contoso_domain::{CorrelationId, UserId};

/// The key ring `contoso dev` and the tests use. Public: never use it in a deployment.
pub const DEV_SEAL_KEYS: &str = "dev:Y29udG9zby1kZXYtc2VhbC1rZXktMzItYnl0ZXMhISE=";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "SEAL_KEYS is not set: give accept-svc and process-svc the same key ring `id:base64(32 bytes)` (`contoso keys` makes one)"
    )]
    MissingKeys,
    #[error("SEAL_KEYS must be `id:base64key[,id:base64key...]`; {0}")]
    BadConfig(String),
    #[error("sealed with unknown key id {0:?}")]
    UnknownKey(String),
    #[error("sealed customer reference does not open (tampered, or not for this order)")]
    Tampered,
    #[error("sealing the customer reference failed")]
    Encrypt,
    #[error("sealed customer reference holds an invalid user id")]
    BadUserId,
}

/// The key ring for sealed customer references (shared by accept-svc and process-svc). It has no
/// default: a service started without `SEAL_KEYS` refuses to run.
#[derive(Debug, Clone, clap::Args)]
pub struct SealArgs {
    /// `id:base64(32 bytes)[,id:base64...]`; the first key seals, every key opens
    /// (`contoso keys` makes one).
    #[arg(long, env = "SEAL_KEYS", hide_env_values = true)]
    pub seal_keys: Option<String>,
}

impl SealArgs {
    pub fn sealer(&self) -> Result<CustomerSealer, SealError> {
        let spec = self.seal_keys.as_deref().ok_or(SealError::MissingKeys)?;
        if spec == DEV_SEAL_KEYS {
            tracing::warn!("sealing with the public development key: for development only");
        }
        CustomerSealer::from_spec(spec)
    }
}

/// A fresh key ring of one random key named `id`, in the `SEAL_KEYS` format.
pub fn generate_key_ring(id: &str) -> Result<String, SealError> {
    if id.is_empty() || id.contains([':', ',']) {
        return Err(SealError::BadConfig(
            "a key id is non-empty, without `:` or `,`".into(),
        ));
    }
    let key = ChaCha20Poly1305::generate_key(&mut OsRng);
    Ok(format!("{id}:{}", STANDARD.encode(key)))
}

/// Seals with the active (first configured) key; opens with any configured key.
#[derive(Clone)]
pub struct CustomerSealer {
    active: String,
    keys: HashMap<String, ChaCha20Poly1305>,
}

impl std::fmt::Debug for CustomerSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerSealer")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CustomerSealer {
    /// Parses `id:base64(32 bytes)[,id:base64...]`; the first key seals, all of them open.
    pub fn from_spec(spec: &str) -> Result<Self, SealError> {
        let mut active = None;
        let mut keys = HashMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, b64) = entry
                .split_once(':')
                .ok_or_else(|| SealError::BadConfig("an entry has no `:`".into()))?;
            let bytes = STANDARD
                .decode(b64)
                .map_err(|_| SealError::BadConfig(format!("key {id:?} is not base64")))?;
            if bytes.len() != 32 {
                return Err(SealError::BadConfig(format!("key {id:?} is not 32 bytes")));
            }
            keys.insert(
                id.to_owned(),
                ChaCha20Poly1305::new(Key::from_slice(&bytes)),
            );
            active.get_or_insert_with(|| id.to_owned());
        }
        let active = active.ok_or_else(|| SealError::BadConfig("no key given".into()))?;
        Ok(Self { active, keys })
    }

    pub fn seal(&self, cid: CorrelationId, user: &UserId) -> Result<SealedCustomer, SealError> {
        let cipher = &self.keys[&self.active];
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = cid.as_uuid();
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: user.as_str().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        Ok(SealedCustomer {
            key_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn open(&self, cid: CorrelationId, sealed: &SealedCustomer) -> Result<UserId, SealError> {
        let cipher = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 12 {
            return Err(SealError::Tampered);
        }
        let aad = cid.as_uuid();
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealError::Tampered)?;
        let text = String::from_utf8(plain).map_err(|_| SealError::BadUserId)?;
        UserId::parse(text).map_err(|_| SealError::BadUserId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    #[test]
    fn a_generated_key_ring_seals_and_opens() {
        let sealer = CustomerSealer::from_spec(&generate_key_ring("k1").unwrap()).unwrap();
        let cid = CorrelationId::new();
        let sealed = sealer.seal(cid, &alice()).unwrap();
        assert_eq!(sealer.open(cid, &sealed).unwrap(), alice());
        assert!(generate_key_ring("a:b").is_err());
    }

    #[test]
    fn missing_keys_are_refused_naming_the_variable() {
        let err = SealArgs { seal_keys: None }.sealer().unwrap_err();
        assert!(err.to_string().starts_with("SEAL_KEYS is not set"));
    }

    #[test]
    fn sealed_customer_opens_to_the_same_user_and_hides_it() {
        let sealer = CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap();
        let cid = CorrelationId::new();
        let sealed = sealer.seal(cid, &alice()).unwrap();
        assert!(!sealed.ciphertext.windows(5).any(|w| w == b"alice"));
        assert_eq!(sealer.open(cid, &sealed).unwrap(), alice());
    }

    #[test]
    fn sealed_customer_does_not_open_for_another_order() {
        let sealer = CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap();
        let sealed = sealer.seal(CorrelationId::new(), &alice()).unwrap();
        assert!(matches!(
            sealer.open(CorrelationId::new(), &sealed),
            Err(SealError::Tampered)
        ));
    }

    #[test]
    fn a_rotated_key_still_opens_older_references() {
        let old = CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap();
        let cid = CorrelationId::new();
        let sealed = old.seal(cid, &alice()).unwrap();
        let new_key = STANDARD.encode([7u8; 32]);
        let rotated = CustomerSealer::from_spec(&format!("k2:{new_key},{DEV_SEAL_KEYS}")).unwrap();
        assert_eq!(rotated.open(cid, &sealed).unwrap(), alice());
        assert_eq!(rotated.seal(cid, &alice()).unwrap().key_id, "k2");
    }

    #[test]
    fn malformed_key_specs_are_refused() {
        assert!(CustomerSealer::from_spec("").is_err());
        assert!(CustomerSealer::from_spec("k1").is_err());
        assert!(CustomerSealer::from_spec("k1:not-base64!").is_err());
        assert!(CustomerSealer::from_spec("k1:AAAA").is_err());
    }

    #[test]
    fn unknown_key_id_is_reported() {
        let sealer = CustomerSealer::from_spec(DEV_SEAL_KEYS).unwrap();
        let cid = CorrelationId::new();
        let mut sealed = sealer.seal(cid, &alice()).unwrap();
        sealed.key_id = "gone".into();
        assert!(matches!(
            sealer.open(cid, &sealed),
            Err(SealError::UnknownKey(_))
        ));
    }
}
