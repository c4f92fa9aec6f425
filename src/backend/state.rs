//! Session state as data: the current schema, the session variables that differ from a fresh
//! connection's, and LAST_INSERT_ID(). A session keeps its state; each server connection knows
//! the state it is in (from the server's own session-track reports). Before a command runs on a
//! server connection, `plan` says what brings the connection to the session's state.

use crate::protocol::constants::status;
use crate::protocol::track::{Change, TrackedOk};
use std::collections::BTreeMap;

/// The state a statement's result may depend on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    pub schema: Option<Vec<u8>>,
    /// Session variables changed since login, as the server reported them (name -> value).
    pub vars: BTreeMap<Vec<u8>, Vec<u8>>,
    /// What LAST_INSERT_ID() returns.
    pub last_insert_id: u64,
}

/// Variables that are Weiche's own, change with every statement, or cannot be set back.
const NOT_CARRIED: &[&str] = &[
    "session_track_system_variables",
    "session_track_schema",
    "session_track_state_change",
    "session_track_transaction_info",
    "last_insert_id",
    "insert_id",
    "identity",
    "timestamp",
    "last_gtid",
    "rand_seed1",
    "rand_seed2",
    "warning_count",
    "error_count",
    "in_transaction",
    "pseudo_thread_id",
];

impl SessionState {
    /// Apply what an OK packet reported.
    pub fn apply(&mut self, ok: &TrackedOk) {
        if ok.last_insert_id != 0 {
            self.last_insert_id = ok.last_insert_id;
        }
        for c in &ok.changes {
            match c {
                Change::Variable { name, value } => {
                    let lower = name.to_ascii_lowercase();
                    if !NOT_CARRIED.iter().any(|n| n.as_bytes() == lower.as_slice()) {
                        self.vars.insert(lower, value.clone());
                    }
                }
                Change::Schema(s) => self.schema = Some(s.clone()),
                Change::State => {}
            }
        }
    }
}

/// What a server connection is in, beyond the state it shares with sessions.
#[derive(Debug, Clone)]
pub struct ConnState {
    pub session: SessionState,
    /// Status flags of the last OK/EOF.
    pub status: u16,
    /// Session state no tracker reports (user variables, temporary tables, locks, SQL-level
    /// PREPARE): the connection must be reset before another session uses it.
    pub untracked: Option<&'static str>,
    /// The session that used this connection last.
    pub owner: u32,
    /// The character-set variables right after login: what a reset must restore (a reset
    /// falls back to the server's defaults, not to the charset of the login).
    pub baseline: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            session: SessionState::default(),
            status: status::AUTOCOMMIT,
            untracked: None,
            owner: 0,
            baseline: Vec::new(),
        }
    }
}

impl ConnState {
    pub fn apply_ok(&mut self, ok: &TrackedOk) {
        self.status = ok.status;
        self.session.apply(ok);
    }

    pub fn in_transaction(&self) -> bool {
        self.status & status::IN_TRANS != 0 || self.status & status::AUTOCOMMIT == 0
    }
}

/// The commands that bring a server connection to a session's state.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// COM_RESET_CONNECTION first (the connection holds state another session left).
    pub reset: bool,
    /// COM_INIT_DB with this schema.
    pub init_db: Option<Vec<u8>>,
    /// One `SET SESSION a = .., b = ..` statement.
    pub set: Option<Vec<u8>>,
}

impl SyncPlan {
    pub fn is_empty(&self) -> bool {
        !self.reset && self.init_db.is_none() && self.set.is_none()
    }
}

