//! Accounts read from the primary's `mysql.user` with the monitor account (`[monitor]
//! load_users`), so that application users need not be listed twice. Only accounts Weiche can
//! check are kept: mysql_native_password hashes and accounts without a password, neither locked
//! nor with an expired password. Read again every `users_refresh` seconds (2 by default: a
//! revoked account is refused that soon) and, at most every two seconds, when a login names an
//! account Weiche does not know. The hashes never leave this module but as a `User`.
//!
//! An account is user@host, and the server matches the host against Weiche's address, not the
//! client's. A client is let in only when the account it matches from its own address is the
//! one the server will log Weiche in as; otherwise `'multi'@'%'`'s password would open
//! `'multi'@'127.0.0.1'`'s privileges. Each account's identity covers its row and a checksum
//! of every privilege table, so a GRANT or REVOKE gives new sessions new server connections.

use super::connection::{LoginParams, ServerConnection};
use super::query::Answer;
use crate::config::{BackendTls, Credentials, User};
use crate::protocol::auth;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// A login naming an unknown account reads the table again at most this often.
const UNKNOWN_REFRESH: Duration = Duration::from_secs(2);

/// mysql.user is a view without the lock; mysql.global_priv has it in its JSON.
const QUERY: &[u8] = b"SELECT u.User, u.Host, u.authentication_string, u.plugin, \
    u.password_expired, JSON_VALUE(g.Priv, '$.account_locked') AS account_locked \
    FROM mysql.user u LEFT JOIN mysql.global_priv g ON g.User = u.User AND g.Host = u.Host";

/// Changes with any GRANT, REVOKE, role or account change.
const PRIVILEGES: &[u8] = b"CHECKSUM TABLE mysql.global_priv, mysql.db, mysql.tables_priv, \
    mysql.columns_priv, mysql.procs_priv, mysql.roles_mapping, mysql.proxies_priv";

/// One account row: `user`@`host` with its hash.
#[derive(Clone, PartialEq, Eq)]
struct Account {
    user: String,
    host: String,
    stage2: Option<auth::Stage2>,
    identity: u64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'@'{}'", self.user, self.host)
    }
}

/// Where and as whom the accounts are read.
#[derive(Debug, Clone)]
pub struct Source {
    pub account: Credentials,
    pub timeout: Duration,
    pub tls: Option<BackendTls>,
}

#[derive(Debug, Default)]
pub struct Accounts {
    list: RwLock<Arc<Vec<Account>>>,
    /// Where the primary sees Weiche connect from (which host entry it matches for Weiche).
    seen_as: Mutex<Option<IpAddr>>,
    last_read: Mutex<Option<Instant>>,
    reading: tokio::sync::Mutex<()>,
}

impl Accounts {
    /// The account `name` as seen from `client`: the most specific host that matches.
    pub fn find(&self, name: &[u8], client: IpAddr) -> Option<User> {
        let list = self
            .list
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let best_for = |ip: IpAddr| {
            list.iter()
                .filter(|a| a.user.as_bytes() == name && host_matches(&a.host, ip))
                .max_by_key(|a| specificity(&a.host))
        };
        let best = best_for(client)?;
        let seen_as = *self.seen_as.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(weiche) = seen_as {
            let server_side = best_for(weiche);
            if server_side.map(|a| &a.host) != Some(&best.host) {
                tracing::warn!(
                    "refused '{}'@'{}': from {client} that is {best:?}, but the server logs \
                     Weiche (from {weiche}) in as {}; give the accounts one host entry, or \
                     declare the user in [[users]]",
                    best.user,
                    best.host,
                    server_side.map_or("no account".to_string(), |a| format!("{a:?}"))
                );
                return None;
            }
        }
        Some(User {
            name: best.user.clone(),
            stage2: best
                .stage2
                .unwrap_or_else(|| auth::stage2(&auth::stage1(b""))),
            password: best.stage2.is_none().then(Vec::new),
            pool_mode: None,
            require_tls: false,
            max_connections: None,
            identity: best.identity,
        })
    }

