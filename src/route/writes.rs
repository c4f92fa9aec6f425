//! What read-your-writes needs to know about a session's writes: the GTID position of its last
//! write (reported by the server), or, when the server did not report one, when it wrote (the
//! read-your-writes window stands in), and whether the open transaction wrote.

use crate::backend::gtid::GtidPos;
use std::time::{Duration, Instant};

/// A session's write history, as routing reads it.
#[derive(Debug, Default, Clone)]
pub struct Writes {
    /// When the session last wrote without the server reporting the write's GTID.
    last_write: Option<Instant>,
    /// The open transaction wrote (whether that needs read-your-writes depends on its end).
    txn_wrote: bool,
    /// The GTID position of the session's writes: reads must see it (consistency = "session").
    position: Option<GtidPos>,
}

impl Writes {
    /// The position the session's reads must see.
    pub fn position(&self) -> Option<&GtidPos> {
        self.position.as_ref()
    }

    /// The session wrote, without a known GTID, within `window`.
    pub fn within(&self, window: Duration) -> bool {
        self.last_write.is_some_and(|t| t.elapsed() < window)
    }

    /// The server reported the GTID of a commit of this session's.
    pub fn committed_at(&mut self, pos: &GtidPos) {
        self.position
            .get_or_insert_with(GtidPos::default)
            .merge(pos);
    }

    /// A statement finished. `reported` says the server reported a GTID for it (see
    /// `committed_at`); `wrote` that it was a write that succeeded; `in_transaction` and
    /// `rollback` where the session's transaction stands after it.
    pub fn after_statement(
        &mut self,
        reported: bool,
        wrote: bool,
        in_transaction: bool,
        rollback: bool,
    ) {
        if reported {
            self.last_write = None;
            self.txn_wrote = false;
        } else if wrote {
            if in_transaction {
                // Known once the transaction ends: committed or rolled back.
                self.txn_wrote = true;
            } else {
                // A write whose GTID the server did not report: the time window stands in.
                self.last_write = Some(Instant::now());
            }
        } else if self.txn_wrote && !in_transaction {
            self.txn_wrote = false;
            if !rollback {
                self.last_write = Some(Instant::now());
            }
        }
    }

    /// COM_RESET_CONNECTION: the window of an unreported write closes.
    pub fn forget_window(&mut self) {
        self.last_write = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn a_write_without_a_gtid_opens_the_window() {
        let mut w = Writes::default();
        w.after_statement(false, true, false, false);
        assert!(w.within(WINDOW));
        w.forget_window();
        assert!(!w.within(WINDOW));
    }

    #[test]
    fn a_transaction_counts_when_it_commits_not_when_it_rolls_back() {
        let mut w = Writes::default();
        w.after_statement(false, true, true, false);
        assert!(!w.within(WINDOW));
        w.after_statement(false, false, false, true);
        assert!(!w.within(WINDOW), "rolled back");
        w.after_statement(false, true, true, false);
        w.after_statement(false, false, false, false);
        assert!(w.within(WINDOW), "committed");
    }

    #[test]
    fn a_reported_gtid_replaces_the_window() {
        let mut w = Writes::default();
        w.after_statement(false, true, false, false);
        w.committed_at(&GtidPos::parse("0-1-5").unwrap());
        w.after_statement(true, true, false, false);
        assert!(!w.within(WINDOW));
        assert_eq!(
            w.position().map(|p| p.to_string()).as_deref(),
            Some("0-1-5")
        );
    }
}
