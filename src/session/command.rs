//! The command loop: read a command from the client, route it, relay it to a server connection
//! and stream the response back. Commands that need Weiche's own answer (QUIT, PING,
//! RESET_CONNECTION, CHANGE_USER, KILL, EXPLAIN ROUTE, commands a proxy must not relay) are
//! handled here; prepared statements in `prepared`.

use super::cached::Step;
use super::frontend::{access_denied, check_password, switch_to_native};
use super::outcome::{kind_of, relay_packet, CommandError, Kind, Next, Retry, HOLD_FOR_NEXT};
use super::relay::{forward_command, relay_response, RelayError, Rewrite};
use super::reply_err;
use super::{Session, FIRST_CONNECTION_ID};
use crate::backend::{ServerConnection, SessionState};
use crate::metrics::ErrorKind;
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::{com, errcode, MAX_CHUNK};
use crate::protocol::handshake::ChangeUser;
use crate::protocol::resultset::send_text_result;
use crate::protocol::{ok_payload, Chunk, ErrPacket, Expect, Framed, ProtocolError, Walker};
use crate::route::Destination;
use crate::sql::{analyze, kill, Analysis, Consistency, Target};
use crate::tls::Stream;
use bytes::{BufMut, Bytes, BytesMut};

/// How long a client waits for its next command before its buffers are given back.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_millis(500);

/// The client's next command. A client without buffers (idle) gets its read buffer only once
/// its command arrives.
async fn next_command(client: &mut Framed<Stream>) -> Result<Chunk, ProtocolError> {
    if !client.holds_buffers() {
        client.io.ready_to_read().await?;
    }
    client.read_chunk(MAX_CHUNK).await
}

