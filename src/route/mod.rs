//! Routing policy: which backend a statement goes to, and why. Everything a decision depends on
//! arrives as data in a `Request` (the statement's analysis, what holds the session to its
//! server connection, the Lua script's choice, the session's writes); `decide` applies the rules
//! in the order docs/routing.md lists them, and `when_behind` says who serves a read whose
//! replica has not applied what the read must see. Nothing else decides where a statement goes.

mod reason;
mod writes;

pub use reason::Reason;
pub use writes::Writes;

use crate::backend::gtid::GtidPos;
use crate::backend::{BackendTable, NoWriter, Pick, State};
use crate::config::{Config, RuleTarget};
use crate::sql::{Analysis, Consistency, Source, Target};

/// Where a command goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The backend at this index of the backend table.
    Backend(usize),
    /// The session's current server connection (pinned, or the previous statement's).
    Current,
}

/// A routing decision with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Destination,
    pub reason: Reason,
    /// No replica could take the read, so the primary serves it.
    pub fell_back: bool,
    /// Before the read, wait on the replica until it has applied a position (or give the read
    /// to `when_behind`'s choice when it does not within `routing.consistency_wait`).
    pub wait: Option<Wait>,
}

/// The position a read waits for on its replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The session's own last write.
    For(GtidPos),
    /// The primary's position when the read starts (consistency = "global").
    PrimaryNow,
}

impl Route {
    pub fn to(i: usize, reason: Reason) -> Route {
        Route {
            destination: Destination::Backend(i),
            reason,
            fell_back: false,
            wait: None,
        }
    }

    /// Stay on the session's current server connection.
    pub fn current(reason: Reason) -> Route {
        Route {
            destination: Destination::Current,
            reason,
            fell_back: false,
            wait: None,
        }
    }
}

impl std::fmt::Display for Route {
    /// The reason as EXPLAIN ROUTE and the logs show it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if self.fell_back {
            write!(f, "; no replica available, primary serves it")?;
        }
        match &self.wait {
            Some(Wait::For(p)) => write!(f, "; waits until it has applied {p}"),
            Some(Wait::PrimaryNow) => {
                write!(f, "; waits until it has applied the primary's position")
            }
            None => Ok(()),
        }
    }
}

/// What holds a session to its current server connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// Nothing: any backend may serve it.
    Free,
    /// Pinned to its connection on `backend` (a transaction, a lock, ...), for `reasons`.
    Pinned { backend: usize, reasons: String },
    /// Its connection is kept for the next statement, which may ask about the last one.
    ForNext,
}

/// How long a session's reads prefer the replica they went to (see `Request::last`).
pub const AFFINITY: std::time::Duration = std::time::Duration::from_secs(1);

/// What a routing decision reads. The session builds it; nothing else is consulted.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub analysis: &'a Analysis,
    /// The statement's text (rules match on it); empty for other commands.
    pub text: &'a [u8],
    pub user: &'a str,
    pub schema: Option<&'a [u8]>,
    pub held: Held,
    /// The backend the Lua script chose (proxy.connection.backend_ndx).
    pub script_backend: Option<usize>,
    pub writes: &'a Writes,
    /// A backend to keep away from (a retry after it failed).
    pub avoid: Option<usize>,
    /// The backend the session's previous statement ran on, for at most `AFFINITY`: among
    /// replicas equally loaded, a read stays there (the server's thread and caches are warm,
    /// and the session's pooled connection is likely the one it just gave back).
    pub last: Option<usize>,
}

/// Why no backend can take the statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    NoWriter(#[from] NoWriter),
    #[error("no replica can serve reads now (routing.no_replica = \"error\")")]
    NoReplica,
}

