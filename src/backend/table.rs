//! The backend table shared by all workers: each backend's weight, outstanding requests,
//! whether it recently refused connections, and (in `health`) its live role and state. Reads go
//! to the usable replica with the fewest outstanding requests per weight; among equals, smooth
//! weighted round robin spreads them by weight.

use super::gtid::GtidPos;
use super::health::{Live, State, Writer, WriterSlot};
use crate::config::{Config, Role};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One backend's live numbers.
#[derive(Debug)]
pub struct BackendStats {
    pub address: String,
    /// The role the config gives it; the live one is `BackendTable::role`.
    pub configured_role: Role,
    /// Share of reads among replicas (changed by a config reload).
    pub weight: AtomicU32,
    /// Commands in flight on this backend.
    pub outstanding: AtomicU32,
    /// Commands sent to this backend since start.
    pub served: AtomicU64,
    /// Until when (ms since the table was built) it is skipped after refusing connections.
    down_until_ms: AtomicU64,
    pub(super) live: Live,
}

impl BackendStats {
    fn new(address: &str, role: Role, weight: u32) -> BackendStats {
        BackendStats {
            address: address.to_string(),
            configured_role: role,
            weight: AtomicU32::new(weight.max(1)),
            outstanding: AtomicU32::new(0),
            served: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
            live: Live::new(role),
        }
    }
}

#[derive(Debug)]
pub struct BackendTable {
    pub backends: Vec<BackendStats>,
    started: Instant,
    /// Smooth weighted round robin state, per backend.
    current: Mutex<Vec<i64>>,
    /// Counts changes of which backends take reads (a state or role change, a refused
    /// connection): a session's replica affinity ends with one.
    rotation: AtomicU64,
    pub(super) writer: WriterSlot,
    /// Backend indexes as mysql-proxy numbered them (scripts, the admin port): the configured
    /// primaries first, then the replicas, each in configuration order.
    order: Vec<usize>,
}

/// A replica chosen for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    /// It is known to have applied the position the read needs (or none was needed).
    pub caught_up: bool,
}

impl BackendTable {
    pub fn new(config: &Config) -> BackendTable {
        Self::from_backends(
            config
                .backends
                .iter()
                .map(|b| BackendStats::new(&b.address, b.role, b.weight))
                .collect(),
        )
    }

    fn from_backends(backends: Vec<BackendStats>) -> BackendTable {
        let writer = match backends
            .iter()
            .position(|b| b.configured_role == Role::Primary)
        {
            Some(i) => Writer::One(i),
            None => Writer::Nobody("no primary backend is configured".into()),
        };
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by_key(|&i| (backends[i].configured_role != Role::Primary, i));
        BackendTable {
            current: Mutex::new(vec![0; backends.len()]),
            rotation: AtomicU64::new(0),
            order,
            backends,
            started: Instant::now(),
            writer: WriterSlot::new(writer),
        }
    }

    /// mysql-proxy's numbering: `proxy_order()[n - 1]` is backend number n.
    pub fn proxy_order(&self) -> &[usize] {
        &self.order
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
        self.rotation_changed();
    }

    /// The count of rotation changes (see `rotation`).
    pub fn rotation(&self) -> u64 {
        self.rotation.load(Ordering::Relaxed)
    }

    pub(super) fn rotation_changed(&self) {
        self.rotation.fetch_add(1, Ordering::Relaxed);
    }

    /// A replica that may take reads now.
    pub fn usable_replica(&self, i: usize) -> bool {
        self.role(i) == Role::Replica && self.state(i) == State::Up && !self.is_down(i)
    }

    /// The replica for the next read, if any is usable, avoiding `avoid`; `last` (the session's
    /// previous backend) when it is among the least loaded. With `need`, replicas known to have
    /// applied that position come first.
    pub fn pick_replica(
        &self,
        avoid: Option<usize>,
        last: Option<usize>,
        need: Option<&GtidPos>,
    ) -> Option<Pick> {
        let usable = |i: usize| Some(i) != avoid && self.usable_replica(i);
        if let Some(need) = need {
            if let Some(index) = self.least_loaded(|i| usable(i) && self.has_applied(i, need), last)
            {
                return Some(Pick {
                    index,
                    caught_up: true,
                });
            }
        }
        self.least_loaded(usable, last).map(|index| Pick {
            index,
            caught_up: need.is_none(),
        })
    }

    /// Outstanding requests and weight of backend `i`, now (other workers change the counts).
    fn load(&self, i: usize) -> (u64, u64) {
        let b = &self.backends[i];
        (
            u64::from(b.outstanding.load(Ordering::Relaxed)),
            u64::from(b.weight.load(Ordering::Relaxed)),
        )
    }

