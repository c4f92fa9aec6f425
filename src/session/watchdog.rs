//! The watchdog of a command in flight: it gives the command up when the monitor takes its
//! backend down (or the backend went down and came back), or when it outlives
//! `routing.query_timeout`. One tick per worker serves every command in flight on it.

use super::relay::RelayError;
use crate::backend::{BackendTable, State};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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
    table: &BackendTable,
    i: usize,
    epoch: u64,
    timeout: Option<Duration>,
) -> RelayError {
    let start = Instant::now();
    let tick = tick();
    loop {
        tick.notified().await;
        if table.epoch(i) != epoch || table.state(i) == State::Down {
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
