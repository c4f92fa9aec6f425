//! A byte-level MySQL lexer. No UTF-8 assumption: multi-byte characters are just bytes inside
//! words, strings and comments. Tokens are byte ranges of the input (nothing is copied).
//! Versioned comments (`/*! ... */`, `/*!50100 ... */`, `/*M! ... */`) are read as SQL, as the
//! server does; other comments are tokens of their own, so hints can be found in them.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keyword or an unquoted identifier.
    Word,
    /// A `backquoted` identifier.
    QuotedIdent,
    /// A '...' or "..." string.
    Str,
    Number,
    /// X'..', 0x.., B'..', 0b..
    HexOrBit,
    /// @name, @'name', @`name`
    UserVar,
    /// @@name, @@session.name
    SysVar,
    /// A comment that is not SQL (/* */, -- , #).
    Comment,
    /// ; between statements.
    Semicolon,
    LParen,
    RParen,
    Comma,
    Dot,
    /// `:=`
    Assign,
    /// Any other operator or punctuation (one or two bytes).
    Op,
    /// An unterminated string, identifier or comment: the rest of the input.
    Unterminated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn text<'a>(&self, sql: &'a [u8]) -> &'a [u8] {
        &sql[self.start..self.end]
    }

    /// Case-insensitive comparison with a keyword (for `Word` tokens).
    pub fn is(&self, sql: &[u8], keyword: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(keyword.as_bytes())
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Split `sql` into tokens (whitespace dropped).
pub fn tokenize(sql: &[u8]) -> Vec<Token> {
    let mut out = Vec::with_capacity(16);
    let mut i = 0;
    let n = sql.len();
    // Inside a versioned comment, its closing */ is skipped like whitespace.
    let mut in_versioned = false;
    while i < n {
        let b = sql[i];
        let start = i;
        let kind = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                i += 1;
                continue;
            }
            b'*' if in_versioned && sql.get(i + 1) == Some(&b'/') => {
                in_versioned = false;
                i += 2;
                continue;
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                let versioned = match sql.get(i + 2) {
                    Some(b'!') => Some(i + 3),
                    Some(b'M') if sql.get(i + 3) == Some(&b'!') => Some(i + 4),
                    _ => None,
                };
                if let (Some(mut j), false) = (versioned, in_versioned) {
                    while j < n && sql[j].is_ascii_digit() {
                        j += 1;
                    }
                    in_versioned = true;
                    i = j;
                    continue;
                }
                match find(sql, i + 2, b"*/") {
                    Some(e) => {
                        i = e + 2;
                        Kind::Comment
                    }
                    None => {
                        i = n;
                        Kind::Unterminated
                    }
                }
            }
            b'#' => {
                i = line_end(sql, i);
                Kind::Comment
            }
            b'-' if sql.get(i + 1) == Some(&b'-')
                && sql.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = line_end(sql, i);
                Kind::Comment
            }
            b'\'' | b'"' => {
                let (e, ok) = quoted(sql, i, b, true);
                i = e;
                if ok {
                    Kind::Str
                } else {
                    Kind::Unterminated
                }
            }
            b'`' => {
                let (e, ok) = quoted(sql, i, b'`', false);
                i = e;
                if ok {
                    Kind::QuotedIdent
                } else {
                    Kind::Unterminated
                }
            }
            b'@' => {
                let sys = sql.get(i + 1) == Some(&b'@');
                i += if sys { 2 } else { 1 };
                match sql.get(i) {
                    Some(&q @ (b'\'' | b'"' | b'`')) => {
                        let (e, _) = quoted(sql, i, q, q != b'`');
                        i = e;
                    }
                    _ => {
                        while i < n && (is_word_byte(sql[i]) || sql[i] == b'.') {
                            i += 1;
                        }
                    }
                }
                if sys {
                    Kind::SysVar
                } else {
                    Kind::UserVar
                }
            }
            b'0' if matches!(sql.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) => {
                i += 2;
                while i < n && sql[i].is_ascii_hexdigit() {
                    i += 1;
                }
                Kind::HexOrBit
            }
            b'x' | b'X' | b'b' | b'B' if sql.get(i + 1) == Some(&b'\'') => {
                let (e, ok) = quoted(sql, i + 1, b'\'', false);
                i = e;
                if ok {
                    Kind::HexOrBit
                } else {
                    Kind::Unterminated
                }
            }
            b'0'..=b'9' => {
                while i < n && (sql[i].is_ascii_digit() || sql[i] == b'.') {
                    i += 1;
                }
                if i < n && (sql[i] == b'e' || sql[i] == b'E') {
                    let mut j = i + 1;
                    if j < n && (sql[j] == b'+' || sql[j] == b'-') {
                        j += 1;
                    }
                    if j < n && sql[j].is_ascii_digit() {
                        i = j;
                        while i < n && sql[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                // 1abc is an identifier in MySQL.
                if i < n && is_word_byte(sql[i]) {
                    while i < n && is_word_byte(sql[i]) {
                        i += 1;
                    }
                    Kind::Word
                } else {
                    Kind::Number
                }
            }
            c if punctuation(c).is_some() => {
                i += 1;
                punctuation(c).unwrap_or(Kind::Op)
            }
            b':' if sql.get(i + 1) == Some(&b'=') => {
                i += 2;
                Kind::Assign
            }
            c if is_word_byte(c) => {
                while i < n && is_word_byte(sql[i]) {
                    i += 1;
                }
                Kind::Word
            }
            _ => {
                let two = sql.get(i..i + 2).unwrap_or_default();
                i += if matches!(
                    two,
                    b"<=" | b">=" | b"<>" | b"!=" | b"||" | b"&&" | b"<<" | b">>"
                ) {
                    2
                } else {
                    1
                };
                Kind::Op
            }
        };
        out.push(Token {
            kind,
            start,
            end: i,
        });
    }
    out
}

fn punctuation(c: u8) -> Option<Kind> {
    Some(match c {
        b';' => Kind::Semicolon,
        b'(' => Kind::LParen,
        b')' => Kind::RParen,
        b',' => Kind::Comma,
        b'.' => Kind::Dot,
        _ => return None,
    })
}

fn find(sql: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    sql.get(from..)?
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| p + from)
}

