//! Read-your-writes: the GTID position of the session's last write (from the `last_gtid` its
//! server connection reports), and the primary's position for reads that must see every write
//! committed before them (consistency = "global").

use super::Session;
use crate::backend::gtid::GtidPos;
use crate::backend::pool;
use crate::backend::query::Answer;
use crate::protocol::track::Change;

impl Session {
    /// Note the GTID of a commit the server reported. True when there was one.
    pub fn learn_position(&mut self, changes: &[Change]) -> bool {
        let mut learned = false;
        for c in changes {
            let Change::Variable { name, value } = c else {
                continue;
            };
            if !name.eq_ignore_ascii_case(b"last_gtid") {
                continue;
            }
            let Some(pos) = std::str::from_utf8(value).ok().and_then(GtidPos::parse) else {
                continue;
            };
            if pos.is_empty() {
                continue;
            }
            self.writes.committed_at(&pos);
            self.note_shared_write(&pos);
            learned = true;
        }
        learned
    }

    /// The primary's GTID position now, asked on a pooled primary connection. None when the
    /// primary cannot say (then only the primary itself can serve a consistent read).
    pub async fn primary_position(&mut self) -> Option<GtidPos> {
        let i = self.shared.backends.primary().ok()?;
        let mut conn = self.borrow(i).await.ok()?;
        conn.queue_query(b"SELECT @@gtid_current_pos");
        let answer = match conn.framed.flush().await {
            Ok(()) => conn.read_answer().await.ok(),
            Err(_) => None,
        };
        let pos = match answer {
            Some(Answer::Rows(r)) => r
                .rows
                .first()
                .and_then(|row| row.first().cloned().flatten())
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| GtidPos::parse(&v)),
            // Not the one-row answer asked for: what else is in this connection is unknown,
            // so it is not lent again.
            Some(_) | None => {
                conn.broken = true;
                None
            }
        };
        pool::release(conn);
        pos
    }
}
