//! Galera clusters as backends: what a node's wsrep status says about it, and the verdict for a
//! cluster. Every Synced node of the Primary component could take writes; Weiche sends them to
//! one at a time (the writer: the current one while it stays usable, else the first usable
//! node in the order of `[[backends]]`, a configured primary first), so that two sessions never
//! certify against each other on two nodes; the other usable nodes take reads. A donor, a
//! desynced node, one that rejects queries or is outside the Primary component takes nothing.

use super::judge::{Judged, Observation};
use super::probe::Probe;
use crate::backend::{State, Writer};
use crate::config::Role;

/// What a node's wsrep status and variables say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wsrep {
    /// wsrep_local_state: 1 joining, 2 donor or desynced, 3 joined, 4 synced.
    pub local_state: u8,
    /// wsrep_cluster_status is Primary.
    pub primary_component: bool,
    /// wsrep_ready.
    pub ready: bool,
    /// wsrep_desync (set by an operator, or by a backup tool).
    pub desync: bool,
    /// wsrep_reject_queries is not NONE.
    pub reject_queries: bool,
}

/// The statement that reads them (one row per name present; none on a server without wsrep).
pub const WSREP_QUERY: &[u8] = b"SELECT VARIABLE_NAME, VARIABLE_VALUE FROM \
    information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN \
    ('WSREP_LOCAL_STATE', 'WSREP_CLUSTER_STATUS', 'WSREP_READY') UNION ALL \
    SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES \
    WHERE VARIABLE_NAME IN ('WSREP_ON', 'WSREP_DESYNC', 'WSREP_REJECT_QUERIES')";

impl Wsrep {
    /// From (name, value) rows of WSREP_QUERY: None when wsrep is off (not a Galera node).
    pub fn from_rows<'a>(rows: impl Iterator<Item = (&'a str, &'a str)>) -> Option<Wsrep> {
        let mut w = Wsrep::default();
        let mut on = false;
        for (name, value) in rows {
            let yes = value.eq_ignore_ascii_case("ON") || value == "1";
            match name.to_ascii_uppercase().as_str() {
                "WSREP_ON" => on = yes,
                "WSREP_LOCAL_STATE" => w.local_state = value.parse().unwrap_or(0),
                "WSREP_CLUSTER_STATUS" => {
                    w.primary_component = value.eq_ignore_ascii_case("Primary")
                }
                "WSREP_READY" => w.ready = yes,
                "WSREP_DESYNC" => w.desync = yes,
                "WSREP_REJECT_QUERIES" => w.reject_queries = !value.eq_ignore_ascii_case("NONE"),
                _ => {}
            }
        }
        on.then_some(w)
    }

    /// Why the node takes no work, if it takes none.
    pub fn unusable(&self) -> Option<String> {
        let why = if !self.primary_component {
            "not in the cluster's Primary component"
        } else if self.reject_queries {
            "rejects queries (wsrep_reject_queries)"
        } else if self.desync {
            "desynced (wsrep_desync)"
        } else if self.local_state == 2 {
            "a donor (state transfer)"
        } else if self.local_state != 4 {
            "not synced (joining)"
        } else if !self.ready {
            "not ready (wsrep_ready OFF)"
        } else {
            return None;
        };
        Some(why.to_string())
    }
}

/// Whether these backends are a Galera cluster: one of them said so.
pub fn is_cluster(obs: &[Observation]) -> bool {
    obs.iter()
        .any(|o| o.probe.as_ref().is_some_and(|p| p.galera.is_some()))
}

