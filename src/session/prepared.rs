//! Prepared statements over pooled connections: the client's statement ids are Weiche's; each
//! execution runs where its route says (reads on replicas), on a connection where the statement
//! is prepared (transparently, the first time it runs there), with the server's id and the
//! parameter types that connection needs.

use super::cached::Step;
use super::outcome::{CommandError, Kind, Next, Retry};
use super::relay::{RelayError, Rewrite};
use super::stmt::{
    bulk_types, execute_info, execute_params, rewrite_bulk, rewrite_execute, rewrite_id,
    statement_id, ClientStatement, LAST_PREPARED,
};
use super::Session;
use crate::protocol::constants::{com, errcode, status};
use crate::protocol::{ok_payload, Chunk, ErrPacket, Expect};
use crate::route::{Destination, Reason, Route};

fn unknown(id: u32, what: &str) -> ErrPacket {
    ErrPacket::new(
        errcode::ER_UNKNOWN_STMT_HANDLER,
        "HY000",
        format!("Unknown prepared statement handler ({id}) given to {what}"),
    )
}

pub(crate) async fn dispatch(s: &mut Session, mut cmd: Chunk) -> Result<Next, RelayError> {
    let code = cmd.payload[0];
    if code != com::STMT_PREPARE && statement_id(&cmd.payload) == Some(LAST_PREPARED) {
        // From here on the command names the statement by the client id Weiche gave it.
        let id = s.stmts.resolve(LAST_PREPARED);
        cmd.payload = rewrite_id(&cmd.payload, id);
    }
    let was_pinned = s.pinned();
    let result = match code {
        com::STMT_PREPARE => prepare(s, &cmd).await,
        com::STMT_EXECUTE => execute_cached(s, &cmd).await,
        com::STMT_BULK_EXECUTE => bulk(s, &cmd).await,
        com::STMT_SEND_LONG_DATA => long_data(s, &cmd).await,
        com::STMT_FETCH => fetch(s, &cmd).await,
        com::STMT_RESET => reset(s, &cmd).await,
        _ => {
            close(s, &cmd);
            Ok(())
        }
    };
    match result {
        Ok(()) => Ok(Next::Continue),
        // COM_STMT_SEND_LONG_DATA and COM_STMT_CLOSE get no answer, not even an error.
        Err(CommandError {
            kind: Kind::Relay(e),
            ..
        }) => {
            s.drop_current();
            if e.is_server_side() && code != com::STMT_SEND_LONG_DATA && !cmd.continues() {
                return s.command_failed(cmd.seq, &e, was_pinned).await;
            }
            Err(e)
        }
        Err(_) if code == com::STMT_SEND_LONG_DATA => Ok(Next::Continue),
        Err(e) => {
            s.refuse(cmd.seq, e).await?;
            Ok(Next::Continue)
        }
    }
}

async fn prepare(s: &mut Session, cmd: &Chunk) -> Result<(), CommandError> {
    let max = s.config.limits.max_prepared_statements;
    let text = cmd.payload.len().saturating_sub(1);
    if s.stmts.bytes() + text > super::stmt::MAX_PREPARED_BYTES {
        s.shared
            .metrics
            .limit(crate::metrics::Limit::PreparedStatements);
        tracing::warn!("refused a prepare: the session's statements would hold over 64 MiB");
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_MAX_PREPARED_STMT_COUNT_REACHED,
            "42000",
            format!(
                "Can't create more than max_prepared_stmt_count statements: the session's \
                 prepared statements hold {} bytes of text, Weiche's limit is {} per session",
                s.stmts.bytes(),
                super::stmt::MAX_PREPARED_BYTES
            ),
        )));
    }
    if s.stmts.count() >= max {
        s.shared
            .metrics
            .limit(crate::metrics::Limit::PreparedStatements);
        tracing::warn!("refused a prepare: the session holds {max} prepared statements");
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_MAX_PREPARED_STMT_COUNT_REACHED,
            "42000",
            format!(
                "Can't create more than max_prepared_stmt_count statements (current value: {max}; \
                 Weiche's limits.max_prepared_statements per session)"
            ),
        )));
    }
    let sql = cmd.payload.slice(1..);
    let analysis = if cmd.continues() {
        crate::sql::analyze_prefix("a statement longer than one packet")
    } else {
        s.analyze(&sql)
    };
    let route = s.route(&analysis, &sql)?;
    s.connect_for(&route, false).await?;
    let client_id = s.stmts.add(ClientStatement {
        sql: sql.clone(),
        params: 0,
        analysis,
        types: None,
    });
    let walker = s
        .relay_current(
            cmd,
            Expect::Prepare,
            Rewrite {
                hold_last: false,
                untrack_ok: false,
                statement_id: Some(client_id),
            },
        )
        .await?;
    let (Some(server_id), false) = (walker.statement_id, walker.error) else {
        s.stmts.remove(client_id);
        s.learn(&walker, None);
        return Ok(());
    };
    if let Some(st) = s.stmts.get_mut(client_id) {
        st.params = walker.prepare_params;
    }
    if let Some(cur) = s.current.as_mut() {
        let schema = cur.conn.state.session.schema.clone();
        if let Some(old) = cur.conn.prepared.get(&schema, &sql).map(|o| o.id) {
            cur.conn.queue_command(com::STMT_CLOSE, &old.to_le_bytes());
        }
        if let Some(evicted) = cur.conn.prepared.insert(&schema, &sql, server_id) {
            cur.conn
                .queue_command(com::STMT_CLOSE, &evicted.to_le_bytes());
        }
    }
    s.learn(&walker, None);
    Ok(())
}

