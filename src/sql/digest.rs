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

/// A digest's text is cut after this many bytes (as performance_schema's are): a thousand
/// digests of 16 MiB statements would otherwise hold 16 GiB.
pub const MAX_DIGEST_TEXT: usize = 1024;

/// The normalized text of `sql`, at most about `MAX_DIGEST_TEXT` bytes (then "...").
/// Everything from a token the lexer cannot read (an unterminated string) on is one `?`: it may
/// be a literal.
pub fn digest(sql: &[u8]) -> String {
    let mut out = String::with_capacity(sql.len().min(MAX_DIGEST_TEXT + 8));
    let mut prev_open = true;
    for t in tokenize(sql) {
        if out.len() >= MAX_DIGEST_TEXT {
            out.push_str(" ...");
            break;
        }
        if t.kind == Kind::Unterminated {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push('?');
            break;
        }
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
    fn digest_texts_are_bounded_and_hide_unterminated_literals() {
        let long = format!("SELECT {}", vec!["a"; 5000].join(", "));
        let d = digest(long.as_bytes());
        assert!(d.len() < super::MAX_DIGEST_TEXT + 16, "{}", d.len());
        assert!(d.ends_with("..."));
        assert_eq!(
            digest(b"SELECT * FROM t WHERE note = 'card 4111-1111-1111-1111"),
            "SELECT * FROM t WHERE note = ?"
        );
    }

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
