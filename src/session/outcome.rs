//! The session's vocabulary for how a command ends: what the loop does next, and why a command
//! failed, with the side that failed and whether running it again elsewhere is safe. Failures
//! keep their kind until the one edge where they become the MySQL error a client reads
//! (`CommandError::to_err_packet`). A leaf: it uses nothing else of `session`'s.

use super::relay::RelayError;
use crate::metrics::ErrorKind;
use crate::protocol::constants::errcode;
use crate::protocol::ErrPacket;
use crate::route::RouteError;
use std::borrow::Cow;
use std::time::Duration;

/// What the loop does after a command.
pub(crate) enum Next {
    Continue,
    Close,
}

/// How long a connection stays with a session after a statement whose results the next one may
/// ask for (ROW_COUNT(), FOUND_ROWS(), SHOW WARNINGS), when nothing else holds it.
pub const HOLD_FOR_NEXT: Duration = Duration::from_millis(500);

/// A backend that refused a connection is skipped for this long.
pub const DOWN_FOR: Duration = Duration::from_secs(2);

/// Which side of Weiche a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's connection, or what the client sent.
    Client,
    /// A backend (or no backend could be had).
    Backend,
    /// Weiche itself: no backend can take the command, or an internal inconsistency.
    Weiche,
}

/// Whether the command may run again on another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    No,
    /// Safe as long as none of the answer reached the client.
    BeforeAnswer,
}

