//! Configuration: a TOML file and mysql-proxy compatible flags become one validated `Config`.
//! Flags override the file. Validation names the first problem in one line; Weiche refuses to
//! start on it.

mod cache;
mod cli;
pub mod compression;
mod ini;
mod limits;
mod monitor;
mod routing;
mod tls;

pub use cache::{Auto, Binlog, CacheRule, CacheStore, Caching, Server as CacheServer};
pub use cli::{Cli, LoadedConfig};
pub use limits::Limits;
pub use monitor::Monitoring;
pub use routing::{Consistency, PoolMode, PoolSettings, Pooling, Routing, Rule, RuleTarget};
pub use tls::{BackendTls, BackendTlsMode, Tls};

use crate::protocol::auth::{self, Stage2};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The file as written (every field optional so that flags can fill in).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub proxy: FileProxy,
    #[serde(default)]
    pub backends: Vec<FileBackend>,
    #[serde(default)]
    pub users: Vec<FileUser>,
    #[serde(default)]
    pub monitor: monitor::FileMonitor,
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub http: FileHttp,
    #[serde(default)]
    pub routing: routing::FileRouting,
    #[serde(default)]
    pub pool: routing::FilePool,
    #[serde(default)]
    pub rules: Vec<routing::FileRule>,
    #[serde(default)]
    pub cache: cache::FileCache,
    #[serde(default)]
    pub limits: limits::FileLimits,
    #[serde(default)]
    pub tls: tls::FileTls,
    #[serde(default)]
    pub backend_tls: tls::FileBackendTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProxy {
    pub address: Option<String>,
    pub event_threads: Option<usize>,
    pub connect_timeout: Option<f64>,
    pub max_packet_size: Option<usize>,
    pub pid_file: Option<PathBuf>,
    /// The unix socket through which `weiche --upgrade` takes the listening sockets over.
    pub upgrade_socket: Option<PathBuf>,
    /// A mysql-proxy Lua script (--proxy-lua-script).
    pub script: Option<PathBuf>,
    /// Lua instructions one hook call may run before it is aborted (default 10,000,000).
    pub script_instruction_limit: Option<u64>,
    /// Compression algorithms offered to clients (default ["zlib", "zstd"]; []: none).
    pub compression: Option<Vec<String>>,
    /// zlib level of what Weiche sends to a compressed client (1-9, default 6).
    pub compression_level: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub address: String,
    #[serde(default)]
    pub role: Role,
    /// Share of reads among replicas (default 1).
    pub weight: Option<u32>,
    /// Use the compressed protocol (zlib) on this backend's connections (default false).
    pub compress: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUser {
    pub name: String,
    pub password: Option<String>,
    pub password_hash: Option<String>,
    /// Overrides pool.mode for this user's sessions.
    pub pool_mode: Option<PoolMode>,
    /// This user must connect with TLS (default false).
    pub require_tls: Option<bool>,
    /// Sessions this user may have at once (overrides limits.max_user_connections; 0: no limit).
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub address: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A Lua script for admin queries (--admin-lua-script).
    pub script: Option<PathBuf>,
    /// Statement digests kept for SHOW QUERY DIGESTS (default 1000; 0: none).
    pub max_digests: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttp {
    /// Where /metrics and /health are served (--http-address).
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub level: Option<String>,
    pub file: Option<PathBuf>,
    /// "text" (default) or "json": one JSON object per line.
    pub format: Option<LogFormat>,
    /// A file that gets one line per statement (time, session, user, route, duration, rows, SQL).
    pub query_log: Option<PathBuf>,
    /// A file that gets statements that took at least `slow_query_time` seconds.
    pub slow_log: Option<PathBuf>,
    /// Seconds (default 1).
    pub slow_query_time: Option<f64>,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A backend's role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// As written (`host:port`), for logs and for connecting (resolved at connect time).
    pub address: String,
    pub role: Role,
    pub weight: u32,
    /// Its connections use the compressed protocol (zlib).
    pub compress: bool,
}

/// An account clients log in with, and that Weiche uses on the backends.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// SHA1(SHA1(password)), what a client's mysql_native_password answer is checked against.
    pub stage2: Stage2,
    /// The password itself when configured (needed for backends that use client_ed25519).
    pub password: Option<Vec<u8>>,
    pub pool_mode: Option<PoolMode>,
    pub require_tls: bool,
    /// Sessions this user may have at once, when it differs from limits.max_user_connections.
    pub max_connections: Option<usize>,
    /// Which account this is, as the server has it: a digest of the name, the host entry, the
    /// credentials and (for accounts read from the primary) every privilege table. Pooled
    /// connections and cache entries are shared only within one identity, so a password change,
    /// a REVOKE or another host entry of the same name never inherits another's connections.
    pub identity: u64,
}

/// An identity digest of these parts (see `User::identity`).
pub fn identity_of(parts: &[&[u8]]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl std::fmt::Debug for User {
    // Never print secrets, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Credentials Weiche uses for its own connections (monitor, admin).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Worker threads (current-thread runtimes); a client lives on one for its whole life.
    pub event_threads: usize,
    pub backends: Vec<Backend>,
    pub users: Vec<User>,
    pub monitor: Option<Credentials>,
    pub monitoring: Monitoring,
    pub admin_address: Option<SocketAddr>,
    pub admin: Option<Credentials>,
    /// The HTTP listener for /metrics and /health.
    pub http_address: Option<SocketAddr>,
    pub connect_timeout: Duration,
    /// The largest command a client may send, in bytes (all its packets together).
    pub max_packet_size: usize,
    /// The compressed protocol offered to clients.
    pub compression: compression::ClientCompression,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Statement logs (see FileLog).
    pub query_log: Option<PathBuf>,
    pub slow_log: Option<PathBuf>,
    pub slow_query_time: Duration,
    pub pid_file: Option<PathBuf>,
    /// Where a new process asks for the listening sockets (`--upgrade`; None: no handover).
    pub upgrade_socket: Option<PathBuf>,
    pub routing: Routing,
    pub pool: Pooling,
    pub rules: Vec<Rule>,
    pub script: Option<Scripting>,
    /// The admin port's Lua script (runs with the proxy script's settings).
    pub admin_script: Option<PathBuf>,
    /// The result cache.
    pub cache: Caching,
    /// Statement digests kept for SHOW QUERY DIGESTS (0: no digest statistics).
    pub max_digests: usize,
    /// TLS for clients and for backends.
    pub tls: Tls,
    pub limits: Limits,
}

/// The Lua script and how it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripting {
    pub path: PathBuf,
    /// More `package.path` entries (--lua-path), before the script's directory.
    pub lua_path: Option<String>,
    pub lua_cpath: Option<String>,
    pub instruction_limit: u64,
}

impl Config {
    pub fn user(&self, name: &[u8]) -> Option<&User> {
        self.users.iter().find(|u| u.name.as_bytes() == name)
    }

    /// The pool mode of a user's sessions.
    pub fn pool_mode(&self, user: &str) -> PoolMode {
        self.users
            .iter()
            .find(|u| u.name == user)
            .and_then(|u| u.pool_mode)
            .unwrap_or(self.pool.mode)
    }

    /// How many sessions a user may have at once (0: no limit).
    pub fn max_user_connections(&self, user: &str) -> usize {
        self.users
            .iter()
            .find(|u| u.name == user)
            .and_then(|u| u.max_connections)
            .unwrap_or(self.limits.max_user_connections)
    }

    /// The primary: the first backend with that role.
    pub fn primary(&self) -> Option<&Backend> {
        self.backends.iter().find(|b| b.role == Role::Primary)
    }
}

pub const DEFAULT_ADDRESS: &str = "0.0.0.0:4040";
pub const DEFAULT_MAX_PACKET: usize = 64 << 20;

pub fn parse_socket_addr(what: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            invalid(format!(
                "{what}: '{s}' is not an address of the form host:port"
            ))
        })
}

