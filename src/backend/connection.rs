//! One server connection: TCP connect, the server's greeting, and the login as a configured
//! user, answering mysql_native_password (from the password or the SHA1(password) recovered from
//! the client's login) or MariaDB's client_ed25519 (password needed).

use super::prepared::PreparedCache;
use super::query::{Answer, QueryError};
use super::state::{ConnState, SessionState};
use crate::config::BackendTls;
use crate::protocol::auth::{self, Stage1};
use crate::protocol::basic::ErrPacket;
use crate::protocol::constants::cap;
use crate::protocol::constants::com;
use crate::protocol::handshake::{AuthSwitch, Greeting, HandshakeResponse};
use crate::protocol::{Framed, OkPacket, ProtocolError};
use crate::tls::Stream;
use bytes::BytesMut;
use std::time::Duration;
use tokio::net::TcpStream;

/// What Weiche knows of a user's password when it logs in to a backend.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Empty,
    /// SHA1(password): enough for mysql_native_password.
    Stage1(Stage1),
    /// The password itself: enough for every plugin.
    Plain(Vec<u8>),
}

impl Secret {
    fn stage1(&self) -> Option<Stage1> {
        match self {
            Secret::Empty => None,
            Secret::Stage1(s) => Some(*s),
            Secret::Plain(p) => Some(auth::stage1(p)),
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How to log in.
#[derive(Debug, Clone)]
pub struct LoginParams {
    pub user: String,
    pub secret: Secret,
    /// The client's capabilities; the response-shaping ones are requested from the server.
    pub client_capabilities: u32,
    /// The client's MariaDB extended capabilities: all change what the server sends.
    pub client_mariadb_caps: u32,
    pub charset: u8,
    pub database: Option<Vec<u8>>,
    pub connect_attrs: Option<Vec<u8>>,
    pub timeout: Duration,
    /// TLS to the backend ([backend_tls]).
    pub tls: Option<BackendTls>,
    /// The compressed protocol to the backend (`[[backends]] compress`), when it offers it.
    pub compress: Option<crate::protocol::compress::Algorithm>,
}

impl LoginParams {
    /// Weiche's own account (the monitor's): no client behind it, no database.
    pub fn for_account(
        account: &crate::config::Credentials,
        timeout: Duration,
        tls: Option<BackendTls>,
    ) -> LoginParams {
        LoginParams {
            user: account.user.clone(),
            secret: if account.password.is_empty() {
                Secret::Empty
            } else {
                Secret::Plain(account.password.as_bytes().to_vec())
            },
            client_capabilities: 0,
            client_mariadb_caps: 0,
            charset: 33,
            database: None,
            connect_attrs: None,
            timeout,
            tls,
            compress: None,
        }
    }
}

/// Why a server connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to backend {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("backend {address} did not complete the login within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("backend {address}: {source}")]
    Protocol {
        address: String,
        source: ProtocolError,
    },
    #[error("backend {address} refused the login: {err}")]
    Refused { address: String, err: ErrPacket },
    #[error("backend {address}: setting up the connection failed: {message}")]
    Setup { address: String, message: String },
    #[error("backend {address}: TLS: {message}")]
    Tls { address: String, message: String },
    #[error("backend {address} wants auth plugin '{plugin}' for user '{user}', {why}")]
    Plugin {
        address: String,
        user: String,
        plugin: String,
        why: &'static str,
    },
}

/// An open, logged-in connection to a backend.
#[derive(Debug)]
pub struct ServerConnection {
    pub framed: Framed<Stream>,
    pub address: String,
    /// The backend's id for this connection (what KILL on that server needs).
    pub thread_id: u32,
    pub capabilities: u32,
    /// MariaDB's extended capabilities in force on this connection.
    pub mariadb_caps: u32,
    pub server_version: Vec<u8>,
    /// The session state this connection is in, as the server reported it.
    pub state: ConnState,
    /// Statements prepared on this connection, shared by the sessions that borrow it.
    pub prepared: PreparedCache,
    /// An error left it in an unknown state: close it instead of pooling it.
    pub broken: bool,
}

/// What Weiche asks every server connection to report in its OK packets: all session
/// variables, the schema, and that some other session state changed.
const TRACK_EVERYTHING: &[u8] = b"SET SESSION session_track_system_variables = '*', \
    session_track_schema = ON, session_track_state_change = ON";

impl ServerConnection {
    /// Queue COM_RESET_CONNECTION and the tracking Weiche relies on, which the reset turns
    /// back to the server's defaults (two answers to read).
    pub fn queue_reset(&mut self) {
        self.queue_command(com::RESET_CONNECTION, &[]);
        self.queue_query(TRACK_EVERYTHING);
    }

    /// Ask for TLS (SSL_REQUEST) and run the handshake; the login follows encrypted. A backend
    /// that does not offer TLS is an error, never a silent downgrade.
    async fn start_tls(
        framed: &mut Framed<Stream>,
        address: &str,
        tls: &BackendTls,
        server_caps: u32,
        (caps, mariadb_caps): (u32, u32),
        charset: u8,
        seq: u8,
    ) -> Result<u8, BackendError> {
        let fail = |message: String| BackendError::Tls {
            address: address.to_string(),
            message,
        };
        if server_caps & cap::SSL == 0 {
            return Err(fail(
                "the backend does not offer TLS (backend_tls.mode is on)".into(),
            ));
        }
        let mut buf = BytesMut::new();
        HandshakeResponse::encode_ssl_request(
            caps | cap::SSL,
            mariadb_caps,
            1 << 30,
            charset,
            &mut buf,
        );
        let seq = framed
            .send(seq, &buf)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let name = tls
            .server_name
            .as_deref()
            .unwrap_or(crate::tls::host_of(address));
        let name = crate::tls::server_name(name).map_err(|e| fail(e.to_string()))?;
        if !framed.rbuf.is_empty() {
            // Bytes after the greeting, before TLS: whoever sent them (a man in the middle)
            // must not have them read as if they came over TLS.
            return Err(fail(format!(
                "{} bytes arrived in plain text after the greeting; refusing the connection",
                framed.rbuf.len()
            )));
        }
        framed
            .io
            .connect(&tls.connector, name)
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(seq)
    }

    pub async fn connect(
        address: &str,
        params: &LoginParams,
    ) -> Result<ServerConnection, BackendError> {
        match tokio::time::timeout(params.timeout, Self::connect_inner(address, params)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                address: address.to_string(),
                timeout: params.timeout,
            }),
        }
    }

