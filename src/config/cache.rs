//! The `[cache]` section and its `[[cache.rules]]`: where results are kept (in process or in a
//! memcached cluster), how much, for how long, and which statements are cached.

use super::routing::secs;
use super::{invalid, ConfigError};
use regex_lite::Regex;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    /// false turns the cache off, hints and rules included (default true).
    pub enabled: Option<bool>,
    /// memcached nodes (host:port[:weight]); none: the embedded in-process store.
    pub servers: Option<Vec<String>>,
    /// Bytes the embedded store may hold (default 64 MiB).
    pub memory: Option<u64>,
    /// Bytes of memcached's entries kept in process too (default 16 MiB; 0: none).
    pub near_memory: Option<u64>,
    /// Results larger than this many bytes are not cached (default 1 MiB).
    pub max_result_size: Option<usize>,
    /// Seconds a hinted result lives when the hint gives no ttl (default 60).
    pub default_ttl: Option<f64>,
    /// Seconds one memcached request may take before the node counts as failed (default 0.05).
    pub timeout: Option<f64>,
    /// Seconds a failed memcached node is left alone before it is tried again (default 1).
    pub retry_after: Option<f64>,
    /// Prefix of every memcached key Weiche writes (default "weiche").
    pub namespace: Option<String>,
    /// The key memcached entries are sealed with (a MAC); every instance sharing the cluster
    /// needs the same one. None: a random key per process.
    pub secret: Option<String>,
    /// `[cache.binlog]`: invalidation from the primary's binary log.
    pub binlog: Option<FileBinlog>,
    /// "hints" (default): only hints and rules ask for caching; "auto": every cacheable read
    /// whose digest is seen often enough, too (needs `[cache.binlog]`).
    pub mode: Option<String>,
    /// `[cache.auto]`: what auto mode caches.
    pub auto: Option<FileAuto>,
    #[serde(default)]
    pub rules: Vec<FileCacheRule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBinlog {
    /// Follow the primary's binlog (default true once the section is there).
    pub enabled: Option<bool>,
    /// An account with REPLICATION SLAVE (default: the monitor's).
    pub user: Option<String>,
    pub password: Option<String>,
    /// The server id Weiche registers with (default: random, in 2^31 .. 2^32-2).
    pub server_id: Option<u32>,
    /// Seconds the binlog may be behind the primary before hits stop (default 1).
    pub max_lag: Option<f64>,
    /// Seconds between reads of the primary's position (default max_lag / 4, at most 0.25).
    pub check_interval: Option<f64>,
    /// Seconds after a commit arrives that its tables are bumped again (default 0.1).
    pub settle: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAuto {
    /// Times a digest is seen before its results are cached (default 3).
    pub min_seen: Option<u32>,
    /// Results larger than this many bytes are not cached by auto mode (default 65536).
    pub max_result_size: Option<usize>,
    /// Seconds an auto-cached result lives (default 300).
    pub ttl: Option<f64>,
    /// Digests auto mode caches at once, at most (default 1000).
    pub max_digests: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCacheRule {
    /// Regex over the statement's digest.
    pub digest: Option<String>,
    /// Regex over the statement's text.
    pub text: Option<String>,
    pub user: Option<String>,
    pub schema: Option<String>,
    /// A table the statement reads (`name` or `schema.name`).
    pub table: Option<String>,
    /// Seconds a result lives.
    pub ttl: f64,
}

/// Where results live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStore {
    Embedded { memory: u64 },
    Memcached { servers: Vec<Server> },
}

/// One memcached node of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub weight: u32,
}

