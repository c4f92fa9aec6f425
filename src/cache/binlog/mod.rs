//! Invalidation from the primary's binary log: Weiche follows the binlog as a replica does
//! (COM_REGISTER_SLAVE, then COM_BINLOG_DUMP from a GTID position) and bumps the generation of
//! every table a committed transaction changed, whoever wrote it: other clients, cron jobs,
//! triggers, stored procedures, events. DDL bumps what it names. Failover is followed by GTID:
//! the stream resumes on the new primary from the last transaction seen, and if that primary
//! refuses the position (it lacks a transaction Weiche saw, or purged what comes next) the
//! whole cache is flushed.
//!
//! Hits depend on `Tail`: a second task reads the primary's `@@gtid_binlog_pos` every
//! `check_interval`, and a sample is confirmed once the stream has bumped everything up to it.
//! Without a confirmation within `max_lag`, lookups go to the database. So a broken, slow or
//! lost stream costs hits, never correctness.
//!
//! Each commit is bumped twice: when it arrives, and `settle` later. The primary sends an event
//! once it is in the binlog, which can be a moment before the storage engine makes the rows
//! visible; a fill in that moment reads the old rows under the new generation, and the second
//! bump retires it.

mod catalog;
mod event;
mod tail;

pub use tail::Tail;

use crate::backend::connection::{BackendError, LoginParams, ServerConnection};
use crate::backend::gtid::{Gtid, GtidPos};
use crate::backend::query::{Answer, QueryError, Rows};
use crate::backend::BackendTable;
use crate::cache::{Cache, Scope};
use crate::config::{BackendTls, Config, Credentials};
use crate::protocol::constants::{com, MAX_CHUNK};
use crate::protocol::packet::{decode_chunk, peek_header, HEADER_LEN};
use crate::protocol::{ErrPacket, ProtocolError};
use bytes::{Bytes, BytesMut};
use event::{Event, EventError, Format, Groups};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The heartbeat the primary sends on an idle stream; a stream silent for three is dead.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Events are bounded by the primary's max_allowed_packet (at most 1 GiB).
const MAX_EVENT: usize = 1 << 30;
/// The dump thread's error for a position it cannot serve (purged, or not in its history).
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// Samples kept while the stream is behind; older ones are dropped (newer ones confirm more).
const MAX_SAMPLES: usize = 256;

/// How to follow: the account, the server id and the timings.
#[derive(Debug, Clone)]
pub struct Setup {
    account: Credentials,
    server_id: u32,
    port: u16,
    timeout: Duration,
    tls: Option<BackendTls>,
    check_interval: Duration,
    settle: Duration,
    /// The monitor account, which reads the foreign keys and views (it has PROCESS).
    monitor: Option<Credentials>,
}

impl Setup {
    /// From the config, when cache.binlog is on (and an account for it is known).
    pub fn new(config: &Config) -> Option<Setup> {
        let b = config.cache.binlog.as_ref()?;
        let account = b.account.clone().or_else(|| config.monitor.clone())?;
        let server_id = b.server_id.unwrap_or_else(|| {
            let mut r = [0u8; 4];
            let _ = getrandom::getrandom(&mut r);
            (u32::from_le_bytes(r) | 0x8000_0000).min(u32::MAX - 1)
        });
        Some(Setup {
            account,
            server_id,
            port: config.listen.port(),
            timeout: config.connect_timeout.max(Duration::from_secs(1)),
            tls: config.tls.backend.clone(),
            check_interval: b.check_interval,
            settle: b.settle,
            monitor: config.monitor.clone(),
        })
    }
}

