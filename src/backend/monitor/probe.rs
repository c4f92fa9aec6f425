//! One check of one backend: with the monitor account, what the backend says about itself
//! (read_only, whether and how it replicates, its GTID position, a Galera node's wsrep state),
//! in one round trip; without
//! one, only that it accepts a connection and greets.

use super::galera::{Wsrep, WSREP_QUERY};
use crate::backend::connection::{LoginParams, ServerConnection};
use crate::backend::gtid::GtidPos;
use crate::backend::query::{Answer, Rows};
use crate::config::{BackendTls, Credentials};
use crate::protocol::handshake::Greeting;
use crate::protocol::Framed;
use std::time::Duration;
use tokio::net::TcpStream;

/// The state of a replica's IO thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    Running,
    /// Trying to reach its primary (it may be down): still a replica, its data ages.
    Connecting,
    Stopped,
}

/// What SHOW SLAVE STATUS says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replication {
    pub io: Io,
    pub sql_running: bool,
    pub seconds_behind: Option<u64>,
    pub last_error: String,
}

impl Replication {
    /// Both threads stopped: it does not replicate (a promoted server, for one).
    pub fn stopped(&self) -> bool {
        self.io == Io::Stopped && !self.sql_running
    }

    /// Why its data stops advancing, if it does.
    pub fn broken(&self) -> Option<String> {
        if self.io != Io::Stopped && self.sql_running {
            return None;
        }
        let mut why = match (self.io == Io::Stopped, self.sql_running) {
            (true, false) => "replication stopped".to_string(),
            (true, true) => "IO thread stopped".to_string(),
            _ => "SQL thread stopped".to_string(),
        };
        if !self.last_error.is_empty() {
            why.push_str(": ");
            why.push_str(&self.last_error);
        }
        Some(why)
    }
}

/// A backend's answer to one check (None fields: the monitor has no account to ask with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    pub read_only: bool,
    pub replication: Option<Replication>,
    /// Replicas: what they applied (gtid_slave_pos); others: gtid_current_pos. None when the
    /// server does not have MariaDB GTIDs.
    pub position: Option<GtidPos>,
    /// Everything the server has applied: gtid_current_pos (its own writes included; a
    /// replica that was promoted has written what its gtid_slave_pos lacks).
    pub applied: Option<GtidPos>,
    /// The monitor could log in and ask; false for greeting-only checks.
    pub detailed: bool,
    /// A Galera node's wsrep state (None: wsrep is off, or not a MariaDB server).
    pub galera: Option<Wsrep>,
}

impl Probe {
    /// Writable and not replicating: what a primary looks like.
    pub fn looks_primary(&self) -> bool {
        !self.read_only && self.replication.as_ref().is_none_or(Replication::stopped)
    }
}

/// The monitor's connection to one backend, kept between checks.
pub struct Prober {
    address: String,
    account: Option<Credentials>,
    timeout: Duration,
    tls: Option<BackendTls>,
    conn: Option<ServerConnection>,
    /// This connection's server has wsrep off: not asked again until the next connection (a
    /// server gains a Galera provider only by restarting).
    wsrep_off: bool,
}

impl Prober {
    pub fn new(
        address: &str,
        account: Option<Credentials>,
        timeout: Duration,
        tls: Option<BackendTls>,
    ) -> Prober {
        Prober {
            address: address.to_string(),
            account,
            timeout,
            tls,
            conn: None,
            wsrep_off: false,
        }
    }

    /// Check once, within the timeout. A failed check closes the connection.
    pub async fn check(&mut self) -> Result<Probe, String> {
        let r = match tokio::time::timeout(self.timeout, self.check_inner()).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer within {:.1} s",
                self.timeout.as_secs_f64()
            )),
        };
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn check_inner(&mut self) -> Result<Probe, String> {
        let Some(account) = &self.account else {
            return greet(&self.address).await.map(|_| Probe::default());
        };
        if self.conn.is_none() {
            let params = LoginParams::for_account(account, self.timeout, self.tls.clone());
            let c = ServerConnection::connect(&self.address, &params)
                .await
                .map_err(|e| e.to_string())?;
            self.conn = Some(c);
            self.wsrep_off = false;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        let mariadb = String::from_utf8_lossy(&conn.server_version).contains("MariaDB");
        let ask_wsrep = mariadb && !self.wsrep_off;
        if mariadb {
            conn.queue_query(b"SELECT @@read_only, @@gtid_current_pos, @@gtid_slave_pos");
            conn.queue_query(b"SHOW SLAVE STATUS");
            if ask_wsrep {
                conn.queue_query(WSREP_QUERY);
            }
        } else {
            conn.queue_query(b"SELECT @@read_only, NULL, NULL");
            conn.queue_query(b"SHOW REPLICA STATUS");
        }
        conn.framed.flush().await.map_err(|e| e.to_string())?;
        let vars = rows(conn.read_answer().await)?;
        let status = rows(conn.read_answer().await);
        let galera = if ask_wsrep {
            match rows(conn.read_answer().await) {
                Ok(r) => Wsrep::from_rows(r.rows.iter().filter_map(|row| {
                    let name = std::str::from_utf8(row.first()?.as_deref()?).ok()?;
                    let value = std::str::from_utf8(row.get(1)?.as_deref()?).ok()?;
                    Some((name, value))
                })),
                Err(e) => {
                    tracing::debug!(backend = %self.address, "wsrep status: {e}");
                    None
                }
            }
        } else {
            None
        };
        self.wsrep_off = galera.is_none();
        let read_only = vars.rows.first().and_then(|r| r.first()).cloned().flatten();
        let read_only = read_only.as_deref().is_some_and(|v| v != b"0");
        let text = |col: usize| {
            vars.rows
                .first()
                .and_then(|r| r.get(col))
                .cloned()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok())
        };
        let replication = match status {
            Ok(s) if s.rows.is_empty() => None,
            Ok(s) => Some(replication(&s)),
            // Without SLAVE MONITOR the account cannot ask; roles then follow read_only alone.
            Err(e) => {
                tracing::debug!(backend = %self.address, "SHOW SLAVE STATUS: {e}");
                None
            }
        };
        let position = if replication.is_some() {
            text(2)
        } else {
            text(1)
        };
        let applied = text(1).as_deref().and_then(GtidPos::parse);
        Ok(Probe {
            read_only,
            applied,
            position: position.as_deref().and_then(GtidPos::parse),
            replication,
            detailed: true,
            galera,
        })
    }
}

