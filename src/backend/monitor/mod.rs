//! The backend monitor: one task per backend, each with its own connection (the monitor
//! account), checks its backend every `monitor.interval`. After each check the whole topology
//! is judged again (`judge`) and the verdict goes to the backend table that routing reads: who
//! takes writes, each backend's role and state, lag and GTID position. A backend is down after
//! `down_after` failed checks in a row and back after `up_after` good ones.

mod galera;
mod judge;
mod probe;

pub use judge::{judge, History, Judged, Observation};
pub use probe::{Io, Probe, Prober, Replication};

use crate::backend::{BackendTable, State, Writer};
use crate::config::Config;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every how many checks the monitor looks for changed global variables (2 s at the default
/// interval of 0.5 s; a SET GLOBAL through Weiche takes effect at once, see `session`).
const GLOBALS_EVERY: u64 = 4;

/// What all monitor tasks share.
struct Shared {
    table: Arc<BackendTable>,
    max_lag: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    obs: Vec<Observation>,
    /// When each backend last answered or failed a check.
    checked_at: Vec<Option<Instant>>,
    /// Consecutive failed and good checks, per backend.
    fails: Vec<u32>,
    oks: Vec<u32>,
    history: History,
    /// A new writer the verdicts point to, since when. It takes effect once every healthy
    /// backend was checked after that: the checks of different backends are not simultaneous,
    /// and an operator's promotion (old primary read-only, then new one writable) must not look
    /// like two primaries, or none, on the strength of one stale check.
    proposal: Option<(Writer, Instant)>,
}

/// Start the monitor tasks on the current runtime. The returned receiver counts backends
/// checked at least once (start-up waits for all of them, briefly).
pub fn start(table: Arc<BackendTable>, config: &Config) -> tokio::sync::watch::Receiver<usize> {
    let obs: Vec<Observation> = config
        .backends
        .iter()
        .map(|b| Observation {
            address: b.address.clone(),
            configured_role: b.role,
            healthy: true,
            probe: None,
        })
        .collect();
    let n = obs.len();
    let shared = Arc::new(Shared {
        table,
        max_lag: config.routing.max_replication_lag,
        inner: Mutex::new(Inner {
            obs,
            checked_at: vec![None; n],
            proposal: None,
            fails: vec![0; n],
            oks: vec![0; n],
            history: History::default(),
        }),
    });
    if config.monitor.is_none() {
        tracing::warn!(
            "no monitor account ([monitor] user or --monitor-user): health checks only connect; \
             roles stay as configured and replication lag is not measured"
        );
    }
    let (checked, rx) = tokio::sync::watch::channel(0usize);
    let checked = Arc::new(checked);
    for (i, b) in config.backends.iter().enumerate() {
        let prober = Prober::new(
            &b.address,
            config.monitor.clone(),
            config.monitoring.timeout,
            config.tls.backend.clone(),
        );
        tokio::spawn(watch(
            shared.clone(),
            i,
            prober,
            config.monitoring.clone(),
            checked.clone(),
        ));
    }
    rx
}

async fn watch(
    shared: Arc<Shared>,
    i: usize,
    mut prober: Prober,
    settings: crate::config::Monitoring,
    checked: Arc<tokio::sync::watch::Sender<usize>>,
) {
    let mut first = true;
    let mut checks = 0u64;
    let mut globals: Option<probe::Globals> = None;
    loop {
        let started = tokio::time::Instant::now();
        let result = prober.check().await;
        let ok = result.is_ok();
        shared.record(i, result, &settings);
        if ok && checks % GLOBALS_EVERY == 0 {
            if let Some(now) = prober.globals().await {
                shared
                    .table
                    .set_session_timeouts(i, now.wait_timeout, now.interactive_timeout);
                if globals
                    .as_ref()
                    .is_some_and(|g| g.fingerprint != now.fingerprint)
                {
                    tracing::info!(
                        backend = %shared.table.backends[i].address,
                        "the server's global variables changed: pooled connections from before are not lent again"
                    );
                    shared.table.globals_changed(i);
                }
                globals = Some(now);
            }
        }
        checks += 1;
        if first {
            first = false;
            checked.send_modify(|c| *c += 1);
        }
        // A SET GLOBAL through Weiche: read the globals again at once, not at the next turn.
        let reread = shared.table.backends[i].live.globals_reread.notified();
        tokio::select! {
            _ = tokio::time::sleep_until(started + settings.interval) => {}
            _ = reread => checks = 0,
        }
    }
}

impl Shared {
    fn record(
        &self,
        i: usize,
        result: Result<Probe, String>,
        settings: &crate::config::Monitoring,
    ) {
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let failure = match result {
            Ok(p) => {
                inner.fails[i] = 0;
                inner.oks[i] = inner.oks[i].saturating_add(1);
                if !inner.obs[i].healthy && inner.oks[i] >= settings.up_after {
                    inner.obs[i].healthy = true;
                }
                inner.obs[i].probe = Some(p);
                None
            }
            Err(e) => {
                inner.oks[i] = 0;
                inner.fails[i] = inner.fails[i].saturating_add(1);
                if inner.obs[i].healthy && inner.fails[i] >= settings.down_after {
                    inner.obs[i].healthy = false;
                }
                tracing::debug!(backend = %inner.obs[i].address, "check failed: {e}");
                Some(e)
            }
        };
        let now = Instant::now();
        inner.checked_at[i] = Some(now);
        let Inner {
            obs,
            history,
            checked_at,
            proposal,
            ..
        } = &mut *inner;
        let (writer, judged) = judge(obs, history, self.max_lag, now);
        if writer == self.table.writer() {
            *proposal = None;
        } else {
            match proposal {
                Some((w, since)) if *w == writer => {
                    let since = *since;
                    let confirmed = obs
                        .iter()
                        .zip(checked_at.iter())
                        .all(|(o, t)| !o.healthy || t.is_some_and(|t| t > since));
                    if confirmed {
                        self.table.set_writer(writer);
                        *proposal = None;
                    }
                }
                _ => *proposal = Some((writer, now)),
            }
        }
        for (k, j) in judged.iter().enumerate() {
            self.apply(k, j, k == i, failure.as_deref());
        }
        // What each backend has applied (a primary's own writes included): consistent reads
        // use it to pick a server that has the session's writes.
        if let Some(probe) = obs[i]
            .probe
            .as_ref()
            .filter(|p| p.applied.is_some() || p.position.is_some())
        {
            let mut known = probe.applied.clone().unwrap_or_default();
            if let Some(p) = &probe.position {
                known.merge(p);
            }
            self.table.set_known(i, known);
        }
        self.table.report(i, |r| {
            r.lag_seconds = judged[i].lag_seconds;
            r.lag_transactions = judged[i].lag_transactions;
            r.position = obs[i]
                .probe
                .as_ref()
                .and_then(|p| p.position.as_ref())
                .map(|p| p.to_string());
        });
    }

    /// Apply the verdict on backend `k`; `checked`: it is the one just checked, which failed
    /// with `failure` if that is given.
    fn apply(&self, k: usize, j: &Judged, checked: bool, failure: Option<&str>) {
        self.table.set_role(k, j.role);
        let now = self.table.state(k);
        // An operator's OFFLINE stays until the operator lifts it; the details of a backend
        // not checked now change only with its state.
        if now == State::Offline || (!checked && now == j.state) {
            return;
        }
        let detail = match (j.state, failure.filter(|_| checked)) {
            (State::Down, Some(e)) => e,
            _ => &j.detail,
        };
        self.table.set_state(k, j.state, detail);
    }
}
