//! The statement classifier: where may a statement run? Reads may go to a replica; everything
//! else, and every read that depends on the session's own server (locks, LAST_INSERT_ID(),
//! FOUND_ROWS(), user-variable assignment, ...), goes to the primary. Each answer carries its
//! reason. When in doubt: primary.

use super::effects::{inner_statement, statement_effects, Effects};
use super::lexer::{tokenize, tokenize_in, Dialect, Kind, Token};

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A read that any replica may serve.
    Replica,
    /// The primary (or the server connection the session is pinned to).
    Primary,
}

/// A classification with its reason, for logs and EXPLAIN ROUTE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub target: Target,
    pub reason: &'static str,
    /// Whether the verdict is the lexer's or a hint's.
    pub source: Source,
}

/// Where a class comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The classifier read the statement.
    Classifier,
    /// A routing hint in a comment (`/* weiche:replica */`, MaxScale's `-- maxscale route to`).
    Hint,
}

const fn primary(reason: &'static str) -> Class {
    Class {
        target: Target::Primary,
        reason,
        source: Source::Classifier,
    }
}

/// Functions whose result depends on the server connection that runs them.
const SESSION_FUNCTIONS: &[(&str, &str)] = &[
    ("GET_LOCK", "lock function GET_LOCK()"),
    ("RELEASE_LOCK", "lock function RELEASE_LOCK()"),
    ("RELEASE_ALL_LOCKS", "lock function RELEASE_ALL_LOCKS()"),
    ("IS_USED_LOCK", "lock function IS_USED_LOCK()"),
    ("IS_FREE_LOCK", "lock function IS_FREE_LOCK()"),
    (
        "LAST_INSERT_ID",
        "LAST_INSERT_ID() belongs to the session's server",
    ),
    ("ROW_COUNT", "ROW_COUNT() belongs to the session's server"),
    (
        "FOUND_ROWS",
        "FOUND_ROWS() belongs to the server that ran SQL_CALC_FOUND_ROWS",
    ),
    ("NEXTVAL", "sequence function NEXTVAL()"),
    ("LASTVAL", "sequence function LASTVAL()"),
    ("SETVAL", "sequence function SETVAL()"),
];

const SESSION_SYSVARS: &[&str] = &["@@IDENTITY", "@@INSERT_ID", "@@LAST_INSERT_ID"];

/// What a read may see of earlier writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Any replica in rotation, however far behind (within max_replication_lag).
    Eventual,
    /// The session's own writes (read-your-writes).
    #[default]
    Session,
    /// Every write committed on the primary before the read began.
    Global,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Eventual => "eventual",
            Consistency::Session => "session",
            Consistency::Global => "global",
        }
    }
}

/// Where a COM_QUERY text may run, and what it does to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub class: Class,
    pub effects: Effects,
    /// A `/* weiche:consistency=... */` hint.
    pub consistency: Option<Consistency>,
    /// The hash of the statement's digest (statistics), from the same pass of the lexer.
    pub digest: u64,
}

impl Analysis {
    /// A command that is not SQL text and goes to the primary.
    pub fn primary(reason: &'static str) -> Analysis {
        Analysis {
            class: primary(reason),
            effects: Effects::default(),
            consistency: None,
            digest: 0,
        }
    }
}

/// Classify one COM_QUERY text and collect its effects, from one pass of the lexer.
/// Analyze a statement as MariaDB's defaults read it (see `analyze_in`).
pub fn analyze(sql: &[u8]) -> Analysis {
    analyze_in(sql, Dialect::default())
}

