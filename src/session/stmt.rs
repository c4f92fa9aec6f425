//! The session's prepared statements: the ids the client knows, each with its SQL text, its
//! parameter count, its routing analysis and the parameter types the client last bound. The
//! server-side statements live in each server connection's cache (by schema and text); a
//! statement is prepared on whichever connection runs it.

use crate::sql::Analysis;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Clone)]
pub struct ClientStatement {
    pub sql: Bytes,
    pub params: u16,
    pub analysis: Analysis,
    /// Parameter types from the last COM_STMT_EXECUTE that sent them (2 bytes per parameter).
    pub types: Option<Bytes>,
}

#[derive(Debug, Default)]
pub struct Statements {
    next_id: u32,
    by_id: HashMap<u32, ClientStatement, BuildHasherDefault<IdHasher>>,
    /// The statement prepared last, while it exists: what id 0xFFFFFFFF names.
    last: Option<u32>,
    /// Bytes of statement text held.
    bytes: usize,
}

/// Hashes the statement ids this session hands out (1, 2, 3, ...) with one multiplication: an
/// execute looks its statement up several times, and SipHash (the default, which resists keys
/// chosen to collide) is not needed for keys Weiche chooses itself.
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        // Fibonacci hashing: consecutive ids spread over the high bits the table probes by.
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Statement text one session may hold in prepared statements (ERR 1461 beyond): the count
/// limit alone would let 1024 statements of 16 MiB each hold 16 GiB.
pub const MAX_PREPARED_BYTES: usize = 64 << 20;

/// The statement id MariaDB reads as "the one prepared last": libmariadb's
/// mariadb_stmt_execute_direct sends COM_STMT_PREPARE and COM_STMT_EXECUTE with this id back to
/// back, without waiting for the prepare's answer.
pub const LAST_PREPARED: u32 = u32::MAX;

impl Statements {
    pub fn add(&mut self, stmt: ClientStatement) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.bytes += stmt.sql.len();
        self.by_id.insert(self.next_id, stmt);
        self.last = Some(self.next_id);
        self.next_id
    }

    /// The client's id for `id` as sent (LAST_PREPARED: the statement prepared last).
    pub fn resolve(&self, id: u32) -> u32 {
        match (id, self.last) {
            (LAST_PREPARED, Some(last)) => last,
            _ => id,
        }
    }

    /// How many statements the session holds.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    /// Bytes of statement text the session holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, id: u32) -> Option<&ClientStatement> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut ClientStatement> {
        self.by_id.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<ClientStatement> {
        if self.last == Some(id) {
            self.last = None;
        }
        let st = self.by_id.remove(&id)?;
        self.bytes -= st.sql.len();
        Some(st)
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
        self.last = None;
        self.bytes = 0;
    }
}

/// The statement id of a COM_STMT_* packet (bytes 1..5).
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// What a COM_STMT_EXECUTE says about its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteInfo {
    pub cursor: bool,
    /// The types it binds, when it sends them.
    pub types: Option<Bytes>,
}

/// Read the flags and bound types of a COM_STMT_EXECUTE for a statement with `params`
/// parameters; `None` when the packet is too short to be one.
pub fn execute_info(payload: &[u8], params: u16) -> Option<ExecuteInfo> {
    let flags = *payload.get(5)?;
    let mut info = ExecuteInfo {
        cursor: flags & 0x07 != 0,
        types: None,
    };
    if params == 0 {
        return Some(info);
    }
    let nb = usize::from(params).div_ceil(8);
    let bound_at = 10 + nb;
    if *payload.get(bound_at)? == 1 {
        let t = payload.get(bound_at + 1..bound_at + 1 + 2 * usize::from(params))?;
        info.types = Some(Bytes::copy_from_slice(t));
    }
    Some(info)
}

/// What makes one execution's result: its null bitmap, the parameter types in force (sent now or
/// bound before) and the values; the same whether this execute sends the types or relies on
/// earlier ones, so both find the same cache entry. `None` when the packet is too short.
pub fn execute_params(payload: &[u8], params: u16, types: Option<&[u8]>) -> Option<Vec<u8>> {
    if params == 0 {
        return Some(Vec::new());
    }
    let nb = usize::from(params).div_ceil(8);
    let bound_at = 10 + nb;
    let values_at = match *payload.get(bound_at)? {
        1 => bound_at + 1 + 2 * usize::from(params),
        _ => bound_at + 1,
    };
    let types = types.unwrap_or_default();
    let mut out = Vec::with_capacity(nb + types.len() + payload.len().saturating_sub(values_at));
    out.extend_from_slice(payload.get(10..bound_at)?);
    out.extend_from_slice(types);
    out.extend_from_slice(payload.get(values_at..)?);
    Some(out)
}

