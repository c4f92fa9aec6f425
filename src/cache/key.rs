//! Cache keys: a 128-bit hash of everything that makes two answers differ. The user, the
//! default database, the response format the client asked for, the session variables that
//! change results (character set, collation, sql_mode, time_zone: all variables the session
//! changed are taken, to be safe), the statement's text as sent, and the bound parameters of a prepared statement. The generations of the
//! tables the statement reads are stamped on the entry rather than hashed into the key, so that
//! a lookup asks for the generations and the entry in one round trip (see `Cache::lookup`).

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A result's address in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u128);

impl Key {
    /// The key as memcached sees it: `<namespace>:r:<32 hex digits>`.
    pub fn text(&self, namespace: &str) -> String {
        format!("{namespace}:r:{:032x}", self.0)
    }
}

/// What a key is made of.
#[derive(Debug)]
pub struct KeyInput<'a> {
    pub user: &'a str,
    /// The account's identity (`User::identity`): after a REVOKE, no entry read with the old
    /// privileges is served.
    pub identity: u64,
    pub schema: Option<&'a [u8]>,
    /// The client capabilities that shape a response's bytes.
    pub shaping: u64,
    pub charset: u8,
    pub vars: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    /// The statement's text, as sent: comments included, for versioned comments
    /// (`/*!50000 ... */`) are SQL to the server.
    pub statement: &'a [u8],
    /// A prepared statement's execute parameters (empty for text queries).
    pub params: &'a [u8],
}

impl KeyInput<'_> {
    pub fn key(&self) -> Key {
        let mut h = Sha256::new();
        // Every variable-length part is length-prefixed, so no two inputs hash alike by
        // shifting bytes from one part into the next.
        let mut part = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        part(b"weiche-cache-1");
        part(self.user.as_bytes());
        part(&self.identity.to_le_bytes());
        match self.schema {
            Some(s) => part(&[&[1u8][..], s].concat()),
            None => part(&[0u8]),
        }
        part(&self.shaping.to_le_bytes());
        part(&[self.charset]);
        for (k, v) in self.vars {
            part(k);
            part(v);
        }
        part(b"statement");
        part(self.statement);
        part(self.params);
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Key(u128::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_changes_the_key() {
        let vars = BTreeMap::new();
        let base = KeyInput {
            user: "app",
            identity: 7,
            schema: Some(b"shop"),
            shaping: 1,
            charset: 45,
            vars: &vars,
            statement: b"SELECT\0a",
            params: b"",
        };
        let k = base.key();
        assert_eq!(k, base.key());
        let mut sql_mode = BTreeMap::new();
        sql_mode.insert(b"sql_mode".to_vec(), b"ANSI".to_vec());
        for other in [
            KeyInput { user: "ap", ..base },
            KeyInput {
                identity: 8,
                ..base
            },
            KeyInput {
                schema: None,
                ..base
            },
            KeyInput {
                schema: Some(b"shop2"),
                ..base
            },
            KeyInput { shaping: 0, ..base },
            KeyInput { charset: 8, ..base },
            KeyInput {
                vars: &sql_mode,
                ..base
            },
            KeyInput {
                statement: b"SELECT\0b",
                ..base
            },
            KeyInput {
                params: b"\x01",
                ..base
            },
        ] {
            assert_ne!(other.key(), k, "{other:?}");
        }
        assert_eq!(k.text("w").len(), "w:r:".len() + 32);
    }
}
