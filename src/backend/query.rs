//! Weiche's own commands on a server connection (setting up session tracking, bringing a
//! connection to a session's state, resetting it): queued, sent in one write, and their small
//! responses read whole. Never used for a client's command, whose response is streamed.

use super::connection::ServerConnection;
use crate::protocol::basic::{is_terminator, Reader};
use crate::protocol::constants::{cap, com, MAX_CHUNK};
use crate::protocol::track::TrackedOk;
use crate::protocol::{ErrPacket, ProtocolError};
use crate::protocol::{Expect, Walker};
use bytes::{BufMut, BytesMut};

/// Responses of internal commands are small; anything bigger is a protocol error.
const MAX_INTERNAL_PACKET: usize = 1 << 20;

/// The answer to one internal command.
#[derive(Debug)]
pub enum Answer {
    Ok(TrackedOk),
    Rows(Rows),
    Err(ErrPacket),
}

/// A small text result set.
#[derive(Debug, Default)]
pub struct Rows {
    pub columns: Vec<Vec<u8>>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

impl Rows {
    /// The value of column `name` (any of the given spellings) in row `row`, as text.
    pub fn get(&self, row: usize, names: &[&str]) -> Option<&str> {
        let col = self
            .columns
            .iter()
            .position(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n.as_bytes())))?;
        let v = self.rows.get(row)?.get(col)?.as_deref()?;
        std::str::from_utf8(v).ok()
    }
}

/// A column definition's name: the fifth length-encoded string.
fn column_name(payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let mut r = Reader::new(payload);
    for what in ["catalog", "schema", "table", "original table"] {
        r.lenenc_bytes(what)?;
    }
    Ok(r.lenenc_bytes("column name")?.to_vec())
}

/// Why an internal command failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("server said: {}", .0.message)]
    Server(ErrPacket),
}

impl ServerConnection {
    /// Queue a COM_QUERY (sent with the next `flush`).
    pub fn queue_query(&mut self, sql: &[u8]) {
        let mut p = BytesMut::with_capacity(1 + sql.len());
        p.put_u8(com::QUERY);
        p.put_slice(sql);
        self.framed.queue(0, &p);
    }

    /// Queue a command with no arguments or with raw arguments.
    pub fn queue_command(&mut self, code: u8, args: &[u8]) {
        let mut p = BytesMut::with_capacity(1 + args.len());
        p.put_u8(code);
        p.put_slice(args);
        self.framed.queue(0, &p);
    }

    /// Read the answer to one queued command (OK, ERR or a text result set). State changes and
    /// status flags are applied to the connection's state.
    pub async fn read_answer(&mut self) -> Result<Answer, ProtocolError> {
        let first = self.framed.read_packet(MAX_INTERNAL_PACKET).await?;
        match first.payload.first() {
            Some(0x00) => {
                let ok = TrackedOk::decode(&first.payload)?;
                self.state.apply_ok(&ok);
                Ok(Answer::Ok(ok))
            }
            Some(0xff) => Ok(Answer::Err(ErrPacket::decode(&first.payload)?)),
            None | Some(0xfb) | Some(0xfe) => Err(ProtocolError::Malformed(
                "unexpected answer to an internal command",
            )),
            Some(_) => {
                let columns = Reader::new(&first.payload).lenenc_int("column count")?;
                let mut names = Vec::new();
                for _ in 0..columns {
                    let c = self.framed.read_packet(MAX_INTERNAL_PACKET).await?;
                    names.push(column_name(&c.payload)?);
                }
                let deprecate_eof = self.capabilities & cap::DEPRECATE_EOF != 0;
                if !deprecate_eof {
                    self.framed.read_packet(MAX_INTERNAL_PACKET).await?;
                }
                let mut rows = Vec::new();
                loop {
                    let p = self.framed.read_packet(MAX_INTERNAL_PACKET).await?;
                    match p.payload.first() {
                        Some(0xff) => return Ok(Answer::Err(ErrPacket::decode(&p.payload)?)),
                        Some(&b) if is_terminator(b, p.payload.len()) => {
                            if deprecate_eof {
                                let ok = TrackedOk::decode(&p.payload)?;
                                self.state.apply_ok(&ok);
                            }
                            return Ok(Answer::Rows(Rows {
                                columns: names,
                                rows,
                            }));
                        }
                        _ => {
                            let mut r = Reader::new(&p.payload);
                            let mut row = Vec::with_capacity(columns as usize);
                            for _ in 0..columns {
                                if r.remaining() > 0
                                    && p.payload[p.payload.len() - r.remaining()] == 0xfb
                                {
                                    r.u8("NULL")?;
                                    row.push(None);
                                } else {
                                    row.push(Some(r.lenenc_bytes("column value")?.to_vec()));
                                }
                            }
                            rows.push(row);
                        }
                    }
                }
            }
        }
    }

    /// Prepare `sql` on this connection for Weiche's own use (the client already has its
    /// prepare-OK): the server's statement id, or the server's refusal.
    pub async fn prepare(&mut self, sql: &[u8]) -> Result<Result<u32, ErrPacket>, ProtocolError> {
        self.queue_command(com::STMT_PREPARE, sql);
        self.framed.flush().await?;
        let deprecate_eof = self.capabilities & cap::DEPRECATE_EOF != 0;
        let mut walker = Walker::new(Expect::Prepare, deprecate_eof, false).tracked();
        let mut err = None;
        while !walker.is_done() {
            let c = self.framed.read_chunk(MAX_CHUNK).await?;
            if walker.statement_id.is_none() && c.payload.first() == Some(&0xff) {
                err = Some(ErrPacket::decode(&c.payload)?);
            }
            walker.packet(c.payload.len(), &c.payload)?;
        }
        match (err, walker.statement_id) {
            (Some(e), _) => Ok(Err(e)),
            (None, Some(id)) => Ok(Ok(id)),
            (None, None) => Err(ProtocolError::Malformed(
                "prepare answered without a statement id",
            )),
        }
    }

    /// Run one statement and expect OK.
    /// Run a query of Weiche's own and read its (small) result set.
    pub async fn rows(&mut self, sql: &[u8]) -> Result<Rows, QueryError> {
        self.queue_query(sql);
        self.framed.flush().await?;
        match self.read_answer().await? {
            Answer::Rows(r) => Ok(r),
            Answer::Err(e) => Err(QueryError::Server(e)),
            Answer::Ok(_) => Err(ProtocolError::Malformed("OK where rows were expected").into()),
        }
    }

    pub async fn execute(&mut self, sql: &[u8]) -> Result<TrackedOk, QueryError> {
        self.queue_query(sql);
        self.framed.flush().await?;
        match self.read_answer().await? {
            Answer::Ok(ok) => Ok(ok),
            Answer::Err(e) => Err(QueryError::Server(e)),
            Answer::Rows(_) => Err(ProtocolError::Malformed("rows where OK was expected").into()),
        }
    }
}