/// Make sure the current connection has `client_id` prepared; its server id.
async fn ensure_prepared(s: &mut Session, client_id: u32) -> Result<u32, CommandError> {
    let Some(sql) = s.stmts.get(client_id).map(|st| st.sql.clone()) else {
        return Err(CommandError::server(unknown(
            client_id,
            "mysqld_stmt_execute",
        )));
    };
    let Some(cur) = s.current.as_mut() else {
        return Err(CommandError::from(RelayError::Server(
            crate::protocol::ProtocolError::Closed,
        )));
    };
    let schema = cur.conn.state.session.schema.clone();
    if let Some(st) = cur.conn.prepared.get(&schema, &sql) {
        return Ok(st.id);
    }
    match cur.conn.prepare(&sql).await {
        Ok(Ok(id)) => {
            if let Some(evicted) = cur.conn.prepared.insert(&schema, &sql, id) {
                cur.conn
                    .queue_command(com::STMT_CLOSE, &evicted.to_le_bytes());
            }
            Ok(id)
        }
        Ok(Err(e)) => Err(CommandError::server(e)),
        Err(e) => {
            cur.conn.broken = true;
            Err(CommandError::from(RelayError::Server(e)))
        }
    }
}

/// Route an execution of a client statement: where its text says, or the pinned connection;
/// away from `avoid` (a backend that just failed).
fn route_statement(
    s: &Session,
    client_id: u32,
    avoid: Option<usize>,
) -> Result<Route, CommandError> {
    let Some(st) = s.stmts.get(client_id) else {
        return Err(CommandError::server(unknown(
            client_id,
            "mysqld_stmt_execute",
        )));
    };
    s.route_avoiding(&st.analysis, &st.sql, avoid)
}