/// What went wrong.
#[derive(Debug)]
pub enum Kind {
    /// An answer a server gives: the backend's own refusal (an unknown database, access
    /// denied), or Weiche's in the server's words (an unknown statement id). Reaches the
    /// client as it is.
    Server(ErrPacket),
    /// No backend can take the command.
    Route(RouteError),
    /// No connection to the backend could be had.
    Unreachable(Cow<'static, str>),
    /// The connection broke before the command was sent (while it was brought to the
    /// session's state).
    Lost(Cow<'static, str>),
    /// All of the backend's connections are in use.
    Exhausted(String),
    /// Weiche's own state is inconsistent (a bug, reported instead of panicking).
    Internal(&'static str),
    /// The relay failed: the client's or the server's connection broke, or Weiche gave the
    /// command up.
    Relay(RelayError),
}

/// Why a command did not run (or did not finish).
#[derive(Debug)]
pub struct CommandError {
    pub kind: Kind,
    pub side: Side,
    pub retry: Retry,
}

impl CommandError {
    /// The server's (or a server-worded) refusal; the session goes on.
    pub fn server(err: ErrPacket) -> CommandError {
        CommandError {
            kind: Kind::Server(err),
            side: Side::Backend,
            retry: Retry::No,
        }
    }

    pub fn route(e: RouteError) -> CommandError {
        CommandError {
            kind: Kind::Route(e),
            side: Side::Weiche,
            retry: Retry::No,
        }
    }

    /// No primary while a read looked for a consistent server: another backend may serve it.
    pub fn no_consistent_server(e: RouteError) -> CommandError {
        CommandError {
            retry: Retry::BeforeAnswer,
            ..CommandError::route(e)
        }
    }

    pub fn unreachable(why: impl Into<Cow<'static, str>>) -> CommandError {
        CommandError {
            kind: Kind::Unreachable(why.into()),
            side: Side::Backend,
            retry: Retry::BeforeAnswer,
        }
    }

    pub fn lost(why: impl Into<Cow<'static, str>>) -> CommandError {
        CommandError {
            kind: Kind::Lost(why.into()),
            side: Side::Backend,
            retry: Retry::BeforeAnswer,
        }
    }

    pub fn internal(why: &'static str) -> CommandError {
        CommandError {
            kind: Kind::Internal(why),
            side: Side::Weiche,
            retry: Retry::No,
        }
    }

    /// The one place where Weiche's failures become MySQL errors.
    pub fn to_err_packet(&self) -> ErrPacket {
        match &self.kind {
            Kind::Server(e) => e.clone(),
            Kind::Route(e) => unreachable_packet(e),
            Kind::Unreachable(why) => unreachable_packet(why),
            Kind::Lost(why) => {
                ErrPacket::new(errcode::ER_BACKEND_LOST, "08S01", format!("Weiche: {why}"))
            }
            Kind::Exhausted(why) => ErrPacket::new(
                errcode::ER_CON_COUNT_ERROR,
                "HY000",
                format!("Weiche: {why}"),
            ),
            Kind::Internal(why) => {
                ErrPacket::new(errcode::ER_UNKNOWN_ERROR, "HY000", format!("Weiche: {why}"))
            }
            Kind::Relay(e) => relay_packet(e),
        }
    }

    /// How it counts in `weiche_errors_total`.
    pub fn error_kind(&self) -> ErrorKind {
        match &self.kind {
            Kind::Relay(e) => kind_of(e),
            Kind::Route(_) => ErrorKind::Routing,
            _ => match self.side {
                Side::Client => ErrorKind::Client,
                Side::Backend | Side::Weiche => ErrorKind::Backend,
            },
        }
    }
}

fn unreachable_packet(why: &dyn std::fmt::Display) -> ErrPacket {
    ErrPacket::new(
        errcode::ER_BACKEND_UNREACHABLE,
        "HY000",
        format!("Weiche: {why}"),
    )
}

/// What a client is told when the relay failed and the session closes.
pub fn relay_packet(e: &RelayError) -> ErrPacket {
    match e {
        RelayError::CommandTooLarge { .. } => ErrPacket::new(
            errcode::ER_NET_PACKET_TOO_LARGE,
            "08S01",
            "Got a packet bigger than 'max_allowed_packet' bytes",
        ),
        _ => ErrPacket::new(
            errcode::ER_BACKEND_LOST,
            "08S01",
            format!("Weiche: lost the connection to the backend ({e})"),
        ),
    }
}

/// What a client is told when its command's server failed mid-command and none of the answer
/// reached it; `lost` names the state that went with the connection.
pub fn lost_during_command(e: &RelayError, lost: &str) -> ErrPacket {
    ErrPacket::new(
        errcode::ER_BACKEND_LOST,
        "08S01",
        format!("Weiche: lost the backend during the command ({e}){lost}"),
    )
}

impl Retry {
    /// A broken server connection may be retried elsewhere (before any answer reached the
    /// client); a timeout not: the statement would time out again.
    pub fn of(e: &RelayError) -> Retry {
        match e {
            RelayError::Server(_) | RelayError::Abandoned(_) => Retry::BeforeAnswer,
            RelayError::Client(_) | RelayError::CommandTooLarge { .. } | RelayError::Timeout(_) => {
                Retry::No
            }
        }
    }
}

impl From<RelayError> for CommandError {
    fn from(e: RelayError) -> Self {
        let side = match &e {
            RelayError::Client(_) | RelayError::CommandTooLarge { .. } => Side::Client,
            _ => Side::Backend,
        };
        CommandError {
            retry: Retry::of(&e),
            kind: Kind::Relay(e),
            side,
        }
    }
}

impl From<crate::backend::BackendError> for CommandError {
    /// A server's own refusal (unknown database, access denied, too many connections) reaches
    /// the client unchanged; any other failure to connect makes the backend unreachable.
    fn from(e: crate::backend::BackendError) -> Self {
        match e {
            crate::backend::BackendError::Refused { err, .. } => CommandError::server(err),
            e => CommandError::unreachable(e.to_string()),
        }
    }
}

impl From<crate::backend::PoolError> for CommandError {
    fn from(e: crate::backend::PoolError) -> Self {
        use crate::backend::PoolError;
        match e {
            PoolError::Backend(e) => e.into(),
            e @ PoolError::Exhausted { .. } => CommandError {
                kind: Kind::Exhausted(e.to_string()),
                side: Side::Backend,
                retry: Retry::No,
            },
        }
    }
}

/// How a relay failure counts in `weiche_errors_total`.
pub(crate) fn kind_of(e: &RelayError) -> ErrorKind {
    match e {
        RelayError::Timeout(_) => ErrorKind::Timeout,
        RelayError::Client(_) | RelayError::CommandTooLarge { .. } => ErrorKind::Client,
        RelayError::Server(_) | RelayError::Abandoned(_) => ErrorKind::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NoWriter;

    #[test]
    fn each_failure_becomes_the_error_clients_act_on() {
        let e = CommandError::unreachable("backend a:1 refused");
        assert_eq!(e.to_err_packet().code, errcode::ER_BACKEND_UNREACHABLE);
        assert_eq!(e.retry, Retry::BeforeAnswer);
        let e = CommandError::lost("gone");
        let packet = e.to_err_packet();
        assert_eq!(
            (packet.code, &packet.sqlstate),
            (errcode::ER_BACKEND_LOST, b"08S01")
        );
        let e = CommandError::route(RouteError::NoWriter(NoWriter::Nobody("x".into())));
        assert_eq!(e.retry, Retry::No);
        assert_eq!(e.error_kind(), ErrorKind::Routing);
        assert!(e
            .to_err_packet()
            .message
            .starts_with("Weiche: no primary (x)"));
        let e = CommandError::from(RelayError::Timeout("slow".into()));
        assert_eq!((e.retry, e.side), (Retry::No, Side::Backend));
        let e = CommandError::from(RelayError::Abandoned("down".into()));
        assert_eq!(e.retry, Retry::BeforeAnswer);
    }
}
