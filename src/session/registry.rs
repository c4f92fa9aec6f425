//! Live sessions by Weiche connection id. Clients only ever see Weiche's ids (in the greeting);
//! KILL needs the backend and thread id of the server connection behind one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What other sessions may know about a session.
#[derive(Debug, Default)]
pub struct SessionHandle {
    /// (backend address, backend thread id) of the current server connection.
    server: Mutex<Option<(String, u32)>>,
    /// Woken by KILL CONNECTION: the session closes its client.
    pub killed: Notify,
}

impl SessionHandle {
    pub fn set_server(&self, server: Option<(String, u32)>) {
        if let Ok(mut s) = self.server.lock() {
            *s = server;
        }
    }

    pub fn server(&self) -> Option<(String, u32)> {
        self.server.lock().ok().and_then(|s| s.clone())
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

    pub fn len(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
