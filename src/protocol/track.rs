//! Session state tracking: the server reports changes to the session (system variables, the
//! current schema, "something else changed") inside OK packets, when the connection was opened
//! with CLIENT_SESSION_TRACK. Weiche's server connections always ask for it, because the session
//! state Weiche carries from one server connection to the next comes from these reports.
//!
//! A client that did not ask for CLIENT_SESSION_TRACK expects no state block and no
//! SESSION_STATE_CHANGED flag; `untracked_ok` converts one. (Servers send the info text
//! length-encoded either way, and drivers such as mysqlnd read it so.)

use super::basic::{put_lenenc_bytes, put_lenenc_int, OkPacket, Reader};
use super::constants::status;
use super::ProtocolError;
use bytes::{BufMut, BytesMut};

/// Tracker types (`enum_session_state_type`).
const SYSTEM_VARIABLES: u8 = 0;
const SCHEMA: u8 = 1;
const STATE_CHANGE: u8 = 2;

/// One change the server reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session system variable now has this value (as text).
    Variable { name: Vec<u8>, value: Vec<u8> },
    /// The current database changed.
    Schema(Vec<u8>),
    /// Some session state changed that has no tracker of its own (user variables, temporary
    /// tables, prepared statements, ...).
    State,
}

/// An OK packet as a CLIENT_SESSION_TRACK connection receives it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedOk {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    pub info: Vec<u8>,
    pub changes: Vec<Change>,
}

impl TrackedOk {
    /// Decode an OK (0x00) or OK-terminator (0xfe) payload.
    pub fn decode(payload: &[u8]) -> Result<TrackedOk, ProtocolError> {
        let mut r = Reader::new(payload);
        let (affected_rows, last_insert_id, status, warnings) = OkPacket::decode_head(&mut r)?;
        let mut ok = TrackedOk {
            affected_rows,
            last_insert_id,
            status,
            warnings,
            ..Default::default()
        };
        if r.is_empty() {
            return Ok(ok);
        }
        ok.info = r.lenenc_bytes("OK info")?.to_vec();
        if status & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
            let block = r.lenenc_bytes("OK session state")?;
            ok.changes = parse_changes(block)?;
        }
        Ok(ok)
    }
}

fn parse_changes(block: &[u8]) -> Result<Vec<Change>, ProtocolError> {
    let mut out = Vec::new();
    let mut r = Reader::new(block);
    while !r.is_empty() {
        let kind = r.u8("session state type")?;
        let data = r.lenenc_bytes("session state data")?;
        let mut d = Reader::new(data);
        match kind {
            SYSTEM_VARIABLES => out.push(Change::Variable {
                name: d.lenenc_bytes("tracked variable name")?.to_vec(),
                value: d.lenenc_bytes("tracked variable value")?.to_vec(),
            }),
            SCHEMA => out.push(Change::Schema(d.lenenc_bytes("tracked schema")?.to_vec())),
            STATE_CHANGE => out.push(Change::State),
            // GTIDs, transaction characteristics and state: not used.
            _ => {}
        }
    }
    Ok(out)
}

/// The same OK in the layout a client without CLIENT_SESSION_TRACK expects, or `None` when the
/// payload already reads the same in both layouts (no info text, no state block).
pub fn untracked_ok(payload: &[u8]) -> Result<Option<BytesMut>, ProtocolError> {
    let ok = TrackedOk::decode(payload)?;
    if ok.status & status::SESSION_STATE_CHANGED == 0 {
        return Ok(None);
    }
    let mut b = BytesMut::with_capacity(16 + ok.info.len());
    b.put_u8(payload[0]);
    put_lenenc_int(&mut b, ok.affected_rows);
    put_lenenc_int(&mut b, ok.last_insert_id);
    b.put_u16_le(ok.status & !status::SESSION_STATE_CHANGED);
    b.put_u16_le(ok.warnings);
    if !ok.info.is_empty() {
        put_lenenc_bytes(&mut b, &ok.info);
    }
    Ok(Some(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(status: u16, info: &[u8], block: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u8(0);
        put_lenenc_int(&mut b, 1);
        put_lenenc_int(&mut b, 0);
        b.put_u16_le(status);
        b.put_u16_le(0);
        put_lenenc_bytes(&mut b, info);
        if !block.is_empty() {
            put_lenenc_bytes(&mut b, block);
        }
        b
    }

    #[test]
    fn variables_schema_and_state_are_read() {
        let mut block = BytesMut::new();
        let mut var = BytesMut::new();
        put_lenenc_bytes(&mut var, b"time_zone");
        put_lenenc_bytes(&mut var, b"+05:30");
        block.put_u8(SYSTEM_VARIABLES);
        put_lenenc_bytes(&mut block, &var);
        let mut schema = BytesMut::new();
        put_lenenc_bytes(&mut schema, b"test");
        block.put_u8(SCHEMA);
        put_lenenc_bytes(&mut block, &schema);
        block.put_u8(STATE_CHANGE);
        put_lenenc_bytes(&mut block, b"1");
        block.put_u8(5);
        put_lenenc_bytes(&mut block, b"________");
        let p = tracked(
            status::AUTOCOMMIT | status::SESSION_STATE_CHANGED,
            b"",
            &block,
        );
        let ok = TrackedOk::decode(&p).unwrap();
        assert_eq!(
            ok.changes,
            vec![
                Change::Variable {
                    name: b"time_zone".to_vec(),
                    value: b"+05:30".to_vec()
                },
                Change::Schema(b"test".to_vec()),
                Change::State
            ]
        );
        let old = untracked_ok(&p).unwrap().unwrap();
        assert_eq!(&old[..], &[0, 1, 0, 2, 0, 0, 0][..]);
    }

    #[test]
    fn info_stays_and_the_state_block_goes() {
        let p = tracked(status::AUTOCOMMIT, b"Rows matched: 1", b"");
        assert!(untracked_ok(&p).unwrap().is_none());
        let p = tracked(
            status::SESSION_STATE_CHANGED,
            b"Rows matched: 1",
            &[2, 1, b'1'],
        );
        let old = untracked_ok(&p).unwrap().unwrap();
        assert_eq!(&old[5..7], &[0, 0]);
        assert_eq!(old[7], 15);
        assert_eq!(&old[8..], b"Rows matched: 1");
    }

    #[test]
    fn truncated_blocks_are_errors() {
        let p = tracked(status::SESSION_STATE_CHANGED, b"", &[0, 5, 1]);
        assert!(TrackedOk::decode(&p).is_err());
    }
}
