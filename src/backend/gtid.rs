//! MariaDB GTID positions: `domain-server-sequence` per replication domain, as in
//! `@@gtid_current_pos`, `@@gtid_slave_pos` and a session's `last_gtid`. Sequence numbers grow
//! within a domain, so a position covers another when it is at least as far in every domain the
//! other names; the distance between them counts transactions.

use std::fmt;

/// One domain's last transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

/// A GTID position: at most one GTID per domain, sorted by domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPos(Vec<Gtid>);

impl GtidPos {
    /// Parse `0-1-42,1-2-7` (spaces allowed; empty means no transactions yet). None when the
    /// text is not a MariaDB position.
    pub fn parse(text: &str) -> Option<GtidPos> {
        let mut out: Vec<Gtid> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut it = part.split('-');
            let g = Gtid {
                domain: it.next()?.parse().ok()?,
                server: it.next()?.parse().ok()?,
                seq: it.next()?.parse().ok()?,
            };
            if it.next().is_some() {
                return None;
            }
            match out.iter_mut().find(|o| o.domain == g.domain) {
                Some(o) if o.seq < g.seq => *o = g,
                Some(_) => {}
                None => out.push(g),
            }
        }
        out.sort_by_key(|g| g.domain);
        Some(GtidPos(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn seq(&self, domain: u32) -> Option<u64> {
        self.0.iter().find(|g| g.domain == domain).map(|g| g.seq)
    }

    /// This position includes every transaction of `other`.
    pub fn covers(&self, other: &GtidPos) -> bool {
        other
            .0
            .iter()
            .all(|g| self.seq(g.domain).is_some_and(|s| s >= g.seq))
    }

    /// Transactions in `ahead` that this position lacks.
    pub fn behind(&self, ahead: &GtidPos) -> u64 {
        ahead
            .0
            .iter()
            .map(|g| g.seq.saturating_sub(self.seq(g.domain).unwrap_or(0)))
            .sum()
    }

    /// One more transaction: its domain moves to it (a binlog stream's GTIDs arrive in order).
    pub fn advance(&mut self, g: Gtid) {
        match self.0.iter_mut().find(|o| o.domain == g.domain) {
            Some(o) => *o = g,
            None => {
                self.0.push(g);
                self.0.sort_by_key(|g| g.domain);
            }
        }
    }

    /// Raise each domain to `other`'s when that is further (what a replica has, once it is
    /// known to have applied `other`).
    pub fn merge(&mut self, other: &GtidPos) {
        for g in &other.0 {
            match self.0.iter_mut().find(|o| o.domain == g.domain) {
                Some(o) if o.seq < g.seq => *o = *g,
                Some(_) => {}
                None => self.0.push(*g),
            }
        }
        self.0.sort_by_key(|g| g.domain);
    }
}

impl fmt::Display for GtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}-{}-{}", g.domain, g.server, g.seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> GtidPos {
        GtidPos::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints() {
        assert_eq!(p("1-2-7, 0-1-42").to_string(), "0-1-42,1-2-7");
        assert!(p("").is_empty());
        assert_eq!(
            GtidPos::parse("3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5"),
            None
        );
        assert_eq!(GtidPos::parse("0-1"), None);
        assert_eq!(GtidPos::parse("0-1-2-3"), None);
    }

    #[test]
    fn coverage_and_distance() {
        let replica = p("0-1-40,1-2-7");
        assert!(replica.covers(&p("0-1-40")));
        assert!(replica.covers(&p("")));
        assert!(!replica.covers(&p("0-1-41")));
        assert!(!replica.covers(&p("2-1-1")));
        assert_eq!(replica.behind(&p("0-1-45,1-2-7")), 5);
        assert_eq!(replica.behind(&p("0-1-45,2-3-2")), 7);
        assert_eq!(replica.behind(&p("0-1-30")), 0);
        let mut r = replica.clone();
        r.merge(&p("0-1-44,3-1-1"));
        assert_eq!(r.to_string(), "0-1-44,1-2-7,3-1-1");
    }
}
