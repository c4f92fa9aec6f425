//! The `[monitor]` section: the account the backend monitor logs in with, and how often and how
//! patiently it checks each backend.

use super::routing::secs;
use super::{invalid, ConfigError, Credentials};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMonitor {
    pub user: Option<String>,
    #[serde(default)]
    pub password: String,
    /// Seconds between checks of one backend (default 0.5, at least 0.1).
    pub interval: Option<f64>,
    /// Seconds one check may take, connecting included (default 1).
    pub timeout: Option<f64>,
    /// Failed checks in a row that make a backend down (default 2).
    pub down_after: Option<u32>,
    /// Good checks in a row that bring a down backend back (default 2).
    pub up_after: Option<u32>,
    /// Read application accounts from the primary's mysql.user (default false).
    pub load_users: Option<bool>,
    /// Seconds between two readings of mysql.user (default 60).
    pub users_refresh: Option<f64>,
}

/// How the monitor works.
#[derive(Debug, Clone, PartialEq)]
pub struct Monitoring {
    pub interval: Duration,
    pub timeout: Duration,
    pub down_after: u32,
    pub up_after: u32,
    /// Accounts not in the config are read from the primary's mysql.user.
    pub load_users: bool,
    pub users_refresh: Duration,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            down_after: 2,
            up_after: 2,
            load_users: false,
            users_refresh: Duration::from_secs(2),
        }
    }
}

/// The monitor account (a `--monitor-user` flag wins over the file) and its settings.
pub fn monitoring(
    file: &FileMonitor,
    flag: Option<Credentials>,
) -> Result<(Option<Credentials>, Monitoring), ConfigError> {
    let d = Monitoring::default();
    let account = flag.or_else(|| {
        file.user.as_ref().map(|u| Credentials {
            user: u.clone(),
            password: file.password.clone(),
        })
    });
    let interval = match file.interval {
        Some(s) => secs("monitor.interval", s, false)?,
        None => d.interval,
    };
    if interval < Duration::from_millis(100) {
        return Err(invalid("monitor.interval must be at least 0.1 seconds"));
    }
    let timeout = match file.timeout {
        Some(s) => secs("monitor.timeout", s, false)?,
        None => d.timeout,
    };
    let count = |what: &str, v: Option<u32>, default: u32| -> Result<u32, ConfigError> {
        match v {
            Some(0) => Err(invalid(format!("monitor.{what} must be at least 1"))),
            Some(n) => Ok(n),
            None => Ok(default),
        }
    };
    let load_users = file.load_users.unwrap_or(false);
    if load_users && account.is_none() {
        return Err(invalid(
            "monitor.load_users reads mysql.user with the monitor account: give monitor.user",
        ));
    }
    let users_refresh = match file.users_refresh {
        Some(s) => secs("monitor.users_refresh", s, false)?,
        None => d.users_refresh,
    };
    Ok((
        account,
        Monitoring {
            interval,
            timeout,
            down_after: count("down_after", file.down_after, d.down_after)?,
            up_after: count("up_after", file.up_after, d.up_after)?,
            load_users,
            users_refresh,
        },
    ))
}