    async fn connect_inner(
        address: &str,
        params: &LoginParams,
    ) -> Result<ServerConnection, BackendError> {
        let proto = |source| BackendError::Protocol {
            address: address.to_string(),
            source,
        };
        let stream = TcpStream::connect(address)
            .await
            .map_err(|source| BackendError::Connect {
                address: address.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(Stream::from(stream));
        let first = framed.read_packet(1 << 16).await.map_err(proto)?;
        if first.payload.first() == Some(&0xff) {
            let err = ErrPacket::decode(&first.payload).map_err(proto)?;
            return Err(BackendError::Refused {
                address: address.to_string(),
                err,
            });
        }
        let greeting = Greeting::decode(&first.payload).map_err(proto)?;
        let server_caps = greeting.capabilities;
        for needed in [cap::PROTOCOL_41, cap::SECURE_CONNECTION, cap::PLUGIN_AUTH] {
            if server_caps & needed == 0 {
                return Err(proto(ProtocolError::Unsupported(
                    "backends without PROTOCOL_41, SECURE_CONNECTION and PLUGIN_AUTH",
                )));
            }
        }
        // Session tracking always: the session state Weiche carries comes from its reports.
        let mut caps = (params.client_capabilities & cap::RESPONSE_SHAPING & server_caps)
            | (server_caps & cap::SESSION_TRACK)
            | cap::LONG_PASSWORD
            | cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
            | cap::TRANSACTIONS
            | (server_caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA);
        if params.database.is_some() {
            caps |= cap::CONNECT_WITH_DB;
        }
        if params.compress.is_some() {
            caps |= server_caps & cap::COMPRESS;
        }
        // Extended capabilities are sent only without CLIENT_MYSQL (LONG_PASSWORD, which
        // MariaDB ignores otherwise).
        let mariadb_caps = params.client_mariadb_caps & greeting.mariadb_caps;
        if mariadb_caps != 0 {
            caps &= !cap::LONG_PASSWORD;
        }
        if params.connect_attrs.is_some() && server_caps & cap::CONNECT_ATTRS != 0 {
            caps |= cap::CONNECT_ATTRS;
        }
        let mut seq = first.seq.wrapping_add(1);
        if let Some(tls) = &params.tls {
            seq = Self::start_tls(
                &mut framed,
                address,
                tls,
                server_caps,
                (caps, mariadb_caps),
                params.charset,
                seq,
            )
            .await?;
            caps |= cap::SSL;
        }
        let (plugin, response) =
            self::answer(address, params, &greeting.auth_plugin, &greeting.scramble)?;
        let login = HandshakeResponse {
            capabilities: caps,
            mariadb_caps,
            max_packet: 1 << 30,
            charset: params.charset,
            username: params.user.as_bytes().to_vec(),
            auth_response: response,
            database: params.database.clone(),
            auth_plugin: Some(plugin.to_vec()),
            connect_attrs: params
                .connect_attrs
                .clone()
                .filter(|_| caps & cap::CONNECT_ATTRS != 0),
            zstd_level: None,
        };
        let mut buf = BytesMut::new();
        login.encode(&mut buf);
        seq = framed.send(seq, &buf).await.map_err(proto)?;
        // At most a few rounds: OK, ERR, or an auth switch to a plugin we can answer.
        for _ in 0..4 {
            let p = framed.read_packet(1 << 16).await.map_err(proto)?;
            match p.payload.first() {
                Some(0x00) => {
                    let ok = OkPacket::decode(&p.payload).map_err(proto)?;
                    if let Some(algorithm) = params.compress.filter(|_| caps & cap::COMPRESS != 0) {
                        framed.io.compress(algorithm, true);
                    }
                    return Ok(ServerConnection {
                        framed,
                        address: address.to_string(),
                        thread_id: greeting.connection_id,
                        capabilities: caps,
                        mariadb_caps,
                        server_version: greeting.server_version,
                        state: ConnState {
                            status: ok.status,
                            session: SessionState {
                                schema: params.database.clone(),
                                ..Default::default()
                            },
                            ..Default::default()
                        },
                        prepared: PreparedCache::default(),
                        broken: false,
                    });
                }
                Some(0xff) => {
                    let err = ErrPacket::decode(&p.payload).map_err(proto)?;
                    return Err(BackendError::Refused {
                        address: address.to_string(),
                        err,
                    });
                }
                Some(0xfe) => {
                    let switch = AuthSwitch::decode(&p.payload).map_err(proto)?;
                    let (_, response) =
                        self::answer(address, params, &switch.plugin, &switch.data)?;
                    seq = framed
                        .send(p.seq.wrapping_add(1), &response)
                        .await
                        .map_err(proto)?;
                }
                _ => {
                    return Err(proto(ProtocolError::Malformed(
                        "unexpected packet during backend login",
                    )));
                }
            }
        }
        let _ = seq;
        Err(proto(ProtocolError::Malformed(
            "backend login did not finish",
        )))
    }
}

impl ServerConnection {
    /// Ask the server to report session state changes, and note the login's character set (a
    /// reset must restore it). Both in one round trip.
    pub async fn setup(&mut self) -> Result<(), BackendError> {
        let address = self.address.clone();
        let fail = |e: QueryError| BackendError::Setup {
            address: address.clone(),
            message: e.to_string(),
        };
        self.queue_query(TRACK_EVERYTHING);
        self.queue_query(
            b"SELECT @@character_set_client, @@character_set_connection, \
              @@character_set_results, @@collation_connection",
        );
        self.framed
            .flush()
            .await
            .map_err(|e| fail(QueryError::Protocol(e)))?;
        let set = self.read_answer().await.map_err(|e| fail(e.into()))?;
        let names = self.read_answer().await.map_err(|e| fail(e.into()))?;
        if let Answer::Err(e) = set {
            return Err(fail(QueryError::Server(e)));
        }
        let row = match names {
            Answer::Rows(mut r) if r.rows.len() == 1 => r.rows.swap_remove(0),
            Answer::Err(e) => return Err(fail(QueryError::Server(e))),
            _ => {
                return Err(fail(QueryError::Protocol(ProtocolError::Malformed(
                    "unexpected answer to the charset query",
                ))))
            }
        };
        let names: [&[u8]; 4] = [
            b"character_set_client",
            b"character_set_connection",
            b"character_set_results",
            b"collation_connection",
        ];
        self.state.baseline = names
            .iter()
            .zip(row)
            .map(|(n, v)| (n.to_vec(), v.unwrap_or_default()))
            .collect();
        // Weiche's own settings are the baseline, not the session's changes.
        self.state.session.vars.clear();
        Ok(())
    }

    /// COM_RESET_CONNECTION and the login's character set again: a clean connection for any
    /// session of its key. Prepared statements are gone afterwards.
    pub async fn reset(&mut self) -> Result<(), QueryError> {
        self.queue_reset();
        let restore = super::state::plan(
            &SessionState::default(),
            0,
            &ConnState {
                owner: 1,
                untracked: Some("reset"),
                baseline: self.state.baseline.clone(),
                ..Default::default()
            },
            false,
        );
        if let Some(set) = &restore.set {
            self.queue_query(set);
        }
        self.framed.flush().await?;
        let mut result = Ok(());
        for _ in 0..2 + usize::from(restore.set.is_some()) {
            match self.read_answer().await {
                Ok(Answer::Err(e)) => result = Err(QueryError::Server(e)),
                Ok(_) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
        }
        if result.is_err() {
            self.broken = true;
        }
        self.prepared.clear();
        let schema = self.state.session.schema.take();
        self.state.session = SessionState {
            schema,
            ..Default::default()
        };
        self.state.untracked = None;
        self.state.owner = 0;
        result
    }
}

/// The auth response for `plugin` and its challenge. A plugin Weiche cannot answer falls back to
/// mysql_native_password in the login packet (the server then switches if the account needs).
fn answer(
    address: &str,
    params: &LoginParams,
    plugin: &[u8],
    challenge: &[u8],
) -> Result<(&'static [u8], Vec<u8>), BackendError> {
    let fail = |why| BackendError::Plugin {
        address: address.to_string(),
        user: params.user.clone(),
        plugin: String::from_utf8_lossy(plugin).into_owned(),
        why,
    };
    if plugin == auth::ED25519 {
        return match &params.secret {
            Secret::Plain(p) => Ok((auth::ED25519, auth::ed25519_response(p, challenge).to_vec())),
            Secret::Empty => Ok((
                auth::ED25519,
                auth::ed25519_response(b"", challenge).to_vec(),
            )),
            Secret::Stage1(_) => Err(fail(
                "which needs the password itself: configure `password`, not `password_hash`",
            )),
        };
    }
    if plugin == auth::NATIVE_PASSWORD || plugin.is_empty() || plugin == auth::CACHING_SHA2 {
        let response = match params.secret.stage1() {
            Some(s1) => auth::native_response(&s1, challenge).to_vec(),
            None => Vec::new(),
        };
        return Ok((auth::NATIVE_PASSWORD, response));
    }
    Err(fail(
        "which Weiche cannot answer (supported: mysql_native_password, client_ed25519)",
    ))
}
