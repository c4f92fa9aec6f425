//! From the latest checks of all backends to a verdict: which backend takes writes, each
//! backend's role, and whether a replica is fit to serve reads (up, or lagging with the reason).
//! Pure: the monitor feeds it observations and applies what it returns.

use super::probe::{Io, Probe};
use crate::backend::gtid::GtidPos;
use crate::backend::{State, Writer};
use crate::config::Role;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What the monitor knows of one backend.
#[derive(Debug, Clone)]
pub struct Observation {
    pub address: String,
    pub configured_role: Role,
    /// Passed its checks (with hysteresis: down after N failures, up after M successes).
    pub healthy: bool,
    /// The last successful check (None before the first one).
    pub probe: Option<Probe>,
}

/// The verdict for one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub role: Role,
    pub state: State,
    pub detail: String,
    pub lag_seconds: Option<f64>,
    pub lag_transactions: Option<u64>,
}

/// The primary's positions over time, to tell how long ago it passed a replica's position.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<(Instant, GtidPos)>,
    /// The writer's last known position (kept when no backend takes writes).
    pub last: Option<GtidPos>,
    /// A Galera cluster's writer node (kept while it is usable).
    pub galera_writer: Option<usize>,
}

const HISTORY: usize = 2048;

impl History {
    pub fn record(&mut self, at: Instant, pos: &GtidPos) {
        if self.samples.back().is_none_or(|(_, p)| p != pos) {
            if self.samples.len() == HISTORY {
                self.samples.pop_front();
            }
            self.samples.push_back((at, pos.clone()));
        }
        self.last = Some(pos.clone());
    }

    /// How long ago the primary first had a transaction that `replica` lacks.
    fn age(&self, replica: &GtidPos, now: Instant) -> Duration {
        self.samples
            .iter()
            .find(|(_, p)| !replica.covers(p))
            .map_or(Duration::ZERO, |(t, _)| now.saturating_duration_since(*t))
    }
}

/// Judge all backends at once.
pub fn judge(
    obs: &[Observation],
    history: &mut History,
    max_lag: Duration,
    now: Instant,
) -> (Writer, Vec<Judged>) {
    if super::galera::is_cluster(obs) {
        return super::galera::judge(obs, &mut history.galera_writer);
    }
    // No probe yet: a healthy backend counts as its configured role.
    let looks_primary = |o: &Observation| match &o.probe {
        Some(p) if p.detailed => p.looks_primary(),
        _ => o.configured_role == Role::Primary,
    };
    let candidates: Vec<usize> = (0..obs.len())
        .filter(|&i| obs[i].healthy && looks_primary(&obs[i]))
        .collect();
    let writer = match candidates.as_slice() {
        [one] => Writer::One(*one),
        [] => Writer::Nobody(nobody_reason(obs)),
        many => Writer::Several(many.iter().map(|&i| obs[i].address.clone()).collect()),
    };
    if let Writer::One(w) = writer {
        if let Some(pos) = obs[w].probe.as_ref().and_then(|p| p.position.as_ref()) {
            history.record(now, pos);
        }
    }
    let judged = obs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let role = if candidates.contains(&i) {
                Role::Primary
            } else {
                Role::Replica
            };
            let mut j = Judged {
                role,
                state: State::Up,
                detail: String::new(),
                lag_seconds: None,
                lag_transactions: None,
            };
            if !o.healthy {
                j.state = State::Down;
                return j;
            }
            match (&o.probe, role) {
                (Some(p), Role::Replica) if p.detailed => replica(&mut j, p, history, max_lag, now),
                (Some(p), Role::Primary) if p.detailed => {
                    j.lag_seconds = Some(0.0);
                    j.lag_transactions = Some(0);
                }
                _ => {}
            }
            j
        })
        .collect();
    (writer, judged)
}

fn replica(j: &mut Judged, p: &Probe, history: &History, max_lag: Duration, now: Instant) {
    let Some(r) = &p.replication else {
        j.state = State::Lagging;
        j.detail = if p.read_only {
            "not replicating".into()
        } else {
            "writable but not the primary".into()
        };
        return;
    };
    if let Some(why) = r.broken() {
        j.state = State::Lagging;
        j.detail = why;
        return;
    }
    let (seconds, transactions) = match (&p.position, &history.last) {
        (Some(mine), Some(primary)) if mine.covers(primary) => (0.0, Some(0)),
        (Some(mine), Some(primary)) => {
            let age = history.age(mine, now).as_secs_f64();
            let behind = r.seconds_behind.unwrap_or(0) as f64;
            (age.max(behind), Some(mine.behind(primary)))
        }
        _ => (r.seconds_behind.unwrap_or(0) as f64, None),
    };
    j.lag_seconds = Some(seconds);
    j.lag_transactions = transactions;
    if seconds > max_lag.as_secs_f64() {
        j.state = State::Lagging;
        j.detail = format!(
            "{seconds:.1} s behind (max_replication_lag {:.1} s)",
            max_lag.as_secs_f64()
        );
    } else if r.io == Io::Connecting {
        j.detail = "its primary is unreachable".into();
    }
}

