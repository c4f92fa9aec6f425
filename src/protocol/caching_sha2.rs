//! caching_sha2_password, MySQL 8's default plugin, in the server's role. Fast authentication
//! proves knowledge of the password against SHA256(SHA256(password)); full authentication
//! sends the password itself, over TLS, or on a plain connection XORed with the challenge and
//! encrypted with the server's RSA public key (OAEP with SHA-1, as MySQL does).

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

/// The second byte of the AuthMoreData packets (0x01, byte) the server sends.
pub const FAST_AUTH_SUCCESS: u8 = 3;
pub const PERFORM_FULL_AUTHENTICATION: u8 = 4;
/// What a client sends instead of its password when it wants the server's public key.
pub const REQUEST_PUBLIC_KEY: u8 = 2;

/// SHA256(SHA256(password)): what fast authentication is checked against.
pub type Sha2Digest = [u8; 32];

pub fn stored_digest(password: &[u8]) -> Sha2Digest {
    Sha256::digest(Sha256::digest(password)).into()
}

fn mask(digest: &Sha2Digest, nonce: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(digest);
    h.update(&nonce[..nonce.len().min(20)]);
    h.finalize().into()
}

/// The client's fast-authentication answer: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)), nonce).
pub fn scramble(password: &[u8], nonce: &[u8]) -> [u8; 32] {
    let h1: [u8; 32] = Sha256::digest(password).into();
    let m = mask(&Sha256::digest(h1).into(), nonce);
    std::array::from_fn(|i| h1[i] ^ m[i])
}

/// Check a fast-authentication answer against the stored digest.
pub fn verify(nonce: &[u8], response: &[u8], stored: &Sha2Digest) -> bool {
    if response.len() != 32 {
        return false;
    }
    let m = mask(stored, nonce);
    let candidate: [u8; 32] = std::array::from_fn(|i| response[i] ^ m[i]);
    let computed: [u8; 32] = Sha256::digest(candidate).into();
    // Compare without an early exit.
    computed
        .iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// XOR with the challenge, repeated: how the password is prepared before RSA encryption.
pub fn xor_nonce(data: &[u8], nonce: &[u8]) -> Vec<u8> {
    let nonce = &nonce[..nonce.len().min(20)];
    if nonce.is_empty() {
        return data.to_vec();
    }
    data.iter()
        .zip(nonce.iter().cycle())
        .map(|(d, n)| d ^ n)
        .collect()
}

/// The password a client sent in clear (over TLS): NUL-terminated.
pub fn cleartext_password(payload: &[u8]) -> &[u8] {
    payload.strip_suffix(&[0]).unwrap_or(payload)
}

#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    #[error("RSA key: {0}")]
    Key(#[from] rsa::Error),
    #[error("RSA public key: {0}")]
    Encode(#[from] rsa::pkcs8::spki::Error),
}

/// The server's RSA key pair for the key exchange.
pub struct RsaKey {
    private: RsaPrivateKey,
    public_pem: String,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaKey(..)")
    }
}

impl RsaKey {
    /// A fresh 2048-bit key (slow: run it off the event loop).
    pub fn generate() -> Result<RsaKey, RsaError> {
        let private = RsaPrivateKey::new(&mut rand_core::OsRng, 2048)?;
        let public_pem = RsaPublicKey::from(&private).to_public_key_pem(LineEnding::LF)?;
        Ok(RsaKey {
            private,
            public_pem,
        })
    }

    /// The public key as the client expects it (PEM, SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The password from a client's encrypted answer, or `None` when it does not decrypt.
    pub fn decrypt_password(&self, ciphertext: &[u8], nonce: &[u8]) -> Option<Vec<u8>> {
        let plain = self
            .private
            .decrypt(Oaep::new::<sha1::Sha1>(), ciphertext)
            .ok()?;
        let mut password = xor_nonce(&plain, nonce);
        if password.last() == Some(&0) {
            password.pop();
        }
        Some(password)
    }

    /// Encrypt as a client does.
    #[cfg(test)]
    fn encrypt_for_test(&self, password: &[u8], nonce: &[u8]) -> Vec<u8> {
        let mut data = password.to_vec();
        data.push(0);
        let public = RsaPublicKey::from(&self.private);
        public
            .encrypt(
                &mut rand_core::OsRng,
                Oaep::new::<sha1::Sha1>(),
                &xor_nonce(&data, nonce),
            )
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_authentication_round_trip() {
        let nonce = b"abcdefghijklmnopqrst";
        let stored = stored_digest(b"secret");
        assert!(verify(nonce, &scramble(b"secret", nonce), &stored));
        assert!(!verify(nonce, &scramble(b"Secret", nonce), &stored));
        assert!(!verify(
            b"another-nonce-twenty",
            &scramble(b"secret", nonce),
            &stored
        ));
        assert!(!verify(nonce, &scramble(b"secret", nonce)[..31], &stored));
    }

    #[test]
    fn rsa_exchange_round_trip() {
        let key = RsaKey::generate().unwrap();
        assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let nonce = b"abcdefghijklmnopqrst";
        let long = b"a password longer than the twenty-byte challenge";
        for pw in [&b"secret"[..], &long[..]] {
            let ct = key.encrypt_for_test(pw, nonce);
            assert_eq!(key.decrypt_password(&ct, nonce).as_deref(), Some(pw));
        }
        assert_eq!(key.decrypt_password(b"garbage", nonce), None);
    }
}
