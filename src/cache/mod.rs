//! The result cache: read results kept in process or in a memcached cluster, never older than
//! a write made through Weiche. Keys carry the generation of every table (and schema) a
//! statement reads; every write through Weiche bumps the generations of what it touched once it
//! has committed, so older entries are simply never found again (see ARCHITECTURE.md, decision
//! 5). The session decides what to cache (`policy`), builds the key (`key`) and relays; this
//! module keeps entries and generations and counts what happens.

mod embedded;
mod key;
pub mod memcached;
pub mod policy;

pub use key::{Key, KeyInput};
pub use policy::{decide, Asker, Plan, Verdict};

use crate::config::{CacheStore, Caching};
use bytes::Bytes;
use memcached::{Batch, Cluster};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a generation counts writes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything (FLUSH CACHE, writes whose schema is unknown).
    All,
    Schema(Vec<u8>),
    /// (schema, table)
    Table(Vec<u8>, Vec<u8>),
}

/// A name as it may appear in a memcached key (printable, no spaces), else its hash.
fn key_part(name: &[u8]) -> String {
    if name.len() <= 64
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'-'))
    {
        String::from_utf8_lossy(name).into_owned()
    } else {
        let d = Sha256::digest(name);
        format!(
            "#{}",
            d[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

impl Scope {
    /// The generation counter's key in memcached.
    pub fn key(&self, namespace: &str) -> String {
        match self {
            Scope::All => format!("{namespace}:g"),
            Scope::Schema(s) => format!("{namespace}:g:{}", key_part(s)),
            Scope::Table(s, t) => format!("{namespace}:g:{}.{}", key_part(s), key_part(t)),
        }
    }

    /// "shop.items", "shop.*", "*" for logs and admin output.
    pub fn describe(&self) -> String {
        match self {
            Scope::All => "*".into(),
            Scope::Schema(s) => format!("{}.*", String::from_utf8_lossy(s)),
            Scope::Table(s, t) => {
                format!(
                    "{}.{}",
                    String::from_utf8_lossy(s),
                    String::from_utf8_lossy(t)
                )
            }
        }
    }
}

/// Hits and misses of one rule (or of hints).
#[derive(Debug, Default)]
pub struct RuleStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

/// What the cache did, for SHOW CACHE and /metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stores: AtomicU64,
    pub stored_bytes: AtomicU64,
    /// Results over cache.max_result_size, with warnings or errors: not stored.
    pub not_stored: AtomicU64,
    /// Lookups that went to the database because the store was unreachable.
    pub bypassed: AtomicU64,
    /// Statements asked for but refused (non-deterministic, in a transaction, ...).
    pub refused: AtomicU64,
    pub bumps: AtomicU64,
    /// Per rule, in config order; the last one counts hints.
    pub rules: Vec<RuleStats>,
}

impl Stats {
    fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn rule(&self, rule: Option<usize>) -> &RuleStats {
        let i = rule
            .unwrap_or(self.rules.len() - 1)
            .min(self.rules.len() - 1);
        &self.rules[i]
    }
}

#[derive(Debug)]
enum Store {
    Embedded(embedded::Embedded),
    Memcached(Cluster),
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Bytes),
    /// Not there: run the statement and store its result under this key.
    Miss(Key),
    /// The store cannot be asked now: run the statement, store nothing.
    Bypass,
}

#[derive(Debug)]
pub struct Cache {
    pub config: Caching,
    store: Store,
    pub stats: Stats,
}

impl Cache {
    /// The cache as configured, or None when it is off.
    pub fn new(config: &Caching) -> Option<Cache> {
        if !config.enabled {
            return None;
        }
        let store = match &config.store {
            CacheStore::Embedded { memory } => Store::Embedded(embedded::Embedded::new(*memory)),
            CacheStore::Memcached { servers } => {
                Store::Memcached(Cluster::new(servers, config.timeout, config.retry_after))
            }
        };
        let stats = Stats {
            rules: (0..=config.rules.len())
                .map(|_| RuleStats::default())
                .collect(),
            ..Stats::default()
        };
        Some(Cache {
            config: config.clone(),
            store,
            stats,
        })
    }

    pub fn store_name(&self) -> &'static str {
        match self.store {
            Store::Embedded(_) => "embedded",
            Store::Memcached(_) => "memcached",
        }
    }

    /// The current generation of each scope; None when some cannot be had.
    pub async fn generations(&self, scopes: &[Scope]) -> Option<Vec<u64>> {
        match &self.store {
            Store::Embedded(e) => Some(e.generations(scopes)),
            Store::Memcached(c) => {
                let ns = &self.config.namespace;
                let keys: Vec<String> = scopes.iter().map(|s| s.key(ns)).collect();
                let (batches, order) = group(c, &keys, |out, k| {
                    memcached::counter(out, k, memcached::now_micros(), 0)
                });
                let replies = c.run(batches).await;
                let mut out = Vec::with_capacity(keys.len());
                for (b, i) in order {
                    let r = replies[b].as_ref()?;
                    out.push(memcached::counter_value(&r[i])?);
                }
                Some(out)
            }
        }
    }

    /// Look a planned statement up: its key from the generations, then the entry. `count`:
    /// a real lookup (EXPLAIN ROUTE's are not counted).
    pub async fn lookup(
        &self,
        plan: &Plan,
        input: impl FnOnce(&[u64]) -> Key,
        count: bool,
    ) -> Lookup {
        let Some(gens) = self.generations(&plan.scopes).await else {
            if count {
                Stats::count(&self.stats.bypassed);
            }
            return Lookup::Bypass;
        };
        let key = input(&gens);
        let found = match &self.store {
            Store::Embedded(e) => Some(e.get(key)),
            Store::Memcached(c) => {
                let text = key.text(&self.config.namespace);
                let mut b = Batch::default();
                memcached::get(&mut b.requests, &text);
                b.count = 1;
                c.run(vec![(c.node_for(&text), b)])
                    .await
                    .pop()
                    .flatten()
                    .map(|mut r| match r.pop() {
                        Some(memcached::McReply::Value(v)) => Some(v),
                        _ => None,
                    })
            }
        };
        let rule = self.stats.rule(plan.rule);
        if !count {
            return match found {
                Some(Some(v)) => Lookup::Hit(v),
                Some(None) => Lookup::Miss(key),
                None => Lookup::Bypass,
            };
        }
        match found {
            Some(Some(v)) => {
                Stats::count(&self.stats.hits);
                Stats::count(&rule.hits);
                Lookup::Hit(v)
            }
            Some(None) => {
                Stats::count(&self.stats.misses);
                Stats::count(&rule.misses);
                Lookup::Miss(key)
            }
            None => {
                Stats::count(&self.stats.bypassed);
                Lookup::Bypass
            }
        }
    }

    /// Keep a result.
    pub async fn put(&self, key: Key, value: Bytes, ttl: Duration) {
        let len = value.len() as u64;
        let stored = match &self.store {
            Store::Embedded(e) => {
                e.put(key, value, ttl);
                true
            }
            Store::Memcached(c) => {
                let text = key.text(&self.config.namespace);
                let mut b = Batch::default();
                // memcached counts whole seconds.
                let secs = ttl.as_secs_f64().ceil().max(1.0) as u64;
                memcached::set(&mut b.requests, &text, &value, secs);
                b.count = 1;
                matches!(
                    c.run(vec![(c.node_for(&text), b)]).await.pop().flatten(),
                    Some(r) if r.first() == Some(&memcached::McReply::Done)
                )
            }
        };
        if stored {
            Stats::count(&self.stats.stores);
            self.stats.stored_bytes.fetch_add(len, Ordering::Relaxed);
        } else {
            Stats::count(&self.stats.not_stored);
        }
    }

    /// A result that was not stored (too large, warnings, an error).
    pub fn not_stored(&self) {
        Stats::count(&self.stats.not_stored);
    }

    /// A statement asked for but refused.
    pub fn refused(&self) {
        Stats::count(&self.stats.refused);
    }

    /// Make every entry that read these scopes unreachable.
    pub async fn bump(&self, scopes: &[Scope]) {
        if scopes.is_empty() {
            return;
        }
        self.stats
            .bumps
            .fetch_add(scopes.len() as u64, Ordering::Relaxed);
        match &self.store {
            Store::Embedded(e) => e.bump(scopes),
            Store::Memcached(c) => {
                let ns = &self.config.namespace;
                let keys: Vec<String> = scopes.iter().map(|s| s.key(ns)).collect();
                let (batches, order) = group(c, &keys, |out, k| {
                    memcached::counter(out, k, memcached::now_micros(), 1)
                });
                let nodes: Vec<usize> = batches.iter().map(|(n, _)| *n).collect();
                let replies = c.run(batches).await;
                for ((b, _), key) in order.into_iter().zip(keys) {
                    if replies[b].is_none() {
                        // Its node is away: nobody reads this generation until it is back,
                        // and then the bump is replayed first.
                        c.defer_bump(nodes[b], key);
                    }
                }
            }
        }
        tracing::debug!(
            scopes = %scopes.iter().map(Scope::describe).collect::<Vec<_>>().join(", "),
            "cache generations bumped"
        );
    }

    /// FLUSH CACHE: everything, or what read one scope.
    pub async fn flush(&self, scope: Option<Scope>) {
        let all = scope.is_none();
        self.bump(&[scope.unwrap_or(Scope::All)]).await;
        if let (true, Store::Embedded(e)) = (all, &self.store) {
            e.clear();
        }
    }

    /// (name, value) lines for SHOW CACHE.
    pub fn describe(&self) -> Vec<(String, String)> {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let hits = s.hits.load(Ordering::Relaxed);
        let misses = s.misses.load(Ordering::Relaxed);
        let ratio = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        let mut out = vec![
            ("store".to_string(), self.store_name().to_string()),
            ("hits".into(), get(&s.hits)),
            ("misses".into(), get(&s.misses)),
            ("hit_ratio".into(), format!("{ratio:.3}")),
            ("stores".into(), get(&s.stores)),
            ("stored_bytes".into(), get(&s.stored_bytes)),
            ("not_stored".into(), get(&s.not_stored)),
            ("bypassed".into(), get(&s.bypassed)),
            ("refused".into(), get(&s.refused)),
            ("generation_bumps".into(), get(&s.bumps)),
        ];
        match &self.store {
            Store::Embedded(e) => {
                let (n, bytes, cap, evicted) = e.usage();
                out.push(("entries".into(), n.to_string()));
                out.push(("bytes".into(), bytes.to_string()));
                out.push(("capacity_bytes".into(), cap.to_string()));
                out.push(("evictions".into(), evicted.to_string()));
            }
            Store::Memcached(c) => {
                out.push(("errors".into(), get(&c.errors)));
                for (addr, up) in c.nodes() {
                    out.push((
                        format!("node {addr}"),
                        if up { "up" } else { "down" }.into(),
                    ));
                }
            }
        }
        for (i, r) in s.rules.iter().enumerate() {
            let name = self
                .config
                .rules
                .get(i)
                .map_or("hints".to_string(), |r| r.name.clone());
            out.push((
                name,
                format!("{} hits, {} misses", get(&r.hits), get(&r.misses)),
            ));
        }
        out
    }

    /// (counter name, value) for /metrics.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        let mut v = vec![
            ("hits", s.hits.load(Ordering::Relaxed)),
            ("misses", s.misses.load(Ordering::Relaxed)),
            ("stores", s.stores.load(Ordering::Relaxed)),
            ("not_stored", s.not_stored.load(Ordering::Relaxed)),
            ("bypassed", s.bypassed.load(Ordering::Relaxed)),
            ("refused", s.refused.load(Ordering::Relaxed)),
            ("generation_bumps", s.bumps.load(Ordering::Relaxed)),
        ];
        match &self.store {
            Store::Embedded(e) => v.push(("evictions", e.usage().3)),
            Store::Memcached(c) => v.push(("store_errors", c.errors.load(Ordering::Relaxed))),
        }
        v
    }
}

/// Per node, its batch.
type Batches = Vec<(usize, Batch)>;
/// Per key, where its reply is: (batch index, reply index).
type ReplyAt = Vec<(usize, usize)>;

/// Requests grouped by node.
fn group(c: &Cluster, keys: &[String], request: impl Fn(&mut Vec<u8>, &str)) -> (Batches, ReplyAt) {
    let mut batches: Vec<(usize, Batch)> = Vec::new();
    let mut order = Vec::with_capacity(keys.len());
    for k in keys {
        let node = c.node_for(k);
        let b = match batches.iter().position(|(n, _)| *n == node) {
            Some(b) => b,
            None => {
                batches.push((node, Batch::default()));
                batches.len() - 1
            }
        };
        request(&mut batches[b].1.requests, k);
        order.push((b, batches[b].1.count));
        batches[b].1.count += 1;
    }
    (batches, order)
}
