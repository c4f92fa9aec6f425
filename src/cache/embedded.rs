//! The embedded store: results in this process, bounded in bytes, evicted by quick_cache's
//! CLOCK-PRO policy; generations in a map beside them. Shared by all workers. It is also the
//! near cache in front of memcached (its generations unused: memcached's count).

use super::{Key, Scope};
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Entry {
    bytes: Bytes,
    expires: Instant,
}

/// An entry weighs its bytes plus what the store spends on it.
#[derive(Clone)]
struct Weigh;

impl Weighter<u128, Entry> for Weigh {
    fn weight(&self, _key: &u128, val: &Entry) -> u64 {
        val.bytes.len() as u64 + 64
    }
}

/// Counts evictions.
#[derive(Clone, Default)]
struct Evictions(Arc<AtomicU64>);

impl Lifecycle<u128, Entry> for Evictions {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut (), _key: u128, _val: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Embedded {
    entries: Cache<u128, Entry, Weigh, DefaultHashBuilder, Evictions>,
    generations: Mutex<HashMap<Scope, u64>>,
    evictions: Evictions,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl Embedded {
    pub fn new(memory: u64) -> Embedded {
        let evictions = Evictions::default();
        Embedded {
            // Estimated entries: a few KiB each.
            entries: Cache::with(
                (memory / 4096).max(16) as usize,
                memory,
                Weigh,
                DefaultHashBuilder::default(),
                evictions.clone(),
            ),
            generations: Mutex::new(HashMap::new()),
            evictions,
        }
    }

    fn gens(&self) -> std::sync::MutexGuard<'_, HashMap<Scope, u64>> {
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn generations(&self, scopes: &[Scope]) -> Vec<u64> {
        let g = self.gens();
        scopes
            .iter()
            .map(|s| g.get(s).copied().unwrap_or(0))
            .collect()
    }

    pub fn bump(&self, scopes: &[Scope]) {
        let mut g = self.gens();
        for s in scopes {
            *g.entry(s.clone()).or_insert(0) += 1;
        }
    }

    pub fn get(&self, key: Key) -> Option<Bytes> {
        let e = self.entries.get(&key.0)?;
        if e.expires <= Instant::now() {
            self.entries.remove(&key.0);
            return None;
        }
        Some(e.bytes)
    }

    pub fn remove(&self, key: Key) {
        self.entries.remove(&key.0);
    }

    pub fn put(&self, key: Key, bytes: Bytes, ttl: Duration) {
        let expires = Instant::now() + ttl;
        // quick_cache reports a replaced entry as evicted: a refill after a write is not an
        // eviction, so the old one goes first.
        self.entries.remove(&key.0);
        self.entries.insert(key.0, Entry { bytes, expires });
    }

    /// Forget every entry (generations stay: they only ever grow).
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// (entries, bytes, capacity, evictions)
    pub fn usage(&self) -> (u64, u64, u64, u64) {
        (
            self.entries.len() as u64,
            self.entries.weight(),
            self.entries.capacity(),
            self.evictions.0.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_and_expiring() {
        let e = Embedded::new(1 << 20);
        let big = Bytes::from(vec![7u8; 100 << 10]);
        for i in 0..40u128 {
            e.put(Key(i), big.clone(), Duration::from_secs(60));
        }
        let (n, bytes, cap, evicted) = e.usage();
        assert!(bytes <= cap, "{bytes} > {cap}");
        let before = evicted;
        e.put(Key(0), big.clone(), Duration::from_secs(60));
        e.put(Key(0), big.clone(), Duration::from_secs(60));
        assert!(
            e.usage().3 <= before + 1,
            "a replaced entry is not an eviction"
        );
        assert!(n < 40 && evicted > 0, "{n} entries, {evicted} evicted");
        e.put(Key(99), Bytes::from_static(b"x"), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(e.get(Key(99)), None);
        let s = [Scope::All, Scope::Schema(b"db".to_vec())];
        assert_eq!(e.generations(&s), vec![0, 0]);
        e.bump(&s[1..]);
        assert_eq!(e.generations(&s), vec![0, 1]);
    }
}
