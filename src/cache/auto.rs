//! Auto mode's admission (`[cache] mode = "auto"`): which reads are cached without a hint or
//! rule. A digest is cached once it has been seen `min_seen` times; a result is stored only at
//! its key's second miss (a doorkeeper, as in TinyLFU). So a burst of one-off queries, new
//! digests or new literals of a cached digest, stores nothing and cannot evict the hot set.
//! Digests whose results keep exceeding `auto.max_result_size` stop being looked up. Each cached
//! digest counts its hits, misses and the database time its hits saved (SHOW CACHE, SHOW QUERY
//! DIGESTS).

use crate::config::Auto;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Candidate digests (not yet cached) tracked at once; when full, their counts are halved.
const MAX_CANDIDATES: usize = 16_384;
/// Keys remembered as missed once, per generation of the doorkeeper (two are kept).
const DOORKEEPER: usize = 32_768;
/// Results over the size bound, with none stored, after which a digest is no longer looked up.
const TOO_LARGE_AFTER: u64 = 3;

/// What admission says of a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Look it up (and store its result at the second miss).
    Cached,
    /// Seen this many times: not yet.
    Waiting(u32),
    /// Its results are too large.
    TooLarge,
    /// auto.max_digests digests are cached already.
    Full,
}

/// One cached digest's statistics.
#[derive(Debug, Default)]
struct Cached {
    text: String,
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    too_large: AtomicU64,
    /// Database time of the misses that were stored, and how many.
    fill_micros: AtomicU64,
    fills: AtomicU64,
}

impl Cached {
    fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Relaxed) >= TOO_LARGE_AFTER
            && self.stores.load(Ordering::Relaxed) == 0
    }

    /// Database time the hits spared: each hit at the stored misses' average.
    fn saved_micros(&self) -> u64 {
        let fills = self.fills.load(Ordering::Relaxed);
        if fills == 0 {
            return 0;
        }
        let avg = self.fill_micros.load(Ordering::Relaxed) / fills;
        avg.saturating_mul(self.hits.load(Ordering::Relaxed))
    }
}

/// One cached digest as SHOW CACHE and SHOW QUERY DIGESTS show it.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedDigest {
    pub text: String,
    pub hits: u64,
    pub misses: u64,
    pub saved_micros: u64,
    pub too_large: bool,
}

#[derive(Debug, Default)]
struct Doorkeeper {
    current: HashSet<u128>,
    previous: HashSet<u128>,
}