/// One number for the server's global values of every variable a session inherits (scope
/// SESSION): when it changes, sessions that log in now start with other defaults than the
/// pooled connections that logged in before. About 4 ms of server time, so not every check.
/// A sum of per-variable checksums, not a checksum of GROUP_CONCAT: that is cut at
/// group_concat_max_len (1024 bytes), so changes to most variables went unseen.
const GLOBALS_FINGERPRINT: &[u8] = b"SELECT SUM(CRC32(CONCAT(VARIABLE_NAME, '=', \
    IFNULL(GLOBAL_VALUE, 'NULL')))), \
    @@GLOBAL.wait_timeout, @@GLOBAL.interactive_timeout \
    FROM information_schema.SYSTEM_VARIABLES WHERE VARIABLE_SCOPE = 'SESSION'";

/// What the monitor reads of a server's globals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Globals {
    /// Changes whenever a session default changes.
    pub fingerprint: Vec<u8>,
    /// The wait_timeout a new session starts with (interactive clients: interactive_timeout),
    /// in seconds.
    pub wait_timeout: u64,
    pub interactive_timeout: u64,
}

impl Prober {
    /// The fingerprint of the server's session defaults (see `GLOBALS_FINGERPRINT`); None
    /// without a monitor account or when the check fails.
    pub async fn globals(&mut self) -> Option<Globals> {
        let conn = self.conn.as_mut()?;
        let ask = async {
            conn.queue_query(GLOBALS_FINGERPRINT);
            conn.framed.flush().await.ok()?;
            let r = rows(conn.read_answer().await).ok()?;
            let row = r.rows.first()?;
            let secs = |i: usize| -> Option<u64> {
                std::str::from_utf8(row.get(i)?.as_deref()?)
                    .ok()?
                    .parse()
                    .ok()
            };
            Some(Globals {
                fingerprint: row.first()?.clone()?,
                wait_timeout: secs(1)?,
                interactive_timeout: secs(2)?,
            })
        };
        tokio::time::timeout(self.timeout, ask).await.ok().flatten()
    }
}

fn rows(a: Result<Answer, crate::protocol::ProtocolError>) -> Result<Rows, String> {
    match a {
        Ok(Answer::Rows(r)) => Ok(r),
        Ok(Answer::Err(e)) => Err(e.message),
        Ok(Answer::Ok(_)) => Err("expected rows".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn replication(s: &Rows) -> Replication {
    let io = match s.get(0, &["Slave_IO_Running", "Replica_IO_Running"]) {
        Some(v) if v.eq_ignore_ascii_case("yes") => Io::Running,
        Some(v) if v.eq_ignore_ascii_case("connecting") => Io::Connecting,
        _ => Io::Stopped,
    };
    let sql_running = s
        .get(0, &["Slave_SQL_Running", "Replica_SQL_Running"])
        .is_some_and(|v| v.eq_ignore_ascii_case("yes"));
    let seconds_behind = s
        .get(0, &["Seconds_Behind_Master", "Seconds_Behind_Source"])
        .and_then(|v| v.parse().ok());
    let last_error = [s.get(0, &["Last_SQL_Error"]), s.get(0, &["Last_IO_Error"])]
        .into_iter()
        .flatten()
        .find(|e| !e.is_empty())
        .unwrap_or_default()
        .to_string();
    Replication {
        io,
        sql_running,
        seconds_behind,
        last_error,
    }
}

/// Without an account: the backend accepts a connection and sends its greeting.
async fn greet(address: &str) -> Result<(), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut f = Framed::new(stream);
    let p = f.read_packet(1 << 16).await.map_err(|e| e.to_string())?;
    if p.payload.first() == Some(&0xff) {
        return Err("the backend refuses connections".into());
    }
    Greeting::decode(&p.payload)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
