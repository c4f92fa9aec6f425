//! The client side of the connection phase: Weiche greets the client as a server would, checks
//! its password against the configured users (mysql_native_password, switching clients that
//! start with another plugin), then opens the session's server connection as that user.

use super::admission::ConnectionSlot;
use super::outcome::{CommandError, Kind};
use super::{Session, SessionHandle, Shared};
use crate::backend::{Secret, SessionState};
use crate::config::{Config, PoolMode, User};
use crate::metrics::Limit;
use crate::protocol::auth::{self, CACHING_SHA2, NATIVE_PASSWORD};
use crate::protocol::constants::{cap, errcode, status};
use crate::protocol::handshake::{AuthSwitch, Greeting, HandshakeResponse};
use crate::protocol::{err_payload, ok_payload, ErrPacket, Framed, ProtocolError};
use crate::route::{Reason, Route};
use crate::script::{ConnView, Decision, ScriptHandle, ServerView, LOAD_FAILED};
use crate::tls::{Acceptor, Stream};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A login packet is small; anything bigger is not a login.
pub(super) const MAX_LOGIN_PACKET: usize = 64 * 1024;

/// Let a new client connection in, or refuse it before the greeting as MariaDB does: too many
/// connections (ERR 1040), or an address blocked after failed logins (ERR 1129).
pub(crate) async fn admit(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(ConnectionSlot, TcpStream)> {
    let limits = shared.config().limits.clone();
    let refusal = if let Some(left) = shared.admission.blocked(
        peer.ip(),
        limits.max_failed_logins,
        limits.failed_login_window,
    ) {
        shared.metrics.limit(Limit::FailedLogins);
        tracing::warn!(
            "refused: {} failed logins from this address; blocked for {left:.0?} more",
            limits.max_failed_logins
        );
        ErrPacket::new(
            errcode::ER_HOST_IS_BLOCKED,
            "HY000",
            format!(
                "Host '{}' is blocked because of {} failed logins; Weiche lets it try again in {} s \
                 (limits.max_failed_logins)",
                peer.ip(),
                limits.max_failed_logins,
                left.as_secs() + 1
            ),
        )
    } else {
        match shared.admission.connect(limits.max_connections) {
            Some(slot) => return Some((slot, stream)),
            None => {
                shared.metrics.limit(Limit::Connections);
                tracing::warn!(
                    "refused: {} client connections are open (limits.max_connections)",
                    limits.max_connections
                );
                ErrPacket::new(errcode::ER_CON_COUNT_ERROR, "08004", "Too many connections")
            }
        }
    };
    let mut client = Framed::new(Stream::from(stream));
    let _ = client.send(0, &err_payload(&refusal)).await;
    None
}

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
fn tls_required(user: &str, global: bool) -> ErrPacket {
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
/// With a Lua script, its connection hooks run here, and `disconnect_client` when the login
/// does not lead to a session (a load balancer's TCP check, a refused login).
pub(crate) async fn login(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u32,
    handle: Arc<SessionHandle>,
) -> Result<Option<Session>, ProtocolError> {
    let mut script = None;
    let local_addr = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let r = login_inner(
        shared,
        stream,
        peer,
        id,
        handle,
        &mut script,
        local_addr.clone(),
    )
    .await;
    match r {
        Ok(Some(mut session)) => {
            session.script = script;
            Ok(Some(session))
        }
        other => {
            if let Some(mut h) = script {
                let view = ConnView {
                    client_addr: peer.to_string().into(),
                    local_addr: local_addr.into(),
                    ..Default::default()
                };
                h.disconnect_client(&view);
            }
            other
        }
    }
}

async fn login_inner(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u32,
    handle: Arc<SessionHandle>,
    script: &mut Option<ScriptHandle>,
    local_addr: String,
) -> Result<Option<Session>, ProtocolError> {
    let config = shared.config();
    let mut client = Framed::new(Stream::from(stream));
    let mut view = ConnView {
        client_addr: peer.to_string().into(),
        local_addr: local_addr.clone().into(),
        ..Default::default()
    };
    let mut login_backend = None;
    if let Some(sc) = &config.script {
        match ScriptHandle::open(sc, shared.backends.clone(), &view) {
            Ok(h) => *script = Some(h),
            Err(e) => {
                tracing::error!("Lua script for a new connection: {e}");
                let err = ErrPacket::new(errcode::ER_UNKNOWN_ERROR, "07000", LOAD_FAILED);
                client.send(0, &err_payload(&err)).await?;
                return Ok(None);
            }
        }
        if let Some(h) = script.as_mut().filter(|h| h.has("connect_server")) {
            let (d, after) = h.phase("connect_server", &view, false, status::AUTOCOMMIT);
            if let Some(ndx) = after.backend_ndx {
                login_backend = crate::script::backend_index(ndx);
                view.backend = login_backend;
            }
            if let Decision::SendResult(packets) = d {
                // Instead of the greeting: the first packet has sequence id 0.
                send_all(&mut client, u8::MAX, &packets).await?;
                return Ok(None);
            }
        }
    }
    let info = shared.server_info();
    let scramble = auth::new_scramble();
    // Offer only what both Weiche and the backend can do: responses are relayed unchanged.
    let mut offered =
        cap::WEICHE_SERVER & (info.capabilities | cap::LONG_PASSWORD | cap::PROTOCOL_41);
    if config.tls.acceptor.is_some() {
        offered |= cap::SSL;
    }
    let greeting = Greeting {
        server_version: info.version.clone(),
        connection_id: id,
        scramble: scramble.to_vec(),
        capabilities: offered,
        charset: info.charset,
        status: status::AUTOCOMMIT,
        auth_plugin: NATIVE_PASSWORD.to_vec(),
    };
    if let Some(h) = script.as_mut().filter(|h| h.has("read_handshake")) {
        let v = ConnView {
            server: Some(ServerView {
                address: "".into(),
                thread_id: id,
                version: info.version.clone().into(),
                scramble: scramble.to_vec().into(),
                auth_plugin: NATIVE_PASSWORD.to_vec().into(),
            }),
            ..view.clone()
        };
        if let (Decision::SendResult(packets), _) =
            h.phase("read_handshake", &v, false, status::AUTOCOMMIT)
        {
            send_all(&mut client, u8::MAX, &packets).await?;
            return Ok(None);
        }
    }
    let mut buf = BytesMut::new();
    greeting.encode(&mut buf);
    client.send(0, &buf).await?;

    let login_timeout = config.limits.login_timeout;
    let result = tokio::time::timeout(
        login_timeout,
        authenticate(&mut client, &shared, &config, &peer, &scramble, offered),
    )
    .await;
    let (resp, secret, user, seq) = match result {
        Err(_) => {
            shared.metrics.limit(Limit::LoginTimeout);
            tracing::warn!(
                "client did not log in within {login_timeout:?} (limits.login_timeout); closing"
            );
            return Ok(None);
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Auth::Refused(seq, err))) => {
            shared.metrics.error(crate::metrics::ErrorKind::Login);
            shared
                .admission
                .failed(peer.ip(), config.limits.failed_login_window);
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
    shared.admission.succeeded(peer.ip());
    let max_sessions = config.max_user_connections(&user.name);
    let Some(user_slot) = shared.admission.log_in(&user.name, max_sessions) else {
        shared.metrics.limit(Limit::UserConnections);
        tracing::warn!(
            "refused: user '{}' has {max_sessions} sessions (max_user_connections)",
            user.name
        );
        let err = ErrPacket::new(
            errcode::ER_TOO_MANY_USER_CONNECTIONS,
            "42000",
            format!(
                "User {} already has more than 'max_user_connections' active connections",
                user.name
            ),
        );
        client.send(seq, &err_payload(&err)).await?;
        return Ok(None);
    };
    view.username = resp.username.clone().into();
    view.default_db = resp.database.clone().unwrap_or_default().into();
    view.scrambled_password = resp.auth_response.clone().into();
    let mut answered_login = false;
    if let Some(h) = script.as_mut().filter(|h| h.has("read_auth")) {
        if let (Decision::SendResult(packets), _) =
            h.phase("read_auth", &view, false, status::AUTOCOMMIT)
        {
            send_all(&mut client, seq.wrapping_sub(1), &packets).await?;
            // The script answered the login itself: an OK lets the client in as checked.
            if packets.first().and_then(|p| p.first()) != Some(&0x00) {
                return Ok(None);
            }
            answered_login = true;
        }
    }

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
        writes: Default::default(),
        answered: false,
        script: None,
        script_backend: login_backend,
        close_requested: false,
        local_addr,
        peer_name: peer.to_string(),
        tap: None,
        cache_pending: Vec::new(),
        outcome: Default::default(),
        shown_pins: String::new(),
        config_epoch: shared
            .config_epoch
            .load(std::sync::atomic::Ordering::Acquire),
        query_digest: None,
        _user_slot: user_slot,
    };
    session.handle.set_info(
        peer.to_string(),
        session.user.clone(),
        String::from_utf8_lossy(session.state.schema.as_deref().unwrap_or_default()).into_owned(),
    );
    let result = session.connect_primary().await;
    let mut packets = vec![match &result {
        Ok(()) => ok_payload(0, status::AUTOCOMMIT),
        Err(err) => err_payload(err),
    }];
    if let Some(h) = script.as_mut().filter(|h| h.has("read_auth_result")) {
        let (d, after) = h.read_auth_result(&view, &packets[0], status::AUTOCOMMIT);
        session.apply_after(after);
        if let Decision::SendResult(p) = d {
            packets = p;
        }
    }
    if !answered_login {
        send_all(&mut session.client, seq.wrapping_sub(1), &packets).await?;
    }
    if result.is_err() || packets.first().and_then(|p| p.first()) != Some(&0x00) {
        return Ok(None);
    }
    Ok(Some(session))
}

/// Send payloads with consecutive sequence ids after `seq`.
async fn send_all(
    client: &mut Framed<Stream>,
    seq: u8,
    packets: &[BytesMut],
) -> Result<(), ProtocolError> {
    let mut seq = seq.wrapping_add(1);
    for p in packets {
        seq = client.queue(seq, p);
    }
    client.flush().await
}

pub(super) enum Auth {
    Accepted {
        resp: Box<HandshakeResponse>,
        secret: Secret,
        user: User,
        seq: u8,
    },
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

async fn authenticate(
    client: &mut Framed<Stream>,
    shared: &Shared,
    config: &Config,
    peer: &SocketAddr,
    scramble: &[u8],
    offered: u32,
) -> Result<Auth, ProtocolError> {
    let acceptor = config.tls.acceptor.as_ref();
    let (resp, answer, seq, caching_sha2) =
        match read_login(client, scramble, offered, acceptor, true).await? {
            Login::Answered {
                resp,
                answer,
                seq,
                caching_sha2,
            } => (resp, answer, seq, caching_sha2),
            Login::Refused(seq, err) => return Ok(Auth::Refused(seq, err)),
        };
    let user = shared.find_user(config, &resp.username, peer.ip()).await;
    let auth = if caching_sha2 {
        let state = &shared.sha2;
        super::sha2_login::login(client, state, user, peer, scramble, resp, answer, seq).await?
    } else {
        let checked = user.and_then(|user| {
            let secret = check_password(&user, scramble, &answer)?;
            Some((user, secret))
        });
        match checked {
            Some((user, secret)) => Auth::Accepted {
                user,
                resp,
                secret,
                seq,
            },
            None => Auth::Refused(seq, access_denied(&resp.username, peer, !answer.is_empty())),
        }
    };
    match auth {
        Auth::Accepted { user, seq, .. }
            if (config.tls.require || user.require_tls) && !client.io.is_tls() =>
        {
            Ok(Auth::Refused(
                seq,
                tls_required(&user.name, config.tls.require),
            ))
        }
        other => Ok(other),
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
        let backend = match self.script_backend.map_or_else(|| table.primary(), Ok) {
            Ok(i) => i,
            Err(e) => match table.pick_replica(None, None) {
                Some(p) if !self.pins.session_mode => p.index,
                _ => return Err(CommandError::route(e.into()).to_err_packet()),
            },
        };
        let route = Route::to(backend, Reason::Login);
        match self.connect_for(&route, false).await {
            Ok(_) => {
                if let Some(cur) = &self.current {
                    self.shared.learn_from_connection(&cur.conn);
                }
                self.release();
                Ok(())
            }
            // The login answers with the packet: a relay failure here is a backend out of reach.
            Err(CommandError {
                kind: Kind::Relay(e),
                ..
            }) => Err(CommandError::unreachable(e.to_string()).to_err_packet()),
            Err(e) => Err(e.to_err_packet()),
        }
    }
}
