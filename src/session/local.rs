//! Weiche's own answers to commands a proxy must not simply relay: EXPLAIN ROUTE,
//! COM_RESET_CONNECTION (COM_CHANGE_USER is in `change_user`, KILL of a Weiche connection id in
//! `kill`).

use super::outcome::Next;
use super::relay::RelayError;
use super::Session;
use crate::backend::SessionState;
use crate::protocol::resultset::send_text_result;
use crate::route::Destination;

/// `EXPLAIN ROUTE <statement>`: the statement, if this is one.
pub(super) fn explain_route_target(sql: &[u8]) -> Option<&[u8]> {
    let t = sql.trim_ascii_start();
    let kw = b"EXPLAIN";
    if t.len() < kw.len() || !t[..kw.len()].eq_ignore_ascii_case(kw) {
        return None;
    }
    let rest = t[kw.len()..].trim_ascii_start();
    let kw = b"ROUTE";
    if rest.len() <= kw.len()
        || !rest[..kw.len()].eq_ignore_ascii_case(kw)
        || !rest[kw.len()].is_ascii_whitespace()
    {
        return None;
    }
    Some(rest[kw.len()..].trim_ascii())
}

/// Answer EXPLAIN ROUTE with one row: where the statement would go now, why, and the pins.
pub(super) async fn explain_route(
    s: &mut Session,
    seq: u8,
    sql: &[u8],
) -> Result<Next, RelayError> {
    let analysis = s.analyze(sql);
    let (target, reason) = match s.route(&analysis, sql) {
        Ok(route) => {
            let table = &s.shared.backends;
            let target = match route.destination {
                Destination::Current => {
                    let addr = s
                        .current
                        .as_ref()
                        .map(|c| table.backends[c.backend].address.as_str())
                        .unwrap_or_default();
                    format!("current connection ({addr})")
                }
                Destination::Backend(i) => {
                    format!("{} {}", table.role(i).as_str(), table.backends[i].address)
                }
            };
            (target, route.to_string())
        }
        Err(e) => ("none".to_string(), e.to_err_packet().message),
    };
    let cache = s.cache_explain(sql).await;
    let row = vec![
        Some(target),
        Some(reason),
        Some(s.pin_reasons()),
        Some(cache),
    ];
    let st = s.status();
    let shape = s.shape();
    send_text_result(
        &mut s.client,
        seq.wrapping_add(1),
        &["target", "reason", "pins", "cache"],
        &[row],
        shape,
        st,
    )
    .await
    .map_err(RelayError::Client)?;
    Ok(Next::Continue)
}

/// COM_RESET_CONNECTION: the session starts over (keeping its user and schema); the server
/// connection it held is reset before anyone uses it again.
pub(super) fn reset_connection(s: &mut Session) {
    s.state = SessionState {
        schema: s.state.schema.clone(),
        ..Default::default()
    };
    s.stmts.clear();
    s.pins.clear_keeping_mode();
    s.writes.forget_window();
    if let Some(mut cur) = s.current.take() {
        cur.conn.state.untracked = Some("COM_RESET_CONNECTION");
        s.give_back(cur);
    }
}
