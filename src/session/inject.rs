//! Running the queries a script injected (`PROXY_SEND_QUERY`): each is routed like a client's
//! command and runs on a server connection; its result is streamed to the client, or buffered
//! when the script asked to see it (`resultset_is_needed`), and then `read_query_result`
//! decides: forward, drop, or replace. At most one result reaches the client per command; if
//! none does, the client gets an OK, so it never waits for an answer that will not come.

use super::outcome::{CommandError, Kind, Next};
use super::relay::{RelayError, Rewrite};
use super::Session;
use crate::protocol::constants::{com, MAX_CHUNK};
use crate::protocol::{ok_payload, Chunk, Expect, Walker};
use crate::script::{Decision, Injection, Outcome};
use crate::sql::Analysis;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::time::Instant;

/// Run the injections of one client command (sequence id `seq`).
pub(crate) async fn run(
    s: &mut Session,
    seq: u8,
    injections: Vec<Injection>,
) -> Result<Next, RelayError> {
    let mut queue: VecDeque<Injection> = injections.into();
    let mut answered = false;
    while let Some(inj) = queue.pop_front() {
        let code = inj.packet[0];
        let Some(expect) = Expect::for_command(code) else {
            tracing::warn!(
                command = code,
                "Lua injected a command Weiche does not relay; skipped"
            );
            continue;
        };
        let analysis = if code == com::QUERY {
            s.analyze(&inj.packet[1..])
        } else {
            Analysis::primary("command injected by the Lua script")
        };
        let route = match s.route(&analysis, &inj.packet[1..]) {
            Ok(r) => r,
            Err(e) => {
                if !answered {
                    s.refuse(seq, e).await?;
                    answered = true;
                }
                continue;
            }
        };
        match s
            .connect_for(&route, analysis.effects.needs_insert_id)
            .await
        {
            Ok(()) => {}
            Err(CommandError {
                kind: Kind::Relay(e),
                ..
            }) => return Err(e),
            Err(e) => {
                if !answered {
                    s.refuse(seq, e).await?;
                    answered = true;
                }
                continue;
            }
        }
        let stream = !inj.resultset_is_needed && !answered;
        let chunk = Chunk {
            seq: 0,
            payload: Bytes::from(inj.packet.clone()),
        };
        let was_pinned = s.pinned();
        let result = if stream {
            s.relay_current(&chunk, expect, Rewrite::default())
                .await
                .map(|w| (w, None, None))
        } else {
            collect(s, &chunk, expect)
                .await
                .map(|(w, p, first)| (w, Some(p), Some(first)))
        };
        let (walker, packets, first_at) = match result {
            Ok(r) => r,
            Err(e) if e.is_server_side() => {
                s.drop_current();
                if answered || s.answered {
                    return Ok(Next::Close);
                }
                return s.command_failed(seq, &e, was_pinned).await;
            }
            Err(e) => {
                s.drop_current();
                return Err(e);
            }
        };
        answered |= stream;
        s.learn(&walker, Some(&analysis.effects));
        if analysis.effects.writes || !s.cache_pending.is_empty() {
            // Injected writes invalidate the cache like any other (after their answer went out:
            // a script's queries are not held back).
            let sql = inj.packet.get(1..).unwrap_or_default();
            s.cache_written(sql, Some(&analysis.effects)).await?;
        }
        let outcome = outcome(&walker, packets.as_deref(), inj.queued_at, first_at);
        let (status, shape) = (s.status(), s.shape());
        let mut script = s.script.take();
        let (decision, more, after) = match script.as_mut() {
            Some(h) if h.has("read_query_result") => {
                h.read_query_result(&s.conn_view(), &inj, &outcome, shape, status)
            }
            _ => (Decision::Default, Vec::new(), Default::default()),
        };
        s.script = script;
        s.apply_after(after);
        queue.extend(more);
        match (decision, packets) {
            (Decision::Default, Some(p)) if !answered => {
                let mut seq = seq.wrapping_add(1);
                for payload in &p {
                    seq = s.client.queue(seq, payload);
                }
                s.client.flush().await.map_err(RelayError::Client)?;
                answered = true;
            }
            (Decision::SendResult(_) | Decision::Ignore, None) => {
                tracing::warn!(
                    "Lua: read_query_result cannot drop or replace the result of injection {}: \
                     it was streamed (append it with {{resultset_is_needed = true}})",
                    inj.id
                );
            }
            (Decision::SendResult(p), Some(_)) if !answered => {
                s.send_packets(seq, &p).await?;
                answered = true;
            }
            _ => {}
        }
    }
    if !answered {
        let st = s.status();
        s.client
            .send(seq.wrapping_add(1), &ok_payload(0, st))
            .await
            .map_err(RelayError::Client)?;
    }
    Ok(Next::Continue)
}