/// Serve commands until the client quits, disconnects or is killed.
pub(crate) async fn run(s: &mut Session) {
    let handle = s.handle.clone();
    let mut shutdown = s.shared.shutdown_receiver();
    let mut last_command = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow_and_update() {
            tracing::debug!("closing an idle session: Weiche is stopping");
            return;
        }
        // A connection kept only for the next statement goes back once that is overdue.
        let hold_until = s
            .current
            .as_ref()
            .and_then(|c| c.held_since)
            .filter(|_| !s.pinned())
            .map(|t| tokio::time::Instant::from_std(t + HOLD_FOR_NEXT));
        // One timer for whatever comes first: the held connection's return, giving an idle
        // client's buffers back, the idle timeout. (A timer each would register three per
        // command.)
        let now = tokio::time::Instant::now();
        let release_at = s.client.holds_buffers().then(|| now + IDLE_RELEASE);
        let idle_at = s.config.limits.idle_timeout.map(|t| last_command + t);
        let wake = [hold_until, release_at, idle_at]
            .into_iter()
            .flatten()
            .min();
        // Only the wait for the next command is interrupted; a command in flight completes.
        let read = tokio::select! {
            r = next_command(&mut s.client) => r,
            _ = handle.killed.notified() => {
                tracing::info!("killed by KILL CONNECTION");
                return;
            }
            _ = shutdown.changed() => continue,
            _ = sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if idle_at.is_some_and(|t| now >= t) {
                    // As MariaDB's wait_timeout: the connection closes; the client's next
                    // command finds it gone and its library reconnects.
                    s.shared.metrics.limit(crate::metrics::Limit::IdleTimeout);
                    tracing::info!(
                        "closing a session idle for {:?} (limits.idle_timeout)",
                        last_command.elapsed()
                    );
                    return;
                }
                if hold_until.is_some_and(|t| now >= t) {
                    s.release();
                }
                // read_chunk keeps partial input in rbuf, and only empty buffers are released.
                if release_at.is_some_and(|t| now >= t) {
                    s.client.release_buffers();
                }
                continue;
            }
        };
        let cmd = match read {
            Ok(c) => c,
            Err(e) if e.is_disconnect() => return,
            Err(e) => {
                s.shared.metrics.error(ErrorKind::Client);
                tracing::warn!("bad packet from client: {e}");
                let err =
                    ErrPacket::new(errcode::ER_UNKNOWN_ERROR, "08S01", format!("Weiche: {e}"));
                let _ = s.send_err(1, &err).await;
                return;
            }
        };
        handle.begin(&cmd.payload);
        let epoch = s
            .shared
            .config_epoch
            .load(std::sync::atomic::Ordering::Acquire);
        if epoch != s.config_epoch {
            // A reload happened: this command runs with the new configuration.
            s.config = s.shared.config();
            s.config_epoch = epoch;
        }
        let payload = cmd.payload.clone();
        let started = std::time::Instant::now();
        s.outcome = Default::default();
        s.answered = false;
        // Boxed: an idle session's task keeps only the loop's state, not room for the largest
        // command's (halves the memory of an idle session; one allocation per command).
        let next = Box::pin(dispatch(s, cmd)).await;
        handle.end();
        last_command = tokio::time::Instant::now();
        s.account(&payload, started.elapsed());
        match next {
            Ok(Next::Continue) => {}
            Ok(Next::Close) => return,
            Err(RelayError::Client(e)) => {
                if !e.is_disconnect() {
                    tracing::warn!("client: {e}");
                }
                return;
            }
            Err(
                e @ (RelayError::Server(_) | RelayError::Abandoned(_) | RelayError::Timeout(_)),
            ) => {
                s.shared.metrics.error(kind_of(&e));
                tracing::warn!("lost the server connection: {e}");
                let _ = s.send_err(1, &relay_packet(&e)).await;
                return;
            }
            Err(e @ RelayError::CommandTooLarge { .. }) => {
                s.shared.metrics.error(ErrorKind::Client);
                s.shared.metrics.limit(crate::metrics::Limit::PacketSize);
                tracing::warn!("{e}; closing");
                let _ = s.send_err(1, &relay_packet(&e)).await;
                return;
            }
        }
    }
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn dispatch(s: &mut Session, cmd: Chunk) -> Result<Next, RelayError> {
    if s.script.is_some() && !cmd.payload.is_empty() {
        if let Some(next) = super::script::read_query(s, &cmd).await? {
            return Ok(next);
        }
    }
    let Some(&code) = cmd.payload.first() else {
        reply_err(
            s,
            cmd.seq,
            ErrPacket::new(errcode::ER_UNKNOWN_COM, "08S01", "Unknown command"),
        )
        .await?;
        return Ok(Next::Continue);
    };
    match code {
        com::QUIT => return Ok(Next::Close),
        com::CHANGE_USER => return change_user(s, cmd).await,
        com::PING | com::RESET_CONNECTION => {
            if code == com::RESET_CONNECTION {
                reset_connection(s);
            }
            let st = s.status();
            s.client
                .send(cmd.seq.wrapping_add(1), &ok_payload(0, st))
                .await
                .map_err(RelayError::Client)?;
            return Ok(Next::Continue);
        }
        com::STMT_PREPARE
        | com::STMT_EXECUTE
        | com::STMT_FETCH
        | com::STMT_CLOSE
        | com::STMT_RESET
        | com::STMT_SEND_LONG_DATA => return super::prepared::dispatch(s, cmd).await,
        // Ids below Weiche's range are backend thread ids (from CONNECTION_ID()): such a KILL
        // goes to the backend unchanged, like any other command.
        com::QUERY => {
            if let Some(k) =
                kill::parse(&cmd.payload[1..]).filter(|k| k.id >= u64::from(FIRST_CONNECTION_ID))
            {
                return run_kill(s, cmd.seq, k.id, k.query, |tid| {
                    let mut p = BytesMut::new();
                    p.put_u8(com::QUERY);
                    p.put_slice(k.to_sql(tid).as_bytes());
                    p.freeze()
                })
                .await;
            }
            if let Some(rest) = explain_route_target(&cmd.payload[1..]) {
                let rest = rest.to_vec();
                return explain_route(s, cmd.seq, &rest).await;
            }
            let analysis = analyze(&cmd.payload[1..]);
            s.query_digest = Some(analysis.digest);
            return run_routed(s, cmd, Expect::Results, Some(analysis)).await;
        }
        com::PROCESS_KILL => {
            let id = cmd
                .payload
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if let Some(id) = id.filter(|&id| id >= FIRST_CONNECTION_ID) {
                return run_kill(s, cmd.seq, u64::from(id), false, |tid| {
                    let mut p = BytesMut::new();
                    p.put_u8(com::PROCESS_KILL);
                    p.put_u32_le(tid);
                    p.freeze()
                })
                .await;
            }
        }
        _ => {}
    }
    let Some(expect) = Expect::for_command(code) else {
        tracing::info!(command = code, "refused a command Weiche does not relay");
        let err = ErrPacket::new(errcode::ER_UNKNOWN_COM, "08S01", "Unknown command");
        reply_err(s, cmd.seq, err).await?;
        return Ok(Next::Continue);
    };
    run_routed(s, cmd, expect, None).await
}

