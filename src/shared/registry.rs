//! Live sessions by Weiche connection id. Clients only ever see Weiche's ids (in the greeting);
//! KILL needs the backend and thread id of the server connection behind one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What other sessions may know about a session.
#[derive(Debug, Default)]
pub struct SessionHandle {
    /// (backend address, backend thread id) of the current server connection.
    /// The backend (its index in the backend table) and thread id of the server connection the
    /// session holds: an index, not the address, because this is set for every statement.
    server: Mutex<Option<(usize, u32)>>,
    /// Woken by KILL CONNECTION: the session closes its client.
    pub killed: Notify,
    /// Client address, user, database: set at login, for the admin port's SHOW SESSIONS.
    info: Mutex<(String, String, String)>,
    /// The command running now: since when, and its first bytes.
    busy: Mutex<Busy>,
    /// Why the session holds its server connection ("" when nothing does).
    pins: Mutex<String>,
}

/// A command in progress (no allocation per command: the text is cut to a fixed buffer).
#[derive(Debug, Clone, Copy)]
pub struct Busy {
    pub since: Option<std::time::Instant>,
    text: [u8; 64],
    len: u8,
}

impl Default for Busy {
    fn default() -> Self {
        Busy {
            since: None,
            text: [0; 64],
            len: 0,
        }
    }
}

impl Busy {
    /// The command's first bytes as SHOW SESSIONS shows them: a statement with a password in
    /// it is shown as its digest (see `logging::statement_text`).
    pub fn text(&self) -> String {
        crate::logging::statement_text(&self.text[..usize::from(self.len)])
    }
}

impl SessionHandle {
    pub fn set_server(&self, server: Option<(usize, u32)>) {
        if let Ok(mut s) = self.server.lock() {
            *s = server;
        }
    }

    pub fn server(&self) -> Option<(usize, u32)> {
        self.server.lock().ok().and_then(|s| *s)
    }

    pub fn set_info(&self, client: String, user: String, db: String) {
        if let Ok(mut i) = self.info.lock() {
            *i = (client, user, db);
        }
    }

    pub fn info(&self) -> (String, String, String) {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// A command starts: remember its first bytes (a query's text).
    pub fn begin(&self, payload: &[u8]) {
        if let Ok(mut b) = self.busy.lock() {
            let text = match payload.split_first() {
                Some((&3, sql)) => sql,
                Some((code, _)) => std::slice::from_ref(code),
                None => &[],
            };
            let n = text.len().min(b.text.len());
            b.text[..n].copy_from_slice(&text[..n]);
            b.len = n as u8;
            b.since = Some(std::time::Instant::now());
        }
    }

    pub fn end(&self) {
        if let Ok(mut b) = self.busy.lock() {
            b.since = None;
        }
    }

    pub fn set_pins(&self, pins: &str) {
        if let Ok(mut p) = self.pins.lock() {
            pins.clone_into(&mut p);
        }
    }

    pub fn pins(&self) -> String {
        self.pins.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn busy(&self) -> Busy {
        self.busy.lock().map(|b| *b).unwrap_or_default()
    }
}

/// Touched at connect, disconnect and KILL only; never on the query path.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u32, Arc<SessionHandle>>>,
}

impl Registry {
    pub fn register(&self, id: u32) -> Arc<SessionHandle> {
        let h = Arc::new(SessionHandle::default());
        if let Ok(mut m) = self.sessions.lock() {
            m.insert(id, h.clone());
        }
        h
    }

    pub fn unregister(&self, id: u32) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(&id);
        }
    }

    pub fn get(&self, id: u32) -> Option<Arc<SessionHandle>> {
        self.sessions.lock().ok().and_then(|m| m.get(&id).cloned())
    }

    /// Every live session, by id.
    pub fn list(&self) -> Vec<(u32, Arc<SessionHandle>)> {
        let mut v: Vec<(u32, Arc<SessionHandle>)> = self
            .sessions
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
