//! Authentication plugins: mysql_native_password in both roles (checking a client, answering a
//! server) and MariaDB's client_ed25519 (answering a server).

use sha1::{Digest, Sha1};
use sha2::Sha512;

pub const NATIVE_PASSWORD: &[u8] = b"mysql_native_password";
pub const ED25519: &[u8] = b"client_ed25519";
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";
pub const CLEAR_PASSWORD: &[u8] = b"mysql_clear_password";

/// SHA1(password): what mysql_native_password proves knowledge of ("stage 1").
pub type Stage1 = [u8; 20];
/// SHA1(SHA1(password)): what MariaDB stores as `*HEX` ("stage 2").
pub type Stage2 = [u8; 20];

pub fn stage1(password: &[u8]) -> Stage1 {
    Sha1::digest(password).into()
}

pub fn stage2(stage1: &Stage1) -> Stage2 {
    Sha1::digest(stage1).into()
}

/// A fresh 20-byte challenge of printable bytes (no NUL: the greeting terminates it with one).
pub fn new_scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    // getrandom only fails if the OS has no entropy source at all; fall back to the clock rather
    // than refusing logins (the scramble is a nonce, not a key).
    if getrandom::getrandom(&mut s).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let h: [u8; 20] = Sha1::digest(t.to_le_bytes()).into();
        s = h;
    }
    for b in &mut s {
        *b = 33 + (*b % 94);
    }
    s
}

/// The client's answer to a mysql_native_password challenge, from SHA1(password).
pub fn native_response(stage1: &Stage1, scramble: &[u8]) -> [u8; 20] {
    let s2 = stage2(stage1);
    let mut h = Sha1::new();
    h.update(&scramble[..scramble.len().min(20)]);
    h.update(s2);
    let mask: [u8; 20] = h.finalize().into();
    let mut out = [0u8; 20];
    for i in 0..20 {
        out[i] = stage1[i] ^ mask[i];
    }
    out
}

/// Check a client's mysql_native_password answer against the stored SHA1(SHA1(password)).
/// On success returns SHA1(password), which lets Weiche log in to backends for this user.
pub fn native_verify(scramble: &[u8], response: &[u8], stored: &Stage2) -> Option<Stage1> {
    if response.len() != 20 {
        return None;
    }
    let mut h = Sha1::new();
    h.update(&scramble[..scramble.len().min(20)]);
    h.update(stored);
    let mask: [u8; 20] = h.finalize().into();
    let mut candidate = [0u8; 20];
    for i in 0..20 {
        candidate[i] = response[i] ^ mask[i];
    }
    // Compare without an early exit.
    let computed = stage2(&candidate);
    let diff = computed
        .iter()
        .zip(stored)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(candidate)
}

/// Parse MariaDB's `*` + 40 hex digits form of SHA1(SHA1(password)).
pub fn parse_native_hash(s: &str) -> Option<Stage2> {
    let hex = s.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// MariaDB's client_ed25519: an Ed25519 signature of the challenge, where the secret key's
/// expansion is SHA512(password) instead of SHA512(32-byte seed).
pub fn ed25519_response(password: &[u8], challenge: &[u8]) -> [u8; 64] {
    use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
    let expanded: [u8; 64] = Sha512::digest(password).into();
    let esk = ExpandedSecretKey::from_bytes(&expanded);
    let public = ed25519_dalek::VerifyingKey::from(&esk);
    raw_sign::<Sha512>(&esk, challenge, &public).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_password_round_trip() {
        let scramble = new_scramble();
        assert!(scramble.iter().all(|&b| b != 0));
        let s1 = stage1(b"secret");
        let stored = stage2(&s1);
        let resp = native_response(&s1, &scramble);
        assert_eq!(native_verify(&scramble, &resp, &stored), Some(s1));
        assert_eq!(native_verify(&scramble, &resp[..19], &stored), None);
        let wrong = native_response(&stage1(b"Secret"), &scramble);
        assert_eq!(native_verify(&scramble, &wrong, &stored), None);
    }

    #[test]
    fn mariadb_hash_format() {
        // SELECT PASSWORD('123456') on MariaDB.
        let h = parse_native_hash("*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9").unwrap();
        assert_eq!(h, stage2(&stage1(b"123456")));
        assert!(parse_native_hash("6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9").is_none());
        assert!(parse_native_hash("*6BB4").is_none());
        assert!(parse_native_hash("*zzB4837EB74329105EE4568DDA7DC67ED2CA2AD9").is_none());
    }

    #[test]
    fn ed25519_signature_verifies_with_the_derived_public_key() {
        use ed25519_dalek::{Signature, Verifier};
        let sig = ed25519_response(b"pw", b"challenge-bytes-32-long-........");
        let expanded: [u8; 64] = Sha512::digest(b"pw").into();
        let esk = ed25519_dalek::hazmat::ExpandedSecretKey::from_bytes(&expanded);
        let public = ed25519_dalek::VerifyingKey::from(&esk);
        assert!(public
            .verify(
                b"challenge-bytes-32-long-........",
                &Signature::from_bytes(&sig)
            )
            .is_ok());
    }
}