/// Route a command (a query with its analysis, or another command: primary), run it and
/// stream its response back, through the result cache when it asks for the statement.
async fn run_routed(
    s: &mut Session,
    cmd: Chunk,
    expect: Expect,
    mut analysis: Option<Analysis>,
) -> Result<Next, RelayError> {
    let query = analysis.is_some();
    let fill = if query && cmd.seq == 0 && !cmd.continues() {
        match s.cache_step(&cmd.payload[1..], None).await? {
            Step::Answered => return Ok(Next::Continue),
            Step::Run(fill) => fill,
        }
    } else {
        None
    };
    if let (Some(_), Some(a)) = (&fill, analysis.as_mut()) {
        // What this read stores, every later reader sees: it must see every write committed
        // before it began, not only this session's.
        a.consistency = Some(Consistency::Global);
    }
    let effects = analysis.as_ref().map(|a| &a.effects);
    let hold = s.cache_holds(effects);
    let sql = if query { &cmd.payload[1..] } else { &[][..] };
    let outcome = relay_routed(s, &cmd, expect, analysis.as_ref(), hold).await;
    let (next, storable) = match outcome {
        Ok(r) => r,
        Err(e) => {
            s.tap = None;
            if hold {
                // The write's outcome is unknown: bump anyway (the client is told nothing more).
                let _ = s.cache_written(sql, effects).await;
            }
            return Err(e);
        }
    };
    s.cache_fill(fill, storable).await;
    if hold || !s.cache_pending.is_empty() {
        s.cache_written(sql, effects).await?;
    }
    Ok(next)
}

/// Run a routed command: returns what the loop does next and whether the response is whole and
/// clean (no error, no warnings), so that the cache may keep it. A read outside a transaction
/// whose server connection fails before any of the answer reached the client runs once more, on
/// another backend.
async fn relay_routed(
    s: &mut Session,
    cmd: &Chunk,
    expect: Expect,
    analysis: Option<&Analysis>,
    hold: bool,
) -> Result<(Next, bool), RelayError> {
    let retryable = cmd.payload[0] == com::QUERY
        && !cmd.continues()
        && !s.pinned()
        && analysis.is_some_and(|a| a.class.target == Target::Replica && !a.effects.writes);
    let insert_id = analysis.is_some_and(|a| a.effects.needs_insert_id);
    let mut avoid = None;
    loop {
        let route = match analysis {
            Some(a) => s.route_avoiding(a, &cmd.payload[1..], avoid),
            None => s.route(&Analysis::primary("command for the primary"), b""),
        };
        let route = match route {
            Ok(r) => r,
            Err(e) => {
                s.shared.metrics.error(e.error_kind());
                s.refuse(cmd.seq, e).await?;
                return Ok((Next::Continue, false));
            }
        };
        tracing::debug!(reason = %route, "route");
        let target = match route.destination {
            Destination::Backend(i) => Some(i),
            Destination::Current => None,
        };
        match s.connect_for(&route, insert_id).await {
            Ok(()) => {}
            Err(CommandError {
                kind: Kind::Relay(e),
                ..
            }) => return Err(e),
            Err(e) => {
                if let Some(b) = target.filter(|_| retryable && avoid.is_none()) {
                    if s.retry_elsewhere(b, e.retry) {
                        avoid = Some(b);
                        continue;
                    }
                }
                s.refuse(cmd.seq, e).await?;
                return Ok((Next::Continue, false));
            }
        }
        let was_pinned = s.pinned();
        let backend = s.current.as_ref().map(|c| c.backend);
        let rewrite = Rewrite {
            hold_last: hold,
            ..Rewrite::default()
        };
        let walker = match s.relay_current(cmd, expect, rewrite).await {
            Ok(w) => w,
            Err(e) if e.is_server_side() => {
                s.drop_current();
                if let Some(b) = backend.filter(|_| retryable && avoid.is_none()) {
                    if s.retry_elsewhere(b, Retry::of(&e)) {
                        avoid = Some(b);
                        continue;
                    }
                }
                return Ok((s.command_failed(cmd.seq, &e, was_pinned).await?, false));
            }
            Err(e) => {
                s.drop_current();
                return Err(e);
            }
        };
        if cmd.payload[0] == com::SET_OPTION {
            // The multi-statements option is per connection: this one no longer matches its pool.
            s.pins.untracked = Some("COM_SET_OPTION");
            if let Some(c) = s.current.as_mut() {
                c.conn.broken = true;
            }
        }
        s.learn(&walker, analysis.map(|a| &a.effects));
        let warnings = walker.ok.as_ref().is_some_and(|o| o.warnings > 0);
        return Ok((Next::Continue, !walker.error && !warnings));
    }
}

