//! COM_CHANGE_USER is a login: the new credentials pass every check a login passes (the
//! failed-login limit, per-user and global `require_tls`, the Lua `read_auth` hook, the user's
//! session limit, the account as the server has it now), and only then is the session replaced
//! by a fresh one as the new user. A refusal closes the connection, as MariaDB does.

use super::local::reset_connection;
use super::login::account_verdict;
use super::outcome::Next;
use super::relay::RelayError;
use super::reply_err;
use super::Session;
use crate::login::{access_denied, check_password, switch_to_native, tls_required};
use crate::metrics::Limit;
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::{errcode, status};
use crate::protocol::handshake::ChangeUser;
use crate::protocol::{ok_payload, Chunk, ErrPacket};
use crate::script::Decision;

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
    let shared = s.shared.clone();
    let user = shared.find_user(&config, &cu.username, s.peer.ip()).await;
    let plugin = cu.auth_plugin.as_deref().unwrap_or(NATIVE_PASSWORD);
    let mut answer = cu.auth_response.clone();
    let mut secret = match (&user, plugin == NATIVE_PASSWORD) {
        (Some(u), true) => check_password(u, &s.scramble, &answer),
        _ => None,
    };
    if secret.is_none() && user.is_some() {
        // Ask again with a fresh challenge (clients answer change-user with the last one they saw,
        // or start with another plugin). One guess is counted for both answers.
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
    // Decided with the limit: while the account is blocked from here, no answer is told.
    let accepted = user.zip(secret);
    if let Err(blocked) =
        account_verdict(&shared, &config, &s.peer, &cu.username, accepted.is_some())
    {
        let err = refused(blocked);
        s.send_err(seq, &err).await.map_err(RelayError::Client)?;
        return Ok(Next::Close);
    }
    let Some((user, secret)) = accepted else {
        let err = refused(access_denied(&cu.username, &s.peer, !answer.is_empty()));
        shared.metrics.error(crate::metrics::ErrorKind::Login);
        s.send_err(seq, &err).await.map_err(RelayError::Client)?;
        return Ok(Next::Close);
    };
    if (config.tls.require || user.require_tls) && !s.client.io.is_tls() {
        let err = refused(tls_required(&user.name, config.tls.require));
        s.send_err(seq, &err).await.map_err(RelayError::Client)?;
        return Ok(Next::Close);
    }
    // The script's read_auth sees the new credentials and may refuse them (or answer itself).
    let mut answered = false;
    if let Some(mut h) = s.script.take() {
        let decision = h.has("read_auth").then(|| {
            let mut view = s.conn_view();
            view.username = cu.username.clone().into();
            view.default_db = cu.database.clone().unwrap_or_default().into();
            view.scrambled_password = answer.clone().into();
            h.phase("read_auth", &view, s.shape(), status::AUTOCOMMIT).0
        });
        s.script = Some(h);
        if let Some(Decision::SendResult(packets)) = decision {
            let mut next = seq;
            for p in &packets {
                next = s.client.queue(next, p);
            }
            s.client.flush().await.map_err(RelayError::Client)?;
            if packets.first().and_then(|p| p.first()) != Some(&0x00) {
                tracing::warn!("change user refused by the script's read_auth");
                return Ok(Next::Close);
            }
            answered = true;
        }
    }
    let max_sessions = config.max_user_connections(&user.name);
    let Some(slot) = shared.admission.log_in(&user.name, max_sessions) else {
        shared.metrics.limit(Limit::UserConnections);
        let err = refused(ErrPacket::new(
            errcode::ER_TOO_MANY_USER_CONNECTIONS,
            "42000",
            format!(
                "User {} already has more than 'max_user_connections' active connections",
                user.name
            ),
        ));
        if !answered {
            s.send_err(seq, &err).await.map_err(RelayError::Client)?;
        }
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
    let previous_identity = std::mem::replace(&mut s.identity, user.identity);
    s.secret = secret;
    s.state.schema = cu.database.clone();
    if let Some(cs) = cu.charset {
        // Collation ids above 255 exist; the session keeps what fits the login packet's byte.
        s.charset = u8::try_from(cs).unwrap_or(s.charset);
    }
    if cu.connect_attrs.is_some() {
        s.connect_attrs = cu.connect_attrs.clone();
    }
    s.config = config;
    // Rules name users: the verdicts made for the old one are not the new one's.
    s.cache_memo = Default::default();
    match s.connect_primary().await {
        Ok(()) => {
            tracing::info!(user = %s.user, "changed user");
            s._user_slot = slot;
            s.handle.set_info(
                s.peer_name.clone(),
                s.user.clone(),
                String::from_utf8_lossy(s.state.schema.as_deref().unwrap_or_default()).into_owned(),
            );
            if !answered {
                let st = s.status();
                s.client
                    .send(seq, &ok_payload(0, st))
                    .await
                    .map_err(RelayError::Client)?;
            }
            Ok(Next::Continue)
        }
        Err(err) => {
            (s.user, s.secret, s.state.schema, s.charset) = previous;
            s.identity = previous_identity;
            if !answered {
                s.send_err(seq, &err).await.map_err(RelayError::Client)?;
            }
            Ok(Next::Continue)
        }
    }
}

fn refused(err: ErrPacket) -> ErrPacket {
    tracing::warn!("change user refused: {}", err.message);
    err
}