/// COM_STMT_EXECUTE through the result cache: a cacheable read is answered from it or fills
/// it (keyed by the statement's text and the execute's parameters and types); a write bumps the
/// generations of what it touched before its OK reaches the client.
async fn execute_cached(s: &mut Session, cmd: &Chunk) -> Result<(), CommandError> {
    let id = statement_id(&cmd.payload).unwrap_or(0);
    // The common case costs nothing: no hint or rule can ask, and nothing to invalidate.
    let involved = s.stmts.get(id).is_some_and(|st| {
        s.cache_may_ask(&st.sql)
            || (s.shared.cache.is_some()
                && (st.analysis.effects.writes || !s.cache_pending.is_empty()))
    });
    if !involved {
        return execute(s, cmd, false).await.map(|_| ());
    }
    let Some(st) = s.stmts.get(id).cloned() else {
        return execute(s, cmd, false).await.map(|_| ());
    };
    let info = execute_info(&cmd.payload, st.params);
    // Types sent now are in force from now on, also when the cache answers this execute: the
    // next one that reaches a server must carry them (see execute_on).
    if let (Some(t), Some(cur)) = (
        info.as_ref().and_then(|i| i.types.clone()),
        s.stmts.get_mut(id),
    ) {
        cur.types = Some(t);
    }
    let fill = match &info {
        Some(i)
            if s.shared.cache.is_some()
                && cmd.seq == 0
                && !cmd.continues()
                && !i.cursor
                && !s.pins.long_data.contains(&id) =>
        {
            let types = i.types.as_ref().or(st.types.as_ref());
            let Some(values) = execute_params(&cmd.payload, st.params, types.map(|t| &t[..]))
            else {
                return execute(s, cmd, false).await.map(|_| ());
            };
            match s
                .cache_step(&st.sql, Some(st.analysis.digest), Some(&values))
                .await?
            {
                Step::Answered => return Ok(()),
                Step::Run(fill) => fill,
            }
        }
        _ => None,
    };
    if fill.is_some() {
        // As for text reads: a result every later reader sees must see every earlier write.
        if let Some(st) = s.stmts.get_mut(id) {
            st.analysis.consistency = Some(crate::sql::Consistency::Global);
        }
    }
    s.learn_shared_writes(&st.analysis).await;
    let hold = s.cache_holds(Some(&st.analysis.effects));
    let result = execute(s, cmd, hold).await;
    if let Some(cur) = s.stmts.get_mut(id) {
        cur.analysis.consistency = st.analysis.consistency;
    }
    s.cache_fill(fill, matches!(result, Ok(true))).await;
    if hold || !s.cache_pending.is_empty() {
        let written = s.cache_written(&st.sql, Some(&st.analysis.effects)).await;
        if result.is_ok() {
            written?;
        }
    }
    result.map(|_| ())
}

/// Run a COM_STMT_EXECUTE; true when its response was whole and clean (no error, no warnings).
async fn execute(s: &mut Session, cmd: &Chunk, hold: bool) -> Result<bool, CommandError> {
    let id = statement_id(&cmd.payload).unwrap_or(0);
    let Some(st) = s.stmts.get(id) else {
        return Err(CommandError::server(unknown(id, "mysqld_stmt_execute")));
    };
    let params = st.params;
    let Some(info) = execute_info(&cmd.payload, params) else {
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_MALFORMED_PACKET,
            "HY000",
            "Malformed COM_STMT_EXECUTE packet",
        )));
    };
    if let (Some(t), Some(st)) = (&info.types, s.stmts.get_mut(id)) {
        st.types = Some(t.clone());
    }
    // A read outside a transaction runs once more elsewhere when its server fails before
    // answering (long data lives on one connection: not then).
    let retryable = !cmd.continues()
        && !s.pinned()
        && !s.pins.long_data.contains(&id)
        && s.stmts.get(id).is_some_and(|st| {
            st.analysis.class.target == crate::sql::Target::Replica && !st.analysis.effects.writes
        });
    s.answered = false;
    let route = route_statement(s, id, None)?;
    let target = match route.destination {
        Destination::Backend(i) => Some(i),
        Destination::Current => None,
    };
    let first = execute_on(s, cmd, id, params, &info, &route, hold).await;
    let Some(backend) = target.filter(|_| retryable) else {
        return first;
    };
    let retry = first.as_ref().err().map_or(Retry::No, |e| e.retry);
    let sql = s.stmts.get(id).map(|st| st.sql.clone()).unwrap_or_default();
    if !s.retry_elsewhere(backend, retry, &sql) {
        return first;
    }
    let route = route_statement(s, id, Some(backend))?;
    execute_on(s, cmd, id, params, &info, &route, hold).await
}

