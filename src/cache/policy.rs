//! Which statements are cached, for how long, and why not: a statement is cached when a
//! `/* weiche:cache ttl=N */` hint or a `[[cache.rules]]` entry asks for it (or, in auto mode,
//! when nothing says no) and it is a plain, deterministic SELECT whose tables Weiche can name.
//! Every refusal has a reason (EXPLAIN ROUTE). Auto mode's admission by digest is `auto`'s.

use super::Scope;
use crate::config::Caching;
use crate::sql::lexer::{tokenize, Kind, Token};
use crate::sql::tables::{read_tables, TableName};
use std::borrow::Cow;
use std::time::Duration;

/// What the cache makes of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No hint and no rule asks for it: the cache is not involved.
    NotAsked,
    /// Asked for, but it must not be cached.
    Refused(Cow<'static, str>),
    /// Auto mode looked at it, but it cannot be cached (not counted as a refusal: nobody
    /// asked).
    Skipped(Cow<'static, str>),
    Cacheable(Plan),
}

/// How a cacheable statement is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ttl: Duration,
    /// Whose generations the key carries.
    pub scopes: Vec<Scope>,
    /// The rule that asked (an index into cache.rules), or None for a hint or auto mode.
    pub rule: Option<usize>,
    /// Auto mode's plan: the statement's digest hash, for admission (None: a hint or rule).
    pub auto: Option<u64>,
}

impl Plan {
    /// "ttl 60 s, cache rule 2" for EXPLAIN ROUTE.
    pub fn describe(&self, config: &Caching) -> String {
        let by = match (self.rule, self.auto) {
            (Some(i), _) => config.rules[i].name.clone(),
            (None, Some(_)) => "auto mode".into(),
            (None, None) => "hint".into(),
        };
        format!("ttl {} s, {by}", self.ttl.as_secs_f64())
    }
}

/// Functions whose result changes without any write, or depends on the session's server.
const VOLATILE_FUNCTIONS: &[&str] = &[
    "NOW",
    "SYSDATE",
    "CURDATE",
    "CURTIME",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "UNIX_TIMESTAMP",
    "RAND",
    "RANDOM_BYTES",
    "UUID",
    "UUID_SHORT",
    "SYS_GUID",
    "CURRENT_USER",
    "CURRENT_ROLE",
    "USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "CONNECTION_ID",
    "LAST_INSERT_ID",
    "ROW_COUNT",
    "FOUND_ROWS",
    "NEXTVAL",
    "LASTVAL",
    "SETVAL",
    "SLEEP",
    "BENCHMARK",
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "MASTER_POS_WAIT",
    "MASTER_GTID_WAIT",
    "LOAD_FILE",
];
/// Schemas whose contents change without writes through Weiche.
const SYSTEM_SCHEMAS: &[&str] = &["information_schema", "performance_schema", "mysql", "sys"];

/// The `/* weiche:cache [ttl=N] */` and `/* weiche:nocache */` hints.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hint {
    Cache(Option<f64>),
    NoCache,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether `sql` holds `weiche:` (any case) anywhere: the test every statement takes, so it
/// looks for the rare `:` and only then at the word before it.
fn mentions_weiche(sql: &[u8]) -> bool {
    const WORD: &[u8] = b"weiche";
    let mut from = 0;
    while let Some(p) = sql[from..].iter().position(|&b| b == b':') {
        let at = from + p;
        if at >= WORD.len() && sql[at - WORD.len()..at].eq_ignore_ascii_case(WORD) {
            return true;
        }
        from = at + 1;
    }
    false
}

fn hint(sql: &[u8], tokens: &[Token]) -> Option<Hint> {
    // Cheap test first: most statements carry no hint at all.
    if !mentions_weiche(sql) {
        return None;
    }
    for t in tokens.iter().filter(|t| t.kind == Kind::Comment) {
        let text = t.text(sql);
        if find(text, b"weiche:nocache").is_some() {
            return Some(Hint::NoCache);
        }
        if let Some(at) = find(text, b"weiche:cache") {
            let rest = &text[at + b"weiche:cache".len()..];
            let ttl = find(rest, b"ttl=").and_then(|p| {
                let digits: Vec<u8> = rest[p + 4..]
                    .iter()
                    .copied()
                    .take_while(|b| b.is_ascii_digit() || *b == b'.')
                    .collect();
                std::str::from_utf8(&digits).ok()?.parse::<f64>().ok()
            });
            return Some(Hint::Cache(ttl));
        }
    }
    None
}

