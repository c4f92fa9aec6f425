//! What the cache tells: SHOW CACHE's lines and /metrics' counters.

use super::{Cache, Store};
use crate::config::Caching;
use std::sync::atomic::{AtomicU64, Ordering};

impl Cache {
    /// (name, value) lines for SHOW CACHE; `config` names the rules.
    pub fn describe(&self, config: &Caching) -> Vec<(String, String)> {
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
            ("rejected".into(), get(&s.rejected)),
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
                if let Some(near) = &self.near {
                    let (n, bytes, cap, _) = near.usage();
                    out.push(("near_hits".into(), get(&s.near_hits)));
                    out.push(("near_entries".into(), n.to_string()));
                    out.push(("near_bytes".into(), bytes.to_string()));
                    out.push(("near_capacity_bytes".into(), cap.to_string()));
                }
                // Lookups per generation read: how much the near cache's reads are shared.
                out.push(("generation_reads".into(), get(&c.generation_reads)));
                out.push(("generation_read_lookups".into(), get(&c.generation_lookups)));
                for (addr, up) in c.nodes() {
                    out.push((
                        format!("node {addr}"),
                        if up { "up" } else { "down" }.into(),
                    ));
                }
            }
        }
        if let Some(t) = &self.tail {
            out.extend(t.describe());
            let n = self
                .dependents
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .len();
            out.push(("binlog_tables_with_dependents".into(), n.to_string()));
        }
        if config.auto.is_some() {
            out.extend(self.describe_auto());
        }
        let rules = s
            .rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, r) in rules.iter().enumerate() {
            let name = config
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

    /// Auto mode's lines: its counts, then the cached digests with the most hits.
    fn describe_auto(&self) -> Vec<(String, String)> {
        let a = &self.auto;
        let (candidates, cached) = a.sizes();
        let mut out = vec![
            ("auto_digests_cached".to_string(), cached.to_string()),
            ("auto_digests_waiting".into(), candidates.to_string()),
            (
                "auto_first_misses_not_stored".into(),
                a.first_misses.load(Ordering::Relaxed).to_string(),
            ),
            (
                "auto_refused_max_digests".into(),
                a.full.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for d in a.digests().into_iter().take(20) {
            let lookups = (d.hits + d.misses).max(1);
            out.push((
                format!("auto {}", d.text),
                format!(
                    "{} hits, {} misses, hit ratio {:.3}, saved {:.1} ms{}",
                    d.hits,
                    d.misses,
                    d.hits as f64 / lookups as f64,
                    d.saved_micros as f64 / 1000.0,
                    if d.too_large {
                        ", results too large"
                    } else {
                        ""
                    }
                ),
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
            ("rejected", s.rejected.load(Ordering::Relaxed)),
        ];
        match &self.store {
            Store::Embedded(e) => v.push(("evictions", e.usage().3)),
            Store::Memcached(c) => {
                v.push(("store_errors", c.errors.load(Ordering::Relaxed)));
                v.push(("near_hits", s.near_hits.load(Ordering::Relaxed)));
                v.push((
                    "generation_reads",
                    c.generation_reads.load(Ordering::Relaxed),
                ));
            }
        }
        if let Some(t) = &self.tail {
            v.extend(t.counters());
        }
        v
    }
}
