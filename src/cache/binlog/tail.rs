//! How far the binlog follower has come, shared with every lookup: hits are served only while
//! the follower has applied, within `max_lag`, a position the primary reported. A sample of the
//! primary's `@@gtid_binlog_pos` read at time T is *confirmed* once every commit up to it has
//! been bumped; then every write committed before T is invalidated. A hit at time `now` may
//! therefore miss only writes committed after `now - max_lag`, whatever broke: the stream, the
//! primary, the network or Weiche's own task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The follower's standing, for lookups, SHOW CACHE and /metrics.
#[derive(Debug)]
pub struct Tail {
    base: Instant,
    /// Nanoseconds after `base` of the newest confirmed sample, plus one (0: none yet).
    confirmed: AtomicU64,
    pub max_lag: Duration,
    /// Transactions read from the stream.
    pub commits: AtomicU64,
    /// Generation bumps the stream caused (first and settle bumps).
    pub bumps: AtomicU64,
    /// Connections to the primary's binlog after the first.
    pub reconnects: AtomicU64,
    /// Times the whole cache was flushed because a gap could not be ruled out.
    pub flushes: AtomicU64,
    /// Lookups sent to the database because the follower was behind.
    pub held: AtomicU64,
    /// Microseconds from a sample's read to its confirmation, the latest.
    delay_us: AtomicU64,
    info: Mutex<Info>,
}

#[derive(Debug, Default, Clone)]
struct Info {
    /// The primary streamed from, when connected.
    source: Option<String>,
    position: String,
    /// Why the stream is down (the last error).
    error: Option<String>,
    /// The catalog of cascades and views was last read after this position's DDL.
    catalog: String,
}

impl Tail {
    pub fn new(max_lag: Duration) -> Tail {
        Tail {
            base: Instant::now(),
            confirmed: AtomicU64::new(0),
            max_lag,
            commits: AtomicU64::new(0),
            bumps: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            held: AtomicU64::new(0),
            delay_us: AtomicU64::new(0),
            info: Mutex::new(Info::default()),
        }
    }

    fn info(&self) -> std::sync::MutexGuard<'_, Info> {
        self.info
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a hit may be served now.
    pub fn fresh(&self) -> bool {
        match self.confirmed.load(Ordering::Acquire) {
            0 => false,
            c => {
                let at = self.base + Duration::from_nanos(c - 1);
                at.elapsed() <= self.max_lag
            }
        }
    }

    /// Every commit up to a position read from the primary at `read_at` has been bumped.
    pub fn confirm(&self, read_at: Instant) {
        let n = read_at.saturating_duration_since(self.base).as_nanos() as u64 + 1;
        self.confirmed.fetch_max(n, Ordering::AcqRel);
        self.delay_us
            .store(read_at.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Nothing confirmed counts any more (the primary changed): no hits until caught up.
    pub fn unconfirm(&self) {
        self.confirmed.store(0, Ordering::Release);
    }

    pub fn connected(&self, source: &str, position: String) {
        let mut i = self.info();
        i.source = Some(source.to_string());
        i.position = position;
        i.error = None;
    }

    pub fn catalog_read(&self, after: String) {
        self.info().catalog = after;
    }

    pub fn position(&self, position: String) {
        self.info().position = position;
    }

    /// The stream is down; true when the reason is new (log it once).
    pub fn down(&self, why: String) -> bool {
        let mut i = self.info();
        i.source = None;
        let new = i.error.as_deref() != Some(why.as_str());
        i.error = Some(why);
        new
    }

    /// Seconds since the newest confirmed sample (None: never confirmed).
    fn age(&self) -> Option<Duration> {
        match self.confirmed.load(Ordering::Acquire) {
            0 => None,
            c => Some((self.base + Duration::from_nanos(c - 1)).elapsed()),
        }
    }

    /// SHOW CACHE lines.
    pub fn describe(&self) -> Vec<(String, String)> {
        let i = self.info().clone();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let state = match (&i.source, &i.error) {
            (Some(s), _) => format!("following {s}"),
            (None, Some(e)) => format!("down: {e}"),
            (None, None) => "connecting".into(),
        };
        vec![
            ("binlog".into(), state),
            (
                "binlog_serving_hits".into(),
                if self.fresh() { "yes" } else { "no" }.into(),
            ),
            ("binlog_position".into(), i.position),
            ("binlog_catalog_position".into(), i.catalog),
            (
                "binlog_confirmed_ms_ago".into(),
                self.age()
                    .map_or("never".into(), |a| a.as_millis().to_string()),
            ),
            (
                "binlog_delay_ms".into(),
                format!(
                    "{:.1}",
                    self.delay_us.load(Ordering::Relaxed) as f64 / 1000.0
                ),
            ),
            ("binlog_commits".into(), get(&self.commits)),
            ("binlog_bumps".into(), get(&self.bumps)),
            ("binlog_reconnects".into(), get(&self.reconnects)),
            ("binlog_flushes".into(), get(&self.flushes)),
            ("binlog_held".into(), get(&self.held)),
        ]
    }

    /// (name, value) counters for /metrics.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("binlog_commits", get(&self.commits)),
            ("binlog_bumps", get(&self.bumps)),
            ("binlog_reconnects", get(&self.reconnects)),
            ("binlog_flushes", get(&self.flushes)),
            ("binlog_held", get(&self.held)),
        ]
    }

    /// (name, value) gauges for /metrics: whether hits are served, and seconds since the
    /// newest confirmation.
    pub fn gauges(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("binlog_serving_hits", if self.fresh() { 1.0 } else { 0.0 }),
            (
                "binlog_confirmed_age_seconds",
                self.age().map_or(f64::INFINITY, |a| a.as_secs_f64()),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_within_max_lag_of_a_confirmation() {
        let t = Tail::new(Duration::from_millis(50));
        assert!(!t.fresh(), "nothing confirmed yet");
        t.confirm(Instant::now());
        assert!(t.fresh());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!t.fresh(), "confirmation too old");
        t.confirm(Instant::now());
        // An older sample confirmed later never moves the mark back.
        t.confirm(Instant::now() - Duration::from_secs(5));
        assert!(t.fresh());
        t.unconfirm();
        assert!(!t.fresh());
    }
}
