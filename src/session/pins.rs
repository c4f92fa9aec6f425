//! Pins: the reasons a session must stay on its current server connection for now. Each begins
//! with a statement and ends when its reason ends (UNLOCK TABLES, the last temporary table
//! dropped, the last named lock released, the cursor closed, ...). Transactions are a pin too,
//! read from the server's status flags.

use crate::protocol::track::Change;
use crate::sql::Effects;

/// Session variables the server reports but Weiche does not carry to other connections
/// (`backend::state`): set by a session, they stay with its connection.
const STAYS_ON_THE_CONNECTION: &[(&str, &str)] = &[
    ("timestamp", "SET timestamp"),
    ("insert_id", "SET insert_id"),
    ("rand_seed1", "SET rand_seed"),
    ("rand_seed2", "SET rand_seed"),
    ("pseudo_thread_id", "SET pseudo_thread_id"),
];

/// What the server said changed in a session that Weiche did not record from the statement's
/// text: the session must keep that connection, and nobody else may get it unreset. The
/// server's report is the ground truth: a stored procedure's temporary tables and user
/// variables, SET timestamp, turning session tracking off.
pub fn unrecorded_change(changes: &[Change], e: &Effects) -> Option<&'static str> {
    for c in changes {
        if let Change::Variable { name, .. } = c {
            let name = name.to_ascii_lowercase();
            if let Some((_, why)) = STAYS_ON_THE_CONNECTION
                .iter()
                .find(|(n, _)| n.as_bytes() == name.as_slice())
            {
                return Some(why);
            }
            if name.starts_with(b"session_track_") {
                return Some("session tracking changed");
            }
        }
    }
    if !changes.contains(&Change::State) {
        return None;
    }
    // A variable or the schema explains "state changed" (SET NAMES, USE); the statement's own
    // effects explain the rest, unless what ran is not in the text (CALL, EXECUTE).
    let named = changes.iter().any(|c| !matches!(c, Change::State));
    let explained = !e.temp_created.is_empty()
        || !e.tables_dropped.is_empty()
        || e.assigns_user_vars
        || e.untracked.is_some()
        || e.named_locks != 0
        || e.release_all_locks
        || e.lock_tables
        || e.unlock_tables
        || e.xa_start
        || e.xa_end;
    if e.writes_anywhere || !(named || explained) {
        return Some("session state the server reported (from a procedure or EXECUTE)");
    }
    None
}

#[derive(Debug, Clone, Default)]
pub struct Pins {
    pub table_locks: bool,
    pub temp_tables: Vec<Vec<u8>>,
    pub named_locks: i32,
    pub user_vars: bool,
    pub xa: bool,
    pub untracked: Option<&'static str>,
    /// Client statement ids with an open cursor.
    pub cursors: Vec<u32>,
    /// Client statement ids with long data sent and not yet executed.
    pub long_data: Vec<u32>,
    /// pool_mode = "session": one connection for the session's life.
    pub session_mode: bool,
}

/// Which reasons a session has (not their text): what SHOW SESSIONS was last told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shown {
    flags: u16,
    untracked: Option<&'static str>,
}

impl Pins {
    /// The reasons `reasons` would give, with `extra` bits of the caller's (the transaction).
    pub fn shown(&self, extra: u16) -> Shown {
        let bits = [
            self.session_mode,
            self.table_locks,
            !self.temp_tables.is_empty(),
            self.named_locks > 0,
            self.user_vars,
            self.xa,
            !self.cursors.is_empty(),
            !self.long_data.is_empty(),
        ];
        let flags = bits
            .iter()
            .enumerate()
            .fold(extra << 8, |f, (i, &b)| f | (u16::from(b) << i));
        Shown {
            flags,
            untracked: self.untracked,
        }
    }

    /// What lived on a server connection is gone with it; the session's pool mode stays.
    pub fn clear_keeping_mode(&mut self) {
        *self = Pins {
            session_mode: self.session_mode,
            ..Default::default()
        };
    }

    /// Apply a statement's effects once it has run (`ok`: it succeeded).
    pub fn apply(&mut self, e: &Effects, ok: bool) {
        if e.unlock_tables {
            self.table_locks = false;
        }
        if e.release_all_locks {
            self.named_locks = 0;
        }
        if e.xa_end {
            self.xa = false;
        }
        if !e.tables_dropped.is_empty() {
            self.temp_tables
                .retain(|t| !e.tables_dropped.iter().any(|d| d == t));
        }
        if !ok {
            // A failed GET_LOCK or LOCK TABLES holds nothing; a failed RELEASE_LOCK changes
            // nothing either. Keep the pins as they were.
            return;
        }
        if e.lock_tables {
            self.table_locks = true;
        }
        self.named_locks = (self.named_locks + e.named_locks).max(0);
        self.temp_tables.extend(e.temp_created.iter().cloned());
        if e.assigns_user_vars {
            self.user_vars = true;
        }
        if e.xa_start {
            self.xa = true;
        }
        if let Some(u) = e.untracked {
            self.untracked = Some(u);
        }
    }

    /// Why the session is pinned (besides a transaction), for EXPLAIN ROUTE and logs.
    pub fn reasons(&self) -> Vec<&'static str> {
        let mut r = Vec::new();
        if self.session_mode {
            r.push("pool_mode = session");
        }
        if self.table_locks {
            r.push("LOCK TABLES");
        }
        if !self.temp_tables.is_empty() {
            r.push("temporary tables");
        }
        if self.named_locks > 0 {
            r.push("named lock (GET_LOCK)");
        }
        if self.user_vars {
            r.push("user variables");
        }
        if self.xa {
            r.push("XA transaction");
        }
        if let Some(u) = self.untracked {
            r.push(u);
        }
        if !self.cursors.is_empty() {
            r.push("open cursor");
        }
        if !self.long_data.is_empty() {
            r.push("prepared statement long data");
        }
        r
    }

    pub fn any(&self) -> bool {
        self.session_mode
            || self.table_locks
            || !self.temp_tables.is_empty()
            || self.named_locks > 0
            || self.user_vars
            || self.xa
            || self.untracked.is_some()
            || !self.cursors.is_empty()
            || !self.long_data.is_empty()
    }

    /// State that stays on the server connection after the pins end and that another session
    /// must not see: the connection is reset before it is lent again.
    pub fn leaves_untracked_state(&self) -> Option<&'static str> {
        if self.user_vars {
            Some("user variables")
        } else if !self.temp_tables.is_empty() {
            Some("temporary tables")
        } else if self.named_locks > 0 {
            Some("named locks")
        } else if self.table_locks {
            Some("table locks")
        } else {
            self.untracked
        }
    }
}
