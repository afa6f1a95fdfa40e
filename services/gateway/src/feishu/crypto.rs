//! Feishu's event crypto: AES-256-CBC bodies keyed by SHA-256(encrypt key), and the
//! `X-Lark-Signature` (plain SHA-256 over timestamp, nonce, encrypt key and raw body).

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Decrypts the `encrypt` field of a callback body into its plaintext JSON.
pub(crate) fn decrypt(encrypt_key: &str, encrypted: &str) -> Option<String> {
    let raw = STANDARD.decode(encrypted.trim()).ok()?;
    if raw.len() < 32 || raw.len() % 16 != 0 {
        return None;
    }
    let key = Sha256::digest(encrypt_key.as_bytes());
    let (iv, ciphertext) = raw.split_at(16);
    let mut buffer = ciphertext.to_vec();
    let decryptor = Aes256CbcDec::new_from_slices(&key, iv).ok()?;
    let plaintext = match decryptor.decrypt_padded_mut::<Pkcs7>(&mut buffer) {
        Ok(plaintext) => plaintext.to_vec(),
        // The Go SDK trims to the JSON object instead of unpadding: a tolerant fallback.
        Err(_) => trim_to_object(&buffer)?,
    };
    String::from_utf8(plaintext).ok()
}

fn trim_to_object(bytes: &[u8]) -> Option<Vec<u8>> {
    let start = bytes.iter().position(|byte| *byte == b'{')?;
    let end = bytes.iter().rposition(|byte| *byte == b'}')?;
    (start < end).then(|| bytes[start..=end].to_vec())
}

/// The signature Feishu sends for this request, lowercase hex.
pub(crate) fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(timestamp.as_bytes());
    hasher.update(nonce.as_bytes());
    hasher.update(encrypt_key.as_bytes());
    hasher.update(body);
    hex::encode(hasher.finalize())
}

/// Compares secrets without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vectors of FEISHU_PROTOCOL.md §2.6 and §2.7.
    const ENCRYPTED: &str = "AAECAwQFBgcICQoLDA0OD/pXnuQjbBOjuCGc9CaoydhEg0JOubR9LZobZJDBx4A+NI2Ss6E3u/uoS31QU0lP/lkvtv4t4I5d4EPpe2xlLmnuS0FbnZPpZ931camDGNflhcbcx7EN9mj78cUHmgZKlg==";

    #[test]
    fn the_reference_vector_decrypts() {
        assert_eq!(
            decrypt("test-encrypt-key", ENCRYPTED).as_deref(),
            Some(
                r#"{"challenge":"ajls384kdj","token":"test-verification-token","type":"url_verification"}"#
            )
        );
        assert_eq!(decrypt("another-key", ENCRYPTED), None);
        assert_eq!(decrypt("test-encrypt-key", "not base64"), None);
    }

    #[test]
    fn the_reference_signature_matches() {
        let body = format!(r#"{{"encrypt":"{ENCRYPTED}"}}"#);
        assert_eq!(
            signature(
                "1700000000",
                "1234567890",
                "test-encrypt-key",
                body.as_bytes()
            ),
            "e35667ed08f8d216d135a60304624f73a63e09ab97d127e9d693e8e5e368463c"
        );
    }
}
