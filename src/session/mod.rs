//! One client's life, phase by phase: `login` (admission, greeting, authentication, the Lua
//! hooks of the connection phase), the command loop in `command` that dispatches to `routed`
//! (route, relay, learn, retry), `prepared` and `local` (Weiche's own answers), and the end.
//! `outcome` holds the vocabulary they share: what the loop does next and why a command failed.

mod accounting;
mod cached;
mod change_user;
mod command;
mod consistency;
mod failure;
mod inject;
mod kill;
mod local;
mod login;
mod outcome;
mod pins;
mod prepared;
mod relay;
mod routed;
mod script;
mod server_side;
mod shared_writes;
mod stmt;
mod watchdog;

use crate::shared::{admission, SessionHandle};
pub use crate::shared::{Shared, FIRST_CONNECTION_ID};

use crate::backend::{LoginParams, Secret, SessionState};
use crate::config::Config;
use crate::protocol::constants::cap;
use crate::protocol::{ErrPacket, Framed, ProtocolError};
use crate::tls::Stream;
use outcome::CommandError;
use pins::Pins;
use relay::RelayError;
use server_side::Current;
use std::net::SocketAddr;
use std::sync::Arc;
use stmt::Statements;
use tokio::net::TcpStream;
use tracing::Instrument;

/// Everything Weiche knows about one logged-in client.
pub(crate) struct Session {
    pub id: u32,
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    pub client: Framed<Stream>,
    pub peer: SocketAddr,
    pub user: String,
    /// The account's identity (`User::identity`): pools and cache entries are per identity.
    pub identity: u64,
    pub secret: Secret,
    /// The capabilities agreed with the client.
    pub capabilities: u32,
    /// MariaDB's extended capabilities agreed with the client (`mariadb_cap`).
    pub mariadb_caps: u32,
    pub charset: u8,
    pub connect_attrs: Option<Vec<u8>>,
    /// The challenge last sent to the client (COM_CHANGE_USER answers are checked against it).
    pub scramble: [u8; 20],
    pub handle: Arc<SessionHandle>,
    /// The session's state (schema, variables, LAST_INSERT_ID()): what every server connection
    /// it uses is brought to.
    pub state: SessionState,
    /// The server connection the session holds now, if any.
    pub current: Option<Current>,
    pub pins: Pins,
    pub stmts: Statements,
    /// What read-your-writes needs of the session's writes.
    pub writes: crate::route::Writes,
    /// Some of the current command's response reached the client (it cannot be retried).
    pub answered: bool,
    /// The session's Lua environment, when a script is configured.
    pub script: Option<crate::script::ScriptHandle>,
    /// The backend the script chose with proxy.connection.backend_ndx.
    pub script_backend: Option<usize>,
    /// The backend reads prefer (see `route::Request::last`): the one borrowed last, since
    /// when the session has stayed on it, and the backend table's rotation count then.
    pub last_backend: Option<(usize, std::time::Instant, u64)>,
    /// The script asked to close the client connection (proxy.connection.connection_close).
    pub close_requested: bool,
    /// Weiche's own address on this connection (for proxy.connection.client.dst), and the
    /// client's, as text.
    pub local_addr: String,
    pub peer_name: String,
    /// Copies the current command's response for the result cache.
    pub tap: Option<relay::Tap>,
    /// Cache generations to bump when the open transaction ends.
    pub cache_pending: Vec<crate::cache::Scope>,
    /// How the current command went, for statistics.
    pub outcome: Outcome,
    /// Which pin reasons SHOW SESSIONS shows now (none at first).
    pub shown_pins: pins::Shown,
    /// The reload epoch `config` belongs to.
    pub config_epoch: u64,
    /// The digest hash of the query being run, from its analysis (statistics).
    pub query_digest: Option<u64>,
    /// The cache's verdicts by digest, for the configuration epoch and default database they
    /// were made under (see `cached::Memo`).
    pub cache_memo: cached::Memo,
    /// GTIDs committed by the current command, to publish for other instances before the
    /// client hears OK (routing.shared_read_your_writes).
    pub shared_pending: Option<crate::backend::gtid::GtidPos>,
    /// The backends' version, as versioned comments (`/*!50000 ... */`) are read by it.
    pub server_version: u32,
    /// This session's place in its user's count (limits.max_user_connections).
    pub(crate) _user_slot: admission::UserSlot,
}

/// Where the last command was answered and what it returned.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub route: crate::metrics::RouteLabel,
    pub rows: u64,
    pub error: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome {
            route: crate::metrics::RouteLabel::Local,
            rows: 0,
            error: false,
        }
    }
}

