//! Statistics per statement digest (the text with literals as `?`): count, time, rows, and
//! where the statements were answered. Bounded: when the table is full, the quarter of the
//! digests seen least often make room, in one pass. Evicting only the rarest one would scan
//! the whole table under its lock for every new digest, and a client that sends nothing but
//! new digests (literals in identifiers, generated SQL) would make every statement pay that.

use super::RouteLabel;
use foldhash::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Default)]
struct Entry {
    text: String,
    count: u64,
    total_micros: u64,
    max_micros: u64,
    rows: u64,
    errors: u64,
    /// Per route, indexed like RouteLabel::ALL.
    routes: [u64; 4],
    /// Time of the executions the cache answered.
    cache_micros: u64,
}

/// One digest's statistics, for SHOW QUERY DIGESTS and the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct DigestRow {
    /// The digest's hash (the cache's auto mode knows digests by it).
    pub hash: u64,
    pub digest: String,
    pub count: u64,
    pub total_micros: u64,
    pub max_micros: u64,
    pub rows: u64,
    pub errors: u64,
    pub routes: [u64; 4],
    pub cache_micros: u64,
}

impl DigestRow {
    /// Time the cache's answers spared: each at the average of the executions that went to a
    /// database, less the time they took.
    pub fn saved_micros(&self) -> u64 {
        let cached = self.routes[RouteLabel::Cache as usize];
        let others = self.count.saturating_sub(cached);
        if cached == 0 || others == 0 {
            return 0;
        }
        let avg = self.total_micros.saturating_sub(self.cache_micros) / others;
        (avg * cached).saturating_sub(self.cache_micros)
    }
}

#[derive(Debug)]
pub struct Digests {
    max: usize,
    /// The digest hash is SipHash already; foldhash (seeded) spreads it for the table.
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Digests {
    pub fn new(max: usize) -> Digests {
        Digests {
            max,
            entries: Mutex::new(HashMap::default()),
        }
    }

    /// Record one statement. `hash` identifies its digest; `text` makes the digest's text and
    /// is called only the first time it is seen.
    pub fn record(
        &self,
        hash: u64,
        text: impl FnOnce() -> String,
        route: RouteLabel,
        micros: u64,
        rows: u64,
        error: bool,
    ) {
        if self.max == 0 {
            return;
        }
        let mut m = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() >= self.max && !m.contains_key(&hash) {
            make_room(&mut m, self.max);
        }
        let e = m.entry(hash).or_insert_with(|| Entry {
            text: text(),
            ..Entry::default()
        });
        e.count += 1;
        e.total_micros += micros;
        e.max_micros = e.max_micros.max(micros);
        e.rows += rows;
        e.errors += u64::from(error);
        e.routes[route as usize] += 1;
        if route == RouteLabel::Cache {
            e.cache_micros += micros;
        }
    }

    /// The digests by total time, largest first, at most `limit`.
    pub fn top(&self, limit: usize) -> Vec<DigestRow> {
        let m = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut rows: Vec<DigestRow> = m
            .iter()
            .map(|(hash, e)| DigestRow {
                hash: *hash,
                digest: e.text.clone(),
                count: e.count,
                total_micros: e.total_micros,
                max_micros: e.max_micros,
                rows: e.rows,
                errors: e.errors,
                routes: e.routes,
                cache_micros: e.cache_micros,
            })
            .collect();
        drop(m);
        rows.sort_by_key(|r| std::cmp::Reverse(r.total_micros));
        rows.truncate(limit);
        rows
    }

    /// Digests held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// Drop the `max / 4` digests seen least often (at least one): one O(max) pass per `max / 4`
/// new digests, so a new digest costs O(1) on average.
fn make_room(m: &mut HashMap<u64, Entry>, max: usize) {
    let evict = (max / 4).clamp(1, m.len());
    let mut by_count: Vec<(u64, u64)> = m.iter().map(|(k, e)| (e.count, *k)).collect();
    by_count.select_nth_unstable(evict - 1);
    for (_, k) in &by_count[..evict] {
        m.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_with_the_rarest_evicted() {
        let d = Digests::new(2);
        for _ in 0..3 {
            d.record(1, || "a".into(), RouteLabel::Replica, 10, 1, false);
        }
        d.record(2, || "b".into(), RouteLabel::Primary, 500, 0, true);
        d.record(3, || "c".into(), RouteLabel::Cache, 1, 1, false);
        let top = d.top(10);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].digest, "a");
        assert_eq!(top[0].count, 3);
        assert_eq!(top[0].routes[RouteLabel::Replica as usize], 3);
        assert_eq!(top[1].digest, "c", "b was seen least often and made room");
        for _ in 0..2 {
            d.record(3, || "c".into(), RouteLabel::Replica, 101, 1, false);
        }
        // Two at 101 µs went to a replica; the hit took 1 µs and spared 100.
        let c = d.top(10).into_iter().find(|r| r.digest == "c").unwrap();
        assert_eq!(c.saved_micros(), 100);
    }

    #[test]
    fn a_flood_of_new_digests_keeps_the_frequent_ones_and_the_bound() {
        let d = Digests::new(100);
        for h in 0..10u64 {
            for _ in 0..5 {
                d.record(
                    h,
                    || format!("frequent {h}"),
                    RouteLabel::Replica,
                    1,
                    0,
                    false,
                );
            }
        }
        for h in 1_000..101_000u64 {
            d.record(h, || format!("once {h}"), RouteLabel::Replica, 1, 0, false);
            assert!(d.len() <= 100);
        }
        let top = d.top(100);
        assert!(top.len() > 75, "{} held", top.len());
        for h in 0..10u64 {
            assert!(
                top.iter().any(|r| r.hash == h && r.count == 5),
                "frequent {h} was evicted"
            );
        }
    }
}
