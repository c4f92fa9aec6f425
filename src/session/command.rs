//! The command loop: read a command from the client, relay it to the server connection and
//! stream the response back. Commands that need Weiche's own answer (QUIT, CHANGE_USER, KILL,
//! commands a proxy must not relay) are handled here.

use super::frontend::{access_denied, check_password, switch_to_native};
use super::relay::{forward_command, relay_response, RelayError};
use super::{Session, FIRST_CONNECTION_ID};
use crate::backend::ServerConnection;
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::{com, errcode, MAX_CHUNK};
use crate::protocol::handshake::ChangeUser;
use crate::protocol::{ok_payload, Chunk, ErrPacket, Expect, ProtocolError, Walker};
use crate::sql::kill;
use bytes::{BufMut, Bytes, BytesMut};

/// What the loop does after a command.
enum Next {
    Continue,
    Close,
}

/// Serve commands until the client quits, disconnects or is killed.
pub(crate) async fn run(s: &mut Session) {
    let handle = s.handle.clone();
    let mut shutdown = s.shared.shutdown_receiver();
    loop {
        if *shutdown.borrow_and_update() {
            tracing::debug!("closing an idle session: Weiche is stopping");
            return;
        }
        // Only the wait for the next command is interrupted; a command in flight completes.
        let read = tokio::select! {
            r = s.client.read_chunk(MAX_CHUNK) => r,
            _ = handle.killed.notified() => {
                tracing::info!("killed by KILL CONNECTION");
                return;
            }
            _ = shutdown.changed() => continue,
        };
        let cmd = match read {
            Ok(c) => c,
            Err(e) if e.is_disconnect() => return,
            Err(e) => {
                tracing::warn!("bad packet from client: {e}");
                let err =
                    ErrPacket::new(errcode::ER_UNKNOWN_ERROR, "08S01", format!("Weiche: {e}"));
                let _ = s.send_err(1, &err).await;
                return;
            }
        };
        match dispatch(s, cmd).await {
            Ok(Next::Continue) => {}
            Ok(Next::Close) => return,
            Err(RelayError::Client(e)) => {
                if !e.is_disconnect() {
                    tracing::warn!("client: {e}");
                }
                return;
            }
            Err(RelayError::Server(e)) => {
                tracing::warn!("lost the server connection: {e}");
                let err = ErrPacket::new(
                    errcode::CR_SERVER_LOST,
                    "HY000",
                    format!("Weiche: lost the connection to the backend ({e})"),
                );
                let _ = s.send_err(1, &err).await;
                return;
            }
            Err(e @ RelayError::CommandTooLarge { .. }) => {
                tracing::warn!("{e}; closing");
                let err = ErrPacket::new(
                    errcode::ER_NET_PACKET_TOO_LARGE,
                    "08S01",
                    "Got a packet bigger than 'max_allowed_packet' bytes",
                );
                let _ = s.send_err(1, &err).await;
                return;
            }
        }
    }
}

async fn dispatch(s: &mut Session, cmd: Chunk) -> Result<Next, RelayError> {
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
    relay(s, cmd, expect).await?;
    Ok(Next::Continue)
}

/// Send a command to the server connection and stream its response back.
async fn relay(s: &mut Session, cmd: Chunk, expect: Expect) -> Result<(), RelayError> {
    let code = cmd.payload[0];
    let deprecate_eof = s.deprecate_eof();
    let max = s.config.max_packet_size;
    let Some(server) = s.server.as_mut() else {
        return Err(RelayError::Server(ProtocolError::Closed));
    };
    forward_command(&mut s.client, &mut server.framed, &cmd, max).await?;
    let binary = code == com::STMT_EXECUTE || code == com::STMT_FETCH;
    let mut walker = Walker::new(expect, deprecate_eof, binary);
    relay_response(&mut s.client, &mut server.framed, &mut walker).await?;
    if let Some(st) = walker.status {
        server.status = st;
    }
    if code == com::INIT_DB && !walker.error {
        s.database = Some(cmd.payload[1..].to_vec());
    }
    Ok(())
}

async fn reply_err(s: &mut Session, cmd_seq: u8, err: ErrPacket) -> Result<(), RelayError> {
    s.send_err(cmd_seq.wrapping_add(1), &err)
        .await
        .map_err(RelayError::Client)
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
        .and_then(|id| s.shared.registry.get(id).map(|h| (id, h)))
        .and_then(|(id, h)| h.server().map(|server| (id, h, server)));
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
    if s.server.as_ref().is_some_and(|sc| sc.address == address) {
        relay(s, cmd, expect).await?;
    } else {
        // The target sits on another backend: kill from a connection of our own there.
        match ServerConnection::connect(&address, &s.login_params()).await {
            Ok(mut sc) => {
                forward_command(&mut s.client, &mut sc.framed, &cmd, MAX_CHUNK).await?;
                let mut walker = Walker::new(expect, s.deprecate_eof(), false);
                relay_response(&mut s.client, &mut sc.framed, &mut walker).await?;
            }
            Err(e) => reply_err(s, seq, e.to_client_error()).await?,
        }
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
    let user = config.user(&cu.username).cloned();
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
    let previous = (
        s.user.clone(),
        s.secret.clone(),
        s.database.clone(),
        s.charset,
    );
    s.user = user.name.clone();
    s.secret = secret;
    s.database = cu.database.clone();
    if let Some(cs) = cu.charset {
        s.charset = cs as u8;
    }
    if cu.connect_attrs.is_some() {
        s.connect_attrs = cu.connect_attrs.clone();
    }
    s.config = config;
    let old = s.server.take();
    match s.connect_primary().await {
        Ok(()) => {
            drop(old);
            tracing::info!(user = %s.user, "changed user");
            let st = s.server.as_ref().map_or(0, |sc| sc.status);
            s.client
                .send(seq, &ok_payload(0, st))
                .await
                .map_err(RelayError::Client)?;
            Ok(Next::Continue)
        }
        Err(err) => {
            // The old server connection still belongs to the old user; keep the session as it was.
            (s.user, s.secret, s.database, s.charset) = previous;
            s.server = old;
            s.send_err(seq, &err).await.map_err(RelayError::Client)?;
            Ok(Next::Continue)
        }
    }
}