/// Analyze a statement as a server of `dialect` reads it. When the session's sql_mode is not
/// known and a backslash could end a string or not, the text is read both ways: when the two
/// readings differ, it is a write for the primary whose tables are unknown.
pub fn analyze_in(sql: &[u8], dialect: Dialect) -> Analysis {
    let tokens = tokenize_in(sql, dialect);
    if tokens.len() > super::lexer::MAX_TOKENS {
        // Too long to read whole: what the rest does is unknown.
        return analyze_prefix("a statement longer than Weiche reads (65536 tokens)");
    }
    let ambiguous = dialect.backslash_escapes.is_none() && sql.contains(&b'\\');
    if !ambiguous {
        let mut a = super::memo::analyze_by_shape(sql, &tokens, analyze_tokens);
        versioned_writes(sql, &mut a);
        return a;
    }
    // Two readings to compare: not remembered by shape (the shape is one reading's).
    let mut a = analyze_tokens(sql, &tokens);
    let literal = Dialect {
        backslash_escapes: Some(false),
        ..dialect
    };
    let other = analyze_tokens(sql, &tokenize_in(sql, literal));
    if other.class.target != a.class.target || other.effects != a.effects {
        a.class = primary("reads otherwise under sql_mode NO_BACKSLASH_ESCAPES");
        a.effects.writes = true;
        a.effects.writes_anywhere = true;
    }
    versioned_writes(sql, &mut a);
    a
}

pub(super) fn versioned_writes(sql: &[u8], a: &mut Analysis) {
    if a.effects.writes && (contains(sql, b"/*!") || contains(sql, b"/*M!")) {
        // Which tables a versioned comment names depends on the server: any may be written.
        a.effects.writes_anywhere = true;
    }
}

pub(super) fn analyze_tokens(sql: &[u8], tokens: &[Token]) -> Analysis {
    let mut effects = Effects::default();
    for s in tokens.split(|t| t.kind == Kind::Semicolon) {
        let toks: Vec<&Token> = s.iter().filter(|t| t.kind != Kind::Comment).collect();
        statement_effects(sql, &toks, &mut effects);
    }
    Analysis {
        class: classify_tokens(sql, tokens),
        effects,
        consistency: consistency_hint(sql, tokens),
        digest: super::digest::digest_hash_of(sql, tokens),
    }
}

/// A statement Weiche has only the start of (a command longer than one 16 MiB packet): it may
/// be anything, so it is a write for the primary that may touch any table.
pub fn analyze_prefix(reason: &'static str) -> Analysis {
    let mut a = Analysis::primary(reason);
    a.effects.writes = true;
    a.effects.writes_anywhere = true;
    a
}

/// `/* weiche:consistency=eventual|session|global */`.
fn consistency_hint(sql: &[u8], tokens: &[Token]) -> Option<Consistency> {
    const KEY: &[u8] = b"weiche:consistency=";
    tokens
        .iter()
        .filter(|t| t.kind == Kind::Comment)
        .find_map(|t| {
            let lower: Vec<u8> = t.text(sql).iter().map(u8::to_ascii_lowercase).collect();
            let at = lower.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
            let rest = &lower[at..];
            [
                Consistency::Eventual,
                Consistency::Session,
                Consistency::Global,
            ]
            .into_iter()
            .find(|c| rest.starts_with(c.as_str().as_bytes()))
        })
}

/// Classify one COM_QUERY text (possibly several statements).
pub fn classify(sql: &[u8]) -> Class {
    classify_tokens(sql, &tokenize(sql))
}

fn classify_tokens(sql: &[u8], tokens: &[Token]) -> Class {
    if let Some(hint) = hint(sql, tokens) {
        return hint;
    }
    let mut statements = tokens
        .split(|t| t.kind == Kind::Semicolon)
        .filter(|s| s.iter().any(|t| t.kind != Kind::Comment));
    let Some(first) = statements.next() else {
        return primary("empty statement");
    };
    let class = classify_one(sql, first);
    let mut any_more = false;
    for s in statements {
        any_more = true;
        if classify_one(sql, s).target == Target::Primary {
            return primary("multi-statement with a statement for the primary");
        }
    }
    if any_more && class.target == Target::Replica {
        return Class {
            target: Target::Replica,
            reason: "multi-statement of reads",
            source: Source::Classifier,
        };
    }
    class
}

