//! The client side of a login, shared by the proxy's sessions and the admin port: reading the
//! login packet (with the TLS upgrade before it), checking a mysql_native_password answer,
//! switching a client to that plugin, caching_sha2_password (`sha2`), and the refusals worded
//! as MariaDB words them. Policy (which users exist, limits, Lua hooks) stays with the callers.

pub mod sha2;

pub use sha2::Sha2State;

use crate::backend::Secret;
use crate::config::User;
use crate::protocol::auth::{self, CACHING_SHA2, NATIVE_PASSWORD};
use crate::protocol::constants::{cap, errcode};
use crate::protocol::handshake::{AuthSwitch, HandshakeResponse};
use crate::protocol::{ErrPacket, Framed, ProtocolError};
use crate::tls::{Acceptor, Stream};
use bytes::BytesMut;
use std::net::SocketAddr;

/// A login packet is small; anything bigger is not a login.
pub const MAX_LOGIN_PACKET: usize = 64 * 1024;

/// The access-denied error as MariaDB words it.
pub fn access_denied(user: &[u8], peer: &SocketAddr, used_password: bool) -> ErrPacket {
    ErrPacket::new(
        errcode::ER_ACCESS_DENIED,
        "28000",
        format!(
            "Access denied for user '{}'@'{}' (using password: {})",
            String::from_utf8_lossy(user),
            peer.ip(),
            if used_password { "YES" } else { "NO" }
        ),
    )
}

/// The refusal of a plain connection where TLS is required (MySQL's
/// ER_SECURE_TRANSPORT_REQUIRED).
pub fn tls_required(user: &str, global: bool) -> ErrPacket {
    let why = if global {
        "tls.require is on".to_string()
    } else {
        format!("user '{user}' has require_tls")
    };
    ErrPacket::new(
        errcode::ER_SECURE_TRANSPORT_REQUIRED,
        "HY000",
        format!("Connections using insecure transport are prohibited ({why}); connect with TLS"),
    )
}

/// Check a mysql_native_password answer; on success, what Weiche needs to log in as the user.
pub fn check_password(user: &User, scramble: &[u8], response: &[u8]) -> Option<Secret> {
    if user.password.as_deref() == Some(&b""[..]) {
        return response.is_empty().then_some(Secret::Empty);
    }
    let stage1 = auth::native_verify(scramble, response, &user.stage2)?;
    Some(match &user.password {
        Some(p) => Secret::Plain(p.clone()),
        None => Secret::Stage1(stage1),
    })
}

/// Ask the client to answer with mysql_native_password against a fresh challenge; returns the
/// answer and the sequence id of the next packet Weiche sends.
pub async fn switch_to_native(
    client: &mut Framed<Stream>,
    seq: u8,
    scramble: &[u8],
) -> Result<(Vec<u8>, u8), ProtocolError> {
    switch_plugin(client, seq, NATIVE_PASSWORD, scramble).await
}

/// Ask the client to answer with `plugin` against `scramble` (an auth switch); returns the
/// answer and the sequence id of the next packet Weiche sends.
pub async fn switch_plugin(
    client: &mut Framed<Stream>,
    seq: u8,
    plugin: &[u8],
    scramble: &[u8],
) -> Result<(Vec<u8>, u8), ProtocolError> {
    let mut buf = BytesMut::new();
    AuthSwitch {
        plugin: plugin.to_vec(),
        data: scramble.to_vec(),
    }
    .encode(&mut buf);
    client.send(seq, &buf).await?;
    let reply = client.read_packet(MAX_LOGIN_PACKET).await?;
    Ok((reply.payload.to_vec(), reply.seq.wrapping_add(1)))
}

/// How a client's authentication ended.
pub enum Auth {
    /// The user, and what Weiche logs in to backends with as them.
    Accepted {
        resp: Box<HandshakeResponse>,
        secret: Secret,
        user: User,
        seq: u8,
    },
    /// The ERR the client gets, with its sequence id.
    Refused(u8, ErrPacket),
}

