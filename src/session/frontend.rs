//! The client side of the connection phase: Weiche greets the client as a server would, checks
//! its password against the configured users (mysql_native_password, switching clients that
//! start with another plugin), then opens the session's server connection as that user.

use super::exec::ExecError;
use super::{Session, SessionHandle, Shared};
use crate::backend::{Secret, SessionState};
use crate::config::{Config, PoolMode, User};
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::{cap, errcode, status};
use crate::protocol::handshake::{AuthSwitch, Greeting, HandshakeResponse};
use crate::protocol::{err_payload, ok_payload, ErrPacket, Framed, ProtocolError};
use crate::route::{Destination, Route};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A client must finish logging in within this time.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A login packet is small; anything bigger is not a login.
const MAX_LOGIN_PACKET: usize = 64 * 1024;

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
    client: &mut Framed<TcpStream>,
    seq: u8,
    scramble: &[u8],
) -> Result<(Vec<u8>, u8), ProtocolError> {
    let mut buf = BytesMut::new();
    AuthSwitch {
        plugin: NATIVE_PASSWORD.to_vec(),
        data: scramble.to_vec(),
    }
    .encode(&mut buf);
    client.send(seq, &buf).await?;
    let reply = client.read_packet(MAX_LOGIN_PACKET).await?;
    Ok((reply.payload.to_vec(), reply.seq.wrapping_add(1)))
}

/// Greet and authenticate a client; `Ok(None)` when it was refused (it got an ERR already).
pub(crate) async fn login(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u32,
    handle: Arc<SessionHandle>,
) -> Result<Option<Session>, ProtocolError> {
    let config = shared.config();
    let mut client = Framed::new(stream);
    let info = shared.server_info();
    let scramble = auth::new_scramble();
    // Offer only what both Weiche and the backend can do: responses are relayed unchanged.
    let offered = cap::WEICHE_SERVER & (info.capabilities | cap::LONG_PASSWORD | cap::PROTOCOL_41);
    let greeting = Greeting {
        server_version: info.version.clone(),
        connection_id: id,
        scramble: scramble.to_vec(),
        capabilities: offered,
        charset: info.charset,
        status: status::AUTOCOMMIT,
        auth_plugin: NATIVE_PASSWORD.to_vec(),
    };
    let mut buf = BytesMut::new();
    greeting.encode(&mut buf);
    client.send(0, &buf).await?;

    let result = tokio::time::timeout(
        LOGIN_TIMEOUT,
        authenticate(&mut client, &config, &peer, &scramble, offered),
    )
    .await;
    let (resp, secret, user, seq) = match result {
        Err(_) => {
            tracing::warn!("client did not log in within {LOGIN_TIMEOUT:?}; closing");
            return Ok(None);
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Auth::Refused(seq, err))) => {
            tracing::warn!("login refused: {}", err.message);
            client.send(seq, &err_payload(&err)).await?;
            return Ok(None);
        }
        Ok(Ok(Auth::Accepted {
            resp,
            secret,
            user,
            seq,
        })) => (resp, secret, user, seq),
    };

    let mut session = Session {
        id,
        shared: shared.clone(),
        config: config.clone(),
        client,
        peer,
        user: user.name.clone(),
        secret,
        capabilities: resp.capabilities & offered,
        charset: resp.charset,
        connect_attrs: resp.connect_attrs.clone(),
        scramble,
        handle,
        state: SessionState {
            schema: resp.database.clone(),
            ..Default::default()
        },
        current: None,
        pins: Default::default(),
        stmts: Default::default(),
        last_write: None,
        last_gtid: None,
        answered: false,
    };
    match session.connect_primary().await {
        Ok(()) => {}
        Err(err) => {
            session.send_err(seq, &err).await?;
            return Ok(None);
        }
    }
    session
        .client
        .send(seq, &ok_payload(0, status::AUTOCOMMIT))
        .await?;
    Ok(Some(session))
}