/// Run `cmd` on the current connection and keep its whole answer (payloads of whole packets).
async fn collect(
    s: &mut Session,
    cmd: &Chunk,
    expect: Expect,
) -> Result<(Walker, Vec<Bytes>, Instant), RelayError> {
    let deprecate_eof = s.deprecate_eof();
    let Some(cur) = s.current.as_mut() else {
        return Err(RelayError::Server(crate::protocol::ProtocolError::Closed));
    };
    let code = cmd.payload[0];
    let binary = code == com::STMT_EXECUTE || code == com::STMT_FETCH;
    let mut walker = Walker::new(expect, deprecate_eof, binary).tracked();
    let framed = &mut cur.conn.framed;
    framed.queue_chunk(cmd);
    framed.flush().await.map_err(RelayError::Server)?;
    let mut packets = Vec::new();
    let mut partial: Option<BytesMut> = None;
    let mut first_at = None;
    while !walker.is_done() {
        let c = match framed.read_chunk(MAX_CHUNK).await {
            Ok(c) => c,
            Err(e) => {
                cur.conn.broken = true;
                return Err(RelayError::Server(e));
            }
        };
        first_at.get_or_insert_with(Instant::now);
        if let Err(e) = walker.packet(c.payload.len(), &c.payload) {
            cur.conn.broken = true;
            return Err(RelayError::Server(e));
        }
        let continues = c.continues();
        match (partial.as_mut(), continues) {
            (Some(p), _) => {
                p.extend_from_slice(&c.payload);
                if !continues {
                    packets.push(partial.take().map(BytesMut::freeze).unwrap_or_default());
                }
            }
            (None, true) => partial = Some(BytesMut::from(&c.payload[..])),
            (None, false) => packets.push(c.payload),
        }
    }
    Ok((walker, packets, first_at.unwrap_or_else(Instant::now)))
}

/// What `inj.resultset` reports. `query_time` runs from the append to the first packet of the
/// answer (to its end when it was streamed), `response_time` to its last.
fn outcome(
    walker: &Walker,
    packets: Option<&[Bytes]>,
    queued: Instant,
    first_at: Option<Instant>,
) -> Outcome {
    let ok = walker.ok.as_ref();
    let result_set = packets.is_some_and(|p| {
        p.first()
            .is_some_and(|f| !matches!(f.first(), Some(0x00) | Some(0xff)))
    }) || walker.rows > 0;
    let total = queued.elapsed().as_micros() as u64;
    // Without CLIENT_DEPRECATE_EOF a result set ends with an EOF packet that holds the count.
    let eof_warnings = packets
        .and_then(|p| p.last())
        .filter(|l| l.first() == Some(&0xfe) && l.len() == 5)
        .map(|l| u16::from_le_bytes([l[1], l[2]]));
    Outcome {
        error: walker.error,
        rows: walker.rows,
        bytes: packets.map_or(0, |p| p.iter().map(|b| b.len() as u64).sum()),
        warnings: ok.map(|o| o.warnings).or(eof_warnings).unwrap_or(0),
        status: walker.status.unwrap_or(0),
        affected_rows: ok.filter(|_| !result_set).map(|o| o.affected_rows),
        insert_id: ok.filter(|_| !result_set).map(|o| o.last_insert_id),
        query_time_us: first_at.map_or(total, |f| f.duration_since(queued).as_micros() as u64),
        response_time_us: total,
        packets: packets.map(<[Bytes]>::to_vec),
    }
}
