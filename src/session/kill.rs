//! KILL of a Weiche connection id (`KILL [CONNECTION | QUERY] id`, COM_PROCESS_KILL), with
//! MariaDB's rules: one's own connection answers ERR 1927 and closes (KILL QUERY: ERR 1317);
//! sessions of the same user may always be killed; anyone else's only with the privilege the
//! server requires (CONNECTION ADMIN or SUPER), as the server itself judges it: a session that
//! runs something is killed on its backend with the killer's own rights, and for an idle one the
//! server is asked what the killer may do. KILL CONNECTION answers once the target is closed, so
//! a ping on the killed connection right after fails, as on a direct connection.

use super::outcome::{CommandError, Next};
use super::relay::RelayError;
use super::reply_err;
use super::Session;
use crate::backend::query::{Answer, QueryError};
use crate::backend::ServerConnection;
use crate::protocol::constants::errcode;
use crate::protocol::{ok_payload, ErrPacket};
use std::time::{Duration, Instant};

/// How long KILL CONNECTION waits for its target to close before it answers anyway (a target
/// in the middle of sending a large result finishes writing what is in flight first).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The current user's global privileges that allow killing other users' threads, as the
/// server sees them (roles granted to the account are not consulted).
const MAY_KILL_OTHERS: &[u8] = b"SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
    WHERE PRIVILEGE_TYPE IN ('SUPER', 'CONNECTION ADMIN') \
    AND GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', \
    SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')";

fn not_owner(id: u64) -> ErrPacket {
    ErrPacket::new(
        errcode::ER_KILL_DENIED,
        "HY000",
        format!("You are not owner of thread {id}"),
    )
}

/// Run a KILL of Weiche connection `id`; `query` kills only the running statement.
pub(super) async fn run_kill(
    s: &mut Session,
    seq: u8,
    id: u64,
    query: bool,
) -> Result<Next, RelayError> {
    let target = u32::try_from(id)
        .ok()
        .and_then(|id| s.shared.registry.get(id).map(|h| (id, h)));
    let Some((target_id, handle)) = target else {
        let err = ErrPacket::new(
            errcode::ER_NO_SUCH_THREAD,
            "HY000",
            format!("Unknown thread id: {id}"),
        );
        reply_err(s, seq, err).await?;
        return Ok(Next::Continue);
    };
    if target_id == s.id {
        // The killer is its own victim: what MariaDB answers before it closes.
        let (code, message) = if query {
            (
                errcode::ER_QUERY_INTERRUPTED,
                "Query execution was interrupted",
            )
        } else {
            (errcode::ER_CONNECTION_KILLED, "Connection was killed")
        };
        tracing::info!("KILL of the session's own connection");
        reply_err(s, seq, ErrPacket::new(code, "70100", message)).await?;
        return Ok(if query { Next::Continue } else { Next::Close });
    }
    let same_user = handle.info().1 == s.user;
    let server = handle.server().and_then(|(i, thread_id)| {
        Some((
            s.shared.backends.backends.get(i)?.address.clone(),
            thread_id,
        ))
    });
    let verdict = match server {
        // Nothing runs: Weiche closes the session itself, once the server says the killer may.
        None if same_user => Ok(()),
        None => may_kill_others(s).await.and_then(|may| {
            if may {
                Ok(())
            } else {
                Err(CommandError::server(not_owner(id)))
            }
        }),
        Some((address, thread_id)) => {
            let sql = format!(
                "KILL {} {thread_id}",
                if query { "QUERY" } else { "CONNECTION" }
            );
            tracing::info!(target_session = target_id, backend = %address, thread_id, "KILL");
            kill_on(s, &address, &sql).await.map_err(|e| match e {
                // The server names its own thread id; the client knows Weiche's.
                CommandError {
                    kind: super::outcome::Kind::Server(p),
                    ..
                } if p.code == errcode::ER_KILL_DENIED => CommandError::server(not_owner(id)),
                e => e,
            })
        }
    };
    if let Err(e) = verdict {
        tracing::info!(
            target_session = target_id,
            "KILL refused: {}",
            e.to_err_packet().message
        );
        s.refuse(seq, e).await?;
        return Ok(Next::Continue);
    }
    if !query {
        handle.killed.notify_one();
        let since = Instant::now();
        while s.shared.registry.get(target_id).is_some() && since.elapsed() < CLOSE_WAIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let st = s.status();
    s.client
        .send(seq.wrapping_add(1), &ok_payload(0, st))
        .await
        .map_err(RelayError::Client)?;
    Ok(Next::Continue)
}

/// Run `sql` on a connection of the killer's own to `address`.
async fn kill_on(s: &Session, address: &str, sql: &str) -> Result<(), CommandError> {
    let mut sc = ServerConnection::connect(address, &s.login_params()).await?;
    match sc.execute(sql.as_bytes()).await {
        Ok(_) => Ok(()),
        Err(QueryError::Server(e)) => Err(CommandError::server(e)),
        Err(QueryError::Protocol(e)) => Err(CommandError::lost(format!(
            "lost the connection to {address} during KILL: {e}"
        ))),
    }
}

/// Whether the server lets the killing user kill other users' sessions.
async fn may_kill_others(s: &Session) -> Result<bool, CommandError> {
    let primary = s
        .shared
        .backends
        .primary()
        .map_err(|e| CommandError::route(e.into()))?;
    let address = s.shared.backends.backends[primary].address.clone();
    let mut sc = ServerConnection::connect(&address, &s.login_params()).await?;
    sc.queue_query(MAY_KILL_OTHERS);
    let answer = async {
        sc.framed.flush().await?;
        sc.read_answer().await
    };
    match answer.await {
        Ok(Answer::Rows(r)) => Ok(r
            .rows
            .first()
            .and_then(|row| row.first())
            .is_some_and(|v| v.as_deref().is_some_and(|v| v != b"0"))),
        Ok(Answer::Err(e)) => Err(CommandError::server(e)),
        Ok(Answer::Ok(_)) => Ok(false),
        Err(e) => Err(CommandError::lost(format!(
            "lost the connection to {address} while checking KILL's privilege: {e}"
        ))),
    }
}