    /// Read the accounts from `primary` now.
    pub async fn read(&self, primary: &str, source: &Source) -> Result<usize, String> {
        let _one = self.reading.lock().await;
        self.read_locked(primary, source).await
    }

    async fn read_locked(&self, primary: &str, source: &Source) -> Result<usize, String> {
        let (accounts, seen_as) = tokio::time::timeout(source.timeout, fetch(primary, source))
            .await
            .map_err(|_| format!("no answer within {:?}", source.timeout))??;
        let n = accounts.len();
        *self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        *self.seen_as.lock().unwrap_or_else(PoisonError::into_inner) = seen_as;
        *self.list.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(accounts);
        Ok(n)
    }

    /// A login named an account Weiche does not know: read again, unless that happened less
    /// than a few seconds ago. True when the table was read. Logins that arrive together wait
    /// for one read, and the time is checked again once it is their turn.
    pub async fn read_for_unknown(&self, primary: &str, source: &Source) -> bool {
        let recent = || {
            self.last_read
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|t| t.elapsed() < UNKNOWN_REFRESH)
        };
        if recent() {
            return false;
        }
        let _one = self.reading.lock().await;
        if recent() {
            // Read while this login waited: its result is what a read now would give.
            return true;
        }
        match self.read_locked(primary, source).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("reading accounts from {primary}: {e}");
                false
            }
        }
    }
}

async fn fetch(primary: &str, source: &Source) -> Result<(Vec<Account>, Option<IpAddr>), String> {
    let params = LoginParams::for_account(&source.account, source.timeout, source.tls.clone());
    let mut conn = ServerConnection::connect(primary, &params)
        .await
        .map_err(|e| e.to_string())?;
    let seen_as = conn.framed.io.local_ip();
    conn.queue_query(PRIVILEGES);
    conn.framed.flush().await.map_err(|e| e.to_string())?;
    let privileges = match conn.read_answer().await.map_err(|e| e.to_string())? {
        Answer::Rows(r) => (0..r.rows.len())
            .map(|i| r.get(i, &["Checksum"]).unwrap_or("-"))
            .collect::<Vec<_>>()
            .join(","),
        Answer::Err(e) => {
            return Err(format!(
                "{} (the monitor account needs SELECT on mysql.*)",
                e.message
            ))
        }
        Answer::Ok(_) => String::new(),
    };
    conn.queue_query(QUERY);
    conn.framed.flush().await.map_err(|e| e.to_string())?;
    let rows = match conn.read_answer().await.map_err(|e| e.to_string())? {
        Answer::Rows(r) => r,
        Answer::Err(e) => {
            return Err(format!(
                "{} (the monitor account needs SELECT on mysql.*)",
                e.message
            ))
        }
        Answer::Ok(_) => return Err("mysql.user returned no rows".into()),
    };
    let mut out = Vec::new();
    for i in 0..rows.rows.len() {
        let (Some(user), Some(host)) = (rows.get(i, &["User"]), rows.get(i, &["Host"])) else {
            continue;
        };
        let hash = rows.get(i, &["authentication_string"]).unwrap_or("");
        let plugin = rows.get(i, &["plugin"]).unwrap_or("");
        let yes = |c: &str| {
            rows.get(i, &[c])
                .is_some_and(|v| v.eq_ignore_ascii_case("Y") || v == "1" || v == "true")
        };
        if yes("account_locked") || yes("password_expired") {
            continue; // refused as by the server
        }
        let stage2 = match plugin {
            "mysql_native_password" | "" if hash.is_empty() => None,
            "mysql_native_password" | "" => match auth::parse_native_hash(hash) {
                Some(h) => Some(h),
                None => continue,
            },
            // unix_socket, ed25519, ...: Weiche cannot check these passwords.
            _ => continue,
        };
        if user.is_empty() {
            continue; // anonymous accounts
        }
        out.push(Account {
            user: user.to_string(),
            host: host.to_string(),
            stage2,
            identity: crate::config::identity_of(&[
                b"account",
                user.as_bytes(),
                host.as_bytes(),
                hash.as_bytes(),
                plugin.as_bytes(),
                privileges.as_bytes(),
            ]),
        });
    }
    Ok((out, seen_as))
}

