//! The fleet: the Weiche instances sharing one memcached cluster (`[cache] servers`), found by
//! their heartbeats, for SHOW FLEET, /status.json and the status page. Each instance claims one
//! of `SLOTS` slot keys (`<namespace>:fleet:<n>`, with memcached's add, so that no two hold one)
//! and rewrites it every `HEARTBEAT` to live three heartbeats: its id, version, the digest of its
//! configuration (what every instance should agree on: all but addresses, files and thread
//! counts) and its load. The same round reads every slot, so the list an instance shows is at
//! most one heartbeat old; one that stops is gone within `LIFETIME_SECS`. Entries are sealed as
//! cache entries are (cache.secret): an instance with another secret, or a forged entry, is not
//! listed.

use super::Shared;
use crate::cache::memcached::{self, Batch, Cluster, McReply};
use crate::cache::Cache;
use crate::config::Config;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Slot keys: at most this many instances are listed.
pub const SLOTS: usize = 64;
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A slot's lifetime in memcached: three heartbeats.
const LIFETIME_SECS: u64 = 6;
const FORMAT: &str = "weiche-fleet-1";

/// One instance as its heartbeat describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// `<host>:<pid>`.
    pub id: String,
    pub version: String,
    pub config_digest: String,
    /// Where it takes clients.
    pub address: String,
    pub sessions: u64,
    /// Commands per second over its last heartbeat.
    pub qps: f64,
    pub uptime_secs: u64,
}

