//! The login, phase by phase as mysql-proxy's hooks name them: `connect_server` (before the
//! greeting), `read_handshake` (the greeting), `read_auth` (the client's credentials, checked
//! by Weiche against its users, then the limits) and `read_auth_result` (the session's first
//! server connection, as that user). Each phase is a function that runs its Lua hook when the
//! script has one; the packets and checks of a login are in `crate::login`.

use super::outcome::{CommandError, Kind};
use super::{Session, SessionHandle, Shared};
use crate::backend::{Secret, SessionState};
use crate::config::{Config, PoolMode, User};
use crate::login::{access_denied, check_password, read_login, tls_required, Auth, Login};
use crate::metrics::Limit;
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::{cap, errcode, mariadb_cap, status};
use crate::protocol::handshake::{Greeting, HandshakeResponse};
use crate::protocol::{err_payload, ok_payload, ErrPacket, Framed, ProtocolError};
use crate::route::{Reason, Route};
use crate::script::{ConnView, Decision, ScriptHandle, ServerView, LOAD_FAILED};
use crate::shared::admission::{ConnectionSlot, UserSlot};
use crate::tls::Stream;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::net::TcpStream;

/// Let a new client connection in, or refuse it before the greeting as MariaDB does: too many
/// connections (ERR 1040), or an address blocked after failed logins (ERR 1129).
pub(crate) async fn admit(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(ConnectionSlot, TcpStream)> {
    let limits = shared.config().limits.clone();
    let refusal = if let Some(left) = shared.admission.blocked(peer.ip(), &limits) {
        shared.metrics.limit(Limit::HandshakeErrors);
        tracing::warn!(
            "refused: {} malformed logins from this address; blocked for {left:.0?} more",
            limits.max_handshake_errors
        );
        ErrPacket::new(
            errcode::ER_HOST_IS_BLOCKED,
            "HY000",
            format!(
                "Host '{}' is blocked because of {} connection errors; Weiche lets it try again \
                 in {} s, or after FLUSH HOSTS on its admin port (limits.max_handshake_errors)",
                peer.ip(),
                limits.max_handshake_errors,
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
    let config = shared.config();
    let c = NewClient {
        view: ConnView {
            client_addr: peer.to_string().into(),
            local_addr: local_addr.clone().into(),
            ..Default::default()
        },
        shared,
        config,
        client: Framed::new(Stream::from(stream)),
        peer,
        id,
        local_addr: local_addr.clone(),
        login_backend: None,
        script: &mut script,
    };
    match c.phases(handle).await {
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

/// A client between its accept and its session: what the login's phases share.
struct NewClient<'s> {
    shared: Arc<Shared>,
    config: Arc<Config>,
    client: Framed<Stream>,
    peer: SocketAddr,
    id: u32,
    local_addr: String,
    /// What the Lua hooks see of the connection.
    view: ConnView<'static>,
    /// The backend the script chose in connect_server.
    login_backend: Option<usize>,
    script: &'s mut Option<ScriptHandle>,
}

/// The greeting sent: the challenge and the capabilities offered.
struct Greeted {
    scramble: [u8; 20],
    offered: u32,
    offered_mariadb: u32,
}

/// A client whose credentials Weiche accepted, within its limits.
struct Accepted {
    resp: Box<HandshakeResponse>,
    secret: Secret,
    user: User,
    /// The sequence id of Weiche's next packet.
    seq: u8,
    user_slot: UserSlot,
}

impl NewClient<'_> {
    /// The phases in the order they run; `Ok(None)` when one of them ended the login.
    async fn phases(
        mut self,
        handle: Arc<SessionHandle>,
    ) -> Result<Option<Session>, ProtocolError> {
        if self.connect_server().await?.is_break() {
            return Ok(None);
        }
        let ControlFlow::Continue(greeted) = self.read_handshake().await? else {
            return Ok(None);
        };
        let ControlFlow::Continue(accepted) = self.authenticate(&greeted).await? else {
            return Ok(None);
        };
        let ControlFlow::Continue(answered) = self.read_auth(&accepted).await? else {
            return Ok(None);
        };
        self.read_auth_result(greeted, accepted, answered, handle)
            .await
    }

    /// Open the connection's Lua environment and run `connect_server`, which may answer the
    /// client instead of the greeting, and may choose the backend the login is checked on.
    async fn connect_server(&mut self) -> Result<ControlFlow<()>, ProtocolError> {
        let Some(sc) = &self.config.script else {
            return Ok(ControlFlow::Continue(()));
        };
        match ScriptHandle::open(sc, self.shared.backends.clone(), &self.view) {
            Ok(h) => *self.script = Some(h),
            Err(e) => {
                tracing::error!("Lua script for a new connection: {e}");
                let err = ErrPacket::new(errcode::ER_UNKNOWN_ERROR, "07000", LOAD_FAILED);
                self.client.send(0, &err_payload(&err)).await?;
                return Ok(ControlFlow::Break(()));
            }
        }
        if let Some(h) = self.script.as_mut().filter(|h| h.has("connect_server")) {
            let (d, after) = h.phase(
                "connect_server",
                &self.view,
                Default::default(),
                status::AUTOCOMMIT,
            );
            if let Some(ndx) = after.backend_ndx {
                self.login_backend = crate::script::backend_index(ndx);
                self.view.backend = self.login_backend;
            }
            if let Decision::SendResult(packets) = d {
                // Instead of the greeting: the first packet has sequence id 0.
                send_all(&mut self.client, u8::MAX, &packets).await?;
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Greet the client as the primary would (its version, the capabilities both Weiche and
    /// the backend have), unless `read_handshake` answers instead.
    async fn read_handshake(&mut self) -> Result<ControlFlow<(), Greeted>, ProtocolError> {
        let info = self.shared.server_info();
        let scramble = auth::new_scramble();
        // Offer only what both Weiche and the backend can do: responses are relayed unchanged.
        let mut offered =
            cap::WEICHE_SERVER & (info.capabilities | cap::LONG_PASSWORD | cap::PROTOCOL_41);
        // A MariaDB primary: say so as it does (no CLIENT_MYSQL), so that MariaDB clients send
        // their extended capabilities, and offer the ones Weiche relays.
        let offered_mariadb = mariadb_cap::WEICHE & info.mariadb_caps;
        if info.capabilities & cap::LONG_PASSWORD == 0 {
            offered &= !cap::LONG_PASSWORD;
        }
        if self.config.tls.acceptor.is_some() {
            offered |= cap::SSL;
        }
        if self.config.compression.zlib {
            offered |= cap::COMPRESS;
        }
        if self.config.compression.zstd {
            offered |= cap::ZSTD_COMPRESSION_ALGORITHM;
        }
        let greeting = Greeting {
            server_version: info.version.clone(),
            connection_id: self.id,
            scramble: scramble.to_vec(),
            capabilities: offered,
            mariadb_caps: offered_mariadb,
            charset: info.charset,
            status: status::AUTOCOMMIT,
            auth_plugin: NATIVE_PASSWORD.to_vec(),
        };
        if let Some(h) = self.script.as_mut().filter(|h| h.has("read_handshake")) {
            let v = ConnView {
                server: Some(ServerView {
                    address: "".into(),
                    thread_id: self.id,
                    version: info.version.clone().into(),
                    scramble: scramble.to_vec().into(),
                    auth_plugin: NATIVE_PASSWORD.to_vec().into(),
                }),
                ..self.view.clone()
            };
            if let (Decision::SendResult(packets), _) =
                h.phase("read_handshake", &v, Default::default(), status::AUTOCOMMIT)
            {
                send_all(&mut self.client, u8::MAX, &packets).await?;
                return Ok(ControlFlow::Break(()));
            }
        }
        let mut buf = BytesMut::new();
        greeting.encode(&mut buf);
        self.client.send(0, &buf).await?;
        Ok(ControlFlow::Continue(Greeted {
            scramble,
            offered,
            offered_mariadb,
        }))
    }

    /// Read and check the client's credentials within `limits.login_timeout`, then its user's
    /// session limit. A refusal is counted against the client's address.
    async fn authenticate(
        &mut self,
        g: &Greeted,
    ) -> Result<ControlFlow<(), Accepted>, ProtocolError> {
        let (shared, config, peer) = (&self.shared, &self.config, self.peer);
        let login_timeout = config.limits.login_timeout;
        let result = tokio::time::timeout(
            login_timeout,
            authenticate(
                &mut self.client,
                shared,
                config,
                &peer,
                &g.scramble,
                g.offered,
            ),
        )
        .await;
        let (resp, secret, user, seq) = match result {
            Err(_) => {
                shared.metrics.limit(Limit::LoginTimeout);
                tracing::warn!(
                    "client did not log in within {login_timeout:?} (limits.login_timeout); closing"
                );
                return Ok(ControlFlow::Break(()));
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok((Auth::Refused(seq, err), username))) => {
                shared.metrics.error(crate::metrics::ErrorKind::Login);
                let err = match username {
                    // Not a login at all.
                    None => {
                        shared.admission.handshake_error(peer.ip(), &config.limits);
                        err
                    }
                    Some(name) => match account_verdict(shared, config, &peer, &name, false) {
                        Ok(()) => err,
                        Err(blocked) => blocked,
                    },
                };
                tracing::warn!("login refused: {}", err.message);
                self.client.send(seq, &err_payload(&err)).await?;
                return Ok(ControlFlow::Break(()));
            }
            Ok(Ok((
                Auth::Accepted {
                    resp,
                    secret,
                    user,
                    seq,
                },
                _,
            ))) => (resp, secret, user, seq),
        };
        // Decided together with the limit: a right guess among many at once is not told.
        if let Err(blocked) = account_verdict(shared, config, &peer, &resp.username, true) {
            tracing::warn!("login refused: {}", blocked.message);
            self.client.send(seq, &err_payload(&blocked)).await?;
            return Ok(ControlFlow::Break(()));
        }
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
            self.client.send(seq, &err_payload(&err)).await?;
            return Ok(ControlFlow::Break(()));
        };
        Ok(ControlFlow::Continue(Accepted {
            resp,
            secret,
            user,
            seq,
            user_slot,
        }))
    }

    /// The `read_auth` hook sees the credentials; it may answer the login itself. Continue(true)
    /// when it answered with an OK (the client is in as checked, and gets no second answer).
    async fn read_auth(&mut self, a: &Accepted) -> Result<ControlFlow<(), bool>, ProtocolError> {
        self.view.username = a.resp.username.clone().into();
        self.view.default_db = a.resp.database.clone().unwrap_or_default().into();
        self.view.scrambled_password = a.resp.auth_response.clone().into();
        let Some(h) = self.script.as_mut().filter(|h| h.has("read_auth")) else {
            return Ok(ControlFlow::Continue(false));
        };
        let (Decision::SendResult(packets), _) = h.phase(
            "read_auth",
            &self.view,
            Default::default(),
            status::AUTOCOMMIT,
        ) else {
            return Ok(ControlFlow::Continue(false));
        };
        send_all(&mut self.client, a.seq.wrapping_sub(1), &packets).await?;
        // The script answered the login itself: an OK lets the client in as checked.
        if packets.first().and_then(|p| p.first()) != Some(&0x00) {
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(true))
    }

    /// Make the session, check it can work (its first server connection, as its user), and
    /// answer the login: OK or the backend's refusal, or what `read_auth_result` says instead.
    async fn read_auth_result(
        self,
        g: Greeted,
        a: Accepted,
        answered_login: bool,
        handle: Arc<SessionHandle>,
    ) -> Result<Option<Session>, ProtocolError> {
        let Accepted {
            resp,
            secret,
            user,
            seq,
            user_slot,
        } = a;
        let shared = self.shared;
        let mut session = Session {
            id: self.id,
            shared: shared.clone(),
            config: self.config,
            client: self.client,
            peer: self.peer,
            user: user.name.clone(),
            identity: user.identity,
            secret,
            capabilities: resp.capabilities & g.offered,
            mariadb_caps: resp.mariadb_caps & g.offered_mariadb,
            charset: resp.charset,
            connect_attrs: resp.connect_attrs.clone(),
            scramble: g.scramble,
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
            script_backend: self.login_backend,
            last_backend: None,
            close_requested: false,
            local_addr: self.local_addr,
            peer_name: self.peer.to_string(),
            tap: None,
            cache_pending: Vec::new(),
            outcome: Default::default(),
            shown_pins: Default::default(),
            config_epoch: shared
                .config_epoch
                .load(std::sync::atomic::Ordering::Acquire),
            query_digest: None,
            cache_memo: Default::default(),
            shared_pending: None,
            server_version: crate::sql::Dialect::version_of(&shared.server_info().version)
                .unwrap_or(u32::MAX),
            _user_slot: user_slot,
        };
        session.handle.set_info(
            self.peer.to_string(),
            session.user.clone(),
            String::from_utf8_lossy(session.state.schema.as_deref().unwrap_or_default())
                .into_owned(),
        );
        let result = session.connect_primary().await;
        let mut packets = vec![match &result {
            Ok(()) => ok_payload(0, status::AUTOCOMMIT),
            Err(err) => err_payload(err),
        }];
        if let Some(h) = self.script.as_mut().filter(|h| h.has("read_auth_result")) {
            let (d, after) = h.read_auth_result(&self.view, &packets[0], status::AUTOCOMMIT);
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
        // The compressed protocol starts after the login's OK, which went as it is.
        let asked = session.capabilities;
        let zstd = resp
            .zstd_level
            .filter(|_| asked & cap::ZSTD_COMPRESSION_ALGORITHM != 0);
        if let Some(algorithm) = session
            .config
            .compression
            .negotiate(asked & cap::COMPRESS != 0, zstd)
        {
            tracing::debug!(algorithm = algorithm.name(), "compressed protocol");
            session.shared.metrics.compressed_session(algorithm);
            session.client.io.compress(algorithm, false);
        }
        Ok(Some(session))
    }
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

/// The verdict on a password check (see `Admission::password_verdict`), or the ERR 1129 that
/// replaces it while the account is blocked from this address.
pub(super) fn account_verdict(
    shared: &Shared,
    config: &Config,
    peer: &SocketAddr,
    user: &[u8],
    ok: bool,
) -> Result<(), ErrPacket> {
    let limits = &config.limits;
    let Err(left) = shared
        .admission
        .password_verdict(peer.ip(), user, ok, limits)
    else {
        return Ok(());
    };
    shared.metrics.limit(Limit::FailedLogins);
    Err(ErrPacket::new(
        errcode::ER_HOST_IS_BLOCKED,
        "HY000",
        format!(
            "Host '{}' is blocked for user '{}' because of {} failed logins; Weiche lets it try \
             again in {} s, or after FLUSH HOSTS on its admin port (limits.max_failed_logins)",
            peer.ip(),
            String::from_utf8_lossy(user),
            limits.max_failed_logins,
            left.as_secs() + 1
        ),
    ))
}

/// Authenticate the client; with the user name it logged in as (None: it sent no login).
async fn authenticate(
    client: &mut Framed<Stream>,
    shared: &Shared,
    config: &Config,
    peer: &SocketAddr,
    scramble: &[u8],
    offered: u32,
) -> Result<(Auth, Option<Vec<u8>>), ProtocolError> {
    let acceptor = config.tls.acceptor.as_ref();
    let (resp, answer, seq, caching_sha2) =
        match read_login(client, scramble, offered, acceptor, true).await? {
            Login::Answered {
                resp,
                answer,
                seq,
                caching_sha2,
            } => (resp, answer, seq, caching_sha2),
            Login::Refused(seq, err) => return Ok((Auth::Refused(seq, err), None)),
        };
    let username = resp.username.clone();
    let user = shared.find_user(config, &resp.username, peer.ip()).await;
    let auth = if caching_sha2 {
        let state = &shared.sha2;
        crate::login::sha2::login(client, state, user, peer, scramble, resp, answer, seq).await?
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
    let auth = match auth {
        Auth::Accepted { user, seq, .. }
            if (config.tls.require || user.require_tls) && !client.io.is_tls() =>
        {
            Auth::Refused(seq, tls_required(&user.name, config.tls.require))
        }
        other => other,
    };
    Ok((auth, Some(username)))
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
            Err(e) => match table.pick_replica(None, None, None) {
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
