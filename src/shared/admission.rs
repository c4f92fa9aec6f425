//! Admission: who may hold a session. Counts client connections (all of them, and each user's
//! sessions) and failed logins per client address, against `[limits]`. A slot is given back
//! when it is dropped, so no path out of a session can leak one.

use crate::config::Limits;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failure counts kept at most; expired ones go first, then the oldest.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
pub struct Admission {
    connections: AtomicUsize,
    users: Mutex<HashMap<String, usize>>,
    failures: Mutex<HashMap<Counted, Failures>>,
}

/// What a failure counts against. Wrong passwords count per (address, user name), so that a
/// broken cron job or a guesser locks out its own account from its own address, not every
/// application behind the same address; handshake garbage (port scanners, health checks that
/// send junk) counts per address, as MariaDB's max_connect_errors does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counted {
    Handshake(IpAddr),
    Password(IpAddr, Vec<u8>),
}

/// An address as counted: IPv6 by /64 (one host gets a whole /64 to rotate through), an
/// IPv4-mapped IPv6 address as the IPv4 one.
fn counted_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
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

    /// How long `ip` stays refused before its greeting: it sent `max_handshake_errors`
    /// malformed logins within the window and has not logged in since.
    pub fn blocked(&self, ip: IpAddr, limits: &Limits) -> Option<Duration> {
        if limits.max_handshake_errors == 0 || limits.trusted(ip) {
            return None;
        }
        let failures = self.lock();
        let f = failures.get(&Counted::Handshake(counted_ip(ip)))?;
        let left = limits.failed_login_window.checked_sub(f.first.elapsed())?;
        (f.count >= limits.max_handshake_errors).then_some(left)
    }

    /// `ip` sent something that is not a login (garbage, a bad handshake).
    pub fn handshake_error(&self, ip: IpAddr, limits: &Limits) {
        if !limits.trusted(ip) {
            let window = limits.failed_login_window;
            count(&mut self.lock(), Counted::Handshake(counted_ip(ip)), window);
        }
    }

    /// The verdict on a password check of `user` from `ip`, decided together with the limit
    /// under one lock: however many guesses run at once, at most `max_failed_logins` of them
    /// get an answer within the window. Err(how long): the account is blocked from this
    /// address, and the check's own result must not be told. A success forgets the account's
    /// failures and the address's handshake errors.
    pub fn password_verdict(
        &self,
        ip: IpAddr,
        user: &[u8],
        ok: bool,
        limits: &Limits,
    ) -> Result<(), Duration> {
        if limits.trusted(ip) {
            return Ok(());
        }
        let ip = counted_ip(ip);
        let key = Counted::Password(ip, user.to_vec());
        let window = limits.failed_login_window;
        let mut failures = self.lock();
        if limits.max_failed_logins > 0 {
            if let Some(f) = failures.get(&key) {
                if let Some(left) = window.checked_sub(f.first.elapsed()) {
                    if f.count >= limits.max_failed_logins {
                        return Err(left);
                    }
                }
            }
        }
        if ok {
            failures.remove(&key);
            failures.remove(&Counted::Handshake(ip));
        } else {
            count(&mut failures, key, window);
        }
        Ok(())
    }

    /// FLUSH HOSTS: every count is forgotten.
    pub fn flush(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Counted, Failures>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One more failure for `key` within `window` (a count older than the window starts over).
fn count(failures: &mut HashMap<Counted, Failures>, key: Counted, window: Duration) {
    if failures.len() >= MAX_TRACKED && !failures.contains_key(&key) {
        failures.retain(|_, f| f.first.elapsed() < window);
        if failures.len() >= MAX_TRACKED {
            if let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, f)| f.first)
                .map(|(k, _)| k.clone())
            {
                failures.remove(&oldest);
            }
        }
    }
    let f = failures.entry(key).or_insert(Failures {
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

    fn limits(max: u32, window: Duration) -> Limits {
        Limits {
            max_failed_logins: max,
            max_handshake_errors: max,
            failed_login_window: window,
            ..Limits::default()
        }
    }

    #[test]
    fn wrong_passwords_block_the_account_from_that_address_for_the_window() {
        let a = Admission::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let l = limits(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(a.password_verdict(ip, b"cron", false, &l).is_ok());
        }
        assert!(a.password_verdict(ip, b"cron", true, &l).is_err());
        // Another account from the same address, the same account from elsewhere: not blocked.
        assert!(a.password_verdict(ip, b"app", true, &l).is_ok());
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(a.password_verdict(other, b"cron", true, &l).is_ok());
        assert!(
            a.blocked(ip, &l).is_none(),
            "passwords are not handshake errors"
        );
        a.flush();
        assert!(a.password_verdict(ip, b"cron", true, &l).is_ok());
        let off = limits(0, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(a.password_verdict(ip, b"x", false, &off).is_ok(), "0: off");
        }
        let gone = limits(1, Duration::ZERO);
        a.password_verdict(ip, b"y", false, &gone).unwrap();
        assert!(
            a.password_verdict(ip, b"y", true, &gone).is_ok(),
            "window passed"
        );
    }

    #[test]
    fn handshake_errors_block_an_address_until_a_login_succeeds() {
        let a = Admission::default();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let l = limits(2, Duration::from_secs(60));
        a.handshake_error(ip, &l);
        assert!(a.blocked(ip, &l).is_none());
        // The same /64.
        a.handshake_error("2001:db8::2".parse().unwrap(), &l);
        assert!(a.blocked(ip, &l).is_some());
        assert!(a.blocked("2001:db8:0:1::1".parse().unwrap(), &l).is_none());
        a.password_verdict(ip, b"app", true, &l).unwrap();
        assert!(a.blocked(ip, &l).is_none(), "a login resets the address");
        let trusted = Limits {
            trusted_networks: vec!["2001:db8::/32".parse().unwrap()],
            ..l.clone()
        };
        for _ in 0..5 {
            a.handshake_error(ip, &trusted);
        }
        assert!(
            a.blocked(ip, &l).is_none(),
            "trusted networks are not counted"
        );
    }
}