enum Auth {
    Accepted {
        resp: Box<HandshakeResponse>,
        secret: Secret,
        user: User,
        seq: u8,
    },
    Refused(u8, ErrPacket),
}

async fn authenticate(
    client: &mut Framed<TcpStream>,
    config: &Config,
    peer: &SocketAddr,
    scramble: &[u8],
    offered: u32,
) -> Result<Auth, ProtocolError> {
    let p = match client.read_packet(MAX_LOGIN_PACKET).await {
        Ok(p) => p,
        Err(e) if e.is_disconnect() => return Err(e),
        Err(e) => {
            // Not a login at all (an HTTP request, a port scanner): say so, then close.
            let err = ErrPacket::new(
                errcode::ER_HANDSHAKE_ERROR,
                "08S01",
                format!("Bad handshake ({e})"),
            );
            return Ok(Auth::Refused(2, err));
        }
    };
    let seq = p.seq.wrapping_add(1);
    if HandshakeResponse::is_ssl_request(&p.payload) {
        let err = ErrPacket::new(
            errcode::ER_NOT_SUPPORTED_YET,
            "08S01",
            "Weiche: TLS is not supported yet; connect without SSL",
        );
        return Ok(Auth::Refused(seq, err));
    }
    let resp = match HandshakeResponse::decode(&p.payload) {
        Ok(r) => r,
        Err(e) => {
            let err = ErrPacket::new(
                errcode::ER_HANDSHAKE_ERROR,
                "08S01",
                format!("Bad handshake ({e})"),
            );
            return Ok(Auth::Refused(seq, err));
        }
    };
    let Some(user) = config.user(&resp.username) else {
        return Ok(Auth::Refused(
            seq,
            access_denied(&resp.username, peer, !resp.auth_response.is_empty()),
        ));
    };
    let plugin = resp.auth_plugin.as_deref().unwrap_or(NATIVE_PASSWORD);
    let (answer, seq) =
        if plugin == NATIVE_PASSWORD || resp.capabilities & offered & cap::PLUGIN_AUTH == 0 {
            (resp.auth_response.clone(), seq)
        } else {
            // e.g. a MySQL 8 client starting with caching_sha2_password.
            switch_to_native(client, seq, scramble).await?
        };
    match check_password(user, scramble, &answer) {
        Some(secret) => Ok(Auth::Accepted {
            user: user.clone(),
            resp: Box::new(resp),
            secret,
            seq,
        }),
        None => Ok(Auth::Refused(
            seq,
            access_denied(&resp.username, peer, !answer.is_empty()),
        )),
    }
}

impl Session {
    /// Check that the session can work as logged in: borrow a primary connection (a replica's
    /// when no primary is available: reads go on) and bring it to the session's state (an
    /// unknown database fails here, as on a direct login). With pool_mode = "session" the
    /// primary connection stays with the session.
    pub async fn connect_primary(&mut self) -> Result<(), ErrPacket> {
        self.pins.session_mode = self.config.pool_mode(&self.user) == PoolMode::Session;
        let table = &self.shared.backends;
        let backend = match table.primary() {
            Ok(i) => i,
            Err(e) => match table.pick_replica(None, None) {
                Some(p) if !self.pins.session_mode => p.index,
                _ => {
                    return Err(ErrPacket::new(
                        errcode::CR_CONN_HOST_ERROR,
                        "HY000",
                        format!("Weiche: {e}"),
                    ))
                }
            },
        };
        let route = Route {
            destination: Destination::Backend(backend),
            reason: "login".into(),
            wait: None,
        };
        match self.connect_for(&route, false).await {
            Ok(_) => {
                if let Some(cur) = &self.current {
                    self.shared.learn_from_connection(&cur.conn);
                }
                self.release();
                Ok(())
            }
            Err(ExecError::Refused(e)) => Err(e),
            Err(ExecError::Relay(e)) => Err(ErrPacket::new(
                errcode::CR_CONN_HOST_ERROR,
                "HY000",
                format!("Weiche: {e}"),
            )),
        }
    }
}