impl Server {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A statement class that is cached: all given conditions must match; the first rule wins.
#[derive(Debug, Clone)]
pub struct CacheRule {
    pub digest: Option<Regex>,
    pub text: Option<Regex>,
    pub user: Option<String>,
    pub schema: Option<String>,
    pub table: Option<String>,
    pub ttl: Duration,
    /// "cache rule 1", for EXPLAIN ROUTE and statistics.
    pub name: String,
}

/// The cache as configured.
#[derive(Debug, Clone)]
pub struct Caching {
    pub enabled: bool,
    pub store: CacheStore,
    pub max_result_size: usize,
    pub default_ttl: Duration,
    pub timeout: Duration,
    pub retry_after: Duration,
    pub namespace: String,
    pub secret: Option<CacheSecret>,
    /// The near cache in front of memcached, bytes (0: none).
    pub near_memory: u64,
    /// Invalidation from the primary's binlog (None: only writes through Weiche invalidate).
    pub binlog: Option<Binlog>,
    /// `mode = "auto"`: reads are cached without hints (None: hints and rules only).
    pub auto: Option<Auto>,
    pub rules: Vec<CacheRule>,
}

/// What auto mode caches: digests seen `min_seen` times, results up to `max_result_size`.
#[derive(Debug, Clone, PartialEq)]
pub struct Auto {
    pub min_seen: u32,
    pub max_result_size: usize,
    pub ttl: Duration,
    pub max_digests: usize,
}

fn auto(
    mode: Option<&str>,
    f: Option<&FileAuto>,
    binlog: bool,
) -> Result<Option<Auto>, ConfigError> {
    match mode.unwrap_or("hints") {
        "hints" => return Ok(None),
        "auto" => {}
        other => {
            return Err(invalid(format!(
                "cache.mode must be \"hints\" or \"auto\", not \"{other}\""
            )))
        }
    }
    if !binlog {
        return Err(invalid(
            "cache.mode = \"auto\" needs [cache.binlog]: without it a write made elsewhere than \
             through Weiche stays hidden by a hit until the ttl ends",
        ));
    }
    let d = FileAuto::default();
    let f = f.unwrap_or(&d);
    let min_seen = f.min_seen.unwrap_or(3);
    if min_seen == 0 {
        return Err(invalid("cache.auto.min_seen must be at least 1"));
    }
    let max_result_size = f.max_result_size.unwrap_or(64 << 10);
    if max_result_size == 0 || max_result_size >= 1 << 30 {
        return Err(invalid(
            "cache.auto.max_result_size must be between 1 byte and 1 GiB",
        ));
    }
    let max_digests = f.max_digests.unwrap_or(1000);
    if max_digests == 0 {
        return Err(invalid("cache.auto.max_digests must be at least 1"));
    }
    Ok(Some(Auto {
        min_seen,
        max_result_size,
        ttl: match f.ttl {
            Some(s) => secs("cache.auto.ttl", s, false)?,
            None => Duration::from_secs(300),
        },
        max_digests,
    }))
}

/// How the binlog is followed.
#[derive(Debug, Clone, PartialEq)]
pub struct Binlog {
    /// None: the monitor account.
    pub account: Option<super::Credentials>,
    pub server_id: Option<u32>,
    pub max_lag: Duration,
    pub check_interval: Duration,
    pub settle: Duration,
}

fn binlog(f: &FileBinlog) -> Result<Option<Binlog>, ConfigError> {
    if f.enabled == Some(false) {
        return Ok(None);
    }
    let or = |what: &str, v: Option<f64>, d: Duration| match v {
        Some(s) => secs(what, s, false),
        None => Ok(d),
    };
    let max_lag = or("cache.binlog.max_lag", f.max_lag, Duration::from_secs(1))?;
    let check_interval = or(
        "cache.binlog.check_interval",
        f.check_interval,
        (max_lag / 4).min(Duration::from_millis(250)),
    )?;
    if check_interval >= max_lag {
        return Err(invalid(
            "cache.binlog.check_interval must be shorter than cache.binlog.max_lag",
        ));
    }
    if matches!(f.server_id, Some(0) | Some(u32::MAX)) {
        return Err(invalid(
            "cache.binlog.server_id must be between 1 and 4294967294",
        ));
    }
    Ok(Some(Binlog {
        account: f.user.as_ref().map(|u| super::Credentials {
            user: u.clone(),
            password: f.password.clone().unwrap_or_default(),
        }),
        server_id: f.server_id,
        max_lag,
        check_interval,
        settle: or("cache.binlog.settle", f.settle, Duration::from_millis(100))?,
    }))
}

/// cache.secret, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheSecret(pub Vec<u8>);

impl std::fmt::Debug for CacheSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheSecret(..)")
    }
}

impl Default for Caching {
    fn default() -> Self {
        Caching {
            enabled: true,
            store: CacheStore::Embedded { memory: 64 << 20 },
            max_result_size: 1 << 20,
            default_ttl: Duration::from_secs(60),
            timeout: Duration::from_millis(50),
            retry_after: Duration::from_secs(1),
            namespace: "weiche".into(),
            secret: None,
            near_memory: 16 << 20,
            binlog: None,
            auto: None,
            rules: Vec::new(),
        }
    }
}

/// `host:port` or `host:port:weight`.
fn server(s: &str) -> Result<Server, ConfigError> {
    let bad = || {
        invalid(format!(
            "cache.servers: '{s}' is not of the form host:port or host:port:weight"
        ))
    };
    let mut parts = s.trim().split(':');
    let host = parts.next().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    let port: u16 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .filter(|&p| p != 0)
        .ok_or_else(bad)?;
    let weight: u32 = match parts.next() {
        Some(w) => w.parse().ok().filter(|&w| w > 0).ok_or_else(bad)?,
        None => 1,
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Server {
        host: host.to_string(),
        port,
        weight,
    })
}

