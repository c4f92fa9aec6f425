//! What the monitor knows about each backend, as the router reads it: the live role and state
//! (atomics, read on every statement), which backend takes writes, and a report for people
//! (lag, GTID position, last check) that the admin interface and Lua show.

use super::gtid::GtidPos;
use super::table::BackendTable;
use crate::config::Role;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// A backend's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Takes its role's work.
    Up = 0,
    /// Failed its checks: no new work, commands in flight on it are given up.
    Down = 1,
    /// A replica too far behind, or whose replication stopped: no reads.
    Lagging = 2,
    /// Taken out by an operator: no new work; what runs finishes.
    Offline = 3,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Down,
            2 => State::Lagging,
            3 => State::Offline,
            _ => State::Up,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Lagging => "lagging",
            State::Offline => "offline",
        }
    }
}

/// The monitor's report on one backend, for people.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub lag_seconds: Option<f64>,
    pub lag_transactions: Option<u64>,
    /// The GTID position it has applied (replicas) or written (the primary).
    pub position: Option<String>,
    pub last_check: Option<SystemTime>,
    /// Why it is in its state ("SQL thread stopped", "connect: refused", ...).
    pub detail: String,
    /// State changes since start.
    pub transitions: u64,
}

/// One backend's live view.
#[derive(Debug)]
pub struct Live {
    role: AtomicU8,
    state: AtomicU8,
    /// Bumped whenever the backend goes down: pooled connections from before are not reused.
    pub epoch: AtomicU64,
    /// Bumped whenever the server's global variables change (seen by the monitor, or set
    /// through Weiche): pooled connections that logged in before carry the old defaults.
    globals: AtomicU64,
    /// The server's global wait_timeout and interactive_timeout in seconds (0: not known).
    wait_timeout: AtomicU64,
    interactive_timeout: AtomicU64,
    /// Wakes the monitor to read the globals again now (a SET GLOBAL went through Weiche).
    pub globals_reread: tokio::sync::Notify,
    report: Mutex<Report>,
    /// The GTID position it is known to have applied (from the monitor and from waits).
    known: Mutex<GtidPos>,
}

