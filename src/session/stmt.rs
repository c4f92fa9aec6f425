//! The session's prepared statements: the ids the client knows, each with its SQL text, its
//! parameter count, its routing analysis and the parameter types the client last bound. The
//! server-side statements live in each server connection's cache (by schema and text); a
//! statement is prepared on whichever connection runs it.

use crate::sql::Analysis;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;

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
    by_id: HashMap<u32, ClientStatement>,
}

impl Statements {
    pub fn add(&mut self, stmt: ClientStatement) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.by_id.insert(self.next_id, stmt);
        self.next_id
    }

    /// How many statements the session holds.
    pub fn count(&self) -> usize {
        self.by_id.len()
    }

    pub fn get(&self, id: u32) -> Option<&ClientStatement> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut ClientStatement> {
        self.by_id.get_mut(&id)
    }

    pub fn remove(&mut self, id: u32) -> Option<ClientStatement> {
        self.by_id.remove(&id)
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
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
}
