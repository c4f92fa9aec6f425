//! Cache entries as stored: the generations the result was read under, its row count and its
//! bytes; in memcached also sealed with a keyed MAC, because whoever reaches the memcached port
//! could otherwise write entries Weiche would send to clients as result sets. An entry whose
//! MAC does not verify under the configured `cache.secret`, or whose bytes are not one whole
//! result, is refused (and counted), never relayed.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Bytes of the MAC at the end of a sealed entry.
const MAC_LEN: usize = 16;

/// An entry as stored: the number of generations, each as a little-endian u64, the result's
/// row count (u64), the result.
pub fn stamp(stamps: &[u64], rows: u64, result: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + stamps.len() * 8 + result.len() + MAC_LEN);
    v.push(stamps.len().min(255) as u8);
    for g in stamps.iter().take(255) {
        v.extend_from_slice(&g.to_le_bytes());
    }
    v.extend_from_slice(&rows.to_le_bytes());
    v.extend_from_slice(result);
    v
}

/// (rows, result) of an entry stamped with exactly these generations; None for any other (an
/// entry from before a write, or not ours).
pub fn unstamp(value: Bytes, current: &[u64]) -> Option<(u64, Bytes)> {
    let n = usize::from(*value.first()?);
    let head = 1 + n * 8;
    if n != current.len() || value.len() < head + 8 {
        return None;
    }
    let same = current
        .iter()
        .enumerate()
        .all(|(i, g)| value[1 + i * 8..9 + i * 8] == g.to_le_bytes());
    let mut rows = [0u8; 8];
    rows.copy_from_slice(&value[head..head + 8]);
    same.then(|| (u64::from_le_bytes(rows), value.slice(head + 8..)))
}

/// The key entries are sealed with.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// From the configured secret; without one, a random key of this process (its entries are
    /// then not shared with other instances).
    pub fn new(secret: Option<&[u8]>) -> Sealer {
        let key = match secret {
            Some(s) => Sha256::digest(s).into(),
            None => {
                let mut k = [0u8; 32];
                if getrandom::getrandom(&mut k).is_err() {
                    // No entropy source: still a key no other process has.
                    let t = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    let seed = [&t.to_le_bytes()[..], &std::process::id().to_le_bytes()].concat();
                    k = Sha256::digest(seed).into();
                }
                k
            }
        };
        Sealer { key }
    }

    /// HMAC-SHA256 (RFC 2104) of the entry's key and value, truncated.
    fn mac(&self, key: &[u8], value: &[u8]) -> [u8; MAC_LEN] {
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in self.key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let inner = Sha256::new()
            .chain_update(ipad)
            .chain_update((key.len() as u64).to_le_bytes())
            .chain_update(key)
            .chain_update(value)
            .finalize();
        let outer = Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&outer[..MAC_LEN]);
        out
    }

    /// Append the MAC that binds `value` to `key`.
    pub fn seal(&self, key: &[u8], mut value: Vec<u8>) -> Bytes {
        let mac = self.mac(key, &value);
        value.extend_from_slice(&mac);
        Bytes::from(value)
    }

    /// The value without its MAC, if the MAC is right for `key` (compared in constant time).
    pub fn open(&self, key: &[u8], sealed: Bytes) -> Option<Bytes> {
        let at = sealed.len().checked_sub(MAC_LEN)?;
        let want = self.mac(key, &sealed[..at]);
        let diff = want
            .iter()
            .zip(&sealed[at..])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        (diff == 0).then(|| sealed.slice(..at))
    }
}

/// Whether `result` is what Weiche stores: whole packets with consecutive sequence ids from 1,
/// a result set (not an OK, an ERR or a LOCAL INFILE request) that ends with its terminator.
pub fn well_formed(result: &[u8]) -> bool {
    let mut at = 0;
    let mut seq = 1u8;
    let mut first = None;
    let mut last = None;
    while at < result.len() {
        let Some(h) = result.get(at..at + 4) else {
            return false;
        };
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        if h[3] != seq {
            return false;
        }
        let Some(p) = result.get(at + 4..at + 4 + len) else {
            return false;
        };
        first.get_or_insert(p.first().copied());
        last = Some(p);
        at += 4 + len;
        seq = seq.wrapping_add(1);
    }
    let is_result_set = !matches!(first.flatten(), None | Some(0x00 | 0xff | 0xfb));
    let terminated = last.is_some_and(|p| p.first() == Some(&0xfe) && p.len() < 0xff_ffff);
    is_result_set && terminated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_count_only_with_their_generations() {
        let v = Bytes::from(stamp(&[3, 9], 2, b"rows"));
        assert_eq!(
            unstamp(v.clone(), &[3, 9]),
            Some((2, Bytes::from_static(b"rows")))
        );
        assert_eq!(unstamp(v.clone(), &[3, 10]), None);
        assert_eq!(unstamp(v, &[3]), None);
        assert_eq!(unstamp(Bytes::from_static(b"\x05ab"), &[1; 5]), None);
        assert_eq!(unstamp(Bytes::new(), &[]), None);
    }

    #[test]
    fn only_entries_sealed_with_the_secret_for_their_key_open() {
        let s = Sealer::new(Some(b"secret"));
        let sealed = s.seal(b"weiche:r:abc", b"value".to_vec());
        assert_eq!(
            s.open(b"weiche:r:abc", sealed.clone()).as_deref(),
            Some(&b"value"[..])
        );
        assert_eq!(s.open(b"weiche:r:abd", sealed.clone()), None, "another key");
        assert_eq!(
            Sealer::new(Some(b"other")).open(b"weiche:r:abc", sealed.clone()),
            None
        );
        let mut forged = sealed.to_vec();
        forged[0] ^= 1;
        assert_eq!(s.open(b"weiche:r:abc", Bytes::from(forged)), None);
        assert_eq!(s.open(b"k", Bytes::from_static(b"short")), None);
        assert_ne!(
            Sealer::new(None).seal(b"k", vec![]),
            Sealer::new(None).seal(b"k", vec![]),
            "no secret: a key of this process"
        );
    }

    #[test]
    fn only_whole_result_sets_are_relayed() {
        // Column count 1, one column definition, EOF, a row, EOF.
        let mut r = Vec::new();
        for (seq, p) in [
            &b"\x01"[..],
            b"\x03def",
            b"\xfe\0\0\x02\0",
            b"\x011",
            b"\xfe\0\0\x02\0",
        ]
        .iter()
        .enumerate()
        {
            r.extend_from_slice(&[p.len() as u8, 0, 0, seq as u8 + 1]);
            r.extend_from_slice(p);
        }
        assert!(well_formed(&r));
        assert!(!well_formed(&r[..r.len() - 1]), "cut short");
        let mut wrong_seq = r.clone();
        wrong_seq[3] = 5;
        assert!(!well_formed(&wrong_seq));
        assert!(
            !well_formed(b"\x05\0\0\x01\xfbfile"),
            "a LOCAL INFILE request"
        );
        assert!(!well_formed(b"\x07\0\0\x01\0\0\0\x02\0\0\0"), "an OK");
        assert!(!well_formed(b""));
    }
}