/// The execute packet for the server: its statement id, and the types inserted when the client
/// relies on types the server statement has not seen.
pub fn rewrite_execute(payload: &[u8], server_id: u32, params: u16, types: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + types.map_or(0, |t| t.len()));
    out.put_u8(payload[0]);
    out.put_u32_le(server_id);
    let nb = usize::from(params).div_ceil(8);
    let bound_at = 10 + nb;
    match types {
        Some(t) if params > 0 && payload.get(bound_at) == Some(&0) => {
            out.put_slice(&payload[5..bound_at]);
            out.put_u8(1);
            out.put_slice(t);
            out.put_slice(&payload[bound_at + 1..]);
        }
        _ => out.put_slice(&payload[5..]),
    }
    out.freeze()
}

/// STMT_BULK_FLAG_SEND_TYPES_TO_SERVER: a COM_STMT_BULK_EXECUTE that carries its types.
const BULK_SEND_TYPES: u16 = 128;

/// The types a COM_STMT_BULK_EXECUTE (id, flags, [types], rows of indicator + value) sends, if
/// any; `None` when the packet is too short to be one.
pub fn bulk_types(payload: &[u8], params: u16) -> Option<Option<Bytes>> {
    let flags = u16::from_le_bytes([*payload.get(5)?, *payload.get(6)?]);
    if flags & BULK_SEND_TYPES == 0 {
        return Some(None);
    }
    let t = payload.get(7..7 + 2 * usize::from(params))?;
    Some(Some(Bytes::copy_from_slice(t)))
}

/// The bulk packet for the server: its statement id, and the types (with the flag that says
/// so) when the client relies on types the server statement has not seen.
pub fn rewrite_bulk(payload: &[u8], server_id: u32, types: Option<&[u8]>) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + types.map_or(0, |t| t.len()));
    out.put_u8(payload[0]);
    out.put_u32_le(server_id);
    let flags = u16::from_le_bytes([payload[5], payload[6]]);
    match types {
        Some(t) if flags & BULK_SEND_TYPES == 0 => {
            out.put_u16_le(flags | BULK_SEND_TYPES);
            out.put_slice(t);
        }
        _ => out.put_u16_le(flags),
    }
    out.put_slice(&payload[7..]);
    out.freeze()
}

/// Another COM_STMT_* packet with the server's statement id.
pub fn rewrite_id(payload: &[u8], server_id: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len());
    out.put_u8(payload[0]);
    out.put_u32_le(server_id);
    out.put_slice(payload.get(5..).unwrap_or_default());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_inserted_when_the_client_relies_on_earlier_ones() {
        // id 7, flags 0, iterations 1, null bitmap (1 byte), bound = 0, one LONGLONG value.
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        p.extend_from_slice(&5u64.to_le_bytes());
        let info = execute_info(&p, 1).unwrap();
        assert_eq!(info.types, None);
        let out = rewrite_execute(&p, 99, 1, Some(&[8, 0]));
        assert_eq!(&out[1..5], &99u32.to_le_bytes());
        assert_eq!(&out[11..14], &[1, 8, 0]);
        assert_eq!(&out[14..], &5u64.to_le_bytes());
        let info = execute_info(&out, 1).unwrap();
        assert_eq!(info.types.as_deref(), Some(&[8u8, 0][..]));
        assert!(execute_info(&[0x17, 1], 1).is_none());
        // The cache sees one execution whether the types come with it or before it.
        assert_eq!(
            execute_params(&p, 1, Some(&[8, 0])),
            execute_params(&out, 1, Some(&[8, 0]))
        );
        assert_ne!(
            execute_params(&p, 1, Some(&[8, 0])),
            execute_params(&p, 1, Some(&[8, 0x80])),
            "signed and unsigned differ"
        );
    }

    #[test]
    fn bulk_types_are_read_and_inserted() {
        // id 7, flags 0, two rows of one parameter: indicator 0 + LONG 5, indicator 1 (NULL).
        let mut p = vec![0xfa, 7, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&5u32.to_le_bytes());
        p.push(1);
        assert_eq!(bulk_types(&p, 1), Some(None));
        let out = rewrite_bulk(&p, 99, Some(&[3, 0]));
        assert_eq!(&out[1..5], &99u32.to_le_bytes());
        assert_eq!(bulk_types(&out, 1), Some(Some(Bytes::from_static(&[3, 0]))));
        assert_eq!(&out[9..], &p[7..]);
        // Types already sent stay as they are.
        assert_eq!(rewrite_bulk(&out, 99, Some(&[8, 0])), out);
        assert_eq!(bulk_types(&[0xfa, 1, 0, 0, 0, 128, 0, 3], 1), None);
    }
}