fn nobody_reason(obs: &[Observation]) -> String {
    let mut why: Vec<String> = obs
        .iter()
        .filter(|o| {
            o.configured_role == Role::Primary
                || o.probe.as_ref().is_some_and(|p| p.detailed && !p.read_only)
        })
        .map(|o| {
            if !o.healthy {
                format!("{} is down", o.address)
            } else {
                format!("{} is read-only", o.address)
            }
        })
        .collect();
    if why.is_empty() {
        why.push("no backend is writable".into());
    }
    why.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::probe::Replication;
    use super::*;

    fn replica_probe(pos: &str, io: Io, sql: bool, sbm: Option<u64>) -> Probe {
        Probe {
            read_only: true,
            replication: Some(Replication {
                io,
                sql_running: sql,
                seconds_behind: sbm,
                last_error: String::new(),
            }),
            position: GtidPos::parse(pos),
            applied: GtidPos::parse(pos),
            detailed: true,
            galera: None,
        }
    }

    fn primary_probe(pos: &str) -> Probe {
        Probe {
            read_only: false,
            replication: None,
            position: GtidPos::parse(pos),
            applied: GtidPos::parse(pos),
            detailed: true,
            galera: None,
        }
    }

    fn ob(addr: &str, role: Role, probe: Probe) -> Observation {
        Observation {
            address: addr.into(),
            configured_role: role,
            healthy: true,
            probe: Some(probe),
        }
    }

    fn topology() -> Vec<Observation> {
        vec![
            ob("p:1", Role::Primary, primary_probe("0-1-100")),
            ob(
                "a:1",
                Role::Replica,
                replica_probe("0-1-100", Io::Running, true, Some(9999)),
            ),
            ob(
                "b:1",
                Role::Replica,
                replica_probe("0-1-90", Io::Running, true, Some(0)),
            ),
        ]
    }

    #[test]
    fn gtid_decides_lag_whatever_seconds_behind_says() {
        let mut h = History::default();
        let t0 = Instant::now();
        h.record(t0, &GtidPos::parse("0-1-95").unwrap());
        let (w, j) = judge(
            &topology(),
            &mut h,
            Duration::from_secs(2),
            t0 + Duration::from_secs(5),
        );
        assert_eq!(w, Writer::One(0));
        assert_eq!(j[0].role, Role::Primary);
        // a: caught up by GTID although Seconds_Behind_Master says 9999.
        assert_eq!(
            (j[1].state, j[1].lag_seconds, j[1].lag_transactions),
            (State::Up, Some(0.0), Some(0))
        );
        // b: 10 transactions behind; the primary passed 0-1-90 five seconds ago.
        assert_eq!(j[2].state, State::Lagging);
        assert_eq!(j[2].lag_transactions, Some(10));
        assert!(j[2].lag_seconds.unwrap() >= 5.0, "{:?}", j[2]);
    }

    #[test]
    fn stopped_replication_takes_a_replica_out() {
        let mut obs = topology();
        obs[1].probe = Some(replica_probe("0-1-100", Io::Running, false, None));
        let (_, j) = judge(
            &obs,
            &mut History::default(),
            Duration::from_secs(10),
            Instant::now(),
        );
        assert_eq!(j[1].state, State::Lagging);
        assert_eq!(j[1].detail, "SQL thread stopped");
        // A replica whose primary is unreachable still serves reads.
        obs[1].probe = Some(replica_probe("0-1-100", Io::Connecting, true, None));
        obs[0].healthy = false;
        let (w, j) = judge(
            &obs,
            &mut History::default(),
            Duration::from_secs(10),
            Instant::now(),
        );
        assert_eq!(w, Writer::Nobody("p:1 is down".into()));
        assert_eq!((j[0].state, j[1].state), (State::Down, State::Up));
    }

    #[test]
    fn promotion_and_two_primaries() {
        let mut obs = topology();
        obs[0].probe = Some(Probe {
            read_only: true,
            ..primary_probe("0-1-100")
        });
        obs[1].probe = Some(primary_probe("0-1-100"));
        let (w, j) = judge(
            &obs,
            &mut History::default(),
            Duration::from_secs(10),
            Instant::now(),
        );
        assert_eq!(w, Writer::One(1));
        assert_eq!((j[0].role, j[1].role), (Role::Replica, Role::Primary));
        assert_eq!(j[0].detail, "not replicating");
        obs[0].probe = Some(primary_probe("0-1-100"));
        let (w, _) = judge(
            &obs,
            &mut History::default(),
            Duration::from_secs(10),
            Instant::now(),
        );
        assert_eq!(w, Writer::Several(vec!["p:1".into(), "a:1".into()]));
    }

    #[test]
    fn without_an_account_roles_are_configured() {
        let mut obs = topology();
        for o in &mut obs {
            o.probe = Some(Probe::default());
        }
        let (w, j) = judge(
            &obs,
            &mut History::default(),
            Duration::from_secs(1),
            Instant::now(),
        );
        assert_eq!(w, Writer::One(0));
        assert!(j.iter().all(|j| j.state == State::Up));
        obs[0].healthy = false;
        let (w, _) = judge(
            &obs,
            &mut History::default(),
            Duration::from_secs(1),
            Instant::now(),
        );
        assert_eq!(w, Writer::Nobody("p:1 is down".into()));
    }
}
