//! The response walker: told which command was sent, it is fed the server's packets one by one
//! and knows where the response ends, without decoding rows. Rows and column definitions pass
//! through unread; only the first packet of each result, prepare-OK packets and terminators are
//! looked at, for their counts and status flags.

use super::basic::{is_terminator, terminator_status, OkPacket, Reader};
use super::constants::{com, status, MAX_CHUNK};
use super::track::{Change, TrackedOk};
use super::ProtocolError;

/// What shape of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY, COM_STMT_EXECUTE, COM_PROCESS_INFO: OK, ERR, LOCAL INFILE request, or result
    /// sets, possibly several (MORE_RESULTS_EXISTS).
    Results,
    /// COM_STMT_PREPARE: prepare-OK with parameter and column definitions, or ERR.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to a terminator, or ERR.
    FieldList,
    /// COM_STMT_FETCH: binary rows up to a terminator, or ERR.
    Fetch,
    /// Exactly one packet of any content (OK/ERR/EOF, or COM_STATISTICS' text).
    OnePacket,
    /// No response at all (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA).
    Nothing,
}

impl Expect {
    /// The response shape for a command byte, `None` for commands Weiche does not relay.
    pub fn for_command(cmd: u8) -> Option<Expect> {
        Some(match cmd {
            com::QUERY | com::STMT_EXECUTE | com::STMT_BULK_EXECUTE | com::PROCESS_INFO => {
                Expect::Results
            }
            com::STMT_PREPARE => Expect::Prepare,
            com::FIELD_LIST => Expect::FieldList,
            com::STMT_FETCH => Expect::Fetch,
            com::STMT_CLOSE | com::STMT_SEND_LONG_DATA => Expect::Nothing,
            com::INIT_DB
            | com::PING
            | com::STATISTICS
            | com::SET_OPTION
            | com::RESET_CONNECTION
            | com::STMT_RESET
            | com::REFRESH
            | com::DEBUG
            | com::CREATE_DB
            | com::DROP_DB
            | com::SHUTDOWN
            | com::PROCESS_KILL => Expect::OnePacket,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the first packet of a result.
    First,
    Columns {
        left: u64,
    },
    ColumnsEof,
    Rows,
    PrepareOk,
    PrepareParams {
        left: u64,
    },
    PrepareParamsEof,
    PrepareColumns {
        left: u64,
    },
    PrepareColumnsEof,
    FieldList,
    OnePacket,
    Done,
}

/// What the relay must do with a packet before feeding it to `Walker::packet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Pass it through; the walker only needs its length and first byte.
    Skim,
    /// The walker must see the whole payload (it is small: OK, ERR, EOF, counts).
    Whole,
}

/// What happened after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    More,
    /// The server asks for a local file: relay the client's data packets to the server up to an
    /// empty one, then keep walking (an OK or ERR follows).
    LocalInfile,
    /// The response is complete.
    Done,
}

/// Walks one response. Feed it each physical packet in order.
#[derive(Debug, Clone)]
pub struct Walker {
    state: State,
    deprecate_eof: bool,
    binary: bool,
    /// The previous physical packet was a full chunk: this one continues it.
    continuing: bool,
    prepare_columns: u64,
    /// For COM_STMT_PREPARE: the number of parameters.
    pub prepare_params: u16,
    /// Status flags of the last OK/EOF seen (the server's view of the session).
    pub status: Option<u16>,
    /// The response ended with an ERR packet.
    pub error: bool,
    /// For COM_STMT_PREPARE: the statement id the server assigned.
    pub statement_id: Option<u32>,
    /// The last OK packet (affected rows, insert id, warnings).
    pub ok: Option<OkPacket>,
    /// OK packets carry session-track data (the connection has CLIENT_SESSION_TRACK).
    tracked: bool,
    /// Session state changes reported by every OK packet of the response, in order.
    pub changes: Vec<Change>,
    /// The packet just fed was an OK packet (the relay may need to rewrite it).
    pub at_ok: bool,
    /// Rows seen (packets in the rows part of result sets).
    pub rows: u64,
}

impl Walker {
    /// `binary`: the rows are in the binary protocol (COM_STMT_EXECUTE, COM_STMT_FETCH), where a
    /// cursor may end the response right after the column definitions.
    pub fn new(expect: Expect, deprecate_eof: bool, binary: bool) -> Self {
        let state = match expect {
            Expect::Results => State::First,
            Expect::Prepare => State::PrepareOk,
            Expect::FieldList => State::FieldList,
            Expect::Fetch => State::Rows,
            Expect::OnePacket => State::OnePacket,
            Expect::Nothing => State::Done,
        };
        Walker {
            state,
            deprecate_eof,
            binary,
            continuing: false,
            prepare_columns: 0,
            prepare_params: 0,
            status: None,
            error: false,
            statement_id: None,
            ok: None,
            tracked: false,
            changes: Vec::new(),
            at_ok: false,
            rows: 0,
        }
    }

