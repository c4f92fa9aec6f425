//! Logging a client in with caching_sha2_password, MySQL 8's default plugin, without switching
//! it to another plugin. Fast authentication needs SHA256(SHA256(password)): Weiche has it for
//! users configured with their password, and for others once one full authentication has
//! shown it the password. Full authentication takes the password over TLS, or RSA-encrypted
//! with Weiche's key on a plain connection; never in clear over plain TCP.

use super::{access_denied, Auth, MAX_LOGIN_PACKET};
use crate::backend::Secret;
use crate::config::User;
use crate::protocol::auth::{self, Stage1, Stage2, CACHING_SHA2};
use crate::protocol::caching_sha2::{
    self as sha2, RsaKey, Sha2Digest, FAST_AUTH_SUCCESS, PERFORM_FULL_AUTHENTICATION,
    REQUEST_PUBLIC_KEY,
};
use crate::protocol::constants::errcode;
use crate::protocol::handshake::HandshakeResponse;
use crate::protocol::{ErrPacket, Framed, ProtocolError};
use crate::tls::Stream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// What fast authentication of a user without a configured password needs, learnt from a full
/// authentication; dropped when the user's password hash changes (a reload).
#[derive(Clone)]
struct Learnt {
    stage2: Stage2,
    digest: Sha2Digest,
    stage1: Stage1,
}

/// Process-wide: the learnt digests and the RSA key (made on first need).
#[derive(Default)]
pub struct Sha2State {
    learnt: Mutex<HashMap<String, Learnt>>,
    rsa: tokio::sync::OnceCell<Arc<RsaKey>>,
}

impl std::fmt::Debug for Sha2State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha2State(..)")
    }
}

impl Sha2State {
    fn learnt(&self, user: &User) -> Option<Learnt> {
        let m = self.learnt.lock().unwrap_or_else(PoisonError::into_inner);
        m.get(&user.name)
            .filter(|l| l.stage2 == user.stage2)
            .cloned()
    }

    fn learn(&self, user: &User, password: &[u8]) {
        let mut m = self.learnt.lock().unwrap_or_else(PoisonError::into_inner);
        m.insert(
            user.name.clone(),
            Learnt {
                stage2: user.stage2,
                digest: sha2::stored_digest(password),
                stage1: auth::stage1(password),
            },
        );
    }

    /// The RSA key, generated (about a second) off the event loop the first time.
    async fn rsa_key(&self) -> Option<Arc<RsaKey>> {
        self.rsa
            .get_or_try_init(|| async {
                tracing::info!("generating the RSA key for caching_sha2_password");
                match tokio::task::spawn_blocking(RsaKey::generate).await {
                    Ok(Ok(k)) => Ok(Arc::new(k)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .map_err(|e| tracing::error!("no RSA key for caching_sha2_password: {e}"))
            .ok()
            .cloned()
    }
}

/// The client started with caching_sha2_password as `user` (None: no such account); `answer` is
/// its fast-authentication answer to `scramble` and `seq` the sequence id of Weiche's next
/// packet.
#[allow(clippy::too_many_arguments)]
pub async fn login(
    client: &mut Framed<Stream>,
    state: &Sha2State,
    user: Option<User>,
    peer: &SocketAddr,
    scramble: &[u8],
    resp: Box<HandshakeResponse>,
    answer: Vec<u8>,
    seq: u8,
) -> Result<Auth, ProtocolError> {
    let denied = |seq| {
        Ok(Auth::Refused(
            seq,
            access_denied(&resp.username, peer, true),
        ))
    };
    let Some(user) = user else {
        return denied(seq);
    };
    let (answer, seq) = if answer.is_empty() {
        if user.password.as_deref() == Some(&b""[..]) {
            return Ok(accepted(resp, Secret::Empty, user, seq));
        }
        // No answer yet: Connector/C (the mariadb CLI) does not show the greeting's challenge
        // to a plugin other than the greeting's. A switch to the same plugin gives it one.
        super::switch_plugin(client, seq, CACHING_SHA2, scramble).await?
    } else {
        (answer, seq)
    };
    if answer.is_empty() {
        return Ok(Auth::Refused(
            seq,
            access_denied(&resp.username, peer, false),
        ));
    }
    let known = match &user.password {
        Some(p) => Some((sha2::stored_digest(p), Secret::Plain(p.clone()))),
        None => state
            .learnt(&user)
            .map(|l| (l.digest, Secret::Stage1(l.stage1))),
    };
    if let Some((digest, secret)) = known {
        if sha2::verify(scramble, &answer, &digest) {
            tracing::debug!("caching_sha2_password: fast authentication");
            let seq = client.send(seq, &[0x01, FAST_AUTH_SUCCESS]).await?;
            return Ok(accepted(resp, secret, user, seq));
        }
        if user.password.is_some() {
            return denied(seq);
        }
        // A learnt digest may be from an older password: the full authentication decides.
    }
    client
        .send(seq, &[0x01, PERFORM_FULL_AUTHENTICATION])
        .await?;
    let reply = client.read_packet(MAX_LOGIN_PACKET).await?;
    let mut seq = reply.seq.wrapping_add(1);
    let (password, how) = if client.io.is_tls() {
        (
            sha2::cleartext_password(&reply.payload).to_vec(),
            "over TLS",
        )
    } else if reply.payload[..] == [REQUEST_PUBLIC_KEY] {
        let Some(key) = state.rsa_key().await else {
            return Ok(Auth::Refused(seq, needs_tls()));
        };
        let mut packet = vec![0x01];
        packet.extend_from_slice(key.public_pem().as_bytes());
        client.send(seq, &packet).await?;
        let encrypted = client.read_packet(MAX_LOGIN_PACKET).await?;
        seq = encrypted.seq.wrapping_add(1);
        match key.decrypt_password(&encrypted.payload, scramble) {
            Some(p) => (p, "with the RSA key exchange"),
            None => return denied(seq),
        }
    } else {
        // A password in clear on a plain connection: refused, as MySQL does.
        return Ok(Auth::Refused(seq, needs_tls()));
    };
    if auth::stage2(&auth::stage1(&password)) != user.stage2 {
        return denied(seq);
    }
    tracing::debug!("caching_sha2_password: full authentication {how}");
    state.learn(&user, &password);
    Ok(accepted(resp, Secret::Plain(password), user, seq))
}

fn accepted(resp: Box<HandshakeResponse>, secret: Secret, user: User, seq: u8) -> Auth {
    Auth::Accepted {
        resp,
        secret,
        user,
        seq,
    }
}

fn needs_tls() -> ErrPacket {
    ErrPacket::new(
        errcode::ER_ACCESS_DENIED,
        "28000",
        "caching_sha2_password full authentication needs TLS or the RSA public key exchange",
    )
}
