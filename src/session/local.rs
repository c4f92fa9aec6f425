//! Weiche's own answers to commands a proxy must not simply relay: EXPLAIN ROUTE,
//! `SHOW STATUS LIKE 'Compression'` (the client's connection is Weiche's, not the server's),
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

/// Whether this is `SHOW [SESSION | LOCAL] STATUS LIKE 'Compression'` (in any case, either
/// quote): whether the client's connection is compressed only Weiche knows.
pub(super) fn is_compression_status(sql: &[u8]) -> bool {
    let mut rest = sql.trim_ascii();
    if rest.last() == Some(&b';') {
        rest = rest[..rest.len() - 1].trim_ascii_end();
    }
    let mut word = |w: &[u8], optional: bool| -> bool {
        let t = rest.trim_ascii_start();
        let ok = t.len() > w.len()
            && t[..w.len()].eq_ignore_ascii_case(w)
            && t[w.len()].is_ascii_whitespace();
        if ok {
            rest = &t[w.len()..];
        }
        ok || optional
    };
    if !(word(b"SHOW", false)
        && (word(b"SESSION", true) && word(b"LOCAL", true))
        && word(b"STATUS", false)
        && word(b"LIKE", false))
    {
        return false;
    }
    let t = rest.trim_ascii_start();
    t.len() == 13
        && (t[0] == b'\'' || t[0] == b'"')
        && t[12] == t[0]
        && t[1..12].eq_ignore_ascii_case(b"Compression")
}

/// Answer `SHOW STATUS LIKE 'Compression'` for the client's own connection.
pub(super) async fn compression_status(s: &mut Session, seq: u8) -> Result<Next, RelayError> {
    let on = if s.client.io.compression().is_some() {
        "ON"
    } else {
        "OFF"
    };
    let row = vec![Some("Compression".to_string()), Some(on.to_string())];
    send_row(s, seq, &["Variable_name", "Value"], row).await
}

/// Answer the command `seq` with a one-row text result of Weiche's own.
async fn send_row(
    s: &mut Session,
    seq: u8,
    columns: &[&str],
    row: Vec<Option<String>>,
) -> Result<Next, RelayError> {
    let (st, shape) = (s.status(), s.shape());
    send_text_result(
        &mut s.client,
        seq.wrapping_add(1),
        columns,
        &[row],
        shape,
        st,
    )
    .await
    .map_err(RelayError::Client)?;
    Ok(Next::Continue)
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
    send_row(s, seq, &["target", "reason", "pins", "cache"], row).await
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

#[cfg(test)]
mod tests {
    use super::is_compression_status;

    #[test]
    fn the_compression_status_statement_is_recognized_and_nothing_else() {
        for yes in [
            "SHOW STATUS LIKE 'Compression'",
            "show session status like \"compression\";",
            "  SHOW LOCAL STATUS  LIKE 'COMPRESSION' ",
        ] {
            assert!(is_compression_status(yes.as_bytes()), "{yes}");
        }
        for no in [
            "SHOW GLOBAL STATUS LIKE 'Compression'",
            "SHOW STATUS LIKE 'Compression%'",
            "SHOW STATUS",
            "SELECT 'Compression'",
            "SHOW STATUS LIKE 'Compressionx'",
        ] {
            assert!(!is_compression_status(no.as_bytes()), "{no}");
        }
    }
}
