//! Process state: what every session, the admin port and the server loop share. The
//! configuration snapshot (swapped by a reload), the backend table, the registry of live
//! sessions, admission counts against the limits, the result cache, metrics, the accounts read
//! from the primary and the pools' counts. One `Shared` per running Weiche, passed as an `Arc`.

pub mod admission;
pub mod fleet;
pub mod registry;
mod reload;

pub use registry::{Registry, SessionHandle};
pub use reload::{ReloadError, Reloaded};

use crate::backend::{BackendTable, ServerConnection};
use crate::config::{Config, User};
use crate::protocol::handshake::Greeting;
use crate::protocol::Framed;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpStream;

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
    /// MariaDB's extended capabilities (0 until learnt, and from MySQL servers).
    pub mariadb_caps: u32,
    pub charset: u8,
}

impl Default for ServerInfo {
    fn default() -> Self {
        ServerInfo {
            version: b"5.5.5-10.11.0-MariaDB-weiche".to_vec(),
            capabilities: u32::MAX,
            mariadb_caps: 0,
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
    /// The connections of each backend's pools, over all workers.
    pub pool_counts: crate::backend::pool::AllPoolCounts,
    /// The instances sharing this one's memcached cluster (SHOW FLEET).
    pub fleet: fleet::Fleet,
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
            pool_counts: Default::default(),
            fleet: fleet::Fleet::new(),
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

    pub(crate) fn learn_server_info(&self, g: &Greeting) {
        if let Ok(mut i) = self.server_info.lock() {
            *i = ServerInfo {
                version: g.server_version.clone(),
                capabilities: g.capabilities,
                mariadb_caps: g.mariadb_caps,
                charset: g.charset,
            };
        }
    }

    pub(crate) fn learn_from_connection(&self, sc: &ServerConnection) {
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

    pub(crate) fn next_connection_id(&self) -> u32 {
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
