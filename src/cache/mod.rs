//! The result cache: read results kept in process or in a memcached cluster, never older than
//! a write made through Weiche. Every entry carries the generation of every table (and schema)
//! its statement read when it was made; every write through Weiche bumps the generations of
//! what it touched once it has committed, so an older entry never matches again (see
//! ARCHITECTURE.md, decision 5). The generations are stamped on the entry instead of hashed
//! into its key, so that one round trip fetches both. The session decides what to cache (`policy`), builds the key (`key`) and relays; this
//! module keeps entries and generations and counts what happens.

pub mod auto;
pub mod binlog;
mod embedded;
mod entry;
mod key;
pub mod memcached;
pub mod policy;
mod report;

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
    /// Hits answered from the near cache (memcached's entries kept in process too).
    pub near_hits: AtomicU64,
    /// memcached entries whose MAC or bytes were wrong: not relayed (forged, or written with
    /// another cache.secret).
    pub rejected: AtomicU64,
    /// Per rule, in config order; the last one counts hints. Replaced when a reload changes
    /// the rules.
    pub rules: std::sync::RwLock<Vec<RuleStats>>,
}

impl Stats {
    fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a hit or a miss for a rule (None: a hint).
    fn count_rule(&self, rule: Option<usize>, hit: bool) {
        let rules = self
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = rules.len().saturating_sub(1);
        if let Some(r) = rules.get(rule.unwrap_or(last).min(last)) {
            Stats::count(if hit { &r.hits } else { &r.misses });
        }
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
    /// The response's row count and its bytes.
    Hit(u64, Bytes),
    /// Not there: run the statement and store its result under this key, stamped with these
    /// generations.
    Miss(Key, Vec<u64>),
    /// The store cannot be asked now: run the statement, store nothing.
    Bypass,
}

#[derive(Debug)]
pub struct Cache {
    pub config: Caching,
    store: Store,
    /// Seals memcached entries (`entry`): the store is not trusted.
    sealer: entry::Sealer,
    pub stats: Stats,
    /// How far the binlog follower has come (cache.binlog): hits wait for it.
    pub tail: Option<std::sync::Arc<binlog::Tail>>,
    /// What else changes when a table does: foreign-key cascades and views (read from the
    /// primary with cache.binlog; see `binlog::catalog`).
    dependents: std::sync::RwLock<std::collections::HashMap<Scope, Vec<Scope>>>,
    /// Auto mode's admission and its cached digests.
    pub auto: auto::Admission,
    /// memcached's entries kept in process too (cache.near_memory): a hit then needs only the
    /// generations from memcached, a read shared with the lookups waiting at the same time.
    near: Option<embedded::Embedded>,
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
                Store::Memcached(Cluster::new(
                    servers,
                    config.timeout,
                    config.retry_after,
                    // The entry's generations, row count and MAC around the result.
                    config.max_result_size + 4096,
                ))
            }
        };
        let stats = Stats {
            rules: std::sync::RwLock::new(
                (0..=config.rules.len())
                    .map(|_| RuleStats::default())
                    .collect(),
            ),
            ..Stats::default()
        };
        if matches!(config.store, CacheStore::Memcached { .. }) && config.secret.is_none() {
            tracing::warn!(
                "cache.secret is not set: memcached entries are sealed with a key of this process \
                 and not shared with other Weiche instances"
            );
        }
        Some(Cache {
            sealer: entry::Sealer::new(config.secret.as_ref().map(|s| &s.0[..])),
            config: config.clone(),
            store,
            stats,
            tail: config
                .binlog
                .as_ref()
                .map(|b| std::sync::Arc::new(binlog::Tail::new(b.max_lag))),
            dependents: Default::default(),
            auto: auto::Admission::default(),
            near: match config.store {
                CacheStore::Memcached { .. } if config.near_memory > 0 => {
                    Some(embedded::Embedded::new(config.near_memory))
                }
                _ => None,
            },
        })
    }

    /// The memcached cluster, when that is the store.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.store {
            Store::Memcached(c) => Some(c),
            Store::Embedded(_) => None,
        }
    }

    /// Seal a value for memcached under `key` (cache.secret), as entries are.
    pub fn seal(&self, key: &[u8], value: Vec<u8>) -> Bytes {
        self.sealer.seal(key, value)
    }

    /// A sealed value's contents, if we (or an instance with our secret) sealed it for `key`.
    pub fn open_sealed(&self, key: &[u8], value: Bytes) -> Option<Bytes> {
        self.sealer.open(key, value)
    }

    pub fn store_name(&self) -> &'static str {
        match self.store {
            Store::Embedded(_) => "embedded",
            Store::Memcached(_) => "memcached",
        }
    }

    /// Look a planned statement up: the generations of what it reads and the entry, asked
    /// together (one round trip, to the entry's memcached node; with the near cache holding
    /// the entry, a generation read shared with the lookups waiting at the same time). The
    /// entry is a hit only if it was stamped with exactly the current generations. `count`: a
    /// real lookup (EXPLAIN ROUTE's are not counted).
    pub async fn lookup(&self, plan: &Plan, key: Key, count: bool) -> Lookup {
        if self.tail.as_ref().is_some_and(|t| !t.fresh()) {
            // The binlog is behind or broken: a hit could hide a write made elsewhere.
            if let (true, Some(t)) = (count, &self.tail) {
                Stats::count(&t.held);
                Stats::count(&self.stats.bypassed);
            }
            return Lookup::Bypass;
        }
        let found = match &self.store {
            Store::Embedded(e) => {
                let gens = e.generations(&plan.scopes);
                let hit = e.get(key).and_then(|v| entry::unstamp(v, &gens));
                Some((gens, hit))
            }
            Store::Memcached(c) => self.lookup_memcached(c, plan, key).await,
        };
        let lookup = match found {
            Some((_, Some((rows, v)))) => Lookup::Hit(rows, v),
            Some((gens, None)) => Lookup::Miss(key, gens),
            None => Lookup::Bypass,
        };
        if count {
            match &lookup {
                Lookup::Hit(..) => {
                    Stats::count(&self.stats.hits);
                    self.count_plan(plan, true);
                }
                Lookup::Miss(..) => {
                    Stats::count(&self.stats.misses);
                    self.count_plan(plan, false);
                }
                Lookup::Bypass => Stats::count(&self.stats.bypassed),
            }
        }
        lookup
    }

    fn count_plan(&self, plan: &Plan, hit: bool) {
        match plan.auto {
            Some(digest) => self.auto.count(digest, hit),
            None => self.stats.count_rule(plan.rule, hit),
        }
    }

    /// The current generations and the entry if it is stamped with them; None when the
    /// entry's node cannot be asked.
    async fn lookup_memcached(
        &self,
        c: &Cluster,
        plan: &Plan,
        key: Key,
    ) -> Option<(Vec<u64>, Option<(u64, Bytes)>)> {
        let ttl = plan.ttl;
        let ns = &self.config.namespace;
        let text = key.text(ns);
        let node = c.node_for(&text);
        if let Some(near) = self.near.as_ref() {
            if let Some(v) = near.get(key) {
                let keys: Vec<String> = plan.scopes.iter().map(|s| s.key(ns)).collect();
                let gens = c.generations(node, &keys).await?;
                let hit = entry::unstamp(v, &gens);
                match hit {
                    Some(_) => Stats::count(&self.stats.near_hits),
                    None => near.remove(key),
                }
                return Some((gens, hit));
            }
        }
        let mut batch = Batch::default();
        for s in &plan.scopes {
            memcached::counter(&mut batch.requests, &s.key(ns), memcached::now_micros(), 0);
        }
        memcached::get(&mut batch.requests, &text);
        batch.count = plan.scopes.len() + 1;
        let mut replies = c.run(vec![(node, batch)]).await.pop().flatten()?;
        let value = replies.pop();
        let gens: Vec<u64> = replies
            .iter()
            .map(memcached::counter_value)
            .collect::<Option<_>>()?;
        let hit = match value {
            Some(memcached::McReply::Value(v, left, _)) => {
                let opened = self.open(&text, v, &gens);
                if let (Some((stamped, _)), Some(near)) = (&opened, self.near.as_ref()) {
                    // Kept no longer than memcached keeps it (-1: no expiry there).
                    let left = match left {
                        Some(s) if s >= 0 => Duration::from_secs(s as u64),
                        _ => ttl,
                    };
                    near.put(key, stamped.clone(), left.min(ttl));
                }
                opened.map(|(_, hit)| hit)
            }
            _ => None,
        };
        Some((gens, hit))
    }

    /// A memcached value: if it is sealed by us for this key, is stamped with `gens` and is one
    /// whole result, the stamped value and (rows, result).
    fn open(&self, text: &str, value: Bytes, gens: &[u64]) -> Option<(Bytes, (u64, Bytes))> {
        let checked = self.sealer.open(text.as_bytes(), value).and_then(|v| {
            match entry::unstamp(v.clone(), gens) {
                // Stale is not forged: a plain miss.
                None => Some(None),
                Some((rows, r)) => entry::well_formed(&r).then_some(Some((v, (rows, r)))),
            }
        });
        match checked {
            Some(found) => found,
            None => {
                Stats::count(&self.stats.rejected);
                tracing::warn!(
                    "refused a memcached entry that Weiche did not write (wrong MAC or bytes): \
                     is cache.secret the same on every instance?"
                );
                None
            }
        }
    }

    /// Keep a result, stamped with the generations read before it was made.
    pub async fn put(&self, key: Key, stamps: &[u64], rows: u64, result: &[u8], ttl: Duration) {
        let value = entry::stamp(stamps, rows, result);
        if let Some(near) = &self.near {
            near.put(key, Bytes::from(value.clone()), ttl);
        }
        let stored = match &self.store {
            Store::Embedded(e) => {
                e.put(key, Bytes::from(value), ttl);
                true
            }
            Store::Memcached(c) => {
                let text = key.text(&self.config.namespace);
                let value = self.sealer.seal(text.as_bytes(), value);
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
            self.stats
                .stored_bytes
                .fetch_add(result.len() as u64, Ordering::Relaxed);
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

    /// The catalog of cascades and views was read again.
    pub fn set_dependents(&self, map: std::collections::HashMap<Scope, Vec<Scope>>) {
        *self
            .dependents
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = map;
    }

    /// `scopes` with what changes along with them (cascades, views over them).
    fn with_dependents<'s>(&self, scopes: &'s [Scope]) -> std::borrow::Cow<'s, [Scope]> {
        let deps = self
            .dependents
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if deps.is_empty() {
            return std::borrow::Cow::Borrowed(scopes);
        }
        let mut out = scopes.to_vec();
        for s in scopes {
            match s {
                Scope::Table(db, _) => {
                    out.extend(deps.get(s).into_iter().flatten().cloned());
                    let schema = Scope::Schema(db.clone());
                    out.extend(deps.get(&schema).into_iter().flatten().cloned());
                }
                // Anything in the schema changed: so did whatever depends on its tables.
                Scope::Schema(db) => {
                    for (k, v) in deps.iter() {
                        if matches!(k, Scope::Table(d, _) | Scope::Schema(d) if d == db) {
                            out.extend(v.iter().cloned());
                        }
                    }
                }
                Scope::All => {}
            }
        }
        if out.len() == scopes.len() {
            return std::borrow::Cow::Borrowed(scopes);
        }
        out.sort();
        out.dedup();
        std::borrow::Cow::Owned(out)
    }

    /// Make every entry that read these scopes (or what changes with them) unreachable.
    pub async fn bump(&self, scopes: &[Scope]) {
        if scopes.is_empty() {
            return;
        }
        let scopes = &*self.with_dependents(scopes);
        self.stats
            .bumps
            .fetch_add(scopes.len() as u64, Ordering::Relaxed);
        match &self.store {
            Store::Embedded(e) => e.bump(scopes),
            Store::Memcached(c) => {
                // Every node keeps every generation, so that a lookup asks the entry's node
                // alone: one round trip. A bump goes to all of them (writes are the rarer).
                let ns = &self.config.namespace;
                let keys: Vec<String> = scopes.iter().map(|s| s.key(ns)).collect();
                let batches: Vec<(usize, Batch)> = (0..c.len())
                    .map(|node| {
                        let mut b = Batch::default();
                        for k in &keys {
                            memcached::counter(&mut b.requests, k, memcached::now_micros(), 1);
                        }
                        b.count = keys.len();
                        (node, b)
                    })
                    .collect();
                let replies = c.run(batches).await;
                for (node, r) in replies.iter().enumerate() {
                    if r.is_none() {
                        // The node is away: nobody reads its generations until it is back,
                        // and then the bumps are replayed first.
                        for k in &keys {
                            c.defer_bump(node, k.clone());
                        }
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

    /// A reload changed the rules: their counts start over.
    pub fn rules_changed(&self, rules: usize) {
        let mut r = self
            .stats
            .rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *r = (0..=rules).map(|_| RuleStats::default()).collect();
    }
}
