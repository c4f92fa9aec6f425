//! A routed command: route it, bring a server connection to the session's state, relay the
//! command and stream its response (through the result cache when it asks for the statement),
//! learn what changed, and run a read once more elsewhere when its server failed before
//! answering.

use super::cached::Step;
use super::outcome::{CommandError, Kind, Next, Retry};
use super::relay::{RelayError, Rewrite};
use super::Session;
use crate::protocol::constants::com;
use crate::protocol::{Chunk, Expect};
use crate::route::Destination;
use crate::sql::{Analysis, Consistency, Target};

/// Route a command (a query with its analysis, or another command: primary), run it and
/// stream its response back, through the result cache when it asks for the statement.
pub(super) async fn run_routed(
    s: &mut Session,
    cmd: Chunk,
    expect: Expect,
    mut analysis: Option<Analysis>,
) -> Result<Next, RelayError> {
    let query = analysis.is_some();
    let fill = if query && cmd.seq == 0 && !cmd.continues() {
        let digest = analysis.as_ref().map(|a| a.digest);
        match s.cache_step(&cmd.payload[1..], digest, None).await? {
            Step::Answered => return Ok(Next::Continue),
            Step::Run(fill) => fill,
        }
    } else {
        None
    };
    if let (Some(_), Some(a)) = (&fill, analysis.as_mut()) {
        // What this read stores, every later reader sees: it must see every write committed
        // before it began, not only this session's.
        a.consistency = Some(Consistency::Global);
    }
    if let Some(a) = analysis.as_ref() {
        s.learn_shared_writes(a).await;
    }
    let effects = analysis.as_ref().map(|a| &a.effects);
    let hold = s.cache_holds(effects);
    let sql = if query { &cmd.payload[1..] } else { &[][..] };
    let outcome = relay_routed(s, &cmd, expect, analysis.as_ref(), hold).await;
    let (next, storable) = match outcome {
        Ok(r) => r,
        Err(e) => {
            s.tap = None;
            if hold {
                // The write's outcome is unknown: bump anyway (the client is told nothing more).
                let _ = s.cache_written(sql, effects).await;
            }
            return Err(e);
        }
    };
    s.cache_fill(fill, storable).await;
    if hold || !s.cache_pending.is_empty() {
        s.cache_written(sql, effects).await?;
    }
    Ok(next)
}

/// Run a routed command: returns what the loop does next and whether the response is whole and
/// clean (no error, no warnings), so that the cache may keep it. A read outside a transaction
/// whose server connection fails before any of the answer reached the client runs once more, on
/// another backend.
pub(super) async fn relay_routed(
    s: &mut Session,
    cmd: &Chunk,
    expect: Expect,
    analysis: Option<&Analysis>,
    hold: bool,
) -> Result<(Next, bool), RelayError> {
    let retryable = cmd.payload[0] == com::QUERY
        && !cmd.continues()
        && !s.pinned()
        && analysis.is_some_and(|a| a.class.target == Target::Replica && !a.effects.writes);
    let insert_id = analysis.is_some_and(|a| a.effects.needs_insert_id);
    let mut avoid = None;
    loop {
        let route = match analysis {
            Some(a) => s.route_avoiding(a, &cmd.payload[1..], avoid),
            None => s.route(&Analysis::primary("command for the primary"), b""),
        };
        let route = match route {
            Ok(r) => r,
            Err(e) => {
                s.shared.metrics.error(e.error_kind());
                s.refuse(cmd.seq, e).await?;
                return Ok((Next::Continue, false));
            }
        };
        tracing::debug!(reason = %route, "route");
        let target = match route.destination {
            Destination::Backend(i) => Some(i),
            Destination::Current => None,
        };
        match s.connect_for(&route, insert_id).await {
            Ok(()) => {}
            Err(CommandError {
                kind: Kind::Relay(e),
                ..
            }) => return Err(e),
            Err(e) => {
                if let Some(b) = target.filter(|_| retryable && avoid.is_none()) {
                    if s.retry_elsewhere(b, e.retry, &cmd.payload[1..]) {
                        avoid = Some(b);
                        continue;
                    }
                }
                s.refuse(cmd.seq, e).await?;
                return Ok((Next::Continue, false));
            }
        }
        let was_pinned = s.pinned();
        let backend = s.current.as_ref().map(|c| c.backend);
        let rewrite = Rewrite {
            hold_last: hold,
            ..Rewrite::default()
        };
        let walker = match s.relay_current(cmd, expect, rewrite).await {
            Ok(w) => w,
            Err(e) if e.is_server_side() => {
                s.drop_current();
                if let Some(b) = backend.filter(|_| retryable && avoid.is_none()) {
                    if s.retry_elsewhere(b, Retry::of(&e), &cmd.payload[1..]) {
                        avoid = Some(b);
                        continue;
                    }
                }
                return Ok((s.command_failed(cmd.seq, &e, was_pinned).await?, false));
            }
            Err(e) => {
                s.drop_current();
                return Err(e);
            }
        };
        if cmd.payload[0] == com::SET_OPTION {
            // The multi-statements option is per connection: this one no longer matches its pool.
            s.pins.untracked = Some("COM_SET_OPTION");
            if let Some(c) = s.current.as_mut() {
                c.conn.broken = true;
            }
        }
        s.learn(&walker, analysis.map(|a| &a.effects));
        let warnings = walker.ok.as_ref().is_some_and(|o| o.warnings > 0);
        return Ok((Next::Continue, !walker.error && !warnings));
    }
}
