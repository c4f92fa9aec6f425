//! Accounts read from the primary's `mysql.user` with the monitor account (`[monitor]
//! load_users`), so that application users need not be listed twice. Only accounts Weiche can
//! check are kept: mysql_native_password hashes and accounts without a password. Read again
//! every `users_refresh` seconds and, at most every two seconds, when a login names an account
//! Weiche does not know. The hashes never leave this module but as a `User`.

use super::connection::{LoginParams, ServerConnection};
use super::query::Answer;
use crate::config::{BackendTls, Credentials, User};
use crate::protocol::auth;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// A login naming an unknown account reads the table again at most this often.
const UNKNOWN_REFRESH: Duration = Duration::from_secs(2);

const QUERY: &[u8] = b"SELECT User, Host, authentication_string, plugin FROM mysql.user";

/// One account row: `user`@`host` with its hash.
#[derive(Clone, PartialEq, Eq)]
struct Account {
    user: String,
    host: String,
    stage2: Option<auth::Stage2>,
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
        let best = list
            .iter()
            .filter(|a| a.user.as_bytes() == name && host_matches(&a.host, client))
            .max_by_key(|a| specificity(&a.host))?;
        Some(User {
            name: best.user.clone(),
            stage2: best
                .stage2
                .unwrap_or_else(|| auth::stage2(&auth::stage1(b""))),
            password: best.stage2.is_none().then(Vec::new),
            pool_mode: None,
            require_tls: false,
            max_connections: None,
        })
    }

    /// Read the accounts from `primary` now.
    pub async fn read(&self, primary: &str, source: &Source) -> Result<usize, String> {
        let _one = self.reading.lock().await;
        let accounts = tokio::time::timeout(source.timeout, fetch(primary, source))
            .await
            .map_err(|_| format!("no answer within {:?}", source.timeout))??;
        let n = accounts.len();
        *self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        *self.list.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(accounts);
        Ok(n)
    }

    /// A login named an account Weiche does not know: read again, unless that happened less
    /// than a few seconds ago. True when the table was read.
    pub async fn read_for_unknown(&self, primary: &str, source: &Source) -> bool {
        let recent = self
            .last_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t.elapsed() < UNKNOWN_REFRESH);
        if recent {
            return false;
        }
        match self.read(primary, source).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("reading accounts from {primary}: {e}");
                false
            }
        }
    }
}

async fn fetch(primary: &str, source: &Source) -> Result<Vec<Account>, String> {
    let params = LoginParams::for_account(&source.account, source.timeout, source.tls.clone());
    let mut conn = ServerConnection::connect(primary, &params)
        .await
        .map_err(|e| e.to_string())?;
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
        });
    }
    Ok(out)
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
            },
            Account {
                user: "app".into(),
                host: "127.0.0.1".into(),
                stage2: h("local"),
            },
            Account {
                user: "nopw".into(),
                host: "%".into(),
                stage2: None,
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
        assert!(!format!("{:?}", a.list.read().unwrap()).contains('*'));
    }
}