/// What to send so that `conn` serves session `owner` in state `want`. `insert_id`: the
/// statement reads LAST_INSERT_ID(), so it must be carried too.
pub fn plan(want: &SessionState, owner: u32, conn: &ConnState, insert_id: bool) -> SyncPlan {
    let foreign = conn.owner != owner;
    let reset = (foreign && (conn.untracked.is_some() || conn.in_transaction()))
        || conn.session.vars.keys().any(|k| !want.vars.contains_key(k));
    // After a reset only the schema remains; otherwise compare with the state as it is.
    let after_reset;
    let have: &SessionState = if reset {
        after_reset = SessionState {
            schema: conn.session.schema.clone(),
            ..Default::default()
        };
        &after_reset
    } else {
        &conn.session
    };
    let mut assignments: Vec<(&[u8], &[u8])> = Vec::new();
    if reset {
        for (k, v) in &conn.baseline {
            if !want.vars.contains_key(k) {
                assignments.push((k, v));
            }
        }
    }
    for (k, v) in &want.vars {
        if have.vars.get(k) != Some(v) {
            assignments.push((k, v));
        }
    }
    let insert_id = (insert_id && have.last_insert_id != want.last_insert_id)
        .then(|| want.last_insert_id.to_string().into_bytes());
    if let Some(id) = &insert_id {
        assignments.push((b"last_insert_id", id));
    }
    let no_backslash_escapes = conn
        .session
        .vars
        .get(&b"sql_mode"[..])
        .is_some_and(|m| contains(m, b"NO_BACKSLASH_ESCAPES"));
    let set = set_statement(&assignments, no_backslash_escapes);
    let init_db = match &want.schema {
        Some(s) if reset || have.schema.as_ref() != Some(s) => Some(s.clone()),
        _ => None,
    };
    SyncPlan {
        reset,
        init_db,
        set,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `SET SESSION a = 1, b = 'x'`. Names come from the server's own reports; anything that is not
/// a plain identifier is left out rather than quoted into SQL.
fn set_statement(assignments: &[(&[u8], &[u8])], no_backslash_escapes: bool) -> Option<Vec<u8>> {
    let mut sql = b"SET SESSION ".to_vec();
    let mut first = true;
    for (name, value) in assignments {
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') {
            continue;
        }
        if !first {
            sql.extend_from_slice(b", ");
        }
        first = false;
        sql.extend_from_slice(name);
        sql.extend_from_slice(b" = ");
        let numeric = !value.is_empty()
            && value
                .iter()
                .enumerate()
                .all(|(i, b)| b.is_ascii_digit() || (*b == b'-' && i == 0) || *b == b'.');
        if numeric {
            sql.extend_from_slice(value);
        } else if value.is_empty() && *name == b"character_set_results" {
            sql.extend_from_slice(b"NULL");
        } else {
            sql.push(b'\'');
            for &b in value.iter() {
                match b {
                    b'\'' => sql.extend_from_slice(b"''"),
                    b'\\' if !no_backslash_escapes => sql.extend_from_slice(b"\\\\"),
                    _ => sql.push(b),
                }
            }
            sql.push(b'\'');
        }
    }
    (!first).then_some(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(vars: &[(&str, &str)], schema: Option<&str>) -> SessionState {
        SessionState {
            schema: schema.map(|s| s.as_bytes().to_vec()),
            vars: vars
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            last_insert_id: 0,
        }
    }

    #[test]
    fn only_differences_are_sent() {
        let want = state(
            &[("time_zone", "+05:30"), ("sql_mode", "ANSI")],
            Some("app"),
        );
        let conn = ConnState {
            session: state(&[("sql_mode", "ANSI")], Some("app")),
            owner: 1,
            ..Default::default()
        };
        let p = plan(&want, 2, &conn, false);
        assert!(!p.reset);
        assert_eq!(p.init_db, None);
        assert_eq!(
            p.set.as_deref(),
            Some(&b"SET SESSION time_zone = '+05:30'"[..])
        );
        assert!(plan(&conn.session, 2, &conn, false).is_empty());
    }

    #[test]
    fn foreign_state_is_reset_and_the_login_charset_restored() {
        let want = state(&[("max_join_size", "1000")], Some("app"));
        let conn = ConnState {
            session: state(&[("time_zone", "+01:00")], None),
            owner: 1,
            baseline: vec![(b"character_set_client".to_vec(), b"utf8mb4".to_vec())],
            ..Default::default()
        };
        let p = plan(&want, 2, &conn, false);
        assert!(p.reset);
        assert_eq!(p.init_db.as_deref(), Some(&b"app"[..]));
        assert_eq!(
            p.set.as_deref(),
            Some(&b"SET SESSION character_set_client = 'utf8mb4', max_join_size = 1000"[..])
        );
        let dirty = ConnState {
            untracked: Some("user variables"),
            owner: 1,
            ..Default::default()
        };
        assert!(plan(&SessionState::default(), 2, &dirty, false).reset);
        assert!(!plan(&SessionState::default(), 1, &dirty, false).reset);
    }

    #[test]
    fn values_are_quoted_safely() {
        let want = state(&[("sql_mode", "it's\\"), ("bad name", "x")], None);
        let p = plan(&want, 1, &ConnState::default(), false);
        assert_eq!(
            p.set.as_deref(),
            Some(&b"SET SESSION sql_mode = 'it''s\\\\'"[..])
        );
        let want = SessionState {
            last_insert_id: 42,
            ..Default::default()
        };
        let p = plan(&want, 1, &ConnState::default(), true);
        assert_eq!(
            p.set.as_deref(),
            Some(&b"SET SESSION last_insert_id = 42"[..])
        );
    }
}