/// A client's login packet, read and answered with mysql_native_password (switching a client
/// that starts with another plugin), or refused with the ERR it gets. Shared by the proxy's
/// and the admin port's logins.
pub enum Login {
    Answered {
        resp: Box<HandshakeResponse>,
        /// The mysql_native_password answer to the challenge.
        answer: Vec<u8>,
        /// The sequence id of Weiche's next packet.
        seq: u8,
        /// The answer is caching_sha2_password's (the caller allowed it), not
        /// mysql_native_password's.
        caching_sha2: bool,
    },
    Refused(u8, ErrPacket),
}

fn bad_handshake(e: &ProtocolError) -> ErrPacket {
    ErrPacket::new(
        errcode::ER_HANDSHAKE_ERROR,
        "08S01",
        format!("Bad handshake ({e})"),
    )
}

/// Read the login packet that answers a greeting with `scramble` and capabilities `offered`.
/// With `tls` (and SSL offered), a client may first send SSL_REQUEST; the TLS handshake follows
/// and the login packet comes over TLS. With `caching_sha2`, a client that starts with
/// caching_sha2_password keeps it (the caller completes it); other plugins are switched to
/// mysql_native_password.
pub async fn read_login(
    client: &mut Framed<Stream>,
    scramble: &[u8],
    offered: u32,
    tls: Option<&Acceptor>,
    caching_sha2: bool,
) -> Result<Login, ProtocolError> {
    let mut p = match client.read_packet(MAX_LOGIN_PACKET).await {
        Ok(p) => p,
        Err(e) if e.is_disconnect() => return Err(e),
        // Not a login at all (an HTTP request, a port scanner): say so, then close.
        Err(e) => return Ok(Login::Refused(2, bad_handshake(&e))),
    };
    if HandshakeResponse::is_ssl_request(&p.payload) {
        let Some(acceptor) = tls.filter(|_| offered & cap::SSL != 0) else {
            let err = ErrPacket::new(
                errcode::ER_NOT_SUPPORTED_YET,
                "08S01",
                "Weiche: TLS is not configured here ([tls] cert and key); connect without SSL",
            );
            return Ok(Login::Refused(p.seq.wrapping_add(1), err));
        };
        let early = client.rbuf.split();
        client.io.accept(acceptor, &early).await.map_err(|e| {
            ProtocolError::Io(std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))
        })?;
        tracing::debug!(
            "client connection upgraded to {}",
            client.io.tls_version().unwrap_or("TLS")
        );
        p = match client.read_packet(MAX_LOGIN_PACKET).await {
            Ok(p) => p,
            Err(e) if e.is_disconnect() => return Err(e),
            Err(e) => return Ok(Login::Refused(p.seq.wrapping_add(2), bad_handshake(&e))),
        };
    }
    let seq = p.seq.wrapping_add(1);
    let resp = match HandshakeResponse::decode(&p.payload) {
        Ok(r) => r,
        Err(e) => return Ok(Login::Refused(seq, bad_handshake(&e))),
    };
    let plugin = resp.auth_plugin.as_deref().unwrap_or(NATIVE_PASSWORD);
    let plugin_auth = resp.capabilities & offered & cap::PLUGIN_AUTH != 0;
    let caching_sha2 = caching_sha2 && plugin_auth && plugin == CACHING_SHA2;
    let (answer, seq) = if plugin == NATIVE_PASSWORD || !plugin_auth || caching_sha2 {
        (resp.auth_response.clone(), seq)
    } else {
        // Another plugin (sha256_password, a MySQL 8 client on the admin port, ...).
        switch_to_native(client, seq, scramble).await?
    };
    Ok(Login::Answered {
        resp: Box::new(resp),
        answer,
        seq,
        caching_sha2,
    })
}
