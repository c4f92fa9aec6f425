//! What a statement does to the session beyond its result: it opens or ends a reason to stay
//! on one server connection (table locks, temporary tables, named locks, user variables, XA,
//! SQL-level PREPARE), or it depends on the previous statement's server (FOUND_ROWS(),
//! ROW_COUNT(), SHOW WARNINGS) or on LAST_INSERT_ID().

use super::lexer::{Kind, Token};

/// The session-level effects of one COM_QUERY text (all its statements together).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// LOCK TABLES, FLUSH TABLES ... WITH READ LOCK.
    pub lock_tables: bool,
    /// UNLOCK TABLES.
    pub unlock_tables: bool,
    /// CREATE TEMPORARY TABLE names.
    pub temp_created: Vec<Vec<u8>>,
    /// DROP [TEMPORARY] TABLE names.
    pub tables_dropped: Vec<Vec<u8>>,
    /// GET_LOCK() calls, RELEASE_LOCK() calls, RELEASE_ALL_LOCKS().
    pub named_locks: i32,
    pub release_all_locks: bool,
    /// Assigns user variables (SET @x, :=, INTO @x).
    pub assigns_user_vars: bool,
    /// State the trackers do not report and Weiche cannot carry (SQL PREPARE, HANDLER,
    /// SET ROLE, SET TRANSACTION for the next transaction): the reason.
    pub untracked: Option<&'static str>,
    /// XA START / XA BEGIN, and XA COMMIT / XA ROLLBACK.
    pub xa_start: bool,
    pub xa_end: bool,
    /// START TRANSACTION READ ONLY.
    pub read_only_transaction: bool,
    /// Reads the previous statement's results (FOUND_ROWS(), ROW_COUNT(), SHOW WARNINGS).
    pub needs_previous: bool,
    /// Reads LAST_INSERT_ID() / @@identity.
    pub needs_insert_id: bool,
    /// Changes data or schema (what read-your-writes waits for).
    pub writes: bool,
    /// SELECT SQL_CALC_FOUND_ROWS: FOUND_ROWS() will ask its server.
    pub calc_found_rows: bool,
    /// ROLLBACK of the whole transaction (not to a savepoint): its writes never happened.
    pub rollback: bool,
    /// SET GLOBAL / SET @@global.x: sessions that log in from now on start from other values.
    pub sets_globals: bool,
    /// A write whose tables the text does not name (EXECUTE of a prepared statement, EXECUTE
    /// IMMEDIATE, CALL, a statement longer than Weiche reads, text the server may read
    /// otherwise than Weiche): any cached result may be stale after it.
    pub writes_anywhere: bool,
}

/// The statement another one runs: `SET STATEMENT var = v, ... FOR <statement>` and MariaDB's
/// `ANALYZE [FORMAT = JSON] <statement>` (which executes it). None for anything else (also
/// for ANALYZE TABLE, which changes no data).
pub fn inner_statement<'t>(sql: &[u8], toks: &'t [&'t Token]) -> Option<&'t [&'t Token]> {
    let first = toks.first()?;
    if first.is(sql, "SET") && word(sql, toks.get(1), "STATEMENT") {
        let at = toks.iter().skip(2).position(|t| t.is(sql, "FOR"))? + 2;
        return toks.get(at + 1..).filter(|r| !r.is_empty());
    }
    if first.is(sql, "ANALYZE") {
        let at = toks.iter().take(6).position(|t| {
            t.kind == Kind::LParen
                || ["SELECT", "WITH", "UPDATE", "DELETE", "INSERT", "REPLACE"]
                    .iter()
                    .any(|k| t.is(sql, k))
        })?;
        return toks.get(at..);
    }
    None
}

const WRITES: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "REPLACE", "LOAD", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "RENAME", "CALL", "GRANT", "REVOKE", "OPTIMIZE", "IMPORT",
];

fn word(sql: &[u8], t: Option<&&Token>, kw: &str) -> bool {
    t.is_some_and(|t| t.is(sql, kw))
}

fn name_at(sql: &[u8], toks: &[&Token], mut i: usize) -> Option<(Vec<u8>, usize)> {
    // db.name -> name
    let mut name = None;
    while let Some(t) = toks.get(i) {
        match t.kind {
            Kind::Word => name = Some(t.text(sql).to_vec()),
            Kind::QuotedIdent => {
                let s = t.text(sql);
                name = Some(s[1..s.len().saturating_sub(1).max(1)].to_vec());
            }
            _ => break,
        }
        if toks.get(i + 1).is_some_and(|d| d.kind == Kind::Dot) {
            i += 2;
        } else {
            return name.map(|n| (n, i + 1));
        }
    }
    name.map(|n| (n, i))
}

