//! Statement digests: the text with literals replaced by `?`, comments dropped, keywords in
//! whitespace normalized, so that statements differing only in their values
//! share one digest (for rules, statistics and the cache).

use super::lexer::{tokenize, Kind, Token};

/// A hash of `sql`'s digest, without building its text (for statistics on the query path).
pub fn digest_hash(sql: &[u8]) -> u64 {
    digest_hash_of(sql, &tokenize(sql))
}

/// The same from the lexer's tokens (the classifier hashes the tokens it already has).
pub fn digest_hash_of(sql: &[u8], tokens: &[Token]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for t in tokens {
        match t.kind {
            Kind::Comment => continue,
            Kind::Str | Kind::Number | Kind::HexOrBit => h.write_u8(b'?'),
            _ => h.write(t.text(sql)),
        }
        h.write_u8(0);
    }
    h.finish()
}

/// The normalized text of `sql`.
pub fn digest(sql: &[u8]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut prev_open = true;
    for t in tokenize(sql) {
        let text = t.text(sql);
        let piece: std::borrow::Cow<'_, str> = match t.kind {
            Kind::Comment => continue,
            Kind::Str | Kind::Number | Kind::HexOrBit => "?".into(),
            _ => String::from_utf8_lossy(text),
        };
        let tight = matches!(
            t.kind,
            Kind::Comma | Kind::LParen | Kind::RParen | Kind::Dot | Kind::Semicolon
        );
        if !out.is_empty() && !prev_open && !tight {
            out.push(' ');
        }
        prev_open = matches!(t.kind, Kind::LParen | Kind::Dot);
        out.push_str(&piece);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::digest;

    #[test]
    fn statements_differing_in_values_share_a_hash() {
        use super::digest_hash;
        assert_eq!(
            digest_hash(b"SELECT c FROM t WHERE id = 5"),
            digest_hash(b"SELECT  c FROM t /* x */ WHERE id='abc'")
        );
        assert_ne!(
            digest_hash(b"SELECT c FROM t WHERE id = 5"),
            digest_hash(b"SELECT d FROM t WHERE id = 5")
        );
    }

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(
            digest(b"select  a,b from t where id = 42 and n = 'x' /* c */"),
            "select a, b from t where id = ? and n = ?"
        );
        assert_eq!(
            digest(b"SELECT f(1, 0x1F) FROM db.t"),
            "SELECT f(?, ?) FROM db.t"
        );
    }
}
