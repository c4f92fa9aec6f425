//! KILL: clients name Weiche connection ids; the backend needs its own thread ids. This finds
//! `KILL [HARD|SOFT] [CONNECTION|QUERY] n` (and COM_PROCESS_KILL) and rewrites the id.
//! `KILL QUERY ID n` (a query id) and `KILL USER u` pass through unchanged.

/// A KILL statement that names a connection id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    pub modifier: Option<&'static str>,
    /// KILL QUERY (else the whole connection).
    pub query: bool,
    pub id: u64,
}

impl Kill {
    /// The statement with another id.
    pub fn to_sql(&self, id: u32) -> String {
        let mut s = String::from("KILL ");
        if let Some(m) = self.modifier {
            s.push_str(m);
            s.push(' ');
        }
        s.push_str(if self.query { "QUERY " } else { "CONNECTION " });
        s.push_str(&id.to_string());
        s
    }
}

/// Words of a statement that starts with the word `first`, skipping whitespace and comments;
/// `None` on anything unexpected. Gives up at the first word when it is another (this runs for
/// every text query).
fn words<'a>(sql: &'a [u8], first: &[u8]) -> Option<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let c = sql[i];
        if c.is_ascii_whitespace() || c == b';' {
            i += 1;
        } else if sql[i..].starts_with(b"/*") {
            let end = sql[i + 2..].windows(2).position(|w| w == b"*/")?;
            i += end + 4;
        } else if c == b'#' || sql[i..].starts_with(b"-- ") {
            while i < sql.len() && sql[i] != b'\n' {
                i += 1;
            }
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                i += 1;
            }
            if out.is_empty() && !sql[start..i].eq_ignore_ascii_case(first) {
                return None;
            }
            out.push(&sql[start..i]);
        } else {
            return None;
        }
    }
    Some(out)
}

/// Parse a KILL that names a connection id; `None` for anything else.
pub fn parse(sql: &[u8]) -> Option<Kill> {
    let w = words(sql, b"KILL")?;
    let mut it = w.iter().peekable();
    if !it.next()?.eq_ignore_ascii_case(b"KILL") {
        return None;
    }
    let mut kill = Kill {
        modifier: None,
        query: false,
        id: 0,
    };
    if let Some(m) = it.peek() {
        if m.eq_ignore_ascii_case(b"HARD") {
            kill.modifier = Some("HARD");
            it.next();
        } else if m.eq_ignore_ascii_case(b"SOFT") {
            kill.modifier = Some("SOFT");
            it.next();
        }
    }
    if let Some(m) = it.peek() {
        if m.eq_ignore_ascii_case(b"QUERY") {
            kill.query = true;
            it.next();
        } else if m.eq_ignore_ascii_case(b"CONNECTION") {
            it.next();
        }
    }
    let id = it.next()?;
    if it.next().is_some() {
        return None;
    }
    kill.id = std::str::from_utf8(id).ok()?.parse().ok()?;
    Some(kill)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_forms() {
        assert_eq!(
            parse(b"KILL 5"),
            Some(Kill {
                modifier: None,
                query: false,
                id: 5
            })
        );
        assert_eq!(
            parse(b"kill query 7;"),
            Some(Kill {
                modifier: None,
                query: true,
                id: 7
            })
        );
        assert_eq!(
            parse(b"/* x */ KILL HARD CONNECTION 9"),
            Some(Kill {
                modifier: Some("HARD"),
                query: false,
                id: 9
            })
        );
        assert_eq!(parse(b"KILL QUERY ID 7"), None);
        assert_eq!(parse(b"KILL USER app"), None);
        assert_eq!(parse(b"SELECT 1"), None);
        assert_eq!(parse(b"KILL 5; DROP TABLE t"), None);
        assert_eq!(
            Kill {
                modifier: Some("SOFT"),
                query: true,
                id: 1
            }
            .to_sql(42),
            "KILL SOFT QUERY 42"
        );
    }
}