impl Live {
    pub fn new(role: Role) -> Live {
        Live {
            role: AtomicU8::new(role as u8),
            state: AtomicU8::new(State::Up as u8),
            epoch: AtomicU64::new(0),
            globals: AtomicU64::new(0),
            wait_timeout: AtomicU64::new(0),
            interactive_timeout: AtomicU64::new(0),
            globals_reread: tokio::sync::Notify::new(),
            report: Mutex::new(Report::default()),
            known: Mutex::new(GtidPos::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Why no backend takes writes now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoWriter {
    #[error("no primary ({0}); writes are refused until one is available")]
    Nobody(String),
    #[error("two primaries: {0}; refusing writes")]
    Several(String),
}

/// Which backend takes writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writer {
    One(usize),
    /// None: the reason.
    Nobody(String),
    /// Several writable servers: their addresses.
    Several(Vec<String>),
}

const NOBODY: usize = usize::MAX;
const SEVERAL: usize = usize::MAX - 1;

/// The table-wide part: the writer (an atomic for the query path, the details beside it).
#[derive(Debug)]
pub struct WriterSlot {
    index: AtomicUsize,
    detail: Mutex<Writer>,
}

impl WriterSlot {
    pub fn new(initial: Writer) -> WriterSlot {
        let s = WriterSlot {
            index: AtomicUsize::new(NOBODY),
            detail: Mutex::new(Writer::Nobody(String::new())),
        };
        s.set(initial);
        s
    }

    fn set(&self, w: Writer) {
        let index = match &w {
            Writer::One(i) => *i,
            Writer::Nobody(_) => NOBODY,
            Writer::Several(_) => SEVERAL,
        };
        *lock(&self.detail) = w;
        self.index.store(index, Ordering::Release);
    }
}

impl BackendTable {
    pub fn role(&self, i: usize) -> Role {
        if self.backends[i].live.role.load(Ordering::Relaxed) == Role::Primary as u8 {
            Role::Primary
        } else {
            Role::Replica
        }
    }

    pub fn set_role(&self, i: usize, role: Role) {
        let old = self.backends[i]
            .live
            .role
            .swap(role as u8, Ordering::Relaxed);
        if old != role as u8 {
            self.rotation_changed();
        }
    }

    pub fn state(&self, i: usize) -> State {
        State::from_u8(self.backends[i].live.state.load(Ordering::Relaxed))
    }

    /// Change a backend's state; a change is logged once and counted. True when it changed.
    pub fn set_state(&self, i: usize, state: State, detail: &str) -> bool {
        let b = &self.backends[i];
        let old = State::from_u8(b.live.state.swap(state as u8, Ordering::AcqRel));
        let mut r = lock(&b.live.report);
        r.detail = detail.to_string();
        if old == state {
            return false;
        }
        r.transitions += 1;
        self.rotation_changed();
        if state == State::Down {
            b.live.epoch.fetch_add(1, Ordering::AcqRel);
        }
        let role = self.role(i).as_str();
        let why = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        match state {
            State::Up => {
                tracing::info!(backend = %b.address, "{role} {}: {} -> up{why}", b.address, old.as_str())
            }
            _ => {
                tracing::warn!(backend = %b.address, "{role} {}: {} -> {}{why}", b.address, old.as_str(), state.as_str())
            }
        }
        true
    }

    /// Record a check's findings for people (and the known position for routing).
    pub fn report(&self, i: usize, f: impl FnOnce(&mut Report)) {
        let mut r = lock(&self.backends[i].live.report);
        f(&mut r);
        r.last_check = Some(SystemTime::now());
    }

    pub fn report_of(&self, i: usize) -> Report {
        lock(&self.backends[i].live.report).clone()
    }

    /// The backend that takes writes now.
    pub fn primary(&self) -> Result<usize, NoWriter> {
        match self.writer.index.load(Ordering::Acquire) {
            NOBODY | SEVERAL => Err(match &*lock(&self.writer.detail) {
                Writer::Several(a) => NoWriter::Several(a.join(" and ")),
                Writer::Nobody(why) => NoWriter::Nobody(self.explain_down(why)),
                Writer::One(_) => NoWriter::Nobody("changing".into()),
            }),
            // A writer the monitor took down: refused at once, not after a connect timeout.
            i if self.state(i) == State::Down => Err(NoWriter::Nobody(
                self.explain_down(&format!("{} is down", self.backends[i].address)),
            )),
            i => Ok(i),
        }
    }

    /// "A is down" with the monitor's reason for each down backend the text names, so that a
    /// refused client learns why (a TLS certificate, a refused connection, ...).
    fn explain_down(&self, why: &str) -> String {
        let mut out = why.to_string();
        for b in self.backends.iter() {
            let named = format!("{} is down", b.address);
            if out.contains(&named) {
                let detail = lock(&b.live.report).detail.clone();
                if !detail.is_empty() {
                    out = out.replace(&named, &format!("{named} ({detail})"));
                }
            }
        }
        out
    }

    pub fn writer(&self) -> Writer {
        lock(&self.writer.detail).clone()
    }

    /// Set the writer; a change is logged. True when it changed.
    pub fn set_writer(&self, w: Writer) -> bool {
        let old = self.writer();
        if old == w {
            return false;
        }
        let name = |w: &Writer| match w {
            Writer::One(i) => self.backends[*i].address.clone(),
            Writer::Nobody(_) => "nobody".to_string(),
            Writer::Several(a) => a.join(" and "),
        };
        match &w {
            Writer::One(_) => {
                tracing::warn!("writes now go to {} (were: {})", name(&w), name(&old))
            }
            Writer::Nobody(why) => tracing::error!(
                "no primary ({why}); refusing writes (were going to {})",
                name(&old)
            ),
            Writer::Several(a) => {
                tracing::error!("two primaries: {}; refusing writes", a.join(" and "))
            }
        }
        self.writer.set(w);
        true
    }

    /// Whether backend `i` is known to have applied `pos`.
    pub fn has_applied(&self, i: usize, pos: &GtidPos) -> bool {
        lock(&self.backends[i].live.known).covers(pos)
    }

    /// Backend `i` has applied at least `pos` (a wait on it succeeded).
    pub fn applied(&self, i: usize, pos: &GtidPos) {
        lock(&self.backends[i].live.known).merge(pos);
    }

    /// A backend that is up and known to have applied `pos` (when no primary can serve).
    pub fn applied_somewhere(&self, pos: &GtidPos) -> Option<usize> {
        (0..self.backends.len()).find(|&i| self.state(i) == State::Up && self.has_applied(i, pos))
    }

    /// The monitor read backend `i`'s position.
    pub fn set_known(&self, i: usize, pos: GtidPos) {
        *lock(&self.backends[i].live.known) = pos;
    }

    pub fn epoch(&self, i: usize) -> u64 {
        self.backends[i].live.epoch.load(Ordering::Acquire)
    }

    /// What backend `i`'s pooled connections are measured against before they are lent.
    pub fn generation(&self, i: usize) -> crate::backend::pool::Generation {
        let live = &self.backends[i].live;
        crate::backend::pool::Generation {
            down: live.epoch.load(Ordering::Acquire),
            globals: live.globals.load(Ordering::Acquire),
            server_wait_timeout: self.session_wait_timeout(i, false),
        }
    }

    /// What the monitor read of backend `i`'s global wait_timeout and interactive_timeout.
    pub fn set_session_timeouts(&self, i: usize, wait: u64, interactive: u64) {
        let live = &self.backends[i].live;
        live.wait_timeout.store(wait, Ordering::Release);
        live.interactive_timeout
            .store(interactive, Ordering::Release);
    }

    /// The wait_timeout a new session on backend `i` starts with, if the monitor knows it.
    pub fn session_wait_timeout(&self, i: usize, interactive: bool) -> Option<Duration> {
        let live = &self.backends[i].live;
        let t = if interactive {
            &live.interactive_timeout
        } else {
            &live.wait_timeout
        };
        Some(t.load(Ordering::Acquire))
            .filter(|&s| s > 0)
            .map(Duration::from_secs)
    }

    /// Backend `i`'s global variables changed: no connection that logged in before is lent to
    /// a session again.
    pub fn globals_changed(&self, i: usize) {
        self.backends[i].live.globals.fetch_add(1, Ordering::AcqRel);
        self.backends[i].live.globals_reread.notify_one();
    }
}
