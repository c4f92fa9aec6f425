//! Pools of server connections, one set per worker thread. A session lives on one worker for its
//! whole life, and so do the connections it borrows: no lock and no cross-thread wakeup on the
//! query path. A backend's `max_connections` is shared out between the workers.
//!
//! Connections are pooled per backend and per key (user, login charset, response-shaping
//! capabilities): any connection with the same key can serve any session with that key, once
//! brought to the session's state (see `state`).

use super::connection::{BackendError, LoginParams, ServerConnection};
pub use crate::config::PoolSettings;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Which connections can stand in for each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub user: String,
    /// The account's identity: another password, host entry or set of grants is another pool.
    pub identity: u64,
    pub charset: u8,
    pub capabilities: u32,
    pub mariadb_caps: u32,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("too many connections to backend {address} (max {max} per worker); try again")]
    Exhausted { address: String, max: usize },
}

/// What a backend's idle connections are measured against when one is lent: a connection
/// opened before the backend last went down (`down`) is not reused, nor one that logged in
/// before the server's global variables last changed (`globals`: its session defaults are the
/// old globals, which a new session must not inherit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generation {
    pub down: u64,
    pub globals: u64,
    /// The server's wait_timeout: a connection idle nearly that long is about to be closed
    /// by its server, perhaps while a command is on its way.
    pub server_wait_timeout: Option<Duration>,
}

/// A server connection lent out by a pool, with the pool's bookkeeping beside it: which
/// connections it can stand in for, its place in the worker's count, the backend's generation
/// when it was opened, and when that was (`pool.max_lifetime`). Sessions use it as the
/// connection it wraps.
#[derive(Debug)]
pub struct Pooled {
    conn: ServerConnection,
    key: PoolKey,
    _slot: Slot,
    generation: Generation,
    born: Instant,
}

impl std::ops::Deref for Pooled {
    type Target = ServerConnection;
    fn deref(&self) -> &ServerConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut ServerConnection {
        &mut self.conn
    }
}

struct Idle {
    conn: Box<Pooled>,
    since: Instant,
}

struct BackendPool {
    /// Connections open on this worker (idle or lent out).
    open: usize,
    idle: Vec<Idle>,
    waiters: Arc<Notify>,
    /// The whole process's counts for this backend, and what this worker last added to them.
    counts: Arc<PoolCounts>,
    published: (usize, usize),
}

impl BackendPool {
    fn new(counts: Arc<PoolCounts>) -> BackendPool {
        BackendPool {
            open: 0,
            idle: Vec::new(),
            waiters: Arc::default(),
            counts,
            published: (0, 0),
        }
    }

    /// Bring the process-wide counts up to date with this worker's.
    fn publish(&mut self) {
        let now = (self.open, self.idle.len());
        let delta = |new: usize, old: usize| new as i64 - old as i64;
        self.counts
            .open
            .fetch_add(delta(now.0, self.published.0), Ordering::Relaxed);
        self.counts
            .idle
            .fetch_add(delta(now.1, self.published.1), Ordering::Relaxed);
        self.published = now;
    }
}

/// One backend's connections over all workers, for SHOW POOLS, SELECT * FROM backends and
/// /metrics (the pools themselves are per worker and lock-free).
#[derive(Debug, Default)]
pub struct PoolCounts {
    pub open: AtomicI64,
    pub idle: AtomicI64,
    /// Borrows that had to wait for a connection, and those that gave up.
    pub waits: AtomicU64,
    pub exhausted: AtomicU64,
    /// Server connections opened since start.
    pub opened: AtomicU64,
    /// Idle connections closed instead of lent: their server had closed them, or they were
    /// older than `pool.max_lifetime`, or the server's globals changed since they logged in.
    pub retired: AtomicU64,
}

/// Every backend's `PoolCounts`, by address: one per running Weiche (in its `Shared`).
#[derive(Debug, Default)]
pub struct AllPoolCounts(Mutex<HashMap<String, Arc<PoolCounts>>>);

impl AllPoolCounts {
    /// The counts of the backend at `address`.
    pub fn of(&self, address: &str) -> Arc<PoolCounts> {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.entry(address.to_string()).or_default().clone()
    }

    /// Every backend's counts: (address, counts), by address.
    pub fn snapshot(&self) -> Vec<(String, Arc<PoolCounts>)> {
        let all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<_> = all.iter().map(|(a, c)| (a.clone(), c.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

fn pool_of<'w>(w: &'w mut Worker, address: &str, counts: &AllPoolCounts) -> &'w mut BackendPool {
    let i = match w.backends.iter().position(|(a, _)| a == address) {
        Some(i) => i,
        None => {
            w.backends
                .push((address.to_string(), BackendPool::new(counts.of(address))));
            w.backends.len() - 1
        }
    };
    &mut w.backends[i].1
}

#[derive(Default)]
struct Worker {
    index: usize,
    count: usize,
    /// By address; a handful, so a scan beats hashing the address on every borrow and release.
    backends: Vec<(String, BackendPool)>,
}

thread_local! {
    static WORKER: RefCell<Worker> = const { RefCell::new(Worker { index: 0, count: 1, backends: Vec::new() }) };
}

/// Tell this thread which worker it is (for its share of each backend's connections).
pub fn init_worker(index: usize, count: usize) {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        w.index = index;
        w.count = count.max(1);
    });
}

