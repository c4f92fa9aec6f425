//! The tables a statement reads or writes, named from the lexer's tokens (for the result
//! cache's keys and invalidation). No parse: a table name is whatever stands where the grammar
//! puts one (after FROM, JOIN, a comma of a FROM list, INTO, UPDATE, TABLE, ...). Naming too
//! many tables costs a needless invalidation; naming too few would serve stale results, so
//! anything the scanner cannot place makes the answer "unknown".

use super::lexer::{tokenize, Kind, Token};

/// A table as the statement names it (`schema` when qualified).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<Vec<u8>>,
    pub name: Vec<u8>,
}

/// What a write touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    pub tables: Vec<TableName>,
    /// CREATE/ALTER/DROP DATABASE names.
    pub schemas: Vec<Vec<u8>>,
    /// Some statement's tables cannot be named (CALL, a trigger, GRANT, ...): every table of
    /// the session's schema may have changed.
    pub unknown: bool,
}

/// Keywords after which a table name stands.
const TABLE_AFTER: &[&str] = &["FROM", "JOIN", "STRAIGHT_JOIN"];
/// More of them in writes.
const WRITE_TABLE_AFTER: &[&str] = &[
    "INTO", "UPDATE", "TABLE", "TABLES", "USING", "TRUNCATE", "VIEW",
];
/// Words that may stand between such a keyword and the name.
const NAME_PREFIX: &[&str] = &[
    "LATERAL",
    "INTO",
    "TABLE",
    "LOW_PRIORITY",
    "HIGH_PRIORITY",
    "DELAYED",
    "QUICK",
    "IGNORE",
    "CONCURRENT",
    "LOCAL",
    "TEMPORARY",
    "IF",
    "NOT",
    "EXISTS",
    "ONLY",
    "ONLINE",
];
/// Keywords that end a FROM list (index hints and PARTITION (...) do not: a comma and more
/// tables may follow them).
const LIST_END: &[&str] = &[
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WINDOW",
    "INTO",
    "PROCEDURE",
    "SET",
    "VALUES",
    "VALUE",
    "SELECT",
    "RETURNING",
];

/// The scanner's findings for one statement.
struct Scan {
    names: Vec<TableName>,
    /// Something stood where a table name belongs that is not one.
    unplaced: bool,
}

fn is_any(sql: &[u8], t: &Token, words: &[&str]) -> bool {
    t.kind == Kind::Word && words.iter().any(|w| t.is(sql, w))
}

fn ident(sql: &[u8], t: &Token) -> Option<Vec<u8>> {
    match t.kind {
        Kind::Word => Some(t.text(sql).to_vec()),
        Kind::QuotedIdent => {
            let s = t.text(sql);
            let inner = &s[1..s.len().saturating_sub(1).max(1)];
            // `a``b` is the name a`b.
            let mut out = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                out.push(inner[i]);
                i += if inner[i] == b'`' { 2 } else { 1 };
            }
            Some(out)
        }
        _ => None,
    }
}

