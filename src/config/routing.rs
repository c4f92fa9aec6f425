//! The routing, pooling and rule sections of the config file, and their validation.

use super::{invalid, ConfigError};
pub use crate::sql::Consistency;
use regex_lite::Regex;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouting {
    /// Where START TRANSACTION READ ONLY runs: "replica" (default) or "primary".
    pub read_only_transactions: Option<String>,
    /// When no replica can serve a read: "primary" (default) or "error".
    pub no_replica: Option<String>,
    /// What a read may see: "eventual", "session" (default) or "global".
    pub consistency: Option<Consistency>,
    /// Seconds a read waits on a replica for the GTID it must see before the primary serves it.
    pub consistency_wait: Option<f64>,
    /// Seconds a replica may lag before it leaves the read rotation (default 10).
    pub max_replication_lag: Option<f64>,
    /// Seconds after a session's write during which its reads go to the primary, when the
    /// server does not report the write's GTID.
    pub read_your_writes_window: Option<f64>,
    /// Seconds a command may wait for its answer before the client gets an error (0: no limit).
    pub query_timeout: Option<f64>,
    /// Read-your-writes across instances and connections: each write's GTID is published per
    /// user in the cache's memcached cluster, and every session of the user waits for it
    /// (needs [cache] servers). Default false.
    pub shared_read_your_writes: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub max_connections: Option<usize>,
    pub min_idle: Option<usize>,
    pub idle_timeout: Option<f64>,
    pub max_lifetime: Option<f64>,
    pub wait_timeout: Option<f64>,
    pub mode: Option<PoolMode>,
    pub max_prepared_per_connection: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    pub digest: Option<String>,
    pub text: Option<String>,
    pub user: Option<String>,
    pub schema: Option<String>,
    pub target: String,
}

/// How sessions use server connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Hold a connection only while a statement, a transaction or a pin needs it.
    #[default]
    Transaction,
    /// Keep one primary connection for the whole session (1:1), reads still split.
    Session,
}

/// Routing policy.
#[derive(Debug, Clone)]
pub struct Routing {
    pub read_only_transactions_on_replica: bool,
    pub fallback_to_primary: bool,
    pub consistency: Consistency,
    pub consistency_wait: Duration,
    pub max_replication_lag: Duration,
    pub read_your_writes_window: Duration,
    pub query_timeout: Option<Duration>,
    /// Publish writes' GTIDs per user in memcached, and wait for them in every session.
    pub shared_read_your_writes: bool,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            read_only_transactions_on_replica: true,
            fallback_to_primary: true,
            consistency: Consistency::Session,
            consistency_wait: Duration::from_millis(200),
            max_replication_lag: Duration::from_secs(10),
            read_your_writes_window: Duration::from_secs(1),
            query_timeout: None,
            shared_read_your_writes: false,
        }
    }
}

/// Where a rule sends a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTarget {
    Primary,
    Replica,
    /// A backend by address.
    Backend(String),
}

/// A routing rule: all given conditions must match; the first matching rule wins.
#[derive(Debug, Clone)]
pub struct Rule {
    pub digest: Option<Regex>,
    pub text: Option<Regex>,
    pub user: Option<String>,
    pub schema: Option<String>,
    pub target: RuleTarget,
    /// "rule 2", for reasons and logs.
    pub name: String,
}

/// Pool limits for one backend (the whole process's share; each worker gets its part).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    pub max_connections: usize,
    pub min_idle: usize,
    pub idle_timeout: Duration,
    /// A connection this old is closed instead of lent again (HikariCP's maxLifetime): no
    /// server connection lives forever with whatever it accumulated.
    pub max_lifetime: Duration,
    /// How long a command waits for a connection when the backend's are all in use.
    pub wait_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 100,
            min_idle: 0,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(1800),
            wait_timeout: Duration::from_secs(5),
        }
    }
}

/// Pooling as configured.
#[derive(Debug, Clone)]
pub struct Pooling {
    pub settings: PoolSettings,
    pub mode: PoolMode,
    pub max_prepared_per_connection: usize,
}