/// This worker's part of `max`: at least one.
fn share(max: usize, index: usize, count: usize) -> usize {
    let base = max / count;
    let extra = usize::from(index < max % count);
    (base + extra).max(1)
}

/// Counts one open connection of a worker's pool; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    address: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = WORKER.try_with(|w| {
            if let Ok(mut w) = w.try_borrow_mut() {
                if let Some((_, b)) = w.backends.iter_mut().find(|(a, _)| *a == self.address) {
                    b.open = b.open.saturating_sub(1);
                    b.publish();
                    b.waiters.notify_one();
                }
            }
        });
    }
}

enum Plan {
    Take(Box<Pooled>),
    Open(Slot, Option<Box<Pooled>>),
    Wait(Arc<Notify>),
}

/// Borrow a connection to `address` for `key`: an idle one, a new one, or (when the backend's
/// share is in use) the next one given back, waiting up to `wait_timeout`. Idle connections of
/// an older `generation` (see `Generation`), past `max_lifetime`, or closed by their server are
/// closed, not lent. `params` is only called when a new connection is opened; `counts` are the
/// process's.
pub async fn acquire(
    counts: &AllPoolCounts,
    address: &str,
    key: &PoolKey,
    params: impl FnOnce() -> LoginParams,
    settings: &PoolSettings,
    generation: Generation,
) -> Result<Box<Pooled>, PoolError> {
    let mut params = Some(params);
    let deadline = tokio::time::Instant::now() + settings.wait_timeout;
    loop {
        let (plan, limit, expired) = WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let limit = share(settings.max_connections, w.index, w.count);
            let b = pool_of(&mut w, address, counts);
            let r = plan(b, key, settings, generation, address, limit);
            b.publish();
            r
        });
        // Closed outside the pool's borrow: a closing connection gives its slot back.
        drop(expired);
        match plan {
            Plan::Take(conn) => return Ok(conn),
            Plan::Open(slot, evicted) => {
                drop(evicted);
                let params = match params.take() {
                    Some(make) => make(),
                    None => unreachable!("a borrow opens at most one connection"),
                };
                // Its own box: the login's state (a few KiB) would otherwise be part of every
                // command's future, copied for each statement, while a new connection is rare.
                return Box::pin(open(address, &params, key, slot, generation)).await;
            }
            Plan::Wait(notify) => {
                if tokio::time::timeout_at(deadline, notify.notified())
                    .await
                    .is_err()
                {
                    counts.of(address).exhausted.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::Exhausted {
                        address: address.to_string(),
                        max: limit,
                    });
                }
            }
        }
    }
}

/// Log in a new connection for `key` in `slot`.
async fn open(
    address: &str,
    params: &LoginParams,
    key: &PoolKey,
    slot: Slot,
    generation: Generation,
) -> Result<Box<Pooled>, PoolError> {
    // Boxed once: a session's idle slot stays small, and lending it out and taking it back
    // move a pointer instead of the connection.
    let mut conn = Box::new(Pooled {
        conn: ServerConnection::connect(address, params).await?,
        key: key.clone(),
        _slot: slot,
        generation,
        born: Instant::now(),
    });
    conn.setup().await?;
    Ok(conn)
}

/// What a borrow does, decided inside the worker's pool. The expired connections stay boxed as
/// the pool holds them: they are only dropped.
#[allow(clippy::vec_box)]
fn plan(
    b: &mut BackendPool,
    key: &PoolKey,
    settings: &PoolSettings,
    generation: Generation,
    address: &str,
    limit: usize,
) -> (Plan, usize, Vec<Box<Pooled>>) {
    let mut expired: Vec<Box<Pooled>> = prune(b, settings).into_iter().collect();
    if b.idle
        .iter()
        .any(|i| i.conn.generation.down != generation.down)
    {
        let (keep, stale): (Vec<Idle>, Vec<Idle>) = b
            .idle
            .drain(..)
            .partition(|i| i.conn.generation.down == generation.down);
        b.idle = keep;
        expired.extend(stale.into_iter().map(|i| i.conn));
    }
    while let Some(i) = b.idle.iter().rposition(|i| &i.conn.key == key) {
        let idle = b.idle.swap_remove(i);
        if let Some(why) = retire(&idle, settings, generation) {
            tracing::debug!(backend = %address, "an idle connection is closed, not lent: {why}");
            b.counts.retired.fetch_add(1, Ordering::Relaxed);
            expired.push(idle.conn);
            continue;
        }
        return (Plan::Take(idle.conn), limit, expired);
    }
    let slot = || Slot {
        address: address.to_string(),
    };
    if b.open < limit {
        b.open += 1;
        b.counts.opened.fetch_add(1, Ordering::Relaxed);
        return (Plan::Open(slot(), None), limit, expired);
    }
    // Full, but an idle connection of another user can make room.
    if let Some(i) = b.idle.iter().position(|i| &i.conn.key != key) {
        b.open += 1;
        b.counts.opened.fetch_add(1, Ordering::Relaxed);
        let evicted = b.idle.swap_remove(i).conn;
        return (Plan::Open(slot(), Some(evicted)), limit, expired);
    }
    b.counts.waits.fetch_add(1, Ordering::Relaxed);
    (Plan::Wait(b.waiters.clone()), limit, expired)
}