/// One attempt at a COM_STMT_EXECUTE, on `route`.
async fn execute_on(
    s: &mut Session,
    cmd: &Chunk,
    id: u32,
    params: u16,
    info: &super::stmt::ExecuteInfo,
    route: &Route,
    hold: bool,
) -> Result<bool, CommandError> {
    let insert_id = s
        .stmts
        .get(id)
        .is_some_and(|st| st.analysis.effects.needs_insert_id);
    s.connect_for(route, insert_id).await?;
    let server_id = ensure_prepared(s, id).await?;
    let Some(st) = s.stmts.get(id).cloned() else {
        return Err(CommandError::server(unknown(id, "mysqld_stmt_execute")));
    };
    let insert = types_for_server(s, &st, info.types.as_ref(), params)?;
    let payload = if cmd.continues() {
        // A 16 MiB execute: only the id changes, in place.
        let mut p = cmd.payload.to_vec();
        p[1..5].copy_from_slice(&server_id.to_le_bytes());
        bytes::Bytes::from(p)
    } else {
        rewrite_execute(&cmd.payload, server_id, params, insert.as_deref())
    };
    let out = Chunk {
        seq: cmd.seq,
        payload,
    };
    s.pins.long_data.retain(|&l| l != id);
    let rewrite = Rewrite {
        hold_last: hold,
        ..Rewrite::default()
    };
    let walker = s.relay_current(&out, Expect::Results, rewrite).await?;
    if walker
        .status
        .is_some_and(|st| st & status::CURSOR_EXISTS != 0)
        && !s.pins.cursors.contains(&id)
    {
        s.pins.cursors.push(id);
    }
    s.learn(&walker, Some(&st.analysis.effects));
    let warnings = walker.ok.as_ref().is_some_and(|o| o.warnings > 0);
    Ok(!walker.error && !warnings)
}

/// MariaDB's COM_STMT_BULK_EXECUTE (executemany in one round trip): where the statement's text
/// routes it, on a connection where it is prepared, with the types that server statement needs;
/// the server's one OK (affected rows summed over the rows) goes back as it came. A write
/// invalidates the cache as an execute does.
async fn bulk(s: &mut Session, cmd: &Chunk) -> Result<(), CommandError> {
    if s.mariadb_caps & crate::protocol::constants::mariadb_cap::STMT_BULK_OPERATIONS == 0 {
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_UNKNOWN_COM,
            "08S01",
            "Unknown command: COM_STMT_BULK_EXECUTE needs MARIADB_CLIENT_STMT_BULK_OPERATIONS",
        )));
    }
    let id = statement_id(&cmd.payload).unwrap_or(0);
    let Some(st) = s.stmts.get(id).cloned() else {
        return Err(CommandError::server(unknown(
            id,
            "mysqld_stmt_bulk_execute",
        )));
    };
    let Some(sent) = bulk_types(&cmd.payload, st.params) else {
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_MALFORMED_PACKET,
            "HY000",
            "Malformed COM_STMT_BULK_EXECUTE packet",
        )));
    };
    if let (Some(t), Some(cur)) = (&sent, s.stmts.get_mut(id)) {
        cur.types = Some(t.clone());
    }
    let st = s.stmts.get(id).cloned().unwrap_or(st);
    s.answered = false;
    let route = route_statement(s, id, None)?;
    s.connect_for(&route, st.analysis.effects.needs_insert_id)
        .await?;
    let server_id = ensure_prepared(s, id).await?;
    let insert = types_for_server(s, &st, sent.as_ref(), st.params)?;
    if insert.is_some() && cmd.continues() {
        // The types cannot be put into a packet that continues in place.
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_WRONG_ARGUMENTS,
            "HY000",
            "Incorrect arguments to mysqld_stmt_bulk_execute: a bulk longer than one packet \
             must send its parameter types",
        )));
    }
    let out = Chunk {
        seq: cmd.seq,
        payload: rewrite_bulk(&cmd.payload, server_id, insert.as_deref()),
    };
    let hold = s.cache_holds(Some(&st.analysis.effects));
    let rewrite = Rewrite {
        hold_last: hold,
        ..Rewrite::default()
    };
    let result = s.relay_current(&out, Expect::Results, rewrite).await;
    if let Ok(walker) = &result {
        s.learn(walker, Some(&st.analysis.effects));
    }
    if hold || !s.cache_pending.is_empty() {
        let written = s.cache_written(&st.sql, Some(&st.analysis.effects)).await;
        if result.is_ok() {
            written?;
        }
    }
    result.map(|_| ()).map_err(CommandError::from)
}