    /// OK packets are in the CLIENT_SESSION_TRACK layout; collect their state changes.
    pub fn tracked(mut self) -> Self {
        self.tracked = true;
        self
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the packet with this payload length and first byte needs its whole payload.
    pub fn need(&self, len: usize, first: Option<u8>) -> Need {
        if self.continuing {
            return Need::Skim;
        }
        match self.state {
            State::Columns { .. } | State::PrepareParams { .. } | State::PrepareColumns { .. } => {
                Need::Skim
            }
            State::Rows | State::FieldList => match first {
                Some(0xff) => Need::Whole,
                Some(b) if is_terminator(b, len) => Need::Whole,
                _ => Need::Skim,
            },
            _ => Need::Whole,
        }
    }

    /// Feed one physical packet: its payload length and as much of the payload as `need` asked
    /// for (at least the first byte, when the payload is not empty).
    pub fn packet(&mut self, len: usize, payload: &[u8]) -> Result<Step, ProtocolError> {
        let continuation = self.continuing;
        self.continuing = len == MAX_CHUNK;
        self.at_ok = false;
        if continuation {
            return Ok(if self.state == State::Done {
                Step::Done
            } else {
                Step::More
            });
        }
        let first = payload.first().copied();
        let step = match self.state {
            State::Done => {
                return Err(ProtocolError::Malformed(
                    "packet after the end of a response",
                ))
            }
            State::OnePacket => {
                match first {
                    Some(0xff) => self.error = true,
                    Some(0x00) => self.set_ok(payload),
                    Some(0xfe) if len < 9 => self.status = terminator_status(payload, false).ok(),
                    _ => {}
                }
                self.finish()
            }
            State::First => match first {
                Some(0x00) => {
                    self.take_ok(payload)?;
                    let more = self.status.unwrap_or(0) & status::MORE_RESULTS_EXISTS != 0;
                    if more {
                        Step::More
                    } else {
                        self.finish()
                    }
                }
                Some(0xff) => {
                    self.error = true;
                    self.finish()
                }
                Some(0xfb) => Step::LocalInfile,
                None | Some(0xfe) => {
                    return Err(ProtocolError::Malformed(
                        "unexpected first packet of a result",
                    ))
                }
                _ => {
                    let n = Reader::new(payload).lenenc_int("column count")?;
                    if n == 0 {
                        return Err(ProtocolError::Malformed("zero column count"));
                    }
                    self.state = State::Columns { left: n };
                    Step::More
                }
            },
            State::Columns { left } => {
                self.state = if left > 1 {
                    State::Columns { left: left - 1 }
                } else if self.deprecate_eof {
                    // Under DEPRECATE_EOF a cursor's answer is an OK-terminator right here;
                    // `Rows` ends on it like on any terminator.
                    State::Rows
                } else {
                    State::ColumnsEof
                };
                Step::More
            }
            State::ColumnsEof => {
                let st = terminator_status(payload, false)?;
                self.status = Some(st);
                if self.binary && st & status::CURSOR_EXISTS != 0 {
                    // A cursor was opened: its rows come with COM_STMT_FETCH.
                    self.finish()
                } else {
                    self.state = State::Rows;
                    Step::More
                }
            }
            State::Rows | State::FieldList => match first {
                Some(0xff) => {
                    self.error = true;
                    self.finish()
                }
                Some(b) if is_terminator(b, len) => {
                    let st = terminator_status(payload, self.deprecate_eof)?;
                    self.status = Some(st);
                    if self.deprecate_eof {
                        self.take_ok(payload)?;
                    }
                    if self.state == State::Rows && st & status::MORE_RESULTS_EXISTS != 0 {
                        self.state = State::First;
                        Step::More
                    } else {
                        self.finish()
                    }
                }
                _ => {
                    if self.state == State::Rows {
                        self.rows += 1;
                    }
                    Step::More
                }
            },
            State::PrepareOk => match first {
                Some(0x00) => {
                    let mut r = Reader::new(payload);
                    r.u8("prepare OK header")?;
                    self.statement_id = Some(r.u32("prepare statement id")?);
                    self.prepare_columns = r.u16("prepare column count")? as u64;
                    self.prepare_params = r.u16("prepare parameter count")?;
                    let params = u64::from(self.prepare_params);
                    if params > 0 {
                        self.state = State::PrepareParams { left: params };
                        Step::More
                    } else {
                        self.prepare_columns_start()
                    }
                }
                _ => {
                    self.error = first == Some(0xff);
                    self.finish()
                }
            },
            State::PrepareParams { left } => {
                if left > 1 {
                    self.state = State::PrepareParams { left: left - 1 };
                    Step::More
                } else if self.deprecate_eof {
                    self.prepare_columns_start()
                } else {
                    self.state = State::PrepareParamsEof;
                    Step::More
                }
            }
            State::PrepareParamsEof => self.prepare_columns_start(),
            State::PrepareColumns { left } => {
                if left > 1 {
                    self.state = State::PrepareColumns { left: left - 1 };
                    Step::More
                } else if self.deprecate_eof {
                    self.finish()
                } else {
                    self.state = State::PrepareColumnsEof;
                    Step::More
                }
            }
            State::PrepareColumnsEof => self.finish(),
        };
        Ok(step)
    }

    fn prepare_columns_start(&mut self) -> Step {
        if self.prepare_columns > 0 {
            self.state = State::PrepareColumns {
                left: self.prepare_columns,
            };
            Step::More
        } else {
            self.finish()
        }
    }

    fn set_ok(&mut self, payload: &[u8]) {
        // A one-packet answer that is not a well-formed OK is relayed as it is.
        let _ = self.take_ok(payload);
    }

    fn take_ok(&mut self, payload: &[u8]) -> Result<(), ProtocolError> {
        let ok = if self.tracked {
            let t = TrackedOk::decode(payload)?;
            self.changes.extend(t.changes);
            OkPacket {
                affected_rows: t.affected_rows,
                last_insert_id: t.last_insert_id,
                status: t.status,
                warnings: t.warnings,
                info: t.info,
            }
        } else {
            OkPacket::decode(payload)?
        };
        self.status = Some(ok.status);
        self.ok = Some(ok);
        self.at_ok = true;
        Ok(())
    }

    fn finish(&mut self) -> Step {
        self.state = State::Done;
        Step::Done
    }
}