/// MariaDB's host patterns: `%` and `_` wildcards, `localhost` for the loopback addresses, an
/// exact address, or `address/netmask`.
fn host_matches(pattern: &str, client: IpAddr) -> bool {
    if pattern.eq_ignore_ascii_case("localhost") {
        return client.is_loopback();
    }
    if let Some((net, mask)) = pattern.split_once('/') {
        return match (net.parse::<IpAddr>(), mask.parse::<IpAddr>(), client) {
            (Ok(IpAddr::V4(n)), Ok(IpAddr::V4(m)), IpAddr::V4(c)) => {
                u32::from(c) & u32::from(m) == u32::from(n) & u32::from(m)
            }
            _ => false,
        };
    }
    like(pattern.as_bytes(), client.to_string().as_bytes())
}

/// SQL LIKE with `%` and `_`, case-insensitive.
fn like(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'%', rest)) => (0..=s.len()).any(|i| like(rest, &s[i..])),
        Some((b'_', rest)) => !s.is_empty() && like(rest, &s[1..]),
        Some((c, rest)) => {
            s.first().is_some_and(|d| d.eq_ignore_ascii_case(c)) && like(rest, &s[1..])
        }
    }
}

/// Exact hosts before patterns, longer literal parts first, `%` last.
fn specificity(host: &str) -> (bool, usize) {
    let wild = host.contains(['%', '_']);
    (
        !wild,
        host.bytes().filter(|b| *b != b'%' && *b != b'_').count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(host_matches("%", ip("10.1.2.3")));
        assert!(host_matches("10.1.%", ip("10.1.2.3")));
        assert!(!host_matches("10.2.%", ip("10.1.2.3")));
        assert!(host_matches("10.1.2._", ip("10.1.2.3")));
        assert!(host_matches("localhost", ip("127.0.0.1")));
        assert!(!host_matches("localhost", ip("10.1.2.3")));
        assert!(host_matches("10.1.0.0/255.255.0.0", ip("10.1.2.3")));
        assert!(!host_matches("10.2.0.0/255.255.0.0", ip("10.1.2.3")));
        assert!(specificity("10.1.2.3") > specificity("10.1.%"));
        assert!(specificity("10.1.%") > specificity("%"));
    }

    #[test]
    fn the_most_specific_account_wins() {
        let a = Accounts::default();
        let h = |p: &str| Some(auth::stage2(&auth::stage1(p.as_bytes())));
        *a.list.write().unwrap() = Arc::new(vec![
            Account {
                user: "app".into(),
                host: "%".into(),
                stage2: h("any"),
                identity: 1,
            },
            Account {
                user: "app".into(),
                host: "127.0.0.1".into(),
                stage2: h("local"),
                identity: 2,
            },
            Account {
                user: "nopw".into(),
                host: "%".into(),
                stage2: None,
                identity: 3,
            },
        ]);
        let local = a.find(b"app", "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(local.stage2, h("local").unwrap());
        let other = a.find(b"app", "10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(other.stage2, h("any").unwrap());
        assert_eq!(
            a.find(b"nopw", "10.0.0.1".parse().unwrap())
                .unwrap()
                .password,
            Some(vec![])
        );
        assert!(a.find(b"nobody", "10.0.0.1".parse().unwrap()).is_none());
        // The server sees Weiche at 127.0.0.1: app@'%' would be logged in as app@127.0.0.1.
        *a.seen_as.lock().unwrap() = Some("127.0.0.1".parse().unwrap());
        assert!(a.find(b"app", "10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(
            a.find(b"app", "127.0.0.1".parse().unwrap())
                .unwrap()
                .identity,
            2
        );
        assert!(a.find(b"nopw", "10.0.0.1".parse().unwrap()).is_some());
        assert!(!format!("{:?}", a.list.read().unwrap()).contains('*'));
    }
}
