//! The envelope key that seals channel secrets at rest (AES-256-GCM, random nonces).
//!
//! A sealed value is `0x01 || nonce (12 bytes) || ciphertext+tag`, bound to a context
//! string (which app, which field) as associated data, so a sealed value copied into
//! another row or column does not open.
//!
//! Envelope-sealed values (`seal_enveloped`, providers' API keys) go one step further:
//! each secret gets its own random data key, which seals the secret; the deployment's
//! key seals only the data key. `0x02 || wrapped data key (sealed as above, 61 bytes) ||
//! nonce || ciphertext+tag`. Rotating the deployment's key rewraps data keys, not
//! secrets.

use std::fmt;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const VERSION: u8 = 1;
const ENVELOPE_VERSION: u8 = 2;
/// A data key sealed by the deployment's key: version, nonce, 32 bytes, tag.
const WRAPPED_KEY_BYTES: usize = 1 + NONCE_BYTES + 32 + 16;
const NONCE_BYTES: usize = 12;

/// Why a key or a sealed value was refused. Never carries the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the secrets key must be 32 bytes, base64-encoded")]
    InvalidKey,
    #[error("a sealed secret does not open with this secrets key (wrong SABLE_SECRETS_KEY?)")]
    Unsealable,
}

/// The deployment's envelope key (`SABLE_SECRETS_KEY`).
#[derive(Clone)]
pub struct SecretsKey(Aes256Gcm);

impl SecretsKey {
    /// Reads a base64 (standard alphabet) 32-byte key; surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<Self, SecretsError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SecretsError::InvalidKey)?;
        if bytes.len() != 32 {
            return Err(SecretsError::InvalidKey);
        }
        Aes256Gcm::new_from_slice(&bytes)
            .map(Self)
            .map_err(|_| SecretsError::InvalidKey)
    }

    /// A fresh random key, base64-encoded (what `sable dev` writes on first start).
    pub fn generate_base64() -> String {
        STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// Seals `plaintext` for `context` (e.g. `feishu:cli_x:app_secret`).
    pub fn seal(&self, plaintext: &str, context: &str) -> Vec<u8> {
        self.seal_bytes(plaintext.as_bytes(), context)
    }

    /// Seals `plaintext` for `context` under a fresh data key of its own, itself sealed
    /// by this key (envelope encryption).
    pub fn seal_enveloped(&self, plaintext: &str, context: &str) -> Vec<u8> {
        let data_key = rand::random::<[u8; 32]>();
        let wrapped = self.seal_bytes(&data_key, context);
        let sealed = Self(Aes256Gcm::new_from_slice(&data_key).expect("32 bytes"))
            .seal_bytes(plaintext.as_bytes(), context);
        let mut enveloped = Vec::with_capacity(1 + wrapped.len() + sealed.len());
        enveloped.push(ENVELOPE_VERSION);
        enveloped.extend_from_slice(&wrapped);
        enveloped.extend_from_slice(&sealed);
        enveloped
    }

    fn seal_bytes(&self, plaintext: &[u8], context: &str) -> Vec<u8> {
        let nonce_bytes = rand::random::<[u8; NONCE_BYTES]>();
        let ciphertext = self
            .0
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut sealed = Vec::with_capacity(1 + NONCE_BYTES + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    fn open_bytes(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < 1 + NONCE_BYTES || sealed[0] != VERSION {
            return Err(SecretsError::Unsealable);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_BYTES);
        self.0
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Unsealable)
    }

    /// Opens a value sealed for `context` (by `seal` or `seal_enveloped`).
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<String, SecretsError> {
        if sealed.first() == Some(&ENVELOPE_VERSION) {
            if sealed.len() < 1 + WRAPPED_KEY_BYTES {
                return Err(SecretsError::Unsealable);
            }
            let (wrapped, rest) = sealed[1..].split_at(WRAPPED_KEY_BYTES);
            let data_key = self.open_bytes(wrapped, context)?;
            let inner =
                Aes256Gcm::new_from_slice(&data_key).map_err(|_| SecretsError::Unsealable)?;
            let plaintext = Self(inner).open_bytes(rest, context)?;
            return String::from_utf8(plaintext).map_err(|_| SecretsError::Unsealable);
        }
        let plaintext = self.open_bytes(sealed, context)?;
        String::from_utf8(plaintext).map_err(|_| SecretsError::Unsealable)
    }
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SecretsKey::from_base64(&SecretsKey::generate_base64()).expect("key");
        let sealed = key.seal("hunter2", "feishu:cli_a:app_secret");
        assert!(!sealed.windows(7).any(|window| window == b"hunter2"));
        assert_eq!(
            key.open(&sealed, "feishu:cli_a:app_secret").expect("opens"),
            "hunter2"
        );
        assert!(key.open(&sealed, "feishu:cli_b:app_secret").is_err());
        let other = SecretsKey::from_base64(&SecretsKey::generate_base64()).expect("key");
        assert!(other.open(&sealed, "feishu:cli_a:app_secret").is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("not empty") ^= 1;
        assert!(key.open(&tampered, "feishu:cli_a:app_secret").is_err());
    }

    #[test]
    fn enveloped_values_open_only_with_their_key_and_context() {
        let key = SecretsKey::from_base64(&SecretsKey::generate_base64()).expect("key");
        let sealed = key.seal_enveloped("sk-org-a-secret", "org:a:provider:openai:api_key");
        assert!(!sealed.windows(6).any(|window| window == b"sk-org"));
        assert_eq!(
            key.open(&sealed, "org:a:provider:openai:api_key")
                .expect("opens"),
            "sk-org-a-secret"
        );
        assert!(key.open(&sealed, "org:b:provider:openai:api_key").is_err());
        let other = SecretsKey::from_base64(&SecretsKey::generate_base64()).expect("key");
        assert!(
            other
                .open(&sealed, "org:a:provider:openai:api_key")
                .is_err()
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().expect("not empty") ^= 1;
        assert!(
            key.open(&tampered, "org:a:provider:openai:api_key")
                .is_err()
        );
        assert!(
            key.open(&sealed[..20], "org:a:provider:openai:api_key")
                .is_err()
        );
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(SecretsKey::from_base64("not base64!").is_err());
        assert!(SecretsKey::from_base64(&STANDARD.encode([0u8; 16])).is_err());
        assert!(SecretsKey::from_base64(&STANDARD.encode([0u8; 32])).is_ok());
    }
}
