//! When a command's server fails or takes too long: the watchdog that gives up a command whose
//! backend the monitor took down (or that outlived `routing.query_timeout`), the KILL QUERY
//! sent after a timeout, and what the client is told when a command cannot be retried.

use super::command::Next;
use super::relay::RelayError;
use super::Session;
use crate::backend::ServerConnection;
use crate::protocol::constants::errcode;
use crate::protocol::ErrPacket;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How a command's backend failed, for deciding whether a read runs again elsewhere.
pub enum Failed<'a> {
    /// No connection could be had (the server's own refusals are not retried).
    Refused(&'a ErrPacket),
    /// The connection broke, or Weiche gave the command up.
    Relay(&'a RelayError),
}

impl Session {
    /// A read outside a transaction failed on `backend`: run it again elsewhere when the
    /// backend was unreachable, or failed before any of the answer reached the client. A
    /// timeout is not retried: the statement would time out again. When it is retried, the
    /// backend is skipped by this worker for a while.
    pub fn retry_elsewhere(&mut self, backend: usize, failed: Failed<'_>) -> bool {
        let retry = match failed {
            Failed::Refused(e) => {
                e.code == errcode::ER_BACKEND_UNREACHABLE || e.code == errcode::ER_BACKEND_LOST
            }
            Failed::Relay(e) => {
                e.is_server_side() && !matches!(e, RelayError::Timeout(_)) && !self.answered
            }
        };
        if retry {
            self.drop_current();
            self.shared
                .backends
                .mark_down(backend, super::exec::DOWN_FOR);
            tracing::warn!(
                backend = %self.shared.backends.backends[backend].address,
                "retrying a read on another backend"
            );
        }
        retry
    }

    /// The server connection failed while a command ran (and the command is not retried). The
    /// client learns it from an ERR when none of the answer reached it yet; a session that held
    /// a transaction or other state on that connection has lost it, and is closed after the ERR,
    /// as a direct connection would be.
    pub async fn command_failed(
        &mut self,
        seq: u8,
        e: &RelayError,
        was_pinned: bool,
    ) -> Result<Next, RelayError> {
        self.shared.metrics.error(super::command::kind_of(e));
        if self.answered {
            tracing::warn!("{e}, after part of the answer reached the client: closing");
            return Ok(Next::Close);
        }
        let lost = if was_pinned {
            "; the transaction and session state held there are gone, and nothing was replayed"
        } else {
            ""
        };
        tracing::warn!("{e}: the client gets an error{lost}");
        let err = ErrPacket::new(
            errcode::ER_BACKEND_LOST,
            "08S01",
            format!("Weiche: lost the backend during the command ({e}){lost}"),
        );
        self.send_err(seq.wrapping_add(1), &err)
            .await
            .map_err(RelayError::Client)?;
        Ok(if was_pinned {
            Next::Close
        } else {
            Next::Continue
        })
    }

    /// Stop what a given-up command left running on its server (best effort, in the background).
    pub(super) fn kill_query(&self, backend: usize, thread_id: u32) {
        let address = self.shared.backends.backends[backend].address.clone();
        let params = self.backend_params();
        tokio::spawn(async move {
            let kill = async {
                let mut c = ServerConnection::connect(&address, &params).await.ok()?;
                c.execute(format!("KILL QUERY {thread_id}").as_bytes())
                    .await
                    .ok()
            };
            let done = tokio::time::timeout(params.timeout, kill).await;
            if !matches!(done, Ok(Some(_))) {
                tracing::warn!(backend = %address, "could not KILL QUERY {thread_id} after the query timeout");
            }
        });
    }
}

/// How often a command in flight looks at its backend's state.
const WATCH_TICK: Duration = Duration::from_millis(100);

thread_local! {
    /// This worker's watchdog tick, shared by every command in flight on it.
    static TICK: std::cell::OnceCell<Arc<Notify>> = const { std::cell::OnceCell::new() };
}

/// The worker's tick: notified every WATCH_TICK by one task per worker. A timer per command
/// would cost a system call per statement: a new timer earlier than the runtime's next wake-up
/// makes Tokio wake its driver (an eventfd write and one more epoll_wait).
fn tick() -> Arc<Notify> {
    TICK.with(|t| {
        t.get_or_init(|| {
            let n = Arc::new(Notify::new());
            let ticker = n.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(WATCH_TICK);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    ticker.notify_waiters();
                }
            });
            n
        })
        .clone()
    })
}

/// Resolves when the command in flight on backend `i` should be given up: the monitor took the
/// backend down (or it went down and came back: the connection is from before), or the query
/// timeout passed. Checked on the worker's tick, so a timeout fires up to one tick late.
pub(super) async fn watchdog(
    table: &crate::backend::BackendTable,
    i: usize,
    epoch: u64,
    timeout: Option<Duration>,
) -> RelayError {
    let start = Instant::now();
    let tick = tick();
    loop {
        tick.notified().await;
        if table.epoch(i) != epoch || table.state(i) == crate::backend::State::Down {
            return RelayError::Abandoned(format!(
                "backend {} went down",
                table.backends[i].address
            ));
        }
        if let Some(t) = timeout.filter(|t| start.elapsed() >= *t) {
            let why = format!(
                "no answer from {} within {:.1} s (routing.query_timeout)",
                table.backends[i].address,
                t.as_secs_f64()
            );
            return RelayError::Timeout(why);
        }
    }
}