pub(super) fn secs(what: &str, s: f64, zero_ok: bool) -> Result<Duration, ConfigError> {
    if !(s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s < 86_400.0) {
        return Err(invalid(format!(
            "{what} must be a number of seconds{}, not {s}",
            if zero_ok { " (0 or more)" } else { " above 0" }
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

pub fn routing(f: &FileRouting) -> Result<Routing, ConfigError> {
    let d = Routing::default();
    let read_only_transactions_on_replica = match f.read_only_transactions.as_deref() {
        None | Some("replica") => true,
        Some("primary") => false,
        Some(o) => {
            return Err(invalid(format!(
                "routing.read_only_transactions: '{o}' is not \"replica\" or \"primary\""
            )))
        }
    };
    let fallback_to_primary = match f.no_replica.as_deref() {
        None | Some("primary") => true,
        Some("error") => false,
        Some(o) => {
            return Err(invalid(format!(
                "routing.no_replica: '{o}' is not \"primary\" or \"error\""
            )))
        }
    };
    let read_your_writes_window = match f.read_your_writes_window {
        Some(s) => secs("routing.read_your_writes_window", s, true)?,
        None => d.read_your_writes_window,
    };
    let or = |what: &str, v: Option<f64>, d: Duration| match v {
        Some(s) => secs(what, s, true),
        None => Ok(d),
    };
    let query_timeout = or("routing.query_timeout", f.query_timeout, Duration::ZERO)?;
    Ok(Routing {
        read_only_transactions_on_replica,
        fallback_to_primary,
        consistency: f.consistency.unwrap_or(d.consistency),
        consistency_wait: or(
            "routing.consistency_wait",
            f.consistency_wait,
            d.consistency_wait,
        )?,
        max_replication_lag: or(
            "routing.max_replication_lag",
            f.max_replication_lag,
            d.max_replication_lag,
        )?,
        read_your_writes_window,
        query_timeout: Some(query_timeout).filter(|t| !t.is_zero()),
        shared_read_your_writes: f.shared_read_your_writes.unwrap_or(false),
    })
}

pub fn pooling(f: &FilePool) -> Result<Pooling, ConfigError> {
    let d = PoolSettings::default();
    let max_connections = f.max_connections.unwrap_or(d.max_connections);
    if max_connections == 0 {
        return Err(invalid("pool.max_connections must be at least 1"));
    }
    let min_idle = f.min_idle.unwrap_or(d.min_idle);
    if min_idle > max_connections {
        return Err(invalid(
            "pool.min_idle must not exceed pool.max_connections",
        ));
    }
    let max_prepared_per_connection = f.max_prepared_per_connection.unwrap_or(256);
    if max_prepared_per_connection == 0 {
        return Err(invalid(
            "pool.max_prepared_per_connection must be at least 1",
        ));
    }
    Ok(Pooling {
        settings: PoolSettings {
            max_connections,
            min_idle,
            idle_timeout: match f.idle_timeout {
                Some(s) => secs("pool.idle_timeout", s, false)?,
                None => d.idle_timeout,
            },
            max_lifetime: match f.max_lifetime {
                Some(s) => secs("pool.max_lifetime", s, false)?,
                None => d.max_lifetime,
            },
            wait_timeout: match f.wait_timeout {
                Some(s) => secs("pool.wait_timeout", s, false)?,
                None => d.wait_timeout,
            },
        },
        mode: f.mode.unwrap_or_default(),
        max_prepared_per_connection,
    })
}

/// A rule's regex condition, compiled; `rule` names the rule in the error ("rule 2").
pub(super) fn rule_regex(
    rule: &str,
    what: &str,
    s: &Option<String>,
) -> Result<Option<Regex>, ConfigError> {
    s.as_deref()
        .map(|s| {
            Regex::new(s).map_err(|e| invalid(format!("{rule}: {what} is not a valid regex: {e}")))
        })
        .transpose()
}

/// Rules in file order; a target names "primary", "replica" or a configured backend address.
pub fn rules(file: &[FileRule], backends: &[String]) -> Result<Vec<Rule>, ConfigError> {
    let regex =
        |what: &str, i: usize, s: &Option<String>| rule_regex(&format!("rule {}", i + 1), what, s);
    let mut out = Vec::new();
    for (i, r) in file.iter().enumerate() {
        let target = match r.target.as_str() {
            "primary" => RuleTarget::Primary,
            "replica" => RuleTarget::Replica,
            other => {
                let addr = super::normalize_backend_addr(other).map_err(|_| {
                    invalid(format!(
                        "rule {}: target '{other}' is not primary, replica or a backend address",
                        i + 1
                    ))
                })?;
                if !backends.contains(&addr) {
                    return Err(invalid(format!(
                        "rule {}: target {addr} is not a configured backend",
                        i + 1
                    )));
                }
                RuleTarget::Backend(addr)
            }
        };
        if r.digest.is_none() && r.text.is_none() && r.user.is_none() && r.schema.is_none() {
            return Err(invalid(format!(
                "rule {}: give at least one of digest, text, user, schema",
                i + 1
            )));
        }
        out.push(Rule {
            digest: regex("digest", i, &r.digest)?,
            text: regex("text", i, &r.text)?,
            user: r.user.clone(),
            schema: r.schema.clone(),
            target,
            name: format!("rule {}", i + 1),
        });
    }
    Ok(out)
}
