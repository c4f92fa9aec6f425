//! `[limits]`: what one client, one user or one address may take. Each refusal is a MySQL ERR
//! with MariaDB's code, a log line and a count in `weiche_limit_refusals_total`.

use super::routing::secs;
use super::{invalid, ConfigError};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_connections: Option<usize>,
    pub max_user_connections: Option<usize>,
    pub login_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub max_prepared_statements: Option<usize>,
    pub max_failed_logins: Option<u32>,
    pub max_handshake_errors: Option<u32>,
    pub failed_login_window: Option<f64>,
    pub trusted_networks: Option<Vec<String>>,
}

/// The validated limits (0 = no limit where a count allows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Client connections at once, logged in or not (ERR 1040).
    pub max_connections: usize,
    /// Sessions one user may have at once, unless the user sets its own (ERR 1203).
    pub max_user_connections: usize,
    /// From accept to logged in, TLS handshake included: a silent or trickling client is dropped.
    pub login_timeout: Duration,
    /// A session that sends nothing for this long is closed (None: never).
    pub idle_timeout: Option<Duration>,
    /// Prepared statements one session may hold (ERR 1461).
    pub max_prepared_statements: usize,
    /// Wrong passwords for one user name from one address within `failed_login_window`
    /// before that account is refused from that address (ERR 1129) until the window has
    /// passed; 0 turns this off.
    pub max_failed_logins: u32,
    /// Malformed logins (garbage, bad handshakes) from one address within the window before
    /// the address gets ERR 1129 instead of a greeting; a successful login from it starts the
    /// count over (MariaDB's max_connect_errors); 0 turns this off.
    pub max_handshake_errors: u32,
    pub failed_login_window: Duration,
    /// Addresses no login limit counts (the application servers' own network).
    pub trusted_networks: Vec<Network>,
}

impl Limits {
    /// `ip` is in a trusted network.
    pub fn trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_networks.iter().any(|n| n.contains(ip))
    }
}

/// An address block, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.base, ip) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(b) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(b) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let base: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not an address or address/prefix"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': the prefix must be 0 to {max}"))?
        };
        Ok(Network { base, prefix })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            max_user_connections: 0,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(28_800)),
            max_prepared_statements: 1024,
            max_failed_logins: 20,
            max_handshake_errors: 100,
            failed_login_window: Duration::from_secs(60),
            trusted_networks: Vec::new(),
        }
    }
}

pub fn limits(f: &FileLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let max_connections = f.max_connections.unwrap_or(d.max_connections);
    if max_connections == 0 {
        return Err(invalid("limits.max_connections must be at least 1"));
    }
    let max_prepared_statements = f
        .max_prepared_statements
        .unwrap_or(d.max_prepared_statements);
    if max_prepared_statements == 0 {
        return Err(invalid("limits.max_prepared_statements must be at least 1"));
    }
    Ok(Limits {
        max_connections,
        max_user_connections: f.max_user_connections.unwrap_or(d.max_user_connections),
        login_timeout: match f.login_timeout {
            Some(s) => secs("limits.login_timeout", s, false)?,
            None => d.login_timeout,
        },
        idle_timeout: match f.idle_timeout {
            Some(0.0) => None,
            Some(s) => Some(secs("limits.idle_timeout", s, false)?),
            None => d.idle_timeout,
        },
        max_prepared_statements,
        max_failed_logins: f.max_failed_logins.unwrap_or(d.max_failed_logins),
        max_handshake_errors: f.max_handshake_errors.unwrap_or(d.max_handshake_errors),
        trusted_networks: f
            .trusted_networks
            .iter()
            .flatten()
            .map(|n| {
                n.parse()
                    .map_err(|e| invalid(format!("limits.trusted_networks: {e}")))
            })
            .collect::<Result<_, _>>()?,
        failed_login_window: match f.failed_login_window {
            Some(s) => secs("limits.failed_login_window", s, false)?,
            None => d.failed_login_window,
        },
    })
}
