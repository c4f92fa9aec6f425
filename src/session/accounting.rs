//! After each command: its latency by route, its digest's statistics, and the session's pins
//! as SHOW SESSIONS shows them.

use super::Session;
use crate::protocol::constants::com;
use crate::sql::digest::{digest, digest_hash};
use std::time::Duration;

impl Session {
    /// Count a finished command (`payload` is what the client sent).
    pub(crate) fn account(&mut self, payload: &[u8], took: Duration) {
        let micros = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let metrics = &self.shared.metrics;
        let o = self.outcome;
        metrics.command(o.route, micros);
        // The digest's hash comes from the classifier's pass of the lexer where there was one
        // (a query it analyzed, a prepared statement's text at prepare).
        let analyzed = self.query_digest.take();
        let (sql, hash): (Option<&[u8]>, Option<u64>) = match payload.first() {
            Some(&com::QUERY) => (Some(&payload[1..]), analyzed),
            Some(&com::STMT_EXECUTE | &com::STMT_BULK_EXECUTE) => {
                super::stmt::statement_id(payload)
                    .and_then(|id| self.stmts.get(id))
                    .map_or((None, None), |st| {
                        (Some(&st.sql[..]), Some(st.analysis.digest))
                    })
            }
            _ => (None, None),
        };
        if let Some(sql) = sql {
            let slow = took >= self.config.slow_query_time;
            let logs = [
                crate::logging::query_log(),
                crate::logging::slow_log().filter(|_| slow),
            ];
            if logs.iter().any(Option::is_some) {
                let entry = crate::logging::Entry {
                    session: self.id,
                    user: &self.user,
                    client: &self.peer_name,
                    route: o.route.as_str(),
                    micros,
                    rows: o.rows,
                    error: o.error,
                    sql,
                };
                for log in logs.into_iter().flatten() {
                    log.write(&entry);
                }
            }
        }
        if let Some(sql) = sql.filter(|_| self.config.max_digests > 0) {
            metrics.digests.record(
                hash.unwrap_or_else(|| digest_hash(sql)),
                || digest(sql),
                o.route,
                micros,
                o.rows,
                o.error,
            );
        }
        // The reasons' text is built only when they changed (a transaction's statements all
        // have the same ones).
        let shown = self.pins_shown();
        if shown != self.shown_pins {
            let pins = if self.pinned() {
                self.pin_reasons()
            } else {
                String::new()
            };
            self.handle.set_pins(&pins);
            self.shown_pins = shown;
        }
    }
}
