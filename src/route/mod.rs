//! Routing policy: which backend a statement goes to, and why. The session supplies what it knows
//! (the statement's class, its pins, when it last wrote); rules from the config, hints in the
//! SQL and load balancing across replicas decide the rest.

use crate::backend::gtid::GtidPos;
use crate::backend::{BackendTable, NoWriter, Pick};
use crate::config::{Config, RuleTarget};
use crate::sql::{Class, Consistency, Target};
use std::borrow::Cow;

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
    pub reason: Cow<'static, str>,
    /// Before the read, wait on the replica until it has applied a position (or give the read
    /// to the primary when it does not within `routing.consistency_wait`).
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
    fn to(i: usize, reason: Cow<'static, str>) -> Route {
        Route {
            destination: Destination::Backend(i),
            reason,
            wait: None,
        }
    }
}

/// What the session knows when a statement arrives.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub user: &'a str,
    pub schema: Option<&'a [u8]>,
    /// The session wrote within the read-your-writes window and its GTID is unknown.
    pub recent_write: bool,
    pub consistency: Consistency,
    /// The GTID position of the session's last write.
    pub session_position: Option<&'a GtidPos>,
    /// A backend to keep away from (a retry after it failed).
    pub avoid: Option<usize>,
}

/// Why no backend can take the statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(transparent)]
    NoWriter(#[from] NoWriter),
    #[error("no replica can serve reads now (routing.no_replica = \"error\")")]
    NoReplica,
}

/// Decide where a statement that is not pinned goes.
pub fn decide(
    config: &Config,
    table: &BackendTable,
    class: &Class,
    text: &[u8],
    ctx: &Context<'_>,
) -> Result<Route, RouteError> {
    let primary = |reason: Cow<'static, str>| Ok(table.primary().map(|i| Route::to(i, reason))?);
    let hinted = class.reason.starts_with("hint");
    if !hinted {
        if let Some(rule) = matching_rule(config, text, ctx) {
            let reason: Cow<'static, str> = Cow::Owned(format!("{} matched", rule.name));
            return match &rule.target {
                RuleTarget::Primary => primary(reason),
                RuleTarget::Replica => replica(config, table, reason, ctx),
                RuleTarget::Backend(a) => match table.find(a) {
                    Some(i) if Some(i) != ctx.avoid => Ok(Route::to(i, reason)),
                    _ => primary(reason),
                },
            };
        }
    }
    match class.target {
        Target::Primary => primary(Cow::Borrowed(class.reason)),
        Target::Replica if ctx.recent_write && !hinted => primary(Cow::Borrowed(
            "read after the session's own write (read-your-writes window)",
        )),
        Target::Replica => replica(config, table, Cow::Borrowed(class.reason), ctx),
    }
}

fn replica(
    config: &Config,
    table: &BackendTable,
    reason: Cow<'static, str>,
    ctx: &Context<'_>,
) -> Result<Route, RouteError> {
    let need = match ctx.consistency {
        Consistency::Session => ctx.session_position.filter(|p| !p.is_empty()),
        _ => None,
    };
    match table.pick_replica(ctx.avoid, need) {
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
        None if config.routing.fallback_to_primary => table
            .primary()
            .map(|i| Route::to(i, fallback_reason(reason)))
            .map_err(RouteError::from),
        None => Err(RouteError::NoReplica),
    }
}

thread_local! {
    /// (fixed reason, its fallback text), found by the reason's address.
    static FALLBACK_REASONS: std::cell::RefCell<Vec<(usize, &'static str)>> = Default::default();
}

/// "<reason>; no replica available, primary serves it". With one backend every read takes this
/// path, so the texts for the classifier's fixed reasons are made once (a handful, kept for the
/// process's life) instead of formatted per read.
fn fallback_reason(reason: Cow<'static, str>) -> Cow<'static, str> {
    let text = |r: &str| format!("{r}; no replica available, primary serves it");
    match reason {
        Cow::Borrowed(r) => Cow::Borrowed(FALLBACK_REASONS.with(|m| {
            let mut m = m.borrow_mut();
            let key = r.as_ptr() as usize;
            match m.iter().find(|(k, _)| *k == key) {
                Some((_, t)) => *t,
                None => {
                    let t: &'static str = Box::leak(text(r).into_boxed_str());
                    m.push((key, t));
                    t
                }
            }
        })),
        Cow::Owned(r) => Cow::Owned(text(&r)),
    }
}

fn matching_rule<'c>(
    config: &'c Config,
    text: &[u8],
    ctx: &Context<'_>,
) -> Option<&'c crate::config::Rule> {
    if config.rules.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(text);
    let mut digest: Option<String> = None;
    config.rules.iter().find(|r| {
        r.user.as_deref().is_none_or(|u| u == ctx.user)
            && r.schema
                .as_deref()
                .is_none_or(|s| ctx.schema == Some(s.as_bytes()))
            && r.text.as_ref().is_none_or(|re| re.is_match(&text))
            && r.digest.as_ref().is_none_or(|re| {
                let d = digest.get_or_insert_with(|| crate::sql::digest::digest(text.as_bytes()));
                re.is_match(d)
            })
    })
}