/// Effects of one statement's tokens (comments removed), added to `e`.
pub fn statement_effects(sql: &[u8], toks: &[&Token], e: &mut Effects) {
    if let Some(inner) = inner_statement(sql, toks) {
        return statement_effects(sql, inner, e);
    }
    let Some(first) = toks.first() else { return };
    let at = |i: usize| toks.get(i);
    if WRITES.iter().any(|w| first.is(sql, w))
        || first.is(sql, "WITH")
            && toks
                .iter()
                .any(|t| ["UPDATE", "DELETE", "INSERT"].iter().any(|w| t.is(sql, w)))
    {
        e.writes = true;
    }
    if toks.iter().any(|t| t.is(sql, "SQL_CALC_FOUND_ROWS")) {
        e.calc_found_rows = true;
    }
    if first.is(sql, "LOCK") && (word(sql, at(1), "TABLES") || word(sql, at(1), "TABLE")) {
        e.lock_tables = true;
    }
    if first.is(sql, "FLUSH") && toks.iter().any(|t| t.is(sql, "LOCK")) {
        e.lock_tables = true;
    }
    if first.is(sql, "UNLOCK") {
        e.unlock_tables = true;
    }
    if first.is(sql, "CREATE") {
        if let Some(p) = toks.iter().position(|t| t.is(sql, "TEMPORARY")) {
            if word(sql, at(p + 1), "TABLE") {
                let mut i = p + 2;
                if word(sql, at(i), "IF") {
                    i += 3;
                }
                if let Some((n, _)) = name_at(sql, toks, i) {
                    e.temp_created.push(n);
                }
            }
        }
    }
    if first.is(sql, "DROP") {
        let mut i = 1;
        if word(sql, at(i), "TEMPORARY") {
            i += 1;
        }
        if word(sql, at(i), "TABLE") || word(sql, at(i), "TABLES") {
            i += 1;
            if word(sql, at(i), "IF") {
                i += 2;
            }
            while let Some((n, next)) = name_at(sql, toks, i) {
                e.tables_dropped.push(n);
                if at(next).is_some_and(|t| t.kind == Kind::Comma) {
                    i = next + 1;
                } else {
                    break;
                }
            }
        }
    }
    if first.is(sql, "ROLLBACK") && !toks.iter().any(|t| t.is(sql, "TO")) {
        e.rollback = true;
    }
    if first.is(sql, "XA") {
        if word(sql, at(1), "START") || word(sql, at(1), "BEGIN") {
            e.xa_start = true;
        }
        if word(sql, at(1), "COMMIT") || word(sql, at(1), "ROLLBACK") {
            e.xa_end = true;
        }
    }
    if first.is(sql, "START")
        && word(sql, at(1), "TRANSACTION")
        && toks
            .windows(2)
            .any(|w| w[0].is(sql, "READ") && w[1].is(sql, "ONLY"))
    {
        e.read_only_transaction = true;
    }
    if first.is(sql, "PREPARE") || first.is(sql, "EXECUTE") || first.is(sql, "DEALLOCATE") {
        e.untracked = Some("SQL-level prepared statement (PREPARE)");
    }
    // What these run is not (all) in the text Weiche reads: EXECUTE IMMEDIATE's may be an
    // expression, a compound statement (BEGIN NOT ATOMIC ... END) holds any statements and its
    // own semicolons, BINLOG replays events.
    let compound = first.is(sql, "BEGIN") && word(sql, at(1), "NOT");
    if first.is(sql, "EXECUTE") || first.is(sql, "CALL") || first.is(sql, "BINLOG") || compound {
        e.writes = true;
        e.writes_anywhere = true;
    }
    if compound {
        e.untracked = Some("compound statement (BEGIN NOT ATOMIC)");
    }
    if first.is(sql, "HANDLER") {
        e.untracked = Some("HANDLER");
    }
    if first.is(sql, "SET") {
        if word(sql, at(1), "ROLE") || word(sql, at(1), "DEFAULT") {
            e.untracked = Some("SET ROLE");
        }
        if word(sql, at(1), "TRANSACTION") {
            e.untracked = Some("SET TRANSACTION (applies to the next transaction)");
        }
        if toks.iter().any(|t| {
            t.is(sql, "GLOBAL")
                || t.kind == Kind::SysVar
                    && t.text(sql)
                        .get(2..9)
                        .is_some_and(|g| g.eq_ignore_ascii_case(b"global."))
        }) {
            e.sets_globals = true;
            // Its own session keeps the values it began with, as on a direct connection; a
            // connection borrowed from now on would start from the new globals.
            e.untracked = e.untracked.or(Some("SET GLOBAL"));
        }
        if at(1).is_some_and(|t| t.kind == Kind::UserVar)
            || toks
                .windows(2)
                .any(|w| w[0].kind == Kind::Comma && w[1].kind == Kind::UserVar)
        {
            e.assigns_user_vars = true;
        }
    }
    if first.is(sql, "SHOW")
        && (toks
            .iter()
            .any(|t| t.is(sql, "WARNINGS") || t.is(sql, "ERRORS")))
    {
        e.needs_previous = true;
    }
    if first.is(sql, "GET") && word(sql, at(1), "DIAGNOSTICS") {
        e.needs_previous = true;
    }
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            Kind::Assign => e.assigns_user_vars = true,
            Kind::Word
                if t.is(sql, "INTO") && at(i + 1).is_some_and(|n| n.kind == Kind::UserVar) =>
            {
                e.assigns_user_vars = true
            }
            Kind::Word if at(i + 1).is_some_and(|n| n.kind == Kind::LParen) => {
                let f = t.text(sql);
                let is = |n: &str| f.eq_ignore_ascii_case(n.as_bytes());
                if is("GET_LOCK") {
                    e.named_locks += 1;
                } else if is("RELEASE_LOCK") {
                    e.named_locks -= 1;
                } else if is("RELEASE_ALL_LOCKS") {
                    e.release_all_locks = true;
                } else if is("FOUND_ROWS") || is("ROW_COUNT") {
                    e.needs_previous = true;
                } else if is("LAST_INSERT_ID") {
                    e.needs_insert_id = true;
                }
            }
            Kind::SysVar => {
                let v = t.text(sql).to_ascii_lowercase();
                if v.ends_with(b"identity") || v.ends_with(b"last_insert_id") {
                    e.needs_insert_id = true;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lexer::tokenize;

    fn effects(sql: &str) -> Effects {
        let tokens = tokenize(sql.as_bytes());
        let toks: Vec<&Token> = tokens.iter().filter(|t| t.kind != Kind::Comment).collect();
        let mut e = Effects::default();
        statement_effects(sql.as_bytes(), &toks, &mut e);
        e
    }

    #[test]
    fn pins_begin_and_end() {
        assert!(effects("LOCK TABLES t WRITE").lock_tables);
        assert!(effects("FLUSH TABLES WITH READ LOCK").lock_tables);
        assert!(effects("unlock tables").unlock_tables);
        assert_eq!(
            effects("CREATE TEMPORARY TABLE IF NOT EXISTS `tmp` (a int)").temp_created,
            vec![b"tmp".to_vec()]
        );
        assert_eq!(
            effects("DROP TEMPORARY TABLE IF EXISTS db.a, `b`").tables_dropped,
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(effects("SELECT GET_LOCK('x', 1)").named_locks, 1);
        assert_eq!(effects("SELECT RELEASE_LOCK('x')").named_locks, -1);
        assert!(effects("SET @a = 1").assigns_user_vars);
        assert!(effects("SET NAMES utf8, @a = 1").assigns_user_vars);
        assert!(effects("SELECT a INTO @x FROM t").assigns_user_vars);
        assert!(effects("SELECT @a := 2").assigns_user_vars);
        assert!(!effects("SELECT @a").assigns_user_vars);
        assert!(effects("XA START 'x'").xa_start);
        assert!(effects("ROLLBACK").rollback);
        assert!(effects("rollback work").rollback);
        assert!(!effects("ROLLBACK TO SAVEPOINT a").rollback);
        assert!(effects("START TRANSACTION READ ONLY").read_only_transaction);
        assert!(effects("PREPARE s FROM 'SELECT 1'").untracked.is_some());
        assert!(effects("SET GLOBAL max_allowed_packet = 1 << 24").sets_globals);
        for w in [
            "SET STATEMENT max_statement_time = 1 FOR UPDATE t SET a = 1",
            "SET STATEMENT sql_mode = 'ANSI', foreign_key_checks = 0 FOR DELETE FROM t",
            "ANALYZE UPDATE t SET a = 1",
            "ANALYZE FORMAT = JSON DELETE FROM t",
            "EXECUTE IMMEDIATE 'UPDATE t SET a = 1'",
            "EXECUTE s USING @a",
            "CALL p()",
        ] {
            assert!(effects(w).writes, "{w}");
        }
        assert!(effects("EXECUTE s").writes_anywhere);
        assert!(!effects("ANALYZE SELECT * FROM t").writes);
        assert!(!effects("ANALYZE TABLE t").writes);
        assert!(!effects("SET STATEMENT max_statement_time = 1 FOR SELECT 1").writes);
        assert!(effects("set @@Global.sql_mode = ''").sets_globals);
        assert!(!effects("SET @@session.sql_mode = ''").sets_globals);
        assert!(!effects("SET sql_mode = 'ANSI'").sets_globals);
    }

    #[test]
    fn dependencies_on_the_previous_statement() {
        assert!(effects("SELECT FOUND_ROWS()").needs_previous);
        assert!(effects("SHOW WARNINGS").needs_previous);
        assert!(effects("SHOW COUNT(*) WARNINGS").needs_previous);
        assert!(!effects("SHOW TABLES").needs_previous);
        assert!(effects("SELECT LAST_INSERT_ID()").needs_insert_id);
        assert!(effects("SELECT @@IDENTITY").needs_insert_id);
    }
}