    /// The candidate with the fewest outstanding requests per weight; among equals `prefer`,
    /// else smooth weighted round robin. Runs for every read: it allocates nothing, and takes
    /// the round robin's lock only when it has to choose among equals.
    fn least_loaded(
        &self,
        candidate: impl Fn(usize) -> bool,
        prefer: Option<usize>,
    ) -> Option<usize> {
        // Least outstanding per weight: o_i / w_i < o_j / w_j  <=>  o_i * w_j < o_j * w_i.
        let less = |(oa, wa): (u64, u64), (ob, wb): (u64, u64)| oa * wb < ob * wa;
        let mut best: Option<(usize, (u64, u64))> = None;
        let mut ties = 0;
        for i in (0..self.backends.len()).filter(|&i| candidate(i)) {
            let l = self.load(i);
            match best {
                Some((_, b)) if less(b, l) => {}
                Some((_, b)) if !less(l, b) => ties += 1,
                _ => {
                    best = Some((i, l));
                    ties = 1;
                }
            }
        }
        let (first, min) = best?;
        let tied = |i: usize| candidate(i) && !less(min, self.load(i));
        if ties == 1 {
            return Some(first);
        }
        if let Some(p) = prefer.filter(|&p| p < self.backends.len() && tied(p)) {
            return Some(p);
        }
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let mut total = 0;
        let mut chosen = first;
        for i in (0..self.backends.len()).filter(|&i| tied(i)) {
            let w = self.load(i).1 as i64;
            total += w;
            current[i] += w;
            if current[i] > current[chosen] {
                chosen = i;
            }
        }
        current[chosen] -= total;
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

    fn table(weights: &[u32]) -> BackendTable {
        let mut backends = vec![BackendStats::new("p:1", Role::Primary, 1)];
        for (i, w) in weights.iter().enumerate() {
            backends.push(BackendStats::new(&format!("r{i}:1"), Role::Replica, *w));
        }
        BackendTable::from_backends(backends)
    }

    fn pick(t: &BackendTable) -> Option<usize> {
        t.pick_replica(None, None, None).map(|p| p.index)
    }

    #[test]
    fn idle_replicas_share_reads_by_weight() {
        let t = table(&[2, 1]);
        let mut n = [0usize; 3];
        for _ in 0..300 {
            n[pick(&t).unwrap()] += 1;
        }
        assert_eq!(n, [0, 200, 100]);
    }

    #[test]
    fn a_session_stays_on_its_replica_while_no_other_is_less_loaded() {
        let t = table(&[1, 1]);
        for _ in 0..10 {
            assert_eq!(
                t.pick_replica(None, Some(2), None).map(|p| p.index),
                Some(2)
            );
        }
        let _busy = t.begin(2);
        assert_eq!(
            t.pick_replica(None, Some(2), None).map(|p| p.index),
            Some(1)
        );
        // The primary (or a backend that is not a candidate) is no preference.
        drop(_busy);
        let picks: Vec<_> = (0..4)
            .map(|_| t.pick_replica(None, Some(0), None).unwrap().index)
            .collect();
        assert_eq!(picks, [1, 2, 1, 2]);
    }

    #[test]
    fn changes_of_who_takes_reads_are_counted() {
        let t = table(&[1, 1]);
        let r0 = t.rotation();
        assert!(!t.set_state(1, State::Up, ""), "no change, no count");
        assert_eq!(t.rotation(), r0);
        t.set_state(1, State::Lagging, "behind");
        t.set_role(2, Role::Primary);
        t.set_role(2, Role::Primary);
        t.mark_down(1, Duration::from_secs(1));
        assert_eq!(t.rotation(), r0 + 3);
    }

    #[test]
    fn busy_and_down_replicas_are_avoided() {
        let t = table(&[1, 1]);
        let _busy = t.begin(1);
        assert_eq!(pick(&t), Some(2));
        t.mark_down(2, Duration::from_secs(10));
        assert_eq!(pick(&t), Some(1));
        assert_eq!(t.pick_replica(Some(1), None, None), None);
        t.mark_down(1, Duration::from_secs(10));
        assert_eq!(pick(&t), None);
    }

    #[test]
    fn states_and_roles_decide_who_reads() {
        let t = table(&[1, 1]);
        t.set_state(1, State::Lagging, "SQL thread stopped");
        assert_eq!(pick(&t), Some(2));
        t.set_state(2, State::Offline, "");
        assert_eq!(pick(&t), None);
        t.set_state(1, State::Up, "");
        t.set_role(1, Role::Primary);
        assert_eq!(pick(&t), None);
        assert_eq!(t.primary(), Ok(0));
        t.set_writer(Writer::Several(vec!["p:1".into(), "r0:1".into()]));
        assert_eq!(
            t.primary().unwrap_err().to_string(),
            "two primaries: p:1 and r0:1; refusing writes"
        );
    }

    #[test]
    fn reads_that_need_a_position_prefer_replicas_that_have_it() {
        let t = table(&[1, 1]);
        let need = GtidPos::parse("0-1-10").unwrap();
        t.set_known(1, GtidPos::parse("0-1-9").unwrap());
        t.set_known(2, GtidPos::parse("0-1-10").unwrap());
        let _busy = t.begin(2);
        let p = t.pick_replica(None, None, Some(&need)).unwrap();
        assert_eq!((p.index, p.caught_up), (2, true));
        t.set_known(2, GtidPos::parse("0-1-3").unwrap());
        let p = t.pick_replica(None, None, Some(&need)).unwrap();
        assert_eq!((p.index, p.caught_up), (1, false));
        t.applied(1, &need);
        assert!(t.has_applied(1, &need));
    }
}