fn line_end(sql: &[u8], from: usize) -> usize {
    sql[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(sql.len(), |p| from + p)
}

/// End of a quoted token starting at `start` (the quote): doubled quotes always escape,
/// backslashes too when `backslash`. Returns (end, terminated).
fn quoted(sql: &[u8], start: usize, q: u8, backslash: bool) -> (usize, bool) {
    let mut i = start + 1;
    while i < sql.len() {
        let c = sql[i];
        if backslash && c == b'\\' {
            i += 2;
        } else if c == q {
            if sql.get(i + 1) == Some(&q) {
                i += 2;
            } else {
                return (i + 1, true);
            }
        } else {
            i += 1;
        }
    }
    (sql.len(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(Kind, String)> {
        tokenize(sql.as_bytes())
            .iter()
            .map(|t| {
                (
                    t.kind,
                    String::from_utf8_lossy(t.text(sql.as_bytes())).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn strings_identifiers_and_escapes() {
        let t = kinds(r#"SELECT 'it''s', "a\"b", `we``ird`, 'x\'y' FROM t"#);
        assert_eq!(t[1], (Kind::Str, "'it''s'".into()));
        assert_eq!(t[3], (Kind::Str, r#""a\"b""#.into()));
        assert_eq!(t[5], (Kind::QuotedIdent, "`we``ird`".into()));
        assert_eq!(t[7], (Kind::Str, r"'x\'y'".into()));
        assert_eq!(t[8], (Kind::Word, "FROM".into()));
    }

    #[test]
    fn comments_and_versioned_comments() {
        let t = kinds("/* weiche:primary */ SELECT 1 -- tail\n# hash\n/*!40101 SET x=1 */ /*M!100100 FOR UPDATE*/");
        assert_eq!(t[0], (Kind::Comment, "/* weiche:primary */".into()));
        assert_eq!(t[1], (Kind::Word, "SELECT".into()));
        assert_eq!(t[3].0, Kind::Comment);
        assert_eq!(t[4].0, Kind::Comment);
        let words: Vec<_> = t
            .iter()
            .filter(|(k, _)| *k == Kind::Word)
            .map(|(_, s)| s.as_str())
            .collect();
        assert_eq!(words, ["SELECT", "SET", "x", "FOR", "UPDATE"]);
        // "--" without a following space is two minus signs.
        assert_eq!(kinds("SELECT 1--1").len(), 5);
    }

    #[test]
    fn literals_and_variables() {
        let t = kinds("SELECT X'0aF', 0x1F, b'01', 0b11, 1.5e3, 1abc, @v, @'q v', @@session.sql_mode, @x := 2;");
        let k: Vec<Kind> = t
            .iter()
            .map(|x| x.0)
            .filter(|k| *k != Kind::Comma)
            .collect();
        use Kind::*;
        assert_eq!(
            k,
            [
                Word, HexOrBit, HexOrBit, HexOrBit, HexOrBit, Number, Word, UserVar, UserVar,
                SysVar, UserVar, Assign, Number, Semicolon
            ]
        );
    }

    #[test]
    fn non_utf8_and_unterminated_input() {
        let sql = b"SELECT '\xff\xfe' , \xe4\xf6 FROM t WHERE a = 'open";
        let t = tokenize(sql);
        assert_eq!(t[1].kind, Kind::Str);
        assert_eq!(t[3].kind, Kind::Word);
        assert_eq!(t.last().unwrap().kind, Kind::Unterminated);
        assert_eq!(
            tokenize(b"/* open").last().unwrap().kind,
            Kind::Unterminated
        );
    }
}