impl Session {
    /// How the backends read this session's statements: their version's versioned comments,
    /// and backslashes as the session's sql_mode says (unknown until it reports one).
    pub fn dialect(&self) -> crate::sql::Dialect {
        let backslash_escapes = self.state.vars.get(&b"sql_mode"[..]).map(|m| {
            !m.windows(b"NO_BACKSLASH_ESCAPES".len())
                .any(|w| w.eq_ignore_ascii_case(b"NO_BACKSLASH_ESCAPES"))
        });
        crate::sql::Dialect {
            version: self.server_version,
            backslash_escapes,
        }
    }

    /// Analyze a statement of this session (see `sql::analyze_in`).
    pub fn analyze(&self, sql: &[u8]) -> crate::sql::Analysis {
        crate::sql::analyze_in(sql, self.dialect())
    }

    pub fn deprecate_eof(&self) -> bool {
        self.capabilities & cap::DEPRECATE_EOF != 0
    }

    /// How result sets Weiche makes up must look for this client.
    pub fn shape(&self) -> crate::protocol::resultset::Shape {
        crate::protocol::resultset::Shape {
            deprecate_eof: self.deprecate_eof(),
            extended_metadata: self.mariadb_caps
                & crate::protocol::constants::mariadb_cap::EXTENDED_METADATA
                != 0,
        }
    }

    pub fn login_params(&self) -> LoginParams {
        LoginParams {
            user: self.user.clone(),
            secret: self.secret.clone(),
            client_capabilities: self.capabilities,
            client_mariadb_caps: self.mariadb_caps,
            charset: self.charset,
            database: self.state.schema.clone(),
            connect_attrs: self.connect_attrs.clone(),
            timeout: self.config.connect_timeout,
            tls: self.config.tls.backend.clone(),
            compress: None,
        }
    }

    /// Give every server connection back (reset when it holds the session's state).
    pub fn end(&mut self) {
        self.pins = Pins::default();
        if let Some(cur) = self.current.take() {
            self.give_back(cur);
        }
    }

    /// Tell the client why its command did not run (and go on).
    pub async fn refuse(&mut self, cmd_seq: u8, e: CommandError) -> Result<(), RelayError> {
        reply_err(self, cmd_seq, e.to_err_packet()).await
    }

    /// Send an ERR packet with this sequence id.
    pub async fn send_err(&mut self, seq: u8, err: &ErrPacket) -> Result<(), ProtocolError> {
        let payload = crate::protocol::err_payload(err);
        self.client.send(seq, &payload).await.map(|_| ())
    }
}

/// Answer the command with sequence id `cmd_seq` with an ERR.
pub(crate) async fn reply_err(
    s: &mut Session,
    cmd_seq: u8,
    err: ErrPacket,
) -> Result<(), RelayError> {
    s.send_err(cmd_seq.wrapping_add(1), &err)
        .await
        .map_err(RelayError::Client)
}

/// Serve one client connection until it ends. Errors end only this session.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let id = shared.next_connection_id();
    let span = tracing::info_span!("session", id, client = %peer, user = tracing::field::Empty);
    async move {
        // Held for the connection's whole life; dropped (given back) on every way out.
        let Some((_slot, stream)) = login::admit(&shared, stream, peer).await else {
            return;
        };
        let handle = shared.registry.register(id);
        // Boxed: the login's state would otherwise stay reserved in every idle session's task.
        // The session is bound once, straight from the login's result: a match over the whole
        // session's life, or a second binding, would keep room for it twice in the task.
        let login = Box::pin(login::login(shared.clone(), stream, peer, id, handle));
        let mut session = match login.await {
            Ok(Some(session)) => session,
            other => {
                match other {
                    Err(e) if e.is_disconnect() => {
                        tracing::debug!("client left before logging in")
                    }
                    Err(e) => tracing::warn!("login failed: {e}"),
                    _ => {}
                }
                shared.registry.unregister(id);
                return;
            }
        };
        tracing::Span::current().record("user", session.user.as_str());
        tracing::debug!("logged in");
        command::run(&mut session).await;
        if let Some(mut script) = session.script.take() {
            script.disconnect_client(&session.conn_view());
        }
        session.end();
        if let Some((algorithm, t)) = session.client.io.compression() {
            shared.metrics.compressed_traffic(&t);
            // What compression saved on this session's client connection.
            tracing::debug!(
                target: "weiche::compression",
                algorithm = algorithm.name(),
                wire_in = t.wire_in,
                plain_in = t.plain_in,
                wire_out = t.wire_out,
                plain_out = t.plain_out,
                "compressed protocol"
            );
        }
        tracing::debug!("session ended");
        shared.registry.unregister(id);
    }
    .instrument(span)
    .await
}