/// Scan one statement's tokens (comments removed).
fn scan(sql: &[u8], toks: &[&Token], write: bool) -> Scan {
    let mut out = Scan {
        names: Vec::new(),
        unplaced: false,
    };
    // Per parenthesis depth: inside a FROM list?
    let mut list = vec![false];
    let mut at_name = false;
    let first_is = |w: &str| toks.first().is_some_and(|t| t.is(sql, w));
    let rename = first_is("RENAME");
    if write && (first_is("DELETE") || first_is("INSERT") || first_is("REPLACE")) {
        // DELETE t1, t2 FROM ...; INSERT [INTO] t; REPLACE [INTO] t.
        at_name = true;
        list[0] = first_is("DELETE");
    }
    let mut i = usize::from(at_name);
    while i < toks.len() {
        let t = toks[i];
        let depth = list.len() - 1;
        if at_name {
            at_name = false;
            if is_any(sql, t, NAME_PREFIX) {
                at_name = true;
                i += 1;
                continue;
            }
            if t.kind == Kind::LParen {
                // A derived table or parenthesized joins: a FROM list of its own.
                list.push(true);
                at_name = true;
                i += 1;
                continue;
            }
            if is_any(sql, t, &["SELECT", "WITH", "VALUES", "DUAL", "FROM"]) {
                // Not a name: read on as usual (FROM after DELETE, a subquery, DUAL).
            } else if let Some(first) = ident(sql, t) {
                let next = toks.get(i + 1);
                if next.is_some_and(|n| n.kind == Kind::LParen) && t.is(sql, "JSON_TABLE") {
                    // A table function reads no table (`INSERT INTO t (a)` names one).
                    i += 1;
                    continue;
                }
                let mut name = TableName {
                    schema: None,
                    name: first,
                };
                if next.is_some_and(|n| n.kind == Kind::Dot) {
                    match toks.get(i + 2).and_then(|n| ident(sql, n)) {
                        Some(second) => {
                            name.schema = Some(std::mem::replace(&mut name.name, second));
                            i += 2;
                        }
                        None => out.unplaced = true,
                    }
                }
                out.names.push(name);
                i += 1;
                continue;
            } else {
                out.unplaced = true;
            }
        }
        match t.kind {
            Kind::LParen => list.push(false),
            Kind::RParen if list.len() > 1 => {
                list.pop();
            }
            Kind::Comma if list[depth] => at_name = true,
            Kind::Word => {
                if is_any(sql, t, TABLE_AFTER)
                    || (write && is_any(sql, t, WRITE_TABLE_AFTER))
                    || (rename && t.is(sql, "TO"))
                {
                    at_name = true;
                    list[depth] = !t.is(sql, "INTO");
                } else if is_any(sql, t, LIST_END) {
                    list[depth] = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    if at_name {
        // The statement ended where a name should stand.
        out.unplaced = true;
    }
    out
}

fn statements(tokens: &[Token]) -> impl Iterator<Item = Vec<&Token>> {
    tokens.split(|t| t.kind == Kind::Semicolon).filter_map(|s| {
        let toks: Vec<&Token> = s.iter().filter(|t| t.kind != Kind::Comment).collect();
        (!toks.is_empty()).then_some(toks)
    })
}

/// The tables a read names, or why they cannot all be named (`tokens`: the lexer's, for `sql`).
pub fn read_tables(sql: &[u8], tokens: &[Token]) -> Result<Vec<TableName>, &'static str> {
    if tokens.iter().any(|t| t.kind == Kind::Unterminated) {
        return Err("the lexer cannot read the statement");
    }
    let mut names = Vec::new();
    for toks in statements(tokens) {
        let s = scan(sql, &toks, false);
        if s.unplaced {
            return Err("it names its tables in a way Weiche cannot follow");
        }
        names.extend(s.names);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// What a write (possibly several statements) touches. Like the classifier's analysis, this
/// depends only on the statement's shape, and is remembered by it.
pub fn written(sql: &[u8]) -> Written {
    let tokens = tokenize(sql);
    super::memo::written_by_shape(sql, &tokens, written_tokens)
}

pub(super) fn written_tokens(sql: &[u8], tokens: &[Token]) -> Written {
    let mut w = Written::default();
    if tokens.iter().any(|t| t.kind == Kind::Unterminated) {
        w.unknown = true;
        return w;
    }
    for toks in statements(tokens) {
        let first = toks[0];
        let second = toks.get(1);
        if is_any(sql, first, &["CREATE", "ALTER", "DROP"])
            && second.is_some_and(|t| is_any(sql, t, &["DATABASE", "SCHEMA"]))
        {
            let name = toks
                .iter()
                .skip(2)
                .find(|t| !is_any(sql, t, &["IF", "NOT", "EXISTS"]))
                .and_then(|t| ident(sql, t));
            match name {
                Some(n) => w.schemas.push(n),
                None => w.unknown = true,
            }
            continue;
        }
        if is_any(sql, first, &["CALL", "GRANT", "REVOKE", "IMPORT"]) {
            w.unknown = true;
            continue;
        }
        let s = scan(sql, &toks, true);
        if s.unplaced || s.names.is_empty() {
            w.unknown = true;
        }
        w.tables.extend(s.names);
    }
    w.tables.sort();
    w.tables.dedup();
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TableName {
        match s.split_once('.') {
            Some((d, n)) => TableName {
                schema: Some(d.into()),
                name: n.into(),
            },
            None => TableName {
                schema: None,
                name: s.into(),
            },
        }
    }

    fn read(sql: &[u8]) -> Result<Vec<TableName>, &'static str> {
        read_tables(sql, &tokenize(sql))
    }

    fn reads(sql: &str) -> Vec<TableName> {
        read(sql.as_bytes()).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn tables_a_read_names() {
        assert_eq!(
            reads("SELECT c FROM sbtest1 WHERE id = 5"),
            vec![t("sbtest1")]
        );
        assert_eq!(
            reads("select * from a x, `db`.`b` AS y join c on x.i = c.i, d where 1"),
            vec![t("a"), t("c"), t("d"), t("db.b")]
        );
        assert_eq!(
            reads("SELECT * FROM (SELECT * FROM inner1) s, outer1 LEFT JOIN o2 USING (k)"),
            vec![t("inner1"), t("o2"), t("outer1")]
        );
        assert_eq!(
            reads("SELECT a FROM t WHERE b IN (SELECT b FROM u WHERE c IN (1, 2)), 3"),
            vec![t("t"), t("u")]
        );
        assert_eq!(
            reads("SELECT (SELECT max(x) FROM m), y FROM n"),
            vec![t("m"), t("n")]
        );
        assert_eq!(reads("SELECT 1 FROM DUAL"), vec![]);
        assert_eq!(reads("SELECT 1 + 1"), vec![]);
        assert_eq!(
            reads("SELECT * FROM (a JOIN b ON a.i = b.i)"),
            vec![t("a"), t("b")]
        );
        assert_eq!(
            reads("SELECT * FROM t USE INDEX (i1, i2), u PARTITION (p0, p1) v, w WHERE a = 1"),
            vec![t("t"), t("u"), t("w")]
        );
        assert_eq!(
            reads("SELECT * FROM JSON_TABLE('[]', '$[*]' COLUMNS (a INT PATH '$')) j"),
            vec![]
        );
        assert_eq!(reads("SELECT * FROM `we``ird`"), vec![t("we`ird")]);
        assert!(read(b"SELECT * FROM").is_err());
        assert!(read(b"SELECT * FROM { oj t }").is_err());
    }

    #[test]
    fn tables_a_write_touches() {
        let w = |s: &str| written(s.as_bytes());
        assert_eq!(w("INSERT INTO t (a) VALUES (1)").tables, vec![t("t")]);
        assert_eq!(
            w("insert low_priority ignore db.t values (1)").tables,
            vec![t("db.t")]
        );
        assert_eq!(w("REPLACE t SET a = 1").tables, vec![t("t")]);
        assert_eq!(
            w("UPDATE a, b SET a.x = b.y WHERE a.i = b.i").tables,
            vec![t("a"), t("b")]
        );
        assert_eq!(w("DELETE FROM t WHERE id = 1").tables, vec![t("t")]);
        assert_eq!(
            w("DELETE a, b FROM a JOIN b ON a.i = b.i").tables,
            vec![t("a"), t("b")]
        );
        assert_eq!(w("TRUNCATE TABLE t").tables, vec![t("t")]);
        assert_eq!(w("truncate t").tables, vec![t("t")]);
        assert_eq!(w("DROP TABLE IF EXISTS a, b").tables, vec![t("a"), t("b")]);
        assert_eq!(w("ALTER TABLE t ADD COLUMN c INT").tables, vec![t("t")]);
        assert_eq!(
            w("RENAME TABLE a TO b, c TO d").tables,
            vec![t("a"), t("b"), t("c"), t("d")]
        );
        assert_eq!(
            w("LOAD DATA LOCAL INFILE 'f' INTO TABLE t").tables,
            vec![t("t")]
        );
        assert_eq!(
            w("INSERT INTO t SELECT * FROM u").tables,
            vec![t("t"), t("u")]
        );
        assert_eq!(
            w("DROP DATABASE IF EXISTS shop").schemas,
            vec![b"shop".to_vec()]
        );
        assert!(w("CALL refresh()").unknown);
        assert!(w("GRANT ALL ON *.* TO x").unknown);
        assert!(!w("INSERT INTO t VALUES (1); UPDATE u SET a = 1").unknown);
        assert!(w("INSERT INTO").unknown);
        assert_eq!(
            w("CREATE OR REPLACE VIEW v AS SELECT * FROM x").tables,
            vec![t("v"), t("x")]
        );
    }
}