pub fn caching(f: &FileCache) -> Result<Caching, ConfigError> {
    let d = Caching::default();
    let store = match f.servers.as_deref() {
        Some(list) if !list.is_empty() => CacheStore::Memcached {
            servers: list.iter().map(|s| server(s)).collect::<Result<_, _>>()?,
        },
        _ => {
            let memory = f.memory.unwrap_or(64 << 20);
            if memory < 1 << 20 {
                return Err(invalid("cache.memory must be at least 1048576 bytes"));
            }
            CacheStore::Embedded { memory }
        }
    };
    let max_result_size = f.max_result_size.unwrap_or(d.max_result_size);
    if max_result_size == 0 || max_result_size >= 1 << 30 {
        return Err(invalid(
            "cache.max_result_size must be between 1 byte and 1 GiB",
        ));
    }
    let namespace = f.namespace.clone().unwrap_or(d.namespace);
    if namespace.is_empty()
        || namespace.len() > 64
        || !namespace.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "cache.namespace must be 1 to 64 printable characters without spaces",
        ));
    }
    let or = |what: &str, v: Option<f64>, d: Duration| match v {
        Some(s) => secs(what, s, false),
        None => Ok(d),
    };
    let binlog = match &f.binlog {
        Some(b) => binlog(b)?,
        None => None,
    };
    if f.auto.is_some() && f.mode.as_deref() != Some("auto") {
        return Err(invalid(
            "[cache.auto] is there but cache.mode is not \"auto\"",
        ));
    }
    let near_memory = f.near_memory.unwrap_or(d.near_memory);
    if near_memory != 0 && near_memory < 1 << 20 {
        return Err(invalid(
            "cache.near_memory must be 0 (none) or at least 1048576 bytes",
        ));
    }
    Ok(Caching {
        near_memory,
        enabled: f.enabled.unwrap_or(true),
        auto: auto(f.mode.as_deref(), f.auto.as_ref(), binlog.is_some())?,
        store,
        max_result_size,
        default_ttl: or("cache.default_ttl", f.default_ttl, d.default_ttl)?,
        timeout: or("cache.timeout", f.timeout, d.timeout)?,
        retry_after: or("cache.retry_after", f.retry_after, d.retry_after)?,
        namespace,
        secret: match &f.secret {
            Some(s) if s.len() < 16 => {
                return Err(invalid("cache.secret must be at least 16 characters"))
            }
            Some(s) => Some(CacheSecret(s.as_bytes().to_vec())),
            None => None,
        },
        binlog,
        rules: rules(&f.rules)?,
    })
}

fn rules(file: &[FileCacheRule]) -> Result<Vec<CacheRule>, ConfigError> {
    let regex = |what: &str, i: usize, s: &Option<String>| {
        super::routing::rule_regex(&format!("cache rule {}", i + 1), what, s)
    };
    let mut out = Vec::new();
    for (i, r) in file.iter().enumerate() {
        if r.digest.is_none()
            && r.text.is_none()
            && r.user.is_none()
            && r.schema.is_none()
            && r.table.is_none()
        {
            return Err(invalid(format!(
                "cache rule {}: give at least one of digest, text, user, schema, table",
                i + 1
            )));
        }
        out.push(CacheRule {
            digest: regex("digest", i, &r.digest)?,
            text: regex("text", i, &r.text)?,
            user: r.user.clone(),
            schema: r.schema.clone(),
            table: r.table.clone(),
            ttl: secs(&format!("cache rule {}: ttl", i + 1), r.ttl, false)?,
            name: format!("cache rule {}", i + 1),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_limits() {
        let f: FileCache = toml::from_str(
            r#"servers = ["127.0.0.1:21211", "mc2:11211:3"]
               [[rules]]
               table = "items"
               ttl = 30"#,
        )
        .unwrap();
        let c = caching(&f).unwrap();
        assert_eq!(
            c.store,
            CacheStore::Memcached {
                servers: vec![
                    Server {
                        host: "127.0.0.1".into(),
                        port: 21211,
                        weight: 1
                    },
                    Server {
                        host: "mc2".into(),
                        port: 11211,
                        weight: 3
                    }
                ]
            }
        );
        assert_eq!(c.rules[0].ttl, Duration::from_secs(30));
        for bad in [
            r#"servers = ["nohost"]"#,
            r#"servers = ["a:1:0"]"#,
            r#"memory = 10"#,
            r#"namespace = "a b""#,
            "[[rules]]\nttl = 5",
            "[[rules]]\ntable = \"t\"\nttl = 0",
            "mode = \"auto\"",
            "mode = \"often\"\n[binlog]",
            "[binlog]\n[auto]\nmin_seen = 2",
            "mode = \"auto\"\n[binlog]\n[auto]\nmin_seen = 0",
        ] {
            let f: FileCache = toml::from_str(bad).unwrap();
            assert!(caching(&f).is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_mode_needs_the_binlog() {
        let f: FileCache =
            toml::from_str("mode = \"auto\"\n[binlog]\n[auto]\nmin_seen = 5").unwrap();
        let a = caching(&f).unwrap().auto.unwrap();
        assert_eq!((a.min_seen, a.max_result_size), (5, 64 << 10));
        let f: FileCache = toml::from_str("[binlog]").unwrap();
        assert_eq!(caching(&f).unwrap().auto, None);
    }
}