/// An idle connection is looked at (one non-blocking peek) before it is lent only when it has
/// been quiet this long: a server closes a connection for wait_timeout (at least 1 s) or a
/// KILL, and a connection given back a moment ago is almost never one of those. A hot pool
/// lends without the system call.
const QUIET_CHECK: Duration = Duration::from_millis(100);

/// Why an idle connection must not be lent again, if it must not.
fn retire(idle: &Idle, settings: &PoolSettings, generation: Generation) -> Option<&'static str> {
    if idle.conn.generation.globals != generation.globals {
        return Some("the server's global variables changed since it logged in");
    }
    if idle.conn.born.elapsed() >= settings.max_lifetime {
        return Some("older than pool.max_lifetime");
    }
    if generation
        .server_wait_timeout
        .is_some_and(|w| idle.since.elapsed() + Duration::from_secs(1) >= w)
    {
        return Some("idle for nearly the server's wait_timeout");
    }
    if idle.since.elapsed() >= QUIET_CHECK && idle.conn.framed.io.peer_spoke() {
        return Some("its server closed it (wait_timeout, a KILL)");
    }
    None
}

/// Close this worker's idle connections past `idle_timeout` (keeping `min_idle`), past
/// `max_lifetime`, or closed by their server, in every backend's pool: run every second by each
/// worker (`sweep`), so that a pool nobody borrows from shrinks too.
pub fn sweep_once(settings: &PoolSettings) {
    let expired: Vec<Box<Pooled>> = WORKER.with(|w| {
        let mut w = w.borrow_mut();
        let mut out = Vec::new();
        for (_, b) in w.backends.iter_mut() {
            while let Some(c) = prune(b, settings) {
                out.push(c);
            }
            let (keep, old): (Vec<Idle>, Vec<Idle>) = b.idle.drain(..).partition(|i| {
                i.conn.born.elapsed() < settings.max_lifetime
                    && !(i.since.elapsed() >= QUIET_CHECK && i.conn.framed.io.peer_spoke())
            });
            b.idle = keep;
            if !old.is_empty() {
                b.counts
                    .retired
                    .fetch_add(old.len() as u64, Ordering::Relaxed);
            }
            out.extend(old.into_iter().map(|i| i.conn));
            b.publish();
        }
        out
    });
    // Closed outside the pool's borrow: a closing connection gives its slot back.
    drop(expired);
}

/// Close idle connections past their idle timeout, keeping `min_idle`. Returned so that they are
/// dropped outside the pool's borrow.
fn prune(b: &mut BackendPool, settings: &PoolSettings) -> Option<Box<Pooled>> {
    if b.idle.len() <= settings.min_idle {
        return None;
    }
    let now = Instant::now();
    let i = b
        .idle
        .iter()
        .position(|i| now.duration_since(i.since) > settings.idle_timeout)?;
    Some(b.idle.remove(i).conn)
}

/// Give a connection back. One that is in a transaction or holds another session's untracked
/// state is reset first (in the background); one that failed is closed.
pub fn release(mut conn: Box<Pooled>) {
    if conn.broken {
        return;
    }
    if conn.state.in_transaction() || conn.state.untracked.is_some() {
        tokio::spawn(async move {
            if conn.reset().await.is_ok() {
                put_idle(conn);
            }
        });
        return;
    }
    put_idle(conn);
}

/// Back into the pool that lent it (on this worker: a session and its connections stay on one).
/// A connection whose pool is not here is closed.
fn put_idle(conn: Box<Pooled>) {
    WORKER.with(|w| {
        let mut w = w.borrow_mut();
        let Some((_, b)) = w.backends.iter_mut().find(|(a, _)| *a == conn.address) else {
            return;
        };
        b.idle.push(Idle {
            conn,
            since: Instant::now(),
        });
        b.publish();
        b.waiters.notify_one();
    });
}

/// Connections of each backend on this worker: (address, open, idle).
pub fn stats() -> Vec<(String, usize, usize)> {
    WORKER.with(|w| {
        w.borrow()
            .backends
            .iter()
            .map(|(a, b)| (a.clone(), b.open, b.idle.len()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_add_up() {
        assert_eq!(share(20, 0, 2) + share(20, 1, 2), 20);
        assert_eq!(share(5, 0, 2) + share(5, 1, 2), 5);
        assert_eq!(share(1, 1, 2), 1);
    }
}