/// The types to put into a command for the server statement of `st` on the current connection:
/// none when the command sends its own (`sent`) or the server statement has these already.
/// Notes what the server statement holds from now on. ERR 1210 when values would reach it
/// without any types ever bound.
fn types_for_server(
    s: &mut Session,
    st: &ClientStatement,
    sent: Option<&bytes::Bytes>,
    params: u16,
) -> Result<Option<bytes::Bytes>, CommandError> {
    let Some(cur) = s.current.as_mut() else {
        return Err(CommandError::from(RelayError::Server(
            crate::protocol::ProtocolError::Closed,
        )));
    };
    let schema = cur.conn.state.session.schema.clone();
    let Some(e) = cur.conn.prepared.get(&schema, &st.sql) else {
        return Ok(None);
    };
    let insert = match (sent, &st.types) {
        (None, Some(t)) if e.types.as_ref() != Some(t) => Some(t.clone()),
        _ => None,
    };
    if params > 0 && sent.is_none() && st.types.is_none() && e.types.is_none() {
        // Values without any types ever bound: MariaDB 10.11 crashes on such an execute
        // (signal 11 in Item_param::convert_str_value). It never reaches a server.
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_WRONG_ARGUMENTS,
            "HY000",
            "Incorrect arguments to mysqld_stmt_execute",
        )));
    }
    e.types = sent.cloned().or(insert.clone()).or(e.types.take());
    Ok(insert)
}

async fn long_data(s: &mut Session, cmd: &Chunk) -> Result<(), CommandError> {
    let id = statement_id(&cmd.payload).unwrap_or(0);
    let route = route_statement(s, id, None)?;
    s.connect_for(&route, false).await?;
    let server_id = ensure_prepared(s, id).await?;
    if !s.pins.long_data.contains(&id) {
        s.pins.long_data.push(id);
    }
    let out = Chunk {
        seq: cmd.seq,
        payload: rewrite_id(&cmd.payload, server_id),
    };
    s.relay_current(&out, Expect::Nothing, Rewrite::default())
        .await?;
    Ok(())
}

/// Fetch from an open cursor: only on the connection that holds it.
async fn fetch(s: &mut Session, cmd: &Chunk) -> Result<(), CommandError> {
    let id = statement_id(&cmd.payload).unwrap_or(0);
    if !s.pins.cursors.contains(&id) || s.current.is_none() {
        return Err(CommandError::server(ErrPacket::new(
            errcode::ER_STMT_HAS_NO_OPEN_CURSOR,
            "HY000",
            format!("The statement ({id}) has no open cursor."),
        )));
    }
    let server_id = ensure_prepared(s, id).await?;
    let out = Chunk {
        seq: cmd.seq,
        payload: rewrite_id(&cmd.payload, server_id),
    };
    let walker = s
        .relay_current(&out, Expect::Fetch, Rewrite::default())
        .await?;
    if walker.error
        || walker
            .status
            .is_some_and(|st| st & status::LAST_ROW_SENT != 0)
    {
        s.pins.cursors.retain(|&c| c != id);
    }
    s.learn(&walker, None);
    Ok(())
}

/// COM_STMT_RESET: long data and cursors live on the server connection that holds them; without
/// one there is nothing to reset.
async fn reset(s: &mut Session, cmd: &Chunk) -> Result<(), CommandError> {
    let id = statement_id(&cmd.payload).unwrap_or(0);
    if s.stmts.get(id).is_none() {
        return Err(CommandError::server(unknown(id, "mysqld_stmt_reset")));
    }
    let held = s.pins.long_data.contains(&id) || s.pins.cursors.contains(&id);
    s.pins.long_data.retain(|&l| l != id);
    s.pins.cursors.retain(|&c| c != id);
    if held && s.current.is_some() {
        // Where the statement's long data or cursor lives.
        let route = Route::current(Reason::Pinned("COM_STMT_RESET".into()));
        s.connect_for(&route, false).await?;
        let server_id = ensure_prepared(s, id).await?;
        let out = Chunk {
            seq: cmd.seq,
            payload: rewrite_id(&cmd.payload, server_id),
        };
        let walker = s
            .relay_current(&out, Expect::OnePacket, Rewrite::default())
            .await?;
        s.learn(&walker, None);
        return Ok(());
    }
    let st = s.status();
    s.client
        .send(cmd.seq.wrapping_add(1), &ok_payload(0, st))
        .await
        .map_err(|e| CommandError::from(RelayError::Client(e)))?;
    Ok(())
}

/// COM_STMT_CLOSE: forget the client's id. The server statement stays in its connection's cache
/// for the next session that prepares the same text.
fn close(s: &mut Session, cmd: &Chunk) {
    let id = statement_id(&cmd.payload).unwrap_or(0);
    s.stmts.remove(id);
    s.pins.long_data.retain(|&l| l != id);
    s.pins.cursors.retain(|&c| c != id);
}
