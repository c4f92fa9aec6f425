//! The command loop: read a command from the client, and dispatch it: Weiche's own answers
//! (`local`), prepared statements (`prepared`), and everything else routed to a server
//! connection (`routed`).

use super::change_user::change_user;
use super::kill::run_kill;
use super::local::{
    compression_status, explain_route, explain_route_target, is_compression_status,
    reset_connection,
};
use super::outcome::{kind_of, relay_packet, Next, HOLD_FOR_NEXT};
use super::relay::RelayError;
use super::reply_err;
use super::routed::run_routed;
use super::{Session, FIRST_CONNECTION_ID};
use crate::metrics::ErrorKind;
use crate::protocol::constants::{com, errcode, MAX_CHUNK};
use crate::protocol::{ok_payload, Chunk, ErrPacket, Expect, Framed, ProtocolError};
use crate::sql::kill;
use crate::tls::Stream;

/// When Weiche stops, how long a session may be idle before it is closed.
const SHUTDOWN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a client waits for its next command before its buffers are given back.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_millis(500);

/// The client's next command, at most `max` bytes (proxy.max_packet_size, checked on the
/// header before any of the payload is buffered). A client without buffers (idle) gets its read
/// buffer only once its command arrives.
async fn next_command(client: &mut Framed<Stream>, max: usize) -> Result<Chunk, ProtocolError> {
    if !client.holds_buffers() {
        client.io.ready_to_read().await?;
    }
    client.read_chunk(max.min(MAX_CHUNK)).await
}

/// Close after an answer the client must get although it is still sending: closing with its
/// bytes unread would reset the connection, and a reset can discard the answer before the
/// client reads it. The rest is read and dropped (a fixed buffer, at most half a second).
async fn linger(client: &mut Framed<Stream>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = client.io.shutdown().await;
    // On the heap: an array here would be part of every session's task, lingering or not.
    let mut buf = vec![0u8; 8192];
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while let Ok(Ok(n)) = tokio::time::timeout_at(until, client.io.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

/// Serve commands until the client quits, disconnects or is killed.
pub(crate) async fn run(s: &mut Session) {
    let handle = s.handle.clone();
    let mut shutdown = s.shared.shutdown_receiver();
    let mut last_command = tokio::time::Instant::now();
    let mut stop_seen: Option<tokio::time::Instant> = None;
    loop {
        // Stopping (SIGTERM, or a new process took the sockets over): a session closes between
        // commands once it has been idle a moment or the stop is a moment old, so that a
        // client between two statements of one short request (a PHP page, a fresh connection
        // before its first query) is not cut off mid-way, and a busy one still leaves soon.
        if *shutdown.borrow_and_update() && stop_seen.is_none() {
            stop_seen = Some(tokio::time::Instant::now());
        }
        let stop_at = stop_seen.map(|t| (last_command + SHUTDOWN_IDLE).min(t + SHUTDOWN_IDLE));
        if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
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
        let idle_at = [s.config.limits.idle_timeout, s.wait_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| last_command + t);
        let wake = [hold_until, release_at, idle_at, stop_at]
            .into_iter()
            .flatten()
            .min();
        // Only the wait for the next command is interrupted; a command in flight completes.
        let read = tokio::select! {
            r = next_command(&mut s.client, s.config.max_packet_size) => r,
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
                        "closing a session idle for {:?} (limits.idle_timeout, or the session's wait_timeout)",
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
            Err(ProtocolError::TooLarge { len, max }) => {
                s.shared.metrics.error(ErrorKind::Client);
                s.shared.metrics.limit(crate::metrics::Limit::PacketSize);
                tracing::warn!(
                    "a {len}-byte command is over proxy.max_packet_size ({max}); closing"
                );
                let e = RelayError::CommandTooLarge { max };
                let _ = s.send_err(1, &relay_packet(&e)).await;
                linger(&mut s.client).await;
                return;
            }
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

impl Session {
    /// The wait_timeout this session set for itself (`SET wait_timeout = 5`), else the server's
    /// global one (interactive_timeout for an interactive client), as the monitor last read it
    /// (a session that logged in before a change gets the new value here, unlike on a direct
    /// connection): the server would
    /// close it after that long without a command, and so does Weiche (its server connections
    /// go back to the pool between commands, where the server's own timer never runs out).
    fn wait_timeout(&self) -> Option<std::time::Duration> {
        let Some(v) = self.state.vars.get(&b"wait_timeout"[..]) else {
            let interactive = self.capabilities & crate::protocol::constants::cap::INTERACTIVE != 0;
            let table = &self.shared.backends;
            return table
                .primary()
                .ok()
                .and_then(|i| table.session_wait_timeout(i, interactive));
        };
        let secs: u64 = std::str::from_utf8(v).ok()?.trim().parse().ok()?;
        Some(std::time::Duration::from_secs(secs.max(1)))
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
        // Boxed: the script's path (its injected queries) would size every command's future.
        if let Some(next) = Box::pin(super::script::read_query(s, &cmd)).await? {
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
        com::CHANGE_USER => return Box::pin(change_user(s, cmd)).await,
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
        | com::STMT_SEND_LONG_DATA
        | com::STMT_BULK_EXECUTE => return super::prepared::dispatch(s, cmd).await,
        // Ids below Weiche's range are backend thread ids (from CONNECTION_ID()): such a KILL
        // goes to the backend unchanged, like any other command.
        com::QUERY => {
            if let Some(k) =
                kill::parse(&cmd.payload[1..]).filter(|k| k.id >= u64::from(FIRST_CONNECTION_ID))
            {
                return Box::pin(run_kill(s, cmd.seq, k.id, k.query)).await;
            }
            if is_compression_status(&cmd.payload[1..]) {
                return compression_status(s, cmd.seq).await;
            }
            if let Some(rest) = explain_route_target(&cmd.payload[1..]) {
                let rest = rest.to_vec();
                return Box::pin(explain_route(s, cmd.seq, &rest)).await;
            }
            let analysis = if cmd.continues() {
                crate::sql::analyze_prefix("a statement longer than one packet")
            } else {
                s.analyze(&cmd.payload[1..])
            };
            s.query_digest = Some(analysis.digest);
            return run_routed(s, cmd, Expect::Results, Some(analysis)).await;
        }
        com::PROCESS_KILL => {
            let id = cmd
                .payload
                .get(1..5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            if let Some(id) = id.filter(|&id| id >= FIRST_CONNECTION_ID) {
                return Box::pin(run_kill(s, cmd.seq, u64::from(id), false)).await;
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