/// Why a statement's text rules caching out, if it does.
fn volatile(sql: &[u8], toks: &[&Token]) -> Option<&'static str> {
    let first = toks.first()?;
    if !(first.is(sql, "SELECT") || first.is(sql, "WITH") || first.kind == Kind::LParen) {
        return Some("only SELECT results are cached");
    }
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1);
        let next_is = |w: &str| next.is_some_and(|n| n.is(sql, w));
        match t.kind {
            Kind::UserVar => return Some("it reads a @variable"),
            Kind::SysVar => return Some("it reads a @@variable"),
            Kind::Assign => return Some("it assigns a @variable"),
            Kind::Word => {
                if ["INSERT", "UPDATE", "DELETE", "REPLACE"]
                    .iter()
                    .any(|w| t.is(sql, w))
                    && !(t.is(sql, "UPDATE") && i > 0 && toks[i - 1].is(sql, "FOR"))
                {
                    return Some("it writes");
                }
                if t.is(sql, "FOR") && (next_is("UPDATE") || next_is("SHARE")) {
                    return Some("a locking read (FOR UPDATE / FOR SHARE)");
                }
                if t.is(sql, "LOCK") && next_is("IN") {
                    return Some("a locking read (LOCK IN SHARE MODE)");
                }
                if t.is(sql, "INTO") {
                    return Some("SELECT ... INTO");
                }
                if t.is(sql, "SQL_NO_CACHE") {
                    return Some("SQL_NO_CACHE");
                }
                if t.is(sql, "SQL_CALC_FOUND_ROWS") {
                    return Some("SQL_CALC_FOUND_ROWS");
                }
                if (t.is(sql, "NEXT") || t.is(sql, "PREVIOUS")) && next_is("VALUE") {
                    return Some("a sequence value");
                }
                // CURRENT_DATE, LOCALTIME, UTC_TIME and friends work without parentheses too.
                let call = next.is_some_and(|n| n.kind == Kind::LParen);
                let niladic = |f: &&str| {
                    ["CURRENT_", "LOCALTIME", "UTC_"]
                        .iter()
                        .any(|p| f.starts_with(p))
                };
                if VOLATILE_FUNCTIONS
                    .iter()
                    .filter(|f| call || niladic(f))
                    .any(|f| t.is(sql, f))
                {
                    return Some("a non-deterministic function (time, random, user, session)");
                }
            }
            _ => {}
        }
    }
    None
}

/// The generations a read's key carries: the whole cache's, each schema's, each table's.
/// Names are lower-cased: with case-insensitive table names on the server, `T` and `t` are one
/// table; otherwise two tables share a generation, which only costs a needless miss.
fn scopes(tables: &[TableName], schema: Option<&[u8]>) -> Result<Vec<Scope>, &'static str> {
    let mut out = vec![Scope::All];
    for t in tables {
        let Some(db) = t.schema.as_deref().or(schema) else {
            return Err("it names a table without a database and none is selected");
        };
        let db = db.to_ascii_lowercase();
        if SYSTEM_SCHEMAS.iter().any(|s| db == s.as_bytes()) {
            return Err("it reads a system schema, which changes without writes");
        }
        out.push(Scope::Schema(db.clone()));
        out.push(Scope::Table(db, t.name.to_ascii_lowercase()));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Whether a hint or rule could ask for this statement at all: the cheap test every statement
/// passes through (no lexing), so that statements the cache has nothing to do with cost nothing.
pub fn may_ask(config: &Caching, sql: &[u8]) -> bool {
    config.enabled && (config.auto.is_some() || !config.rules.is_empty() || mentions_weiche(sql))
}

/// Whether `decide`'s verdict is the same for every statement of one digest, user and default
/// database (so a session may keep it): not when a hint (a comment, outside the digest) or a
/// rule's `text` (which sees the literals) has a say.
pub fn same_for_digest(config: &Caching, sql: &[u8]) -> bool {
    config.rules.iter().all(|r| r.text.is_none()) && !mentions_weiche(sql)
}

/// Who asks, for rules.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub user: &'a str,
    pub schema: Option<&'a [u8]>,
}

