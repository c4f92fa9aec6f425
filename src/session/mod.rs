//! One client's life, phase by phase: `login` (admission, greeting, authentication, the Lua
//! hooks of the connection phase), the command loop in `command` that dispatches to `routed`
//! (route, relay, learn, retry), `prepared` and `local` (Weiche's own answers), and the end.
//! `outcome` holds the vocabulary they share: what the loop does next and why a command failed.

mod accounting;
mod admission;
mod cached;
mod command;
mod consistency;
mod failure;
mod inject;
mod local;
mod login;
mod outcome;
mod pins;
mod prepared;
mod registry;
mod relay;
mod reload;
mod routed;
mod script;
mod server_side;
mod stmt;
mod watchdog;

pub use registry::{Registry, SessionHandle};
pub use reload::Reloaded;

use crate::backend::BackendTable;
use crate::backend::{LoginParams, Secret, ServerConnection, SessionState};
use crate::config::{Config, User};
use crate::protocol::constants::cap;
use crate::protocol::handshake::Greeting;
use crate::protocol::{ErrPacket, Framed, ProtocolError};
use crate::tls::Stream;
use outcome::CommandError;
use pins::Pins;
use relay::RelayError;
use server_side::Current;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use stmt::Statements;
use tokio::net::TcpStream;
use tracing::Instrument;

/// Weiche's connection ids (the ones clients see in the greeting and as their thread id) start
/// here, far above the thread ids backends hand out. So `KILL n` can tell them apart: an id from
/// Weiche's range names a session, a smaller one is a backend thread id (what the SQL function
/// CONNECTION_ID() returns through a proxy) and goes to the backend unchanged. Below 2^31, so
/// that clients that keep the id in a signed 32-bit integer still work.
pub const FIRST_CONNECTION_ID: u32 = 1_000_000_000;

/// What the primary told us about itself in its greeting; Weiche greets clients the same way so
/// that drivers see the real server version and only capabilities the backend has.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: Vec<u8>,
    pub capabilities: u32,
    pub charset: u8,
}

impl Default for ServerInfo {
    fn default() -> Self {
        ServerInfo {
            version: b"5.5.5-10.11.0-MariaDB-weiche".to_vec(),
            capabilities: u32::MAX,
            charset: 45,
        }
    }
}