/// Decide where a statement goes. The first rule that applies decides, in this order:
/// pins, the previous statement's server, the Lua script's backend, hints, `[[rules]]`, the
/// classifier; reads then go to a replica unless the session's own recent write keeps them on
/// the primary, and a replica that has not applied the session's writes gets a `wait`.
pub fn decide(config: &Config, table: &BackendTable, r: Request<'_>) -> Result<Route, RouteError> {
    let a = r.analysis;
    match r.held {
        Held::Pinned { backend, reasons } => {
            if r.script_backend.is_some_and(|want| want != backend) {
                tracing::info!(
                    "Lua: backend_ndx move refused: the session must stay on its connection ({reasons})"
                );
            }
            return Ok(Route::current(Reason::Pinned(reasons)));
        }
        Held::ForNext if a.effects.needs_previous => return Ok(Route::current(Reason::Previous)),
        Held::ForNext | Held::Free => {}
    }
    if let Some(i) = r.script_backend {
        return Ok(Route::to(i, Reason::Script));
    }
    // A replica hint asks for any replica: eventual, unless a consistency hint says more.
    let hinted_replica = a.class.source == Source::Hint && a.class.target == Target::Replica;
    let consistency = a.consistency.unwrap_or(if hinted_replica {
        Consistency::Eventual
    } else {
        config.routing.consistency
    });
    let read_only_transaction =
        a.effects.read_only_transaction && config.routing.read_only_transactions_on_replica;
    let (target, reason) = if read_only_transaction {
        (Target::Replica, Reason::ReadOnlyTransaction)
    } else if a.class.source == Source::Hint {
        (a.class.target, Reason::Hint(a.class.reason))
    } else {
        (a.class.target, Reason::Classifier(a.class.reason))
    };
    let ctx = Context {
        consistency,
        position: r.writes.position(),
        avoid: r.avoid,
        last: r.last,
    };
    let primary = |reason: Reason| Ok(table.primary().map(|i| Route::to(i, reason))?);
    if !matches!(reason, Reason::Hint(_)) {
        if let Some((n, rule)) = matching_rule(config, &r) {
            let reason = Reason::Rule(n);
            return match &rule.target {
                RuleTarget::Primary => primary(reason),
                RuleTarget::Replica if crate::sql::classify::binding_primary(a) => {
                    primary(Reason::Classifier(a.class.reason))
                }
                RuleTarget::Replica => replica(config, table, reason, &ctx),
                RuleTarget::Backend(addr) => match table.find(addr) {
                    Some(i) if Some(i) != r.avoid => Ok(Route::to(i, reason)),
                    _ => primary(reason),
                },
            };
        }
    }
    let recent_write = consistency != Consistency::Eventual
        && r.writes.within(config.routing.read_your_writes_window);
    match target {
        Target::Primary => primary(reason),
        Target::Replica if recent_write && !matches!(reason, Reason::Hint(_)) => {
            primary(Reason::ReadYourWrites)
        }
        Target::Replica => replica(config, table, reason, &ctx),
    }
}

/// What a replica read needs to know.
struct Context<'a> {
    consistency: Consistency,
    position: Option<&'a GtidPos>,
    avoid: Option<usize>,
    last: Option<usize>,
}

fn replica(
    config: &Config,
    table: &BackendTable,
    reason: Reason,
    ctx: &Context<'_>,
) -> Result<Route, RouteError> {
    let need = match ctx.consistency {
        Consistency::Session => ctx.position.filter(|p| !p.is_empty()),
        _ => None,
    };
    match table.pick_replica(ctx.avoid, ctx.last, need) {
        Some(Pick { index, .. }) if ctx.consistency == Consistency::Global => Ok(Route {
            wait: Some(Wait::PrimaryNow),
            ..Route::to(index, reason)
        }),
        Some(Pick {
            index,
            caught_up: true,
        }) => Ok(Route::to(index, reason)),
        Some(Pick { index, .. }) => Ok(Route {
            wait: need.cloned().map(Wait::For),
            ..Route::to(index, reason)
        }),
        None if config.routing.fallback_to_primary => Ok(Route {
            fell_back: true,
            ..Route::to(table.primary()?, reason)
        }),
        None => Err(RouteError::NoReplica),
    }
}

/// Who serves a read whose replica (`route`'s) has not applied `need` in time: the primary.
/// Without one (it is down, or two servers are writable), any backend that is up and known to
/// have applied `need`; when none has, the route's replica as it is (what the read should see
/// was written on a primary that is gone: reads go on without it rather than not at all).
pub fn when_behind(
    table: &BackendTable,
    route: &Route,
    need: Option<&GtidPos>,
) -> Result<usize, RouteError> {
    let e = match table.primary() {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    if let Some(i) = need.and_then(|n| table.applied_somewhere(n)) {
        tracing::debug!(
            "{e}; {} has applied the session's writes and serves the read",
            table.backends[i].address
        );
        return Ok(i);
    }
    match route.destination {
        Destination::Backend(i) if table.state(i) == State::Up => {
            tracing::debug!(
                "{e}; no server that is up has applied {}: {} serves the read without it",
                need.map_or("the primary's position".into(), |n| n.to_string()),
                table.backends[i].address
            );
            Ok(i)
        }
        _ => Err(e.into()),
    }
}

/// The first `[[rules]]` entry that matches, with its number (from 1).
fn matching_rule<'c>(
    config: &'c Config,
    r: &Request<'_>,
) -> Option<(usize, &'c crate::config::Rule)> {
    if config.rules.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(r.text);
    let mut digest: Option<String> = None;
    config.rules.iter().enumerate().find_map(|(i, rule)| {
        let matches = rule.user.as_deref().is_none_or(|u| u == r.user)
            && rule
                .schema
                .as_deref()
                .is_none_or(|s| r.schema == Some(s.as_bytes()))
            && rule.text.as_ref().is_none_or(|re| re.is_match(&text))
            && rule.digest.as_ref().is_none_or(|re| {
                let d = digest.get_or_insert_with(|| crate::sql::digest::digest(text.as_bytes()));
                re.is_match(d)
            });
        matches.then_some((i + 1, rule))
    })
}

#[cfg(test)]
mod tests;