/// Decide whether a COM_QUERY text (or a prepared statement's text) is cached.
pub fn decide(config: &Caching, sql: &[u8], asker: Asker<'_>) -> Verdict {
    if !may_ask(config, sql) {
        return Verdict::NotAsked;
    }
    let tokens = tokenize(sql);
    let hint = hint(sql, &tokens);
    if hint.is_none() && config.rules.is_empty() && config.auto.is_none() {
        return Verdict::NotAsked;
    }
    if hint == Some(Hint::NoCache) {
        return Verdict::Refused("hint: nocache".into());
    }
    let mut statements = tokens
        .split(|t| t.kind == Kind::Semicolon)
        .map(|s| {
            s.iter()
                .filter(|t| t.kind != Kind::Comment)
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty());
    let toks = statements.next().unwrap_or_default();
    let multi = statements.next().is_some();
    let tables = read_tables(sql, &tokens);
    let rule = config.rules.iter().position(|r| {
        r.user.as_deref().is_none_or(|u| u == asker.user)
            && r.schema
                .as_deref()
                .is_none_or(|s| asker.schema == Some(s.as_bytes()))
            && r.table.as_deref().is_none_or(|want| {
                tables
                    .as_ref()
                    .is_ok_and(|ts| ts.iter().any(|t| table_matches(want, t, asker.schema)))
            })
            && r.text
                .as_ref()
                .is_none_or(|re| re.is_match(&String::from_utf8_lossy(sql)))
            && r.digest
                .as_ref()
                .is_none_or(|re| re.is_match(&crate::sql::digest::digest(sql)))
    });
    let ttl = match (hint, rule) {
        (Some(Hint::Cache(ttl)), _) => match ttl {
            Some(s) if s.is_finite() && s > 0.0 && s < 86_400.0 * 365.0 => {
                Duration::from_secs_f64(s)
            }
            Some(_) => return Verdict::Refused("hint: ttl must be above 0".into()),
            None => config.default_ttl,
        },
        (_, Some(i)) => config.rules[i].ttl,
        _ => match &config.auto {
            Some(a) => a.ttl,
            None => return Verdict::NotAsked,
        },
    };
    let auto = hint.is_none() && rule.is_none();
    let no = |why: &'static str| {
        if auto {
            Verdict::Skipped(why.into())
        } else {
            Verdict::Refused(why.into())
        }
    };
    if multi {
        return no("a multi-statement");
    }
    if let Some(why) = volatile(sql, &toks) {
        return no(why);
    }
    let tables = match tables {
        Ok(t) => t,
        Err(why) => return no(why),
    };
    // A statement that reads no table (SELECT 1: a health check) is only cached when asked.
    if auto && tables.is_empty() {
        return no("it reads no table");
    }
    let scopes = match scopes(&tables, asker.schema) {
        Ok(s) => s,
        Err(why) => return no(why),
    };
    Verdict::Cacheable(Plan {
        ttl,
        scopes,
        rule: if matches!(hint, Some(Hint::Cache(_))) {
            None
        } else {
            rule
        },
        auto: auto.then(|| crate::sql::digest::digest_hash_of(sql, &tokens)),
    })
}

/// A rule's `table` ("t" or "db.t") against a table the statement reads.
fn table_matches(want: &str, t: &TableName, schema: Option<&[u8]>) -> bool {
    match want.split_once('.') {
        Some((db, name)) => {
            t.name.eq_ignore_ascii_case(name.as_bytes())
                && t.schema
                    .as_deref()
                    .or(schema)
                    .is_some_and(|s| s.eq_ignore_ascii_case(db.as_bytes()))
        }
        None => t.name.eq_ignore_ascii_case(want.as_bytes()),
    }
}