/// State shared by all sessions on all workers.
#[derive(Debug)]
pub struct Shared {
    config: RwLock<Arc<Config>>,
    /// Bumped by every reload: sessions compare it with theirs before each command.
    pub config_epoch: std::sync::atomic::AtomicU64,
    pub registry: Registry,
    /// The backends with their live load numbers.
    pub backends: Arc<BackendTable>,
    /// The result cache (None when it is off).
    pub cache: Option<Arc<crate::cache::Cache>>,
    /// Latency, errors and digests, for /metrics and the admin port.
    pub metrics: crate::metrics::Metrics,
    /// Connection and login counts against [limits].
    pub admission: Arc<admission::Admission>,
    /// caching_sha2_password's learnt digests and RSA key.
    pub sha2: crate::login::Sha2State,
    /// Accounts read from the primary's mysql.user (monitor.load_users).
    pub accounts: crate::backend::accounts::Accounts,
    server_info: Mutex<ServerInfo>,
    next_id: AtomicU32,
    /// Flips to true when Weiche stops: idle sessions close, busy ones finish their command.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Shared> {
        Arc::new(Shared {
            backends: Arc::new(BackendTable::new(&config)),
            cache: crate::cache::Cache::new(&config.cache).map(Arc::new),
            metrics: crate::metrics::Metrics::new(config.max_digests),
            admission: Default::default(),
            sha2: Default::default(),
            accounts: Default::default(),
            config: RwLock::new(Arc::new(config)),
            config_epoch: std::sync::atomic::AtomicU64::new(0),
            registry: Registry::default(),
            server_info: Mutex::new(ServerInfo::default()),
            next_id: AtomicU32::new(FIRST_CONNECTION_ID),
            shutdown: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The current configuration snapshot.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn server_info(&self) -> ServerInfo {
        match self.server_info.lock() {
            Ok(i) => i.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn learn_server_info(&self, g: &Greeting) {
        if let Ok(mut i) = self.server_info.lock() {
            *i = ServerInfo {
                version: g.server_version.clone(),
                capabilities: g.capabilities,
                charset: g.charset,
            };
        }
    }

    fn learn_from_connection(&self, sc: &ServerConnection) {
        if let Ok(mut i) = self.server_info.lock() {
            if i.version != sc.server_version {
                i.version = sc.server_version.clone();
            }
        }
    }

    /// Read the primary's greeting (without logging in) to learn its version and capabilities.
    pub async fn probe_primary(&self) -> Result<(), String> {
        let config = self.config();
        let Some(primary) = config.primary() else {
            return Err("no primary configured".into());
        };
        let fut = async {
            let stream = TcpStream::connect(&primary.address)
                .await
                .map_err(|e| e.to_string())?;
            let mut f = Framed::new(stream);
            let p = f.read_packet(1 << 16).await.map_err(|e| e.to_string())?;
            Greeting::decode(&p.payload).map_err(|e| e.to_string())
        };
        let g = tokio::time::timeout(config.connect_timeout, fut)
            .await
            .map_err(|_| "timed out".to_string())??;
        self.learn_server_info(&g);
        Ok(())
    }

    /// Where and as whom accounts are read (monitor.load_users), and the primary to read them
    /// from now.
    pub fn accounts_source(
        &self,
        config: &Config,
    ) -> Option<(String, crate::backend::accounts::Source)> {
        if !config.monitoring.load_users {
            return None;
        }
        let primary = self.backends.primary().ok()?;
        Some((
            self.backends.backends[primary].address.clone(),
            crate::backend::accounts::Source {
                account: config.monitor.clone()?,
                timeout: config
                    .monitoring
                    .timeout
                    .max(std::time::Duration::from_secs(2)),
                tls: config.tls.backend.clone(),
            },
        ))
    }

    /// The account a client names: configured, or read from the primary (monitor.load_users),
    /// reading the table again (rate-limited) when the name is new.
    pub async fn find_user(
        &self,
        config: &Config,
        name: &[u8],
        client: std::net::IpAddr,
    ) -> Option<User> {
        if let Some(u) = config.user(name) {
            return Some(u.clone());
        }
        let (primary, source) = self.accounts_source(config)?;
        if let Some(u) = self.accounts.find(name, client) {
            return Some(u);
        }
        if self.accounts.read_for_unknown(&primary, &source).await {
            return self.accounts.find(name, client);
        }
        None
    }

    /// Ask every session to close once its current command is done.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_receiver(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    fn next_connection_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id >= FIRST_CONNECTION_ID {
                return id;
            }
            // Wrapped around: start again at the base (ids below it belong to backends).
            let _ = self.next_id.compare_exchange(
                id.wrapping_add(1),
                FIRST_CONNECTION_ID,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// Everything Weiche knows about one logged-in client.
pub(crate) struct Session {
    pub id: u32,
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    pub client: Framed<Stream>,
    pub peer: SocketAddr,
    pub user: String,
    pub secret: Secret,
    /// The capabilities agreed with the client.
    pub capabilities: u32,
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
    /// The pin reasons SHOW SESSIONS shows now ("" when none).
    pub shown_pins: String,
    /// The reload epoch `config` belongs to.
    pub config_epoch: u64,
    /// The digest hash of the query being run, from its analysis (statistics).
    pub query_digest: Option<u64>,
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
    pub fn deprecate_eof(&self) -> bool {
        self.capabilities & cap::DEPRECATE_EOF != 0
    }

    pub fn login_params(&self) -> LoginParams {
        LoginParams {
            user: self.user.clone(),
            secret: self.secret.clone(),
            client_capabilities: self.capabilities,
            charset: self.charset,
            database: self.state.schema.clone(),
            connect_attrs: self.connect_attrs.clone(),
            timeout: self.config.connect_timeout,
            tls: self.config.tls.backend.clone(),
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
        tracing::debug!("session ended");
        shared.registry.unregister(id);
    }
    .instrument(span)
    .await
}
