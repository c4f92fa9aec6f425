//! Weiche's own answers to commands a proxy must not simply relay: EXPLAIN ROUTE,
//! COM_RESET_CONNECTION, COM_CHANGE_USER (KILL of a Weiche connection id is in `kill`).

use super::outcome::Next;
use super::relay::RelayError;
use super::reply_err;
use super::Session;
use crate::backend::SessionState;
use crate::login::{access_denied, check_password, switch_to_native};
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::errcode;
use crate::protocol::handshake::ChangeUser;
use crate::protocol::resultset::send_text_result;
use crate::protocol::{ok_payload, Chunk, ErrPacket};
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

/// COM_CHANGE_USER: Weiche checks the new credentials itself, then replaces the server
/// connection with one logged in as the new user (a fresh session state, as the command means).
pub(super) async fn change_user(s: &mut Session, cmd: Chunk) -> Result<Next, RelayError> {
    let mut seq = cmd.seq.wrapping_add(1);
    let cu = match ChangeUser::decode(&cmd.payload, s.capabilities) {
        Ok(cu) => cu,
        Err(e) => {
            let err = ErrPacket::new(
                errcode::ER_UNKNOWN_COM,
                "08S01",
                format!("Malformed COM_CHANGE_USER ({e})"),
            );
            reply_err(s, cmd.seq, err).await?;
            return Ok(Next::Close);
        }
    };
    let config = s.shared.config();
    let user = s
        .shared
        .clone()
        .find_user(&config, &cu.username, s.peer.ip())
        .await;
    let plugin = cu.auth_plugin.as_deref().unwrap_or(NATIVE_PASSWORD);
    let mut answer = cu.auth_response.clone();
    let mut secret = match (&user, plugin == NATIVE_PASSWORD) {
        (Some(u), true) => check_password(u, &s.scramble, &answer),
        _ => None,
    };
    if secret.is_none() && user.is_some() {
        // Ask again with a fresh challenge (clients answer change-user with the last one they saw,
        // or start with another plugin).
        let scramble = auth::new_scramble();
        let (reply, next) = switch_to_native(&mut s.client, seq, &scramble)
            .await
            .map_err(RelayError::Client)?;
        s.scramble = scramble;
        seq = next;
        answer = reply;
        secret = user
            .as_ref()
            .and_then(|u| check_password(u, &s.scramble, &answer));
    }
    let (Some(user), Some(secret)) = (user, secret) else {
        let err = access_denied(&cu.username, &s.peer, !answer.is_empty());
        tracing::warn!("change user refused: {}", err.message);
        s.send_err(seq, &err).await.map_err(RelayError::Client)?;
        return Ok(Next::Close);
    };
    // A fresh session as the new user: state, statements and pins start over.
    reset_connection(s);
    let previous = (
        s.user.clone(),
        s.secret.clone(),
        s.state.schema.clone(),
        s.charset,
    );
    s.user = user.name.clone();
    s.secret = secret;
    s.state.schema = cu.database.clone();
    if let Some(cs) = cu.charset {
        s.charset = cs as u8;
    }
    if cu.connect_attrs.is_some() {
        s.connect_attrs = cu.connect_attrs.clone();
    }
    s.config = config;
    match s.connect_primary().await {
        Ok(()) => {
            tracing::info!(user = %s.user, "changed user");
            let st = s.status();
            s.client
                .send(seq, &ok_payload(0, st))
                .await
                .map_err(RelayError::Client)?;
            Ok(Next::Continue)
        }
        Err(err) => {
            (s.user, s.secret, s.state.schema, s.charset) = previous;
            s.send_err(seq, &err).await.map_err(RelayError::Client)?;
            Ok(Next::Continue)
        }
    }
}