#[derive(Debug, Default)]
pub struct Admission {
    cached: RwLock<HashMap<u64, Cached>>,
    candidates: Mutex<HashMap<u64, u32>>,
    doorkeeper: Mutex<Doorkeeper>,
    /// First misses not stored (the doorkeeper), digests refused for auto.max_digests.
    pub first_misses: AtomicU64,
    pub full: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Admission {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Cached>> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A statement of digest `hash` wants the cache; `text` makes the digest's text (called
    /// once, when the digest is admitted).
    pub fn admit(&self, hash: u64, config: &Auto, text: impl FnOnce() -> String) -> Admit {
        if let Some(c) = self.read().get(&hash) {
            return if c.too_large() {
                Admit::TooLarge
            } else {
                Admit::Cached
            };
        }
        let seen = {
            let mut cands = lock(&self.candidates);
            if cands.len() >= MAX_CANDIDATES && !cands.contains_key(&hash) {
                // Age them all: what was seen once makes room, the frequent stay ahead.
                cands.retain(|_, n| {
                    *n /= 2;
                    *n > 0
                });
                if cands.len() >= MAX_CANDIDATES * 3 / 4 {
                    cands.clear();
                }
            }
            let n = cands.entry(hash).or_insert(0);
            *n = n.saturating_add(1);
            if *n < config.min_seen {
                return Admit::Waiting(*n);
            }
            cands.remove(&hash);
            config.min_seen
        };
        let mut cached = self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.len() >= config.max_digests && !cached.contains_key(&hash) {
            drop(cached);
            self.full.fetch_add(1, Ordering::Relaxed);
            lock(&self.candidates).insert(hash, seen);
            return Admit::Full;
        }
        cached.entry(hash).or_insert_with(|| Cached {
            text: text(),
            ..Cached::default()
        });
        Admit::Cached
    }

    /// Why a digest is not cached yet, for EXPLAIN ROUTE (counts nothing); None: it is.
    pub fn explain(&self, hash: u64, config: &Auto) -> Option<String> {
        if let Some(c) = self.read().get(&hash) {
            return c
                .too_large()
                .then(|| "its results are larger than cache.auto.max_result_size".into());
        }
        let seen = lock(&self.candidates).get(&hash).copied().unwrap_or(0);
        Some(format!(
            "its digest was seen {seen} of cache.auto.min_seen = {} times",
            config.min_seen
        ))
    }

    /// A lookup of a cached digest: hit or miss.
    pub fn count(&self, hash: u64, hit: bool) {
        if let Some(c) = self.read().get(&hash) {
            let n = if hit { &c.hits } else { &c.misses };
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A miss: whether its result is to be stored (the key missed before, not long ago).
    pub fn store_miss(&self, key: u128) -> bool {
        let mut d = lock(&self.doorkeeper);
        if d.current.remove(&key) || d.previous.remove(&key) {
            return true;
        }
        if d.current.len() >= DOORKEEPER {
            d.previous = std::mem::take(&mut d.current);
        }
        d.current.insert(key);
        drop(d);
        self.first_misses.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// A miss's result was stored; it took the database `micros`.
    pub fn stored(&self, hash: u64, micros: u64) {
        if let Some(c) = self.read().get(&hash) {
            c.stores.fetch_add(1, Ordering::Relaxed);
            c.fills.fetch_add(1, Ordering::Relaxed);
            c.fill_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// A miss's result was over auto.max_result_size.
    pub fn too_large(&self, hash: u64) {
        if let Some(c) = self.read().get(&hash) {
            c.too_large.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forget everything (a reload turned auto mode off, or changed it).
    pub fn clear(&self) {
        self.cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        lock(&self.candidates).clear();
        *lock(&self.doorkeeper) = Doorkeeper::default();
    }

    /// The cached digest of `hash`, if it is one.
    pub fn digest(&self, hash: u64) -> Option<CachedDigest> {
        self.read().get(&hash).map(|c| CachedDigest {
            text: c.text.clone(),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            saved_micros: c.saved_micros(),
            too_large: c.too_large(),
        })
    }

    /// The cached digests, most hits first.
    pub fn digests(&self) -> Vec<CachedDigest> {
        let keys: Vec<u64> = self.read().keys().copied().collect();
        let mut out: Vec<CachedDigest> = keys.into_iter().filter_map(|k| self.digest(k)).collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.hits));
        out
    }

    /// (candidates tracked, digests cached)
    pub fn sizes(&self) -> (usize, usize) {
        (lock(&self.candidates).len(), self.read().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(min_seen: u32, max_digests: usize) -> Auto {
        Auto {
            min_seen,
            max_result_size: 1000,
            ttl: Duration::from_secs(60),
            max_digests,
        }
    }

    #[test]
    fn a_digest_is_cached_once_seen_often_enough() {
        let a = Admission::default();
        let c = config(3, 2);
        assert_eq!(a.admit(1, &c, || "a".into()), Admit::Waiting(1));
        assert_eq!(a.admit(1, &c, || "a".into()), Admit::Waiting(2));
        assert_eq!(a.admit(1, &c, || "a".into()), Admit::Cached);
        assert_eq!(a.admit(1, &c, || unreachable!()), Admit::Cached);
        for h in [2, 2, 2] {
            a.admit(h, &c, || "b".into());
        }
        for _ in 0..3 {
            a.admit(3, &c, || "c".into());
        }
        assert_eq!(a.admit(3, &c, || "c".into()), Admit::Full);
        assert_eq!(a.sizes().1, 2);
    }

    #[test]
    fn a_burst_of_one_offs_leaves_the_frequent_candidates() {
        let a = Admission::default();
        let c = config(100, 10);
        for _ in 0..50 {
            a.admit(7, &c, String::new);
        }
        for h in 1000..1000 + 3 * MAX_CANDIDATES as u64 {
            a.admit(h, &c, String::new);
        }
        // Aged, not forgotten: 50 halved a few times is still ahead of every one-off.
        assert!(matches!(a.admit(7, &c, String::new), Admit::Waiting(n) if n > 1));
        assert!(a.sizes().0 <= MAX_CANDIDATES);
    }

    #[test]
    fn a_result_is_stored_at_its_second_miss() {
        let a = Admission::default();
        assert!(!a.store_miss(5));
        assert!(a.store_miss(5));
        assert!(
            !a.store_miss(5),
            "the doorkeeper forgets a key once it let it in"
        );
        for k in 0..DOORKEEPER as u128 * 2 {
            a.store_miss(1_000_000 + k);
        }
        assert_eq!(
            a.first_misses.load(Ordering::Relaxed),
            DOORKEEPER as u64 * 2 + 2
        );
    }

    #[test]
    fn too_large_digests_stop_and_hits_save_time() {
        let a = Admission::default();
        let c = config(1, 10);
        assert_eq!(a.admit(1, &c, || "big".into()), Admit::Cached);
        for _ in 0..TOO_LARGE_AFTER {
            a.too_large(1);
        }
        assert_eq!(a.admit(1, &c, String::new), Admit::TooLarge);
        a.admit(2, &c, || "small".into());
        a.stored(2, 400);
        for _ in 0..3 {
            a.count(2, true);
        }
        let d = a.digest(2).unwrap();
        assert_eq!((d.hits, d.saved_micros, d.too_large), (3, 1200, false));
    }
}