/// The verdict for a cluster. `writer` is the node that took writes until now (kept while it
/// is usable, so that a node coming back does not move writes again).
pub fn judge(obs: &[Observation], writer: &mut Option<usize>) -> (Writer, Vec<Judged>) {
    let why_not = |o: &Observation| -> Option<String> {
        if !o.healthy {
            return Some("down".into());
        }
        match o.probe.as_ref().map(|p: &Probe| &p.galera) {
            Some(Some(w)) => w.unusable(),
            Some(None) => Some("not a Galera node (wsrep_on is OFF)".into()),
            // Not checked yet: as for replication, a healthy node counts as usable, so that
            // the first checks do not move writes off the configured primary.
            None => None,
        }
    };
    let why: Vec<Option<String>> = obs.iter().map(why_not).collect();
    let usable: Vec<bool> = why.iter().map(Option::is_none).collect();
    if writer.is_none_or(|w| !usable.get(w).copied().unwrap_or(false)) {
        // A configured primary first, then the order of the configuration.
        let first = |role: Option<Role>| {
            (0..obs.len()).find(|&i| usable[i] && role.is_none_or(|r| obs[i].configured_role == r))
        };
        *writer = first(Some(Role::Primary)).or_else(|| first(None));
    }
    let verdict = match *writer {
        Some(w) => Writer::One(w),
        None => Writer::Nobody(
            obs.iter()
                .zip(&why)
                .map(|(o, why)| format!("{} is {}", o.address, why.as_deref().unwrap_or("usable")))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    };
    let judged = obs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let mut j = Judged {
                role: if *writer == Some(i) {
                    Role::Primary
                } else {
                    Role::Replica
                },
                state: State::Up,
                detail: String::new(),
                // Synchronous: a synced node applied what the cluster certified (its apply
                // queue aside).
                lag_seconds: Some(0.0),
                lag_transactions: Some(0),
            };
            if !o.healthy {
                j.state = State::Down;
            } else if let Some(why) = &why[i] {
                j.state = State::Lagging;
                j.detail = why.clone();
                j.lag_seconds = None;
                j.lag_transactions = None;
            } else {
                j.detail = "galera: synced".into();
            }
            j
        })
        .collect();
    (verdict, judged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(state: u8) -> Wsrep {
        Wsrep {
            local_state: state,
            primary_component: true,
            ready: true,
            desync: false,
            reject_queries: false,
        }
    }

    fn obs(address: &str, role: Role, healthy: bool, w: Option<Wsrep>) -> Observation {
        Observation {
            address: address.into(),
            configured_role: role,
            healthy,
            probe: Some(Probe {
                galera: w,
                detailed: true,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_status_rows_say_what_a_node_is() {
        let rows = [
            ("WSREP_ON", "ON"),
            ("WSREP_LOCAL_STATE", "4"),
            ("WSREP_CLUSTER_STATUS", "Primary"),
            ("WSREP_READY", "ON"),
            ("WSREP_DESYNC", "OFF"),
            ("WSREP_REJECT_QUERIES", "NONE"),
        ];
        let w = Wsrep::from_rows(rows.iter().copied()).unwrap();
        assert_eq!(w, node(4));
        assert_eq!(w.unusable(), None);
        assert_eq!(Wsrep::from_rows([("WSREP_ON", "OFF")].into_iter()), None);
        assert_eq!(Wsrep::from_rows(std::iter::empty()), None);
        let donor =
            Wsrep::from_rows([("WSREP_ON", "ON"), ("WSREP_LOCAL_STATE", "2")].into_iter()).unwrap();
        assert!(donor.unusable().is_some());
    }

    #[test]
    fn one_writer_stays_while_usable_and_moves_when_it_leaves() {
        let mut writer = None;
        let mut cluster = vec![
            obs("n1", Role::Primary, true, Some(node(4))),
            obs("n2", Role::Replica, true, Some(node(4))),
            obs("n3", Role::Replica, true, Some(node(4))),
        ];
        let (w, j) = judge(&cluster, &mut writer);
        assert_eq!(w, Writer::One(0));
        assert_eq!(j[0].role, Role::Primary);
        assert!(j[1..]
            .iter()
            .all(|j| j.role == Role::Replica && j.state == State::Up));
        // The writer dies: the next node takes writes, and keeps them when n1 returns.
        cluster[0].healthy = false;
        let (w, j) = judge(&cluster, &mut writer);
        assert_eq!(w, Writer::One(1));
        assert_eq!(j[0].state, State::Down);
        cluster[0].healthy = true;
        assert_eq!(judge(&cluster, &mut writer).0, Writer::One(1));
        // A desynced node, a donor and a node outside the Primary component take no reads.
        cluster[2].probe.as_mut().unwrap().galera = Some(Wsrep {
            desync: true,
            ..node(2)
        });
        let (_, j) = judge(&cluster, &mut writer);
        assert_eq!(j[2].state, State::Lagging);
        assert!(j[2].detail.contains("desync"), "{}", j[2].detail);
        cluster[0].probe.as_mut().unwrap().galera = Some(Wsrep {
            primary_component: false,
            ..node(4)
        });
        let (_, j) = judge(&cluster, &mut writer);
        assert!(j[0].detail.contains("Primary component"), "{}", j[0].detail);
        // Nobody usable: no writer, and the reason names every node.
        for o in &mut cluster {
            o.healthy = false;
        }
        match judge(&cluster, &mut writer).0 {
            Writer::Nobody(why) => assert!(why.contains("n1 is down"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
