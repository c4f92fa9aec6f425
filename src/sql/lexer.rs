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

/// How the server reads the text: which versioned comments it executes, and whether a
/// backslash escapes in strings (not under sql_mode NO_BACKSLASH_ESCAPES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// The server's version as MariaDB writes it in comments (10.11.14: 101114).
    /// `/*!NNNNN ... */` and `/*M!NNNNNN ... */` are SQL only up to this version.
    pub version: u32,
    /// None: not known (the session never reported its sql_mode); read as escaping, and
    /// `classify::analyze_in` reads it the other way too.
    pub backslash_escapes: Option<bool>,
}

impl Default for Dialect {
    /// Every versioned comment is SQL; backslashes escape (MariaDB's default sql_mode).
    fn default() -> Self {
        Dialect {
            version: u32::MAX,
            backslash_escapes: Some(true),
        }
    }
}

impl Dialect {
    /// The version in a server greeting ("5.5.5-10.11.14-MariaDB-log", "8.0.36"): 101114.
    pub fn version_of(greeting_version: &[u8]) -> Option<u32> {
        let v = greeting_version
            .strip_prefix(b"5.5.5-")
            .unwrap_or(greeting_version);
        let mut parts = v.split(|&c| !c.is_ascii_digit()).take(3);
        let mut n = 0u32;
        for _ in 0..3 {
            let p = parts.next()?;
            let x: u32 = std::str::from_utf8(p).ok()?.parse().ok()?;
            n = n.checked_mul(100)?.checked_add(x.min(99))?;
        }
        Some(n)
    }
}

/// Split `sql` into tokens (whitespace dropped), read as MariaDB's default does.
pub fn tokenize(sql: &[u8]) -> Vec<Token> {
    tokenize_in(sql, Dialect::default())
}

/// Tokens read of one statement at most: 24 bytes each, so a 4 MiB `SELECT 1,1,1,...` would
/// take 48 MiB. The rest becomes one `Unterminated` token (a statement the lexer cannot read
/// goes to the primary).
pub const MAX_TOKENS: usize = 65_536;

/// Split `sql` into tokens as a server of `dialect` reads it (at most `MAX_TOKENS`, then one
/// `Unterminated` token for the rest).
pub fn tokenize_in(sql: &[u8], dialect: Dialect) -> Vec<Token> {
    let mut out = Vec::with_capacity(16);
    let mut i = 0;
    let n = sql.len();
    // Inside a versioned comment, its closing */ is skipped like whitespace.
    let mut in_versioned = false;
    while i < n {
        if out.len() == MAX_TOKENS {
            out.push(Token {
                kind: Kind::Unterminated,
                start: i,
                end: n,
            });
            break;
        }
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
                if let (Some(at), false) = (versioned, in_versioned) {
                    // MariaDB reads a version of 6 digits, else of 5; fewer are no version
                    // (the comment is SQL, digits and all). A comment for a newer server is
                    // a comment: its text must not be read as SQL (a quote in it would hide
                    // what follows).
                    let digits = sql[at..].iter().take_while(|c| c.is_ascii_digit()).count();
                    let len = match digits {
                        6.. => 6,
                        5 => 5,
                        _ => 0,
                    };
                    let version = std::str::from_utf8(&sql[at..at + len])
                        .ok()
                        .and_then(|v| v.parse::<u32>().ok());
                    if version.is_none_or(|v| v <= dialect.version) {
                        in_versioned = true;
                        i = at + len;
                        continue;
                    }
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
                let (e, ok) = quoted(sql, i, b, dialect.backslash_escapes != Some(false));
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
    fn versioned_comments_are_sql_only_up_to_the_servers_version() {
        let d = Dialect {
            version: Dialect::version_of(b"5.5.5-10.11.14-MariaDB-0+deb12u2-log").unwrap(),
            backslash_escapes: Some(true),
        };
        assert_eq!(d.version, 101114);
        assert_eq!(Dialect::version_of(b"8.0.36"), Some(80036));
        let words = |sql: &str| -> Vec<String> {
            tokenize_in(sql.as_bytes(), d)
                .iter()
                .filter(|t| t.kind == Kind::Word)
                .map(|t| String::from_utf8_lossy(t.text(sql.as_bytes())).into_owned())
                .collect()
        };
        assert_eq!(
            words("SELECT 1 /*!50000 FOR UPDATE */"),
            ["SELECT", "FOR", "UPDATE"]
        );
        assert_eq!(
            words("SELECT 1 /*M!101114 FOR UPDATE */"),
            ["SELECT", "FOR", "UPDATE"]
        );
        assert_eq!(words("SELECT 1 /*M!110000 FOR UPDATE */"), ["SELECT"]);
        assert_eq!(words("SELECT 1 /*!999999 FOR UPDATE */"), ["SELECT"]);
        assert_eq!(
            words("SELECT 1 /*! FOR UPDATE */"),
            ["SELECT", "FOR", "UPDATE"]
        );
        // A quote inside a comment the server skips does not swallow what follows.
        let t = tokenize_in(b"SELECT 1 /*!999999 ' */ ; UPDATE t SET a = 1; -- '", d);
        assert!(t.iter().any(|t| t.kind == Kind::Semicolon));
        assert!(!t.iter().any(|t| t.kind == Kind::Str));
    }

    #[test]
    fn no_backslash_escapes_ends_strings_at_a_backslash_quote() {
        let sql = br"SELECT '\' ; UPDATE t SET a = 1 ; -- '";
        let literal = Dialect {
            backslash_escapes: Some(false),
            ..Dialect::default()
        };
        assert_eq!(tokenize_in(sql, literal)[1].kind, Kind::Str);
        assert_eq!(tokenize_in(sql, literal)[2].kind, Kind::Semicolon);
        assert!(!tokenize(sql).iter().any(|t| t.kind == Kind::Semicolon));
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
