//! The backend table shared by all workers: each backend's role, weight, outstanding requests
//! and whether it recently refused connections. Reads go to the replica with the fewest
//! outstanding requests per weight; among equals, smooth weighted round robin spreads them by
//! weight.

use crate::config::{Config, Role};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One backend's live numbers.
#[derive(Debug)]
pub struct BackendStats {
    pub address: String,
    pub role: Role,
    pub weight: u32,
    /// Commands in flight on this backend.
    pub outstanding: AtomicU32,
    /// Commands sent to this backend since start.
    pub served: AtomicU64,
    /// Until when (ms since the table was built) it is skipped after refusing connections.
    down_until_ms: AtomicU64,
}

#[derive(Debug)]
pub struct BackendTable {
    pub backends: Vec<BackendStats>,
    started: Instant,
    /// Smooth weighted round robin state, per backend.
    current: Mutex<Vec<i64>>,
}

impl BackendTable {
    pub fn new(config: &Config) -> BackendTable {
        BackendTable {
            backends: config
                .backends
                .iter()
                .map(|b| BackendStats {
                    address: b.address.clone(),
                    role: b.role,
                    weight: b.weight.max(1),
                    outstanding: AtomicU32::new(0),
                    served: AtomicU64::new(0),
                    down_until_ms: AtomicU64::new(0),
                })
                .collect(),
            started: Instant::now(),
            current: Mutex::new(vec![0; config.backends.len()]),
        }
    }

    pub fn primary(&self) -> Option<usize> {
        self.backends.iter().position(|b| b.role == Role::Primary)
    }

    pub fn find(&self, address: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.address == address)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn is_down(&self, i: usize) -> bool {
        self.backends[i].down_until_ms.load(Ordering::Relaxed) > self.now_ms()
    }

    /// Skip this backend for a while (it refused a connection).
    pub fn mark_down(&self, i: usize, for_: Duration) {
        let until = self.now_ms() + for_.as_millis() as u64;
        self.backends[i]
            .down_until_ms
            .store(until, Ordering::Relaxed);
    }

    /// The replica to send the next read to, if any is usable.
    pub fn pick_replica(&self) -> Option<usize> {
        // One snapshot of (index, outstanding, weight): other workers change the counts.
        let loads: Vec<(usize, u64, u64)> = (0..self.backends.len())
            .filter(|&i| self.backends[i].role == Role::Replica && !self.is_down(i))
            .map(|i| {
                let b = &self.backends[i];
                (
                    i,
                    u64::from(b.outstanding.load(Ordering::Relaxed)),
                    u64::from(b.weight),
                )
            })
            .collect();
        // Least outstanding per weight: o_i / w_i < o_j / w_j  <=>  o_i * w_j < o_j * w_i.
        let &(_, ob, wb) = loads.iter().min_by(|a, b| (a.1 * b.2).cmp(&(b.1 * a.2)))?;
        let tied: Vec<(usize, u64)> = loads
            .iter()
            .filter(|(_, o, w)| o * wb == ob * w)
            .map(|&(i, _, w)| (i, w))
            .collect();
        let &[(first, _), ..] = tied.as_slice() else {
            return None;
        };
        if tied.len() == 1 {
            return Some(first);
        }
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let total: u64 = tied.iter().map(|&(_, w)| w).sum();
        let mut chosen = first;
        for &(i, w) in &tied {
            current[i] += w as i64;
            if current[i] > current[chosen] {
                chosen = i;
            }
        }
        current[chosen] -= total as i64;
        Some(chosen)
    }

    /// Count a command in flight on backend `i` until the guard is dropped.
    pub fn begin(&self, i: usize) -> InFlight<'_> {
        let b = &self.backends[i];
        b.outstanding.fetch_add(1, Ordering::Relaxed);
        b.served.fetch_add(1, Ordering::Relaxed);
        InFlight { backend: b }
    }
}

/// A command in flight; dropping it ends the count.
pub struct InFlight<'a> {
    backend: &'a BackendStats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.backend.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;

    fn table(weights: &[u32]) -> BackendTable {
        let mut backends = vec![Backend {
            address: "p:1".into(),
            role: Role::Primary,
            weight: 1,
        }];
        for (i, w) in weights.iter().enumerate() {
            backends.push(Backend {
                address: format!("r{i}:1"),
                role: Role::Replica,
                weight: *w,
            });
        }
        BackendTable {
            current: Mutex::new(vec![0; backends.len()]),
            backends: backends
                .iter()
                .map(|b| BackendStats {
                    address: b.address.clone(),
                    role: b.role,
                    weight: b.weight,
                    outstanding: AtomicU32::new(0),
                    served: AtomicU64::new(0),
                    down_until_ms: AtomicU64::new(0),
                })
                .collect(),
            started: Instant::now(),
        }
    }

    #[test]
    fn idle_replicas_share_reads_by_weight() {
        let t = table(&[2, 1]);
        let mut n = [0usize; 3];
        for _ in 0..300 {
            n[t.pick_replica().unwrap()] += 1;
        }
        assert_eq!(n, [0, 200, 100]);
    }

    #[test]
    fn busy_and_down_replicas_are_avoided() {
        let t = table(&[1, 1]);
        let _busy = t.begin(1);
        assert_eq!(t.pick_replica(), Some(2));
        t.mark_down(2, Duration::from_secs(10));
        assert_eq!(t.pick_replica(), Some(1));
        t.mark_down(1, Duration::from_secs(10));
        assert_eq!(t.pick_replica(), None);
    }
}