/// Why a stream ended.
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("{0}")]
    Connect(#[from] BackendError),
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("the primary refused to stream its binlog: {}", .0.message)]
    Refused(ErrPacket),
    #[error("the primary cannot stream from the position Weiche has: {}", .0.message)]
    Gap(ErrPacket),
    #[error("{0}")]
    Event(#[from] EventError),
    #[error("no event or heartbeat for {0:?}")]
    Silent(Duration),
    #[error("the primary is now {0}")]
    Moved(String),
    #[error("unexpected answer: {0}")]
    Unexpected(&'static str),
}

/// The primary's position as read at some moment.
#[derive(Debug)]
struct Sample {
    source: String,
    read_at: Instant,
    pos: GtidPos,
}

/// Start the follower and its position checker on the current runtime.
pub fn start(cache: Arc<Cache>, backends: Arc<BackendTable>, setup: Setup) {
    let Some(tail) = cache.tail.clone() else {
        return;
    };
    tracing::info!(
        server_id = setup.server_id,
        "following the primary's binlog for cache invalidation (as {})",
        setup.account.user
    );
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(check(backends.clone(), setup.clone(), tx));
    let (ddl, ddl_rx) = tokio::sync::watch::channel(GtidPos::default());
    let mut as_monitor = setup.clone();
    if let Some(m) = &setup.monitor {
        as_monitor.account = m.clone();
    }
    tokio::spawn(catalog::keep(
        cache.clone(),
        backends.clone(),
        as_monitor,
        ddl_rx,
    ));
    let f = Follower {
        cache,
        backends,
        setup,
        tail,
        seen: None,
        samples: rx,
        queue: VecDeque::new(),
        groups: Groups::default(),
        settle: Vec::new(),
        settle_due: None,
        warned_format: false,
        ddl,
    };
    tokio::spawn(f.run());
}

fn primary_address(backends: &BackendTable) -> Option<String> {
    let i = backends.primary().ok()?;
    Some(backends.backends[i].address.clone())
}

async fn login(address: &str, setup: &Setup) -> Result<ServerConnection, BackendError> {
    let params = LoginParams::for_account(&setup.account, setup.timeout, setup.tls.clone());
    ServerConnection::connect(address, &params).await
}

fn cell(r: &Rows, col: usize) -> String {
    cell_at(r, 0, col)
}

fn cell_at(r: &Rows, row: usize, col: usize) -> String {
    r.rows
        .get(row)
        .and_then(|row| row.get(col))
        .and_then(|v| v.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Read the primary's position every check_interval, on a connection of its own.
async fn check(backends: Arc<BackendTable>, setup: Setup, tx: mpsc::Sender<Sample>) {
    let mut conn: Option<(String, ServerConnection)> = None;
    let mut tick = tokio::time::interval(setup.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tx.is_closed() {
            return;
        }
        let Some(address) = primary_address(&backends) else {
            conn = None;
            continue;
        };
        if conn.as_ref().is_some_and(|(a, _)| *a != address) {
            conn = None;
        }
        if conn.is_none() {
            match login(&address, &setup).await {
                Ok(c) => conn = Some((address.clone(), c)),
                Err(e) => {
                    tracing::debug!("binlog position check: {e}");
                    continue;
                }
            }
        }
        let Some((_, c)) = conn.as_mut() else {
            continue;
        };
        // Taken before asking: every commit before this moment is in the answer.
        let read_at = Instant::now();
        let answer =
            tokio::time::timeout(setup.timeout, c.rows(b"SELECT @@global.gtid_binlog_pos")).await;
        match answer {
            Ok(Ok(r)) => match GtidPos::parse(&cell(&r, 0)) {
                Some(pos) => {
                    let _ = tx.try_send(Sample {
                        source: address,
                        read_at,
                        pos,
                    });
                }
                None => conn = None,
            },
            Ok(Err(e)) => {
                tracing::debug!("binlog position check: {e}");
                conn = None;
            }
            Err(_) => conn = None,
        }
    }
}

/// A whole logical packet from the front of `buf`, if it has arrived.
fn take_packet(buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
    let mut at = 0;
    let mut chunks = 0;
    loop {
        let Some((len, _)) = peek_header(&buf[at..]) else {
            return Ok(None);
        };
        if at + len > MAX_EVENT {
            return Err(ProtocolError::TooLarge {
                len: at + len,
                max: MAX_EVENT,
            });
        }
        if buf.len() < at + HEADER_LEN + len {
            return Ok(None);
        }
        at += HEADER_LEN + len;
        chunks += 1;
        if len < MAX_CHUNK {
            break;
        }
    }
    let mut joined = BytesMut::new();
    for _ in 0..chunks {
        let c = decode_chunk(buf).ok_or(ProtocolError::Malformed("binlog packet"))?;
        if chunks == 1 {
            return Ok(Some(c.payload));
        }
        joined.extend_from_slice(&c.payload);
    }
    Ok(Some(joined.freeze()))
}

/// Commits read from the buffer, bumped together.
#[derive(Default)]
struct Batch {
    scopes: Vec<Scope>,
    gtids: Vec<Gtid>,
    ddl: bool,
}

struct Follower {
    cache: Arc<Cache>,
    backends: Arc<BackendTable>,
    setup: Setup,
    tail: Arc<Tail>,
    /// The last transaction bumped, per domain (None before the first stream: start from the
    /// primary's current position, and flush).
    seen: Option<GtidPos>,
    samples: mpsc::Receiver<Sample>,
    queue: VecDeque<Sample>,
    groups: Groups,
    /// Scopes bumped once, waiting for their second bump.
    settle: Vec<Scope>,
    settle_due: Option<tokio::time::Instant>,
    warned_format: bool,
    /// Tells the catalog to read the foreign keys and views again, with the position of the
    /// DDL that asks.
    ddl: tokio::sync::watch::Sender<GtidPos>,
}

impl Follower {
    async fn run(mut self) {
        let mut streams = 0u64;
        loop {
            let Some(address) = primary_address(&self.backends) else {
                if self.tail.down("no primary".into()) {
                    tracing::warn!("binlog: no primary to follow; cache hits stop");
                }
                self.idle(self.setup.check_interval).await;
                continue;
            };
            if streams > 0 {
                self.tail
                    .reconnects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            streams += 1;
            let started = Instant::now();
            let why = match self.stream(&address).await {
                Ok(()) => continue,
                Err(why) => why,
            };
            self.bump_settled().await;
            match &why {
                Broken::Gap(_) => {
                    // Start over from the primary's position, with nothing cached before it.
                    self.seen = None;
                    tracing::error!("binlog of {address}: {why}; the cache is flushed");
                }
                Broken::Moved(_) => {
                    self.tail.unconfirm();
                    tracing::warn!("binlog: {why}; following it from {}", self.position());
                }
                _ => {
                    if self.tail.down(why.to_string()) {
                        tracing::warn!(
                            "binlog of {address}: {why}; cache hits stop within {:?} unless it \
                             is back",
                            self.tail.max_lag
                        );
                    }
                }
            }
            if !matches!(why, Broken::Gap(_) | Broken::Moved(_)) {
                // A stream that failed at once is not retried in a loop.
                let pause = Duration::from_millis(500).saturating_sub(started.elapsed());
                self.idle(pause.max(Duration::from_millis(100))).await;
            }
        }
    }

    fn position(&self) -> String {
        self.seen
            .as_ref()
            .map_or("its current position".into(), |p| p.to_string())
    }

    /// Wait, still taking samples (they confirm nothing while there is no stream, unless the
    /// primary's position is one already seen: then nothing was missed).
    async fn idle(&mut self, d: Duration) {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                s = self.samples.recv() => match s {
                    Some(s) => self.sample(s, None),
                    None => return,
                },
            }
        }
    }

    fn sample(&mut self, s: Sample, source: Option<&str>) {
        if source.is_some_and(|a| a != s.source) {
            return;
        }
        if self.queue.len() >= MAX_SAMPLES {
            self.queue.pop_front();
        }
        self.queue.push_back(s);
        self.confirm();
    }

    fn confirm(&mut self) {
        let Some(seen) = &self.seen else { return };
        while let Some(s) = self.queue.front() {
            if !seen.covers(&s.pos) {
                break;
            }
            self.tail.confirm(s.read_at);
            self.queue.pop_front();
        }
    }

    /// One connection's stream, until it breaks.
    async fn stream(&mut self, address: &str) -> Result<(), Broken> {
        let mut conn = login(address, &self.setup).await?;
        let info = conn
            .rows(b"SELECT @@global.gtid_binlog_pos, @@global.binlog_format")
            .await?;
        let current = GtidPos::parse(&cell(&info, 0)).ok_or(Broken::Unexpected(
            "@@gtid_binlog_pos is not a GTID position",
        ))?;
        let format = cell(&info, 1);
        if !format.eq_ignore_ascii_case("ROW") && !self.warned_format {
            self.warned_format = true;
            tracing::warn!(
                "binlog_format is {format} on {address}: rows changed by triggers are not in \
                 the binlog, so only ROW format invalidates them"
            );
        }
        let flush = self.seen.is_none();
        let start = self.seen.clone().unwrap_or(current);
        conn.execute(
            format!(
                "SET @master_binlog_checksum = @@global.binlog_checksum, \
                 @master_heartbeat_period = {}, @slave_connect_state = '{start}', \
                 @slave_gtid_strict_mode = 1, @slave_gtid_ignore_duplicates = 0, \
                 @mariadb_slave_capability = 4",
                HEARTBEAT.as_nanos()
            )
            .as_bytes(),
        )
        .await?;
        conn.queue_command(com::REGISTER_SLAVE, &self.register());
        conn.framed.flush().await?;
        if let Answer::Err(e) = conn.read_answer().await? {
            return Err(Broken::Refused(e));
        }
        let mut dump = Vec::with_capacity(10);
        dump.extend_from_slice(&4u32.to_le_bytes());
        dump.extend_from_slice(&0u16.to_le_bytes());
        dump.extend_from_slice(&self.setup.server_id.to_le_bytes());
        conn.queue_command(com::BINLOG_DUMP, &dump);
        conn.framed.flush().await?;
        if flush {
            // Whatever was cached before this stream began may be older than a write it
            // will never show.
            self.cache.bump(&[Scope::All]).await;
            self.tail
                .flushes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.seen = Some(start.clone());
        self.queue.clear();
        self.groups.reset();
        self.tail.connected(address, start.to_string());
        tracing::info!("binlog: following {address} from {start}");
        let mut format = Format::default();
        let mut moved = tokio::time::interval(self.setup.check_interval);
        loop {
            let mut batch = Batch::default();
            while let Some(p) = take_packet(&mut conn.framed.rbuf)? {
                self.packet(&p, &mut format, &mut batch)?;
            }
            self.apply(batch).await;
            let settle_due = self.settle_due;
            tokio::select! {
                r = tokio::time::timeout(HEARTBEAT * 3, conn.framed.fill()) => match r {
                    Err(_) => return Err(Broken::Silent(HEARTBEAT * 3)),
                    Ok(r) => { r?; }
                },
                Some(s) = self.samples.recv() => self.sample(s, Some(address)),
                _ = async { tokio::time::sleep_until(settle_due.unwrap_or_else(tokio::time::Instant::now)).await }, if settle_due.is_some() => {
                    self.bump_settled().await;
                }
                _ = moved.tick() => {
                    if let Some(now) = primary_address(&self.backends) {
                        if now != address {
                            return Err(Broken::Moved(now));
                        }
                    }
                }
            }
        }
    }

    /// COM_REGISTER_SLAVE's arguments: server id, host, user, password, port, rank, master id.
    fn register(&self) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&self.setup.server_id.to_le_bytes());
        let host = b"weiche";
        r.push(host.len() as u8);
        r.extend_from_slice(host);
        r.push(0); // user
        r.push(0); // password
        r.extend_from_slice(&self.setup.port.to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r
    }

    fn packet(&mut self, p: &[u8], format: &mut Format, batch: &mut Batch) -> Result<(), Broken> {
        match p.first() {
            Some(0x00) => {}
            Some(0xff) => {
                let e = ErrPacket::decode(p)?;
                return Err(if e.code == ER_MASTER_FATAL_ERROR_READING_BINLOG {
                    Broken::Gap(e)
                } else {
                    Broken::Refused(e)
                });
            }
            Some(0xfe) if p.len() < 9 => return Err(ProtocolError::Closed.into()),
            _ => return Err(Broken::Unexpected("a packet that is not an event")),
        }
        let (_, ev) = event::parse(format, &p[1..])?;
        if let Event::Format(f) = &ev {
            *format = f.clone();
            return Ok(());
        }
        if let Some(c) = self.groups.feed(&ev) {
            self.tail
                .commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            batch.ddl |= c.ddl;
            batch.scopes.extend(c.scopes);
            batch.gtids.extend(c.gtid);
        }
        Ok(())
    }

    /// Bump what a batch of commits changed, then count them as seen.
    async fn apply(&mut self, mut batch: Batch) {
        if !batch.scopes.is_empty() {
            batch.scopes.sort();
            batch.scopes.dedup();
            self.bump(&batch.scopes).await;
            self.settle.extend(batch.scopes);
            if self.settle_due.is_none() {
                self.settle_due = Some(tokio::time::Instant::now() + self.setup.settle);
            }
        }
        if batch.gtids.is_empty() {
            return;
        }
        let seen = self.seen.get_or_insert_with(GtidPos::default);
        for g in batch.gtids {
            seen.advance(g);
        }
        self.tail.position(seen.to_string());
        if batch.ddl {
            self.ddl.send_replace(seen.clone());
        }
        self.confirm();
    }

    async fn bump_settled(&mut self) {
        self.settle_due = None;
        let mut scopes = std::mem::take(&mut self.settle);
        if scopes.is_empty() {
            return;
        }
        scopes.sort();
        scopes.dedup();
        self.bump(&scopes).await;
    }

    async fn bump(&self, scopes: &[Scope]) {
        self.tail
            .bumps
            .fetch_add(scopes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.cache.bump(scopes).await;
    }
}

/// For the fuzzer: bytes as a stream of events, each behind a 2-byte length, parsed and fed
/// to the transaction tracker as the follower does (a format event switches checksums on).
pub fn fuzz_events(data: &[u8]) {
    let mut format = Format::default();
    let mut groups = Groups::default();
    let mut rest = data;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (ev, more) = rest[2..].split_at(n);
        rest = more;
        match event::parse(&format, ev) {
            Ok((_, Event::Format(f))) => format = f,
            Ok((_, e)) => {
                if let Some(c) = groups.feed(&e) {
                    assert!(
                        c.scopes.windows(2).all(|w| w[0] < w[1]),
                        "scopes sorted, once"
                    );
                }
            }
            Err(_) => groups.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::encode_packet;

    #[test]
    fn packets_are_taken_only_when_whole() {
        let mut buf = BytesMut::new();
        encode_packet(&mut buf, 1, b"\x00event one");
        let big = vec![7u8; MAX_CHUNK + 10];
        encode_packet(&mut buf, 2, &big);
        let whole = buf.clone();
        let mut part = BytesMut::from(&whole[..whole.len() - 1]);
        assert_eq!(
            take_packet(&mut part).unwrap().as_deref(),
            Some(&b"\x00event one"[..])
        );
        assert_eq!(
            take_packet(&mut part).unwrap(),
            None,
            "the last byte is missing"
        );
        part.extend_from_slice(&whole[whole.len() - 1..]);
        assert_eq!(take_packet(&mut part).unwrap().as_deref(), Some(&big[..]));
        assert!(part.is_empty());
    }
}
