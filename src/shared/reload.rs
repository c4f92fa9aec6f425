//! Hot reload (SIGHUP, the admin port's RELOAD CONFIG): re-read the configuration the process
//! was started with, validate it, and apply what can change while sessions run: users, routing
//! and its rules, pooling, cache rules and limits, backend weights, the log level. Sessions pick
//! the new configuration up at their next command; none is dropped. A file that does not
//! validate is refused with the reason and the running configuration stays. What only a restart
//! can change (addresses, the backend list, the cache store, the monitor) is named as such.

use super::Shared;
use crate::config::{Cli, Config, LoadedConfig};
use clap::Parser;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// What changed and now applies.
    pub applied: Vec<String>,
    /// What changed but needs a restart (the old value stays).
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    pub fn summary(&self) -> String {
        let mut s = if self.applied.is_empty() {
            "configuration re-read: nothing changed that applies".to_string()
        } else {
            format!("configuration reloaded: {}", self.applied.join("; "))
        };
        if !self.needs_restart.is_empty() {
            s.push_str(&format!(
                "; changed but only applied by a restart: {}",
                self.needs_restart.join("; ")
            ));
        }
        s
    }
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the command line no longer parses: {0}")]
    Flags(String),
    #[error("Weiche was started without --config or --defaults-file: there is no file to re-read")]
    NoFile,
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigError),
}

fn differs<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

impl Shared {
    /// Reload and log what happened, once (SIGHUP, RELOAD CONFIG); the summary of what changed.
    pub fn reload_logged(&self, why: &str) -> Result<String, ReloadError> {
        match self.reload() {
            Ok(r) => {
                let summary = r.summary();
                tracing::info!("{why}: {summary}");
                Ok(summary)
            }
            Err(e) => {
                tracing::error!("{why}: the configuration is refused, the running one stays: {e}");
                Err(e)
            }
        }
    }

    /// Re-read the configuration (the same flags and files as at start).
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let cli = Cli::try_parse_from(std::env::args_os())
            .map_err(|e| ReloadError::Flags(e.to_string()))?;
        if cli.config.is_none() && cli.defaults_file.is_none() {
            return Err(ReloadError::NoFile);
        }
        let new = LoadedConfig::load(cli)?.config;
        let old = self.config();
        let mut r = Reloaded::default();
        self.apply_backends(&old, &new, &mut r);
        let mut note = |changed: bool, what: &str, restart: bool| {
            if changed {
                if restart {
                    r.needs_restart.push(what.to_string());
                } else {
                    r.applied.push(what.to_string());
                }
            }
        };
        let users_changed = old.users.len() != new.users.len()
            || old.users.iter().zip(&new.users).any(|(a, b)| a != b);
        note(users_changed, "users", false);
        note(differs(&old.rules, &new.rules), "routing rules", false);
        note(differs(&old.routing, &new.routing), "routing", false);
        note(differs(&old.pool, &new.pool), "pooling", false);
        let cache_policy = |c: &crate::config::Caching| {
            format!(
                "{} {:?} {} {:?} {:?}",
                c.enabled, c.rules, c.max_result_size, c.default_ttl, c.auto
            )
        };
        note(
            cache_policy(&old.cache) != cache_policy(&new.cache),
            "cache rules and limits",
            false,
        );
        note(
            differs(&old.cache.store, &new.cache.store)
                || old.cache.namespace != new.cache.namespace
                || old.cache.timeout != new.cache.timeout
                || old.cache.retry_after != new.cache.retry_after
                || old.cache.binlog != new.cache.binlog
                || old.cache.near_memory != new.cache.near_memory,
            "cache store",
            true,
        );
        note(old.listen != new.listen, "proxy address", true);
        note(
            old.admin_address != new.admin_address || differs(&old.admin, &new.admin),
            "admin address and account",
            true,
        );
        note(old.http_address != new.http_address, "http address", true);
        note(
            old.event_threads != new.event_threads,
            "event threads",
            true,
        );
        note(
            differs(&old.monitoring, &new.monitoring) || differs(&old.monitor, &new.monitor),
            "monitor",
            true,
        );
        note(differs(&old.script, &new.script), "Lua script", true);
        note(old.max_digests != new.max_digests, "max_digests", true);
        note(
            old.log_file != new.log_file || differs(&old.log_format, &new.log_format),
            "log file and format",
            true,
        );
        if old.log_level != new.log_level {
            match crate::logging::set_level(&new.log_level) {
                Ok(()) => r.applied.push(format!("log level {}", new.log_level)),
                Err(e) => r.needs_restart.push(format!("log level ({e})")),
            }
        }
        if let Some(cache) = &self.cache {
            if cache_policy(&old.cache) != cache_policy(&new.cache) {
                cache.rules_changed(new.cache.rules.len());
            }
        }
        // Keep what a restart would change as it runs now, so that what the process reports is
        // what it does.
        let kept = Config {
            listen: old.listen,
            event_threads: old.event_threads,
            // The list stays; its weights are the file's.
            backends: old
                .backends
                .iter()
                .map(|b| crate::config::Backend {
                    weight: new
                        .backends
                        .iter()
                        .find(|n| n.address == b.address)
                        .map_or(b.weight, |n| n.weight),
                    ..b.clone()
                })
                .collect(),
            monitor: old.monitor.clone(),
            monitoring: old.monitoring.clone(),
            admin_address: old.admin_address,
            admin: old.admin.clone(),
            http_address: old.http_address,
            log_file: old.log_file.clone(),
            log_format: old.log_format,
            script: old.script.clone(),
            admin_script: old.admin_script.clone(),
            max_digests: old.max_digests,
            cache: crate::config::Caching {
                store: old.cache.store.clone(),
                namespace: old.cache.namespace.clone(),
                secret: old.cache.secret.clone(),
                timeout: old.cache.timeout,
                retry_after: old.cache.retry_after,
                near_memory: old.cache.near_memory,
                binlog: old.cache.binlog.clone(),
                // Auto mode needs the binlog follower, which only a restart starts.
                auto: new
                    .cache
                    .auto
                    .clone()
                    .filter(|_| old.cache.binlog.is_some()),
                ..new.cache.clone()
            },
            ..new
        };
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(kept),
            Err(p) => *p.into_inner() = Arc::new(kept),
        }
        self.config_epoch.fetch_add(1, Ordering::Release);
        Ok(r)
    }

    /// Weights change in place; a backend added, removed or given another role needs a restart.
    fn apply_backends(&self, old: &Config, new: &Config, r: &mut Reloaded) {
        let same_list = old.backends.len() == new.backends.len()
            && old
                .backends
                .iter()
                .zip(&new.backends)
                .all(|(a, b)| a.address == b.address && a.role == b.role);
        if !same_list {
            let list = |c: &Config| {
                c.backends
                    .iter()
                    .map(|b| format!("{} ({})", b.address, b.role.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            r.needs_restart.push(format!(
                "backends (now {}; the file has {})",
                list(old),
                list(new)
            ));
        }
        for b in &new.backends {
            if let Some(live) = self
                .backends
                .backends
                .iter()
                .find(|l| l.address == b.address)
            {
                let before = live.weight.swap(b.weight.max(1), Ordering::Relaxed);
                if before != b.weight.max(1) {
                    r.applied
                        .push(format!("weight of {} {before} -> {}", b.address, b.weight));
                }
            }
        }
    }
}
