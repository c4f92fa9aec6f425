//! Pins: the reasons a session must stay on its current server connection for now. Each begins
//! with a statement and ends when its reason ends (UNLOCK TABLES, the last temporary table
//! dropped, the last named lock released, the cursor closed, ...). Transactions are a pin too,
//! read from the server's status flags.

use crate::sql::Effects;

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

impl Pins {
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