/// A backend address must be host:port (mysql-proxy also accepted a bare host: port 3306).
pub fn normalize_backend_addr(s: &str) -> Result<String, ConfigError> {
    let s = s.trim();
    let bad = || {
        invalid(format!(
            "backend address '{s}' is not of the form host:port"
        ))
    };
    // "[v6]:port", "[v6]", "host:port" or "host".
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (format!("[{h}]"), p),
            None if after.is_empty() => (format!("[{h}]"), "3306"),
            None => return Err(bad()),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (s.to_string(), "3306"),
        }
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || (host.contains(':') && !host.starts_with('[')) || port == 0 {
        return Err(bad());
    }
    Ok(format!("{host}:{port}"))
}

pub fn make_user(
    name: &str,
    password: Option<&str>,
    hash: Option<&str>,
) -> Result<User, ConfigError> {
    if name.is_empty() {
        return Err(invalid("a user has an empty name"));
    }
    match (password, hash) {
        (Some(_), Some(_)) => Err(invalid(format!(
            "user '{name}': give password or password_hash, not both"
        ))),
        (Some(p), None) => {
            let stage2 = auth::stage2(&auth::stage1(p.as_bytes()));
            Ok(User {
                name: name.to_string(),
                stage2,
                password: Some(p.as_bytes().to_vec()),
                pool_mode: None,
                require_tls: false,
                max_connections: None,
                identity: identity_of(&[b"config", name.as_bytes(), &stage2]),
            })
        }
        (None, Some(h)) => {
            let stage2 = auth::parse_native_hash(h.trim()).ok_or_else(|| {
                invalid(format!(
                    "user '{name}': password_hash must be '*' and 40 hex digits, as in mysql.user"
                ))
            })?;
            Ok(User {
                name: name.to_string(),
                stage2,
                password: None,
                pool_mode: None,
                require_tls: false,
                max_connections: None,
                identity: identity_of(&[b"config", name.as_bytes(), &stage2]),
            })
        }
        (None, None) => Err(invalid(format!(
            "user '{name}' has neither password nor password_hash"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses() {
        assert_eq!(
            normalize_backend_addr("127.0.0.1:13306").unwrap(),
            "127.0.0.1:13306"
        );
        assert_eq!(normalize_backend_addr("db1").unwrap(), "db1:3306");
        assert!(normalize_backend_addr(":3306").is_err());
        assert!(normalize_backend_addr("db:0").is_err());
        assert!(normalize_backend_addr("x:99999").is_err());
        assert_eq!(normalize_backend_addr("[::1]:3307").unwrap(), "[::1]:3307");
    }

    #[test]
    fn users_need_exactly_one_secret() {
        assert!(make_user("a", None, None).is_err());
        assert!(make_user(
            "a",
            Some("x"),
            Some("*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9")
        )
        .is_err());
        assert!(make_user("a", None, Some("*6BB4")).is_err());
        let u = make_user("a", None, Some("*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9")).unwrap();
        assert_eq!(
            u.stage2,
            make_user("a", Some("123456"), None).unwrap().stage2
        );
        assert!(!format!("{u:?}").contains("6BB4"));
    }
}
