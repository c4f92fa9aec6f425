//! The process: worker threads, each a current-thread Tokio runtime, and one acceptor that
//! hands each accepted client to a worker in turn. A client lives on one worker for its whole
//! life, so nothing on the query path crosses threads.

use crate::config::Config;
use crate::session;
use crate::shared::Shared;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

type Handoff = (std::net::TcpStream, SocketAddr);

/// How long a stop waits for sessions to finish the command they are running.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// The sockets Weiche listens on, bound before it runs (so that a port in use is an error at
/// start, and tests can bind port 0 and read the address).
#[derive(Debug)]
pub struct Listeners {
    pub proxy: std::net::TcpListener,
    pub admin: Option<std::net::TcpListener>,
    pub http: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Bind the addresses the configuration names.
    pub fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let bind =
            |addr: SocketAddr| listen(addr).map_err(|source| ServerError::Listen { addr, source });
        Ok(Listeners {
            proxy: bind(config.listen)?,
            admin: config.admin_address.map(bind).transpose()?,
            http: config.http_address.map(bind).transpose()?,
        })
    }
}

/// Run Weiche on `listeners` until `shutdown` resolves (with the name of what stopped it, as
/// `signals()` does for SIGINT and SIGTERM); then sessions finish their current command.
pub fn run(
    shared: Arc<Shared>,
    listeners: Listeners,
    shutdown: impl Future<Output = &'static str>,
) -> Result<(), ServerError> {
    let config = shared.config();
    let mut workers = Vec::new();
    let count = config.event_threads;
    for n in 0..count {
        let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
        let shared = shared.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        std::thread::Builder::new()
            .name(format!("weiche-worker-{n}"))
            .spawn(move || {
                crate::backend::pool::init_worker(n, count);
                rt.block_on(worker(shared, rx))
            })
            .map_err(ServerError::Runtime)?;
        workers.push(tx);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    rt.block_on(accept_loop(shared, listeners, workers, shutdown))
}

async fn worker(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Handoff>) {
    // Idle server connections close on time even when nobody borrows from this worker's pools.
    let sweeper = shared.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            crate::backend::pool::sweep_once(&sweeper.config().pool.settings);
        }
    });
    while let Some((stream, peer)) = rx.recv().await {
        match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => {
                tokio::spawn(session::serve(shared.clone(), s, peer));
            }
            Err(e) => tracing::warn!("cannot adopt connection from {peer}: {e}"),
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listeners: Listeners,
    workers: Vec<mpsc::UnboundedSender<Handoff>>,
    shutdown: impl Future<Output = &'static str>,
) -> Result<(), ServerError> {
    let adopt = |l: std::net::TcpListener| {
        let addr = l.local_addr().map_err(ServerError::Runtime)?;
        tokio::net::TcpListener::from_std(l)
            .map(|l| (l, addr))
            .map_err(|source| ServerError::Listen { addr, source })
    };
    use std::os::fd::AsRawFd;
    let mut fds = vec![("proxy", listeners.proxy.as_raw_fd())];
    fds.extend(listeners.admin.as_ref().map(|l| ("admin", l.as_raw_fd())));
    fds.extend(listeners.http.as_ref().map(|l| ("http", l.as_raw_fd())));
    let (listener, local) = adopt(listeners.proxy)?;
    let config = shared.config();
    // The monitor runs beside the acceptor; clients are let in once every backend was checked
    // (or a check's timeout passed).
    let mut checked = crate::backend::monitor::start(shared.backends.clone(), &config);
    let n = config.backends.len();
    let first_round = config.monitoring.timeout + std::time::Duration::from_millis(200);
    let _ = tokio::time::timeout(first_round, checked.wait_for(|c| *c >= n)).await;
    match shared.probe_primary().await {
        Ok(()) => {
            let info = shared.server_info();
            tracing::info!("primary is {}", String::from_utf8_lossy(&info.version));
        }
        Err(e) => tracing::warn!(
            "cannot reach the primary yet ({e}); clients will get an error until it is up"
        ),
    }
    if config.monitoring.load_users {
        tokio::spawn(read_accounts(shared.clone()));
    }
    if let (Some(cache), Some(setup)) = (&shared.cache, crate::cache::binlog::Setup::new(&config)) {
        crate::cache::binlog::start(cache.clone(), shared.backends.clone(), setup);
    }
    crate::shared::fleet::start(shared.clone(), local);
    if let Some(l) = listeners.admin {
        let (l, bound) = adopt(l)?;
        tracing::info!(address = %bound, "admin interface listening");
        tokio::spawn(crate::admin::serve(shared.clone(), l));
    }
    if let Some(l) = listeners.http {
        let (l, bound) = adopt(l)?;
        tracing::info!(address = %bound, "http interface listening (/metrics, /health)");
        tokio::spawn(crate::admin::http::serve(shared.clone(), l));
    }
    tracing::info!(address = %local, workers = workers.len(), "weiche {} listening", env!("CARGO_PKG_VERSION"));
    // A process started with --upgrade accepts now: the one before it may stop.
    crate::upgrade::ready();
    let handed_over = match &config.upgrade_socket {
        Some(path) => match crate::upgrade::serve(path, fds) {
            Ok(rx) => {
                tracing::info!(socket = %path.display(), "upgrade socket listening");
                Some(rx)
            }
            Err(e) => {
                tracing::warn!(
                    "cannot listen on the upgrade socket {}: {e}",
                    path.display()
                );
                None
            }
        },
        None => None,
    };
    let shutdown = async move {
        match handed_over {
            Some(rx) => tokio::select! {
                s = shutdown => s,
                Ok(()) = rx => "upgrade (a new process took the sockets over)",
            },
            None => shutdown.await,
        }
    };
    let mut next = 0usize;
    tokio::pin!(shutdown);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                let _ = shared.reload_logged("SIGHUP");
            }
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let Ok(std_stream) = stream.into_std() else { continue };
                    let _ = workers[next % workers.len()].send((std_stream, peer));
                    next = next.wrapping_add(1);
                }
                Err(e) => {
                    // Out of file descriptors and the like: log, pause briefly, carry on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            sig = &mut shutdown => {
                drop(listener);
                tracing::info!("{sig}: stopping; {} sessions finish their current command", shared.registry.len());
                shared.begin_shutdown();
                let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
                while !shared.registry.is_empty() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                match shared.registry.len() {
                    0 => tracing::info!("stopped"),
                    n => tracing::warn!("stopped with {n} sessions still busy after {SHUTDOWN_GRACE:?}"),
                }
                return Ok(());
            }
        }
    }
}

fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Resolves at SIGTERM or SIGINT, with the signal's name.
pub async fn signals() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Read the accounts from the primary's mysql.user now and every `monitor.users_refresh`
/// (with the settings of the latest reload).
async fn read_accounts(shared: Arc<Shared>) {
    let mut known = None;
    loop {
        let config = shared.config();
        if let Some((primary, source)) = shared.accounts_source(&config) {
            match shared.accounts.read(&primary, &source).await {
                Ok(n) if known != Some(n) => {
                    tracing::info!("{n} accounts read from mysql.user on {primary}");
                    known = Some(n);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("reading accounts from mysql.user on {primary}: {e}"),
            }
        }
        tokio::time::sleep(config.monitoring.users_refresh).await;
    }
}