/// The scopes a write bumps (see `sql::tables::written`).
pub fn written_scopes(sql: &[u8], schema: Option<&[u8]>) -> Vec<Scope> {
    let w = crate::sql::tables::written(sql);
    let mut out = Vec::new();
    for t in &w.tables {
        match t.schema.as_deref().or(schema) {
            Some(db) => out.push(Scope::Table(
                db.to_ascii_lowercase(),
                t.name.to_ascii_lowercase(),
            )),
            // A table in no known schema: whatever it is, everything may have changed.
            None => out.push(Scope::All),
        }
    }
    for s in &w.schemas {
        out.push(Scope::Schema(s.to_ascii_lowercase()));
    }
    if w.unknown {
        out.push(match schema {
            Some(db) => Scope::Schema(db.to_ascii_lowercase()),
            None => Scope::All,
        });
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CacheRule;

    #[test]
    fn hint_mentions_are_found_in_any_case_and_place() {
        assert!(mentions_weiche(b"SELECT 1 /* weiche:cache ttl=5 */"));
        assert!(mentions_weiche(b"/*WEICHE:nocache*/SELECT 1"));
        assert!(mentions_weiche(b"weiche:"));
        assert!(!mentions_weiche(b"SELECT a::int, 'x:y' FROM t"));
        assert!(!mentions_weiche(b"eiche: SELECT 1"));
        assert!(!mentions_weiche(b""));
        assert!(!mentions_weiche(b":"));
    }

    fn config(rules: Vec<CacheRule>) -> Caching {
        Caching {
            rules,
            ..Caching::default()
        }
    }

    fn verdict(c: &Caching, sql: &str) -> Verdict {
        decide(
            c,
            sql.as_bytes(),
            Asker {
                user: "app",
                schema: Some(b"shop"),
            },
        )
    }

    fn refused(c: &Caching, sql: &str) -> bool {
        matches!(verdict(c, sql), Verdict::Refused(_))
    }

    #[test]
    fn hints_and_rules_ask() {
        let c = config(vec![]);
        assert_eq!(verdict(&c, "SELECT * FROM t"), Verdict::NotAsked);
        let Verdict::Cacheable(p) = verdict(&c, "/* weiche:cache ttl=5 */ SELECT * FROM t") else {
            panic!()
        };
        assert_eq!(p.ttl, Duration::from_secs(5));
        assert_eq!(
            p.scopes,
            vec![
                Scope::All,
                Scope::Schema(b"shop".to_vec()),
                Scope::Table(b"shop".to_vec(), b"t".to_vec())
            ]
        );
        let Verdict::Cacheable(p) = verdict(&c, "SELECT 1 /* WEICHE:CACHE */") else {
            panic!()
        };
        assert_eq!(p.ttl, Duration::from_secs(60));
        assert!(refused(&c, "/* weiche:nocache */ SELECT 1"));
        let rule = CacheRule {
            digest: None,
            text: None,
            user: None,
            schema: None,
            table: Some("shop.items".into()),
            ttl: Duration::from_secs(9),
            name: "cache rule 1".into(),
        };
        let c = config(vec![rule]);
        assert!(matches!(
            verdict(&c, "SELECT name FROM items WHERE id = 3"),
            Verdict::Cacheable(Plan { rule: Some(0), .. })
        ));
        assert_eq!(verdict(&c, "SELECT name FROM other"), Verdict::NotAsked);
    }

    #[test]
    fn uncacheable_classes() {
        let c = config(vec![]);
        for sql in [
            "SELECT NOW()",
            "SELECT * FROM t WHERE d > CURRENT_TIMESTAMP",
            "SELECT RAND()",
            "SELECT UUID()",
            "SELECT CURRENT_USER()",
            "SELECT @a",
            "SELECT @@sql_mode",
            "SELECT NEXTVAL(s)",
            "SELECT NEXT VALUE FOR s",
            "SELECT FOUND_ROWS()",
            "SELECT LAST_INSERT_ID()",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT a INTO @x FROM t",
            "SELECT * FROM information_schema.tables",
            "SELECT 1; SELECT 2",
            "SHOW TABLES",
            "INSERT INTO t VALUES (1)",
            "SELECT SQL_NO_CACHE * FROM t",
        ] {
            let hinted = format!("/* weiche:cache ttl=5 */ {sql}");
            assert!(refused(&c, &hinted), "{sql}");
        }
    }

    #[test]
    fn writes_bump_their_tables() {
        let s = written_scopes(b"UPDATE items SET a = 1", Some(b"shop"));
        assert_eq!(s, vec![Scope::Table(b"shop".to_vec(), b"items".to_vec())]);
        let s = written_scopes(b"CALL p()", Some(b"Shop"));
        assert_eq!(s, vec![Scope::Schema(b"shop".to_vec())]);
        assert_eq!(written_scopes(b"CALL p()", None), vec![Scope::All]);
    }
}