impl Member {
    fn encode(&self) -> Vec<u8> {
        format!(
            "{FORMAT}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{}",
            self.id,
            self.version,
            self.config_digest,
            self.address,
            self.sessions,
            self.qps,
            self.uptime_secs
        )
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Member> {
        let text = std::str::from_utf8(bytes).ok()?;
        let f: Vec<&str> = text.split('\t').collect();
        if f.len() != 8 || f[0] != FORMAT {
            return None;
        }
        Some(Member {
            id: f[1].into(),
            version: f[2].into(),
            config_digest: f[3].into(),
            address: f[4].into(),
            sessions: f[5].parse().ok()?,
            qps: f[6].parse().ok()?,
            uptime_secs: f[7].parse().ok()?,
        })
    }
}

/// This instance's place in the fleet.
#[derive(Debug)]
pub struct Fleet {
    pub id: String,
    /// The address clients reach this instance at (as bound: the configured port may be 0).
    address: Mutex<String>,
    slot: Mutex<Option<usize>>,
    /// The members seen at the last heartbeat (this instance first).
    members: Mutex<Vec<Member>>,
    /// Commands counted at the last heartbeat, and when.
    last: Mutex<(Instant, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The digest of what every instance of a fleet should share: the configuration without its
/// addresses, files and thread count (12 hex digits of SHA-256 over its description).
pub fn config_digest(config: &Config) -> String {
    let mut c = config.clone();
    let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    c.listen = any;
    c.admin_address = c.admin_address.map(|_| any);
    c.http_address = c.http_address.map(|_| any);
    c.event_threads = 0;
    c.log_file = None;
    c.query_log = None;
    c.slow_log = None;
    c.pid_file = None;
    let d = Sha256::digest(format!("{c:?}").as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn slot_key(namespace: &str, slot: usize) -> String {
    format!("{namespace}:fleet:{slot}")
}

impl Fleet {
    pub fn new() -> Fleet {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Fleet {
            id: format!("{host}:{}", std::process::id()),
            address: Mutex::new(String::new()),
            slot: Mutex::new(None),
            members: Mutex::new(Vec::new()),
            last: Mutex::new((Instant::now(), 0)),
        }
    }

    fn address(&self, config: &Config) -> String {
        let a = lock(&self.address);
        if a.is_empty() {
            config.listen.to_string()
        } else {
            a.clone()
        }
    }

    /// This instance now, counting a heartbeat (its qps is since the last one).
    fn me(&self, shared: &Shared) -> Member {
        let commands = shared.metrics.commands();
        let mut last = lock(&self.last);
        let secs = last.0.elapsed().as_secs_f64();
        let qps = if secs > 0.0 {
            commands.saturating_sub(last.1) as f64 / secs
        } else {
            0.0
        };
        *last = (Instant::now(), commands);
        drop(last);
        self.member(shared, qps)
    }

    fn member(&self, shared: &Shared, qps: f64) -> Member {
        let config = shared.config();
        Member {
            id: self.id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            config_digest: config_digest(&config),
            address: self.address(&config),
            sessions: shared.registry.len() as u64,
            qps,
            uptime_secs: shared.metrics.started.elapsed().as_secs(),
        }
    }

    /// The members seen at the last heartbeat, this instance first; without a memcached
    /// cluster (or before the first heartbeat), this instance alone.
    pub fn members(&self, shared: &Shared) -> Vec<Member> {
        let m = lock(&self.members);
        if m.is_empty() {
            drop(m);
            return vec![self.member(shared, 0.0)];
        }
        m.clone()
    }

    /// Every slot's member (None: empty, expired, or not sealed with our secret).
    async fn read(cache: &Cache, c: &Cluster, ns: &str) -> Option<Vec<Option<Member>>> {
        let keys: Vec<String> = (0..SLOTS).map(|s| slot_key(ns, s)).collect();
        let mut batches: Vec<(usize, Batch)> = Vec::new();
        let mut at = Vec::with_capacity(SLOTS);
        for k in &keys {
            let node = c.node_for(k);
            let b = match batches.iter().position(|(n, _)| *n == node) {
                Some(b) => b,
                None => {
                    batches.push((node, Batch::default()));
                    batches.len() - 1
                }
            };
            memcached::get(&mut batches[b].1.requests, k);
            at.push((b, batches[b].1.count));
            batches[b].1.count += 1;
        }
        let replies = c.run(batches).await;
        let mut out = Vec::with_capacity(SLOTS);
        for (k, (b, i)) in keys.iter().zip(at) {
            let reply = replies[b].as_ref()?.get(i);
            out.push(match reply {
                Some(McReply::Value(v, ..)) => cache
                    .open_sealed(k.as_bytes(), v.clone())
                    .and_then(|v| Member::decode(&v)),
                _ => None,
            });
        }
        Some(out)
    }

    /// One heartbeat: read the slots, keep (or claim) ours, write it.
    async fn beat(&self, shared: &Shared, cache: &Cache, c: &Cluster) {
        let ns = &cache.config.namespace;
        let me = self.me(shared);
        let Some(slots) = Fleet::read(cache, c, ns).await else {
            // A node is away: show what we last saw.
            return;
        };
        let held = *lock(&self.slot);
        let ours = |s: usize| slots[s].as_ref().is_some_and(|m| m.id == me.id);
        let start = {
            let d = Sha256::digest(self.id.as_bytes());
            usize::from(d[0]) % SLOTS
        };
        let (slot, add) = match held {
            Some(s) if ours(s) => (Some(s), false),
            Some(s) if slots[s].is_none() => (Some(s), true),
            _ => (
                (0..SLOTS)
                    .map(|i| (start + i) % SLOTS)
                    .find(|&s| slots[s].is_none()),
                true,
            ),
        };
        let mut written = false;
        if let Some(s) = slot {
            let key = slot_key(ns, s);
            let value = cache.seal(key.as_bytes(), me.encode());
            let mut b = Batch::default();
            if add {
                memcached::add(&mut b.requests, &key, &value, LIFETIME_SECS);
            } else {
                memcached::set(&mut b.requests, &key, &value, LIFETIME_SECS);
            }
            b.count = 1;
            written = matches!(
                c.run(vec![(c.node_for(&key), b)]).await.pop().flatten(),
                Some(r) if r.first() == Some(&McReply::Done)
            );
        }
        *lock(&self.slot) = slot.filter(|_| written);
        if slot.is_some() && !written {
            tracing::debug!("fleet: another instance took the slot first; trying again");
        }
        if slot.is_none() {
            tracing::warn!("fleet: all {SLOTS} slots are taken; this instance is not listed");
        }
        let mut members = vec![me.clone()];
        members.extend(slots.into_iter().flatten().filter(|m| m.id != me.id));
        *lock(&self.members) = members;
    }
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

/// Beat for as long as Weiche runs (with a memcached cluster; else there is no fleet to find).
/// `listening`: the proxy's bound address.
pub fn start(shared: Arc<Shared>, listening: std::net::SocketAddr) {
    *lock(&shared.fleet.address) = listening.to_string();
    let Some(cache) = shared.cache.clone() else {
        return;
    };
    if cache.cluster().is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            if let Some(c) = cache.cluster() {
                shared.fleet.beat(&shared, &cache, c).await;
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_reads_back_and_garbage_does_not() {
        let m = Member {
            id: "web1:42".into(),
            version: "0.1.0".into(),
            config_digest: "0123456789ab".into(),
            address: "127.0.0.1:4040".into(),
            sessions: 7,
            qps: 12.5,
            uptime_secs: 99,
        };
        assert_eq!(Member::decode(&m.encode()), Some(m));
        for bad in [
            &b""[..],
            b"weiche-fleet-1\ta",
            b"other\t1\t2\t3\t4\t5\t6\t7",
            b"\xff",
        ] {
            assert_eq!(Member::decode(bad), None);
        }
    }

    fn config() -> Config {
        use clap::Parser;
        let cli = crate::config::Cli::try_parse_from([
            "weiche",
            "-b",
            "127.0.0.1:13306",
            "--user",
            "app:secret",
        ])
        .expect("flags");
        crate::config::LoadedConfig::load(cli)
            .expect("config")
            .config
    }

    #[test]
    fn the_digest_ignores_what_differs_per_instance() {
        let a = config();
        let mut b = a.clone();
        b.listen = "127.0.0.1:9".parse().unwrap();
        b.event_threads = 7;
        assert_eq!(config_digest(&a), config_digest(&b));
        b.max_digests += 1;
        assert_ne!(config_digest(&a), config_digest(&b));
    }
}
