//! Statement digests: the text with literals replaced by `?`, comments dropped, keywords in
//! whitespace normalized, so that statements differing only in their values
//! share one digest (for rules, statistics and the cache).

use super::lexer::{tokenize, Kind};

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
