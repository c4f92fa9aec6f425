//! Process-wide statistics that sessions record and the admin port and /metrics read: query
//! latency histograms by route, errors by kind, and the query digest table. Recording is a few
//! atomic adds (the digest table takes one short lock); nothing here allocates per query except
//! a digest seen for the first time.

pub mod digests;
mod histogram;

pub use digests::{DigestRow, Digests};
pub use histogram::{Histogram, BUCKETS};

use std::sync::atomic::{AtomicU64, Ordering};

/// Where a command was answered, for latency and digest statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    Primary,
    Replica,
    Cache,
    /// Answered by Weiche itself or not routed (PING, errors, ...).
    Local,
}

impl RouteLabel {
    pub const ALL: [RouteLabel; 4] = [
        RouteLabel::Primary,
        RouteLabel::Replica,
        RouteLabel::Cache,
        RouteLabel::Local,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::Primary => "primary",
            RouteLabel::Replica => "replica",
            RouteLabel::Cache => "cache",
            RouteLabel::Local => "local",
        }
    }
}

/// Kinds of errors, for `weiche_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No backend could take the statement (no primary, no replica, ...).
    Routing,
    /// A server connection failed or a backend went down during a command.
    Backend,
    /// routing.query_timeout passed.
    Timeout,
    /// No server connection could be had in time (pool exhausted).
    Pool,
    /// A login was refused.
    Login,
    /// A client sent something Weiche cannot read.
    Client,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Routing,
        ErrorKind::Backend,
        ErrorKind::Timeout,
        ErrorKind::Pool,
        ErrorKind::Login,
        ErrorKind::Client,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Routing => "routing",
            ErrorKind::Backend => "backend",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Pool => "pool",
            ErrorKind::Login => "login",
            ErrorKind::Client => "client",
        }
    }
}

/// Limits that refuse or end a client, for `weiche_limit_refusals_total{limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Connections,
    UserConnections,
    FailedLogins,
    HandshakeErrors,
    LoginTimeout,
    IdleTimeout,
    PreparedStatements,
    PacketSize,
}

impl Limit {
    pub const ALL: [Limit; 8] = [
        Limit::Connections,
        Limit::UserConnections,
        Limit::FailedLogins,
        Limit::HandshakeErrors,
        Limit::LoginTimeout,
        Limit::IdleTimeout,
        Limit::PreparedStatements,
        Limit::PacketSize,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::UserConnections => "max_user_connections",
            Limit::FailedLogins => "max_failed_logins",
            Limit::HandshakeErrors => "max_handshake_errors",
            Limit::LoginTimeout => "login_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::PreparedStatements => "max_prepared_statements",
            Limit::PacketSize => "max_packet_size",
        }
    }
}

/// Everything sessions count.
#[derive(Debug)]
pub struct Metrics {
    /// Command latency per route (indexed like RouteLabel::ALL).
    pub latency: [Histogram; 4],
    errors: [AtomicU64; 6],
    limits: [AtomicU64; Limit::ALL.len()],
    pub digests: Digests,
    pub started: std::time::Instant,
    /// Commits whose GTID could not be published for other instances
    /// (routing.shared_read_your_writes).
    pub shared_writes_unpublished: AtomicU64,
    /// Client sessions on the compressed protocol, zlib and zstd.
    pub compressed_sessions: [AtomicU64; 2],
    /// Bytes of ended compressed client sessions: received on the wire, received before
    /// compression, sent on the wire, sent before compression.
    pub compressed_bytes: [AtomicU64; 4],
}

impl Metrics {
    pub fn new(max_digests: usize) -> Metrics {
        Metrics {
            latency: Default::default(),
            errors: Default::default(),
            limits: Default::default(),
            digests: Digests::new(max_digests),
            started: std::time::Instant::now(),
            shared_writes_unpublished: AtomicU64::new(0),
            compressed_sessions: Default::default(),
            compressed_bytes: Default::default(),
        }
    }

    /// A client session switched to the compressed protocol.
    pub fn compressed_session(&self, algorithm: crate::protocol::compress::Algorithm) {
        let i = matches!(algorithm, crate::protocol::compress::Algorithm::Zstd { .. }) as usize;
        self.compressed_sessions[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A compressed client session ended with this traffic.
    pub fn compressed_traffic(&self, t: &crate::protocol::compress::Traffic) {
        for (c, n) in
            self.compressed_bytes
                .iter()
                .zip([t.wire_in, t.plain_in, t.wire_out, t.plain_out])
        {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }

    pub fn limit(&self, limit: Limit) {
        self.limits[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn limits(&self, limit: Limit) -> u64 {
        self.limits[limit as usize].load(Ordering::Relaxed)
    }

    /// One finished command.
    pub fn command(&self, route: RouteLabel, micros: u64) {
        self.latency[route as usize].observe(micros);
    }

    pub fn count_shared_write_lost(&self) {
        self.shared_writes_unpublished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Commands counted so far, over every route.
    pub fn commands(&self) -> u64 {
        self.latency.iter().map(|h| h.count()).sum()
    }
}