/// `EXPLAIN ROUTE <statement>`: the statement, if this is one.
fn explain_route_target(sql: &[u8]) -> Option<&[u8]> {
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
async fn explain_route(s: &mut Session, seq: u8, sql: &[u8]) -> Result<Next, RelayError> {
    let analysis = analyze(sql);
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
    let deprecate_eof = s.deprecate_eof();
    send_text_result(
        &mut s.client,
        seq.wrapping_add(1),
        &["target", "reason", "pins", "cache"],
        &[row],
        deprecate_eof,
        st,
    )
    .await
    .map_err(RelayError::Client)?;
    Ok(Next::Continue)
}

/// COM_RESET_CONNECTION: the session starts over (keeping its user and schema); the server
/// connection it held is reset before anyone uses it again.
fn reset_connection(s: &mut Session) {
    s.state = SessionState {
        schema: s.state.schema.clone(),
        ..Default::default()
    };
    s.stmts.clear();
    let session_mode = s.pins.session_mode;
    s.pins = Default::default();
    s.writes.forget_window();
    if let Some(mut cur) = s.current.take() {
        cur.conn.state.untracked = Some("COM_RESET_CONNECTION");
        s.handle.set_server(None);
        crate::backend::pool::release(cur.conn);
    }
    s.pins.session_mode = session_mode;
}

/// KILL of a Weiche connection id: find the server thread behind it and kill that one, with
/// the requesting user's rights (the backend checks them). `command` builds the KILL for a
/// backend thread id; `query` says it kills only the running statement.
async fn run_kill(
    s: &mut Session,
    seq: u8,
    id: u64,
    query: bool,
    command: impl Fn(u32) -> Bytes,
) -> Result<Next, RelayError> {
    let target = u32::try_from(id)
        .ok()
        .and_then(|id| s.shared.registry.get(id).map(|h| (id, h)));
    if let Some((target_id, handle)) = target.as_ref().filter(|(_, h)| h.server().is_none()) {
        // The session holds no server connection: nothing runs; KILL CONNECTION closes it.
        tracing::info!(target_session = target_id, "KILL of an idle session");
        let st = s.status();
        s.client
            .send(seq.wrapping_add(1), &ok_payload(0, st))
            .await
            .map_err(RelayError::Client)?;
        return Ok(if query {
            Next::Continue
        } else if *target_id == s.id {
            Next::Close
        } else {
            handle.killed.notify_one();
            Next::Continue
        });
    }
    let target = target.and_then(|(id, h)| h.server().map(|server| (id, h, server)));
    let target = target.and_then(|(id, h, (i, thread_id))| {
        let address = s.shared.backends.backends.get(i)?.address.clone();
        Some((id, h, (address, thread_id)))
    });
    let Some((target_id, handle, (address, thread_id))) = target else {
        let err = ErrPacket::new(
            errcode::ER_NO_SUCH_THREAD,
            "HY000",
            format!("Unknown thread id: {id}"),
        );
        reply_err(s, seq, err).await?;
        return Ok(Next::Continue);
    };
    tracing::info!(target_session = target_id, backend = %address, thread_id, "KILL");
    let cmd = Chunk {
        seq,
        payload: command(thread_id),
    };
    let expect = Expect::for_command(cmd.payload[0]).unwrap_or(Expect::OnePacket);
    // From a connection of our own on the target's backend (the session's may be elsewhere, or
    // be the very connection being killed).
    match ServerConnection::connect(&address, &s.login_params()).await {
        Ok(mut sc) => {
            forward_command(&mut s.client, &mut sc.framed, &cmd, MAX_CHUNK).await?;
            let mut walker = Walker::new(expect, s.deprecate_eof(), false).tracked();
            let rewrite = Rewrite {
                untrack_ok: s.capabilities & crate::protocol::constants::cap::SESSION_TRACK == 0,
                ..Rewrite::default()
            };
            relay_response(
                &mut s.client,
                &mut sc.framed,
                &mut walker,
                rewrite,
                &mut false,
                None,
            )
            .await?;
        }
        Err(e) => reply_err(s, seq, e.to_client_error()).await?,
    }
    if query {
        Ok(Next::Continue)
    } else if target_id == s.id {
        Ok(Next::Close)
    } else {
        handle.killed.notify_one();
        Ok(Next::Continue)
    }
}

/// COM_CHANGE_USER: Weiche checks the new credentials itself, then replaces the server
/// connection with one logged in as the new user (a fresh session state, as the command means).
async fn change_user(s: &mut Session, cmd: Chunk) -> Result<Next, RelayError> {
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
