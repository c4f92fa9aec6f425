//! Admission: who may hold a session. Counts client connections (all of them, and each user's
//! sessions) and failed logins per client address, against `[limits]`. A slot is given back
//! when it is dropped, so no path out of a session can leak one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Addresses with recent failed logins kept at most; older entries go first.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

#[derive(Debug, Default)]
pub struct Admission {
    connections: AtomicUsize,
    users: Mutex<HashMap<String, usize>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
}

/// One client connection's place in the global count.
#[derive(Debug)]
pub struct ConnectionSlot(Arc<Admission>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One session's place in its user's count.
#[derive(Debug)]
pub struct UserSlot {
    admission: Arc<Admission>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut users = self
            .admission
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = users.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(&self.user);
            }
        }
    }
}

impl Admission {
    /// A place for one more client connection, unless `max` are open.
    pub fn connect(self: &Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        let mut n = self.connections.load(Ordering::Acquire);
        loop {
            if n >= max {
                return None;
            }
            match self.connections.compare_exchange_weak(
                n,
                n + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(ConnectionSlot(self.clone())),
                Err(now) => n = now,
            }
        }
    }

    /// A place for one more session of `user`, unless it has `max` (0: no limit).
    pub fn log_in(self: &Arc<Self>, user: &str, max: usize) -> Option<UserSlot> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let n = users.entry(user.to_string()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            admission: self.clone(),
            user: user.to_string(),
        })
    }

    /// How long `ip` stays refused, when it had `max` failed logins within `window`.
    pub fn blocked(&self, ip: IpAddr, max: u32, window: Duration) -> Option<Duration> {
        if max == 0 {
            return None;
        }
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let f = failures.get(&ip)?;
        let left = window.checked_sub(f.first.elapsed())?;
        (f.count >= max).then_some(left)
    }

    /// A login from `ip` failed (wrong password, unknown user, refused TLS requirement).
    pub fn failed(&self, ip: IpAddr, window: Duration) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_ADDRESSES {
            failures.retain(|_, f| f.first.elapsed() < window);
        }
        let f = failures.entry(ip).or_insert(Failures {
            count: 0,
            first: Instant::now(),
        });
        if f.first.elapsed() >= window {
            *f = Failures {
                count: 0,
                first: Instant::now(),
            };
        }
        f.count += 1;
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_given_back_when_dropped() {
        let a = Arc::new(Admission::default());
        let s1 = a.connect(2).unwrap();
        let _s2 = a.connect(2).unwrap();
        assert!(a.connect(2).is_none());
        drop(s1);
        assert!(a.connect(2).is_some());
        let u1 = a.log_in("app", 1).unwrap();
        assert!(a.log_in("app", 1).is_none());
        assert!(a.log_in("other", 1).is_some());
        drop(u1);
        assert!(a.log_in("app", 1).is_some());
        assert!(a.log_in("app", 0).is_some());
    }

    #[test]
    fn failed_logins_block_an_address_for_the_window() {
        let a = Admission::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let w = Duration::from_secs(60);
        for _ in 0..3 {
            assert!(a.blocked(ip, 3, w).is_none());
            a.failed(ip, w);
        }
        assert!(a.blocked(ip, 3, w).is_some());
        assert!(a.blocked("10.0.0.2".parse().unwrap(), 3, w).is_none());
        assert!(a.blocked(ip, 0, w).is_none(), "0 turns the limit off");
        a.succeeded(ip);
        assert!(a.blocked(ip, 3, w).is_none());
        a.failed(ip, Duration::ZERO);
        assert!(
            a.blocked(ip, 1, Duration::ZERO).is_none(),
            "the window has passed"
        );
    }
}
