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
    pub failed_login_window: Option<f64>,
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
    /// Failed logins from one address within `failed_login_window` before it is refused
    /// (ERR 1129) until the window has passed; 0 turns this off.
    pub max_failed_logins: u32,
    pub failed_login_window: Duration,
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
            failed_login_window: Duration::from_secs(60),
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
        failed_login_window: match f.failed_login_window {
            Some(s) => secs("limits.failed_login_window", s, false)?,
            None => d.failed_login_window,
        },
    })
}