/// `/* weiche:primary */`, `/* weiche:replica */`, MaxScale's `-- maxscale route to master|slave`.
fn hint(sql: &[u8], tokens: &[Token]) -> Option<Class> {
    for t in tokens.iter().filter(|t| t.kind == Kind::Comment) {
        let text = t.text(sql);
        let lower: Vec<u8> = text.iter().map(u8::to_ascii_lowercase).collect();
        if contains(&lower, b"weiche:primary") || contains(&lower, b"maxscale route to master") {
            return Some(Class {
                source: Source::Hint,
                ..primary("hint: primary")
            });
        }
        if contains(&lower, b"weiche:replica") || contains(&lower, b"maxscale route to slave") {
            return Some(Class {
                target: Target::Replica,
                reason: "hint: replica",
                source: Source::Hint,
            });
        }
    }
    None
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn classify_one(sql: &[u8], tokens: &[Token]) -> Class {
    let toks: Vec<&Token> = tokens.iter().filter(|t| t.kind != Kind::Comment).collect();
    if toks.iter().any(|t| t.kind == Kind::Unterminated) {
        return primary("statement the lexer cannot read");
    }
    match inner_statement(sql, &toks) {
        Some(inner) => classify_toks(sql, inner),
        None => classify_toks(sql, &toks),
    }
}

fn classify_toks(sql: &[u8], toks: &[&Token]) -> Class {
    if toks.iter().any(|t| t.kind == Kind::Unterminated) {
        return primary("statement the lexer cannot read");
    }
    let Some(first) = toks.first() else {
        return primary("empty statement");
    };
    let is_read = if first.is(sql, "SELECT") || first.kind == Kind::LParen {
        true
    } else if first.is(sql, "WITH") {
        // WITH ... SELECT is a read; WITH ... UPDATE/DELETE/INSERT is not.
        !toks.iter().any(|t| {
            ["UPDATE", "DELETE", "INSERT", "REPLACE"]
                .iter()
                .any(|k| t.is(sql, k))
        })
    } else if ["SHOW", "DESCRIBE", "DESC", "EXPLAIN", "DO", "HELP"]
        .iter()
        .any(|k| first.is(sql, k))
    {
        // EXPLAIN of anything is a read; SHOW/DESCRIBE/HELP are reads.
        return if first.is(sql, "DO") {
            read_exceptions(sql, toks).unwrap_or(READ)
        } else {
            READ
        };
    } else {
        false
    };
    if !is_read {
        return primary(if first.kind == Kind::Word {
            "not a read"
        } else {
            "statement the lexer cannot classify"
        });
    }
    read_exceptions(sql, toks).unwrap_or(READ)
}

/// Whether the classifier's primary verdict is binding: the statement writes, locks, takes a
/// sequence value or assigns a variable, so a `[[rules]]` target of "replica" must not move it
/// (a broad rule, say all of user "reporting", would otherwise send its writes and FOR UPDATE
/// reads to a replica).
pub fn binding_primary(a: &Analysis) -> bool {
    let e = &a.effects;
    a.class.target == Target::Primary
        && a.class.source == Source::Classifier
        && (e.writes
            || e.lock_tables
            || e.named_locks != 0
            || e.assigns_user_vars
            || !e.temp_created.is_empty()
            || a.class.reason.starts_with("locking read")
            || a.class.reason.starts_with("sequence value")
            || a.class.reason.starts_with("SELECT ... INTO")
            || a.class.reason.starts_with("user variable")
            || a.class.reason.starts_with("multi-statement with")
            || a.class.reason.starts_with("statement the lexer"))
}

const READ: Class = Class {
    target: Target::Replica,
    reason: "read",
    source: Source::Classifier,
};

/// Reads that must still run on the primary (or the session's current server connection).
fn read_exceptions(sql: &[u8], toks: &[&Token]) -> Option<Class> {
    for (i, t) in toks.iter().enumerate() {
        let next = toks.get(i + 1);
        match t.kind {
            Kind::Word => {
                if t.is(sql, "FOR") && next.is_some_and(|n| n.is(sql, "UPDATE")) {
                    return Some(primary("locking read (FOR UPDATE)"));
                }
                if t.is(sql, "FOR") && next.is_some_and(|n| n.is(sql, "SHARE")) {
                    return Some(primary("locking read (FOR SHARE)"));
                }
                if t.is(sql, "LOCK") && next.is_some_and(|n| n.is(sql, "IN")) {
                    return Some(primary("locking read (LOCK IN SHARE MODE)"));
                }
                if t.is(sql, "INTO") {
                    return Some(primary("SELECT ... INTO writes"));
                }
                if t.is(sql, "SQL_CALC_FOUND_ROWS") {
                    return Some(primary(
                        "SQL_CALC_FOUND_ROWS: FOUND_ROWS() will ask this server",
                    ));
                }
                if (t.is(sql, "NEXT") || t.is(sql, "PREVIOUS"))
                    && next.is_some_and(|n| n.is(sql, "VALUE"))
                {
                    return Some(primary("sequence value (NEXT/PREVIOUS VALUE FOR)"));
                }
                // sql_mode=ORACLE: s.nextval, s.currval.
                if (t.is(sql, "NEXTVAL") || t.is(sql, "CURRVAL"))
                    && i > 0
                    && toks[i - 1].kind == Kind::Dot
                {
                    return Some(primary("sequence value (.NEXTVAL/.CURRVAL)"));
                }
                if next.is_some_and(|n| n.kind == Kind::LParen) {
                    let name = t.text(sql);
                    if let Some((_, reason)) = SESSION_FUNCTIONS
                        .iter()
                        .find(|(f, _)| name.eq_ignore_ascii_case(f.as_bytes()))
                    {
                        return Some(primary(reason));
                    }
                }
            }
            Kind::SysVar => {
                let name = t.text(sql);
                let name = strip_scope(name);
                if SESSION_SYSVARS
                    .iter()
                    .any(|v| name.eq_ignore_ascii_case(&v.as_bytes()[2..]))
                {
                    return Some(primary(
                        "@@IDENTITY / @@INSERT_ID belong to the session's server",
                    ));
                }
            }
            Kind::Assign => return Some(primary("user variable assignment (:=)")),
            _ => {}
        }
    }
    None
}

/// `@@session.x` -> `x`, `@@x` -> `x`.
fn strip_scope(var: &[u8]) -> &[u8] {
    let v = &var[2.min(var.len())..];
    match v.iter().position(|&c| c == b'.') {
        Some(p) => &v[p + 1..],
        None => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(sql: &str) -> Target {
        classify(sql.as_bytes()).target
    }

    #[test]
    fn writes_behind_other_statements_and_readings_are_writes() {
        let mariadb = Dialect {
            version: 101114,
            backslash_escapes: Some(true),
        };
        for w in [
            "SET STATEMENT max_statement_time = 5 FOR UPDATE t SET a = 1",
            "ANALYZE UPDATE t SET a = 1",
            "EXECUTE IMMEDIATE 'DELETE FROM t'",
            "EXECUTE stmt",
            "SELECT 1 /*!50000 ; UPDATE t SET a = 1 */",
            "/*M!100000 UPDATE t SET a = 1 */",
            // The server skips the comment: the quote in it does not hide the UPDATE.
            "SELECT 1 /*!999999 ' */ ; UPDATE t SET a = 1; -- '",
        ] {
            let a = analyze_in(w.as_bytes(), mariadb);
            assert_eq!(a.class.target, Target::Primary, "{w}");
            assert!(a.effects.writes, "{w}");
        }
        assert!(analyze_in(b"EXECUTE stmt", mariadb).effects.writes_anywhere);
        let r = analyze_in(
            b"SET STATEMENT max_statement_time = 5 FOR SELECT * FROM t",
            mariadb,
        );
        assert_eq!(r.class.target, Target::Replica);
        assert!(!r.effects.writes);
        let r = analyze_in(b"SELECT 1 /*!999999 FOR UPDATE */", mariadb);
        assert_eq!(
            r.class.target,
            Target::Replica,
            "a comment for a newer server"
        );

        // Under NO_BACKSLASH_ESCAPES the string ends at \': an UPDATE follows.
        let sneaky = br"SELECT '\' ; UPDATE t SET a = 1 ; -- '";
        let known = |escapes| Dialect {
            backslash_escapes: Some(escapes),
            ..mariadb
        };
        assert!(analyze_in(sneaky, known(false)).effects.writes);
        assert!(!analyze_in(sneaky, known(true)).effects.writes);
        let unknown = analyze_in(
            sneaky,
            Dialect {
                backslash_escapes: None,
                ..mariadb
            },
        );
        assert_eq!(unknown.class.target, Target::Primary);
        assert!(unknown.effects.writes_anywhere);
        assert!(analyze_prefix("long").effects.writes_anywhere);
    }

    #[test]
    fn reads_go_to_replicas() {
        for sql in [
            "SELECT 1",
            "select * from t where a = 'FOR UPDATE'",
            "(SELECT 1) UNION (SELECT 2)",
            "SHOW TABLES",
            "DESCRIBE t",
            "EXPLAIN SELECT 1",
            "WITH c AS (SELECT 1) SELECT * FROM c",
            "DO 1",
            "HELP 'select'",
            "SELECT `for`, `into` FROM t",
            "SELECT @x",
            "SELECT 1; SELECT 2",
            "SELECT /*!40001 SQL_NO_CACHE */ * FROM t",
        ] {
            assert_eq!(target(sql), Target::Replica, "{sql}");
        }
    }

    #[test]
    fn writes_and_session_bound_reads_go_to_the_primary() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 1",
            "SET @x = 1",
            "BEGIN",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t LOCK IN SHARE MODE",
            "SELECT * FROM t /*M! FOR UPDATE */",
            "SELECT a INTO @x FROM t",
            "SELECT * FROM t INTO OUTFILE '/tmp/x'",
            "SELECT GET_LOCK('a', 1)",
            "select release_lock('a')",
            "SELECT IS_USED_LOCK('a')",
            "SELECT LAST_INSERT_ID()",
            "SELECT ROW_COUNT()",
            "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
            "SELECT FOUND_ROWS()",
            "SELECT NEXTVAL(s)",
            "SELECT NEXT VALUE FOR s",
            "SELECT @@IDENTITY",
            "SELECT @@session.insert_id",
            "SELECT @x := 1",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "WITH c AS (SELECT 1) UPDATE t SET a = 1",
            "SELECT 'unterminated",
            "",
            "-- only a comment\n",
            "+++",
        ] {
            assert_eq!(target(sql), Target::Primary, "{sql}");
        }
    }

    #[test]
    fn consistency_hints() {
        let c = |s: &str| analyze(s.as_bytes()).consistency;
        assert_eq!(
            c("/* weiche:consistency=eventual */ SELECT 1"),
            Some(Consistency::Eventual)
        );
        assert_eq!(
            c("SELECT 1 /* Weiche:Consistency=GLOBAL */"),
            Some(Consistency::Global)
        );
        assert_eq!(c("SELECT 'weiche:consistency=global'"), None);
        assert_eq!(c("/* weiche:consistency=strong */ SELECT 1"), None);
    }

    #[test]
    fn hints_win_and_reasons_are_given() {
        assert_eq!(target("/* weiche:primary */ SELECT 1"), Target::Primary);
        assert_eq!(
            target("SELECT 1 -- maxscale route to master"),
            Target::Primary
        );
        assert_eq!(
            target("/* weiche:replica */ SELECT * FROM t"),
            Target::Replica
        );
        assert_eq!(
            classify(b"SELECT LAST_INSERT_ID()").reason,
            "LAST_INSERT_ID() belongs to the session's server"
        );
        assert_eq!(classify(b"SELECT 1").reason, "read");
    }

    #[test]
    fn a_statement_too_long_to_read_whole_is_a_write_anywhere() {
        let mut sql = b"SELECT 1".to_vec();
        for _ in 0..super::super::lexer::MAX_TOKENS {
            sql.extend_from_slice(b",1");
        }
        sql.extend_from_slice(b"; DELETE FROM t");
        let a = analyze(&sql);
        assert_eq!(a.class.target, Target::Primary);
        assert!(a.effects.writes && a.effects.writes_anywhere);
        let short = analyze(&sql[..1000]);
        assert_eq!(short.class.target, Target::Replica);
    }
}
