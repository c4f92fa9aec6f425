//! Binlog events as the primary streams them to a replica, read only as far as invalidation
//! needs: which transaction (GTID) an event belongs to, which tables a row event changes (its
//! TABLE_MAP), which statement a QUERY event ran, and where a transaction commits (XID, COMMIT,
//! the one statement of a stand-alone group). `Groups` turns the events into commits, each
//! with the scopes it changed. Row images are never decoded: which table changed is enough.

use crate::backend::gtid::Gtid;
use crate::cache::Scope;

/// Event types (MariaDB's log_event.h).
pub mod kind {
    pub const QUERY: u8 = 2;
    pub const STOP: u8 = 3;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const INCIDENT: u8 = 26;
    pub const HEARTBEAT: u8 = 27;
    pub const GTID: u8 = 162;
    pub const QUERY_COMPRESSED: u8 = 165;
}

/// The common header of every event.
pub const HEADER_LEN: usize = 19;
const CHECKSUM_LEN: usize = 4;
/// The event was made up by the server for this stream (a rotate, a position), not logged.
const ARTIFICIAL: u16 = 0x20;

/// GTID event flags.
const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error("binlog event of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("binlog event says it has {said} bytes but {got} arrived")]
    Size { said: usize, got: usize },
    #[error("binlog event of type {0} has a wrong CRC32 checksum")]
    Checksum(u8),
    #[error("binlog event of type {0} is malformed")]
    Malformed(u8),
}

/// What the stream's FORMAT_DESCRIPTION_EVENT says about the events after it.
#[derive(Debug, Clone, Default)]
pub struct Format {
    /// Events end in a CRC32.
    pub checksum: bool,
    /// Post-header length per event type (index type - 1).
    post_header: Vec<u8>,
}

impl Format {
    fn post_header(&self, kind: u8, default: usize) -> usize {
        match self.post_header.get(usize::from(kind).wrapping_sub(1)) {
            Some(&n) if n > 0 => usize::from(n),
            _ => default,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub server_id: u32,
    pub flags: u16,
}

/// One event, as far as invalidation reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Format(Format),
    Gtid {
        gtid: Gtid,
        standalone: bool,
        /// An XA transaction's XA PREPARE (true) or XA COMMIT/ROLLBACK (false), with its xid.
        xa: Option<(bool, &'a [u8])>,
    },
    TableMap {
        schema: &'a [u8],
        table: &'a [u8],
    },
    Query {
        schema: &'a [u8],
        sql: &'a [u8],
    },
    /// A QUERY event whose text is compressed (log_bin_compress): its tables are unknown.
    CompressedQuery,
    Xid,
    Incident,
    Stop,
    /// Everything else (row events, rotates, heartbeats, annotations, checkpoints).
    Other,
}

impl PartialEq for Format {
    fn eq(&self, other: &Format) -> bool {
        self.checksum == other.checksum && self.post_header == other.post_header
    }
}
impl Eq for Format {}

fn le(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = b.get(at..at + n)?;
    Some(s.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
}

/// A length-prefixed, NUL-terminated name (TABLE_MAP's schema and table).
fn name(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(*b.get(at)?);
    let s = b.get(at + 1..at + 1 + len)?;
    Some((s, at + 2 + len))
}

fn crc_ok(event: &[u8]) -> bool {
    let (body, sum) = event.split_at(event.len() - CHECKSUM_LEN);
    le(sum, 0, 4) == Some(u64::from(crc32fast::hash(body)))
}

/// Read one event (the bytes after the stream's 0x00 marker).
pub fn parse<'a>(format: &Format, ev: &'a [u8]) -> Result<(Header, Event<'a>), EventError> {
    if ev.len() < HEADER_LEN {
        return Err(EventError::Short(ev.len()));
    }
    let header = Header {
        kind: ev[4],
        server_id: le(ev, 5, 4).unwrap_or(0) as u32,
        flags: le(ev, 17, 2).unwrap_or(0) as u16,
    };
    let said = le(ev, 9, 4).unwrap_or(0) as usize;
    if said != ev.len() {
        return Err(EventError::Size {
            said,
            got: ev.len(),
        });
    }
    let kind = header.kind;
    let bad = || EventError::Malformed(kind);
    if kind == kind::FORMAT_DESCRIPTION {
        // binlog version (2), server version (50), created (4), header length (1), the
        // post-header lengths, then the checksum algorithm (1) and the event's CRC32 (4).
        let fixed = HEADER_LEN + 2 + 50 + 4 + 1;
        if ev.len() < fixed + 5 {
            return Err(bad());
        }
        let alg = ev[ev.len() - 5];
        if alg == 1 && !crc_ok(ev) {
            return Err(EventError::Checksum(kind));
        }
        return Ok((
            header,
            Event::Format(Format {
                checksum: alg == 1,
                post_header: ev[fixed..ev.len() - 5].to_vec(),
            }),
        ));
    }
    let meaningful = matches!(
        kind,
        kind::QUERY | kind::XID | kind::TABLE_MAP | kind::GTID | kind::QUERY_COMPRESSED
    );
    let mut end = ev.len();
    if format.checksum && header.flags & ARTIFICIAL == 0 && kind != kind::HEARTBEAT {
        if ev.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(bad());
        }
        if meaningful && !crc_ok(ev) {
            return Err(EventError::Checksum(kind));
        }
        end -= CHECKSUM_LEN;
    }
    let body = &ev[HEADER_LEN..end];
    let event = match kind {
        kind::GTID => {
            let seq = le(body, 0, 8).ok_or_else(bad)?;
            let domain = le(body, 8, 4).ok_or_else(bad)? as u32;
            let flags = *body.get(12).ok_or_else(bad)?;
            let xa = if flags & FL_GROUP_COMMIT_ID == 0
                && flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0
            {
                // format id (4), gtrid length (1), bqual length (1), the xid.
                let n = usize::from(*body.get(17).ok_or_else(bad)?)
                    + usize::from(*body.get(18).ok_or_else(bad)?);
                let xid = body.get(13..19 + n).ok_or_else(bad)?;
                Some((flags & FL_PREPARED_XA != 0, xid))
            } else {
                None
            };
            Event::Gtid {
                gtid: Gtid {
                    domain,
                    server: header.server_id,
                    seq,
                },
                standalone: flags & FL_STANDALONE != 0,
                xa,
            }
        }
        kind::TABLE_MAP => {
            let at = format.post_header(kind, 8);
            let (schema, at) = name(body, at).ok_or_else(bad)?;
            let (table, _) = name(body, at).ok_or_else(bad)?;
            Event::TableMap { schema, table }
        }
        kind::QUERY | kind::QUERY_COMPRESSED => {
            // thread id (4), time (4), schema length (1), error (2), status length (2).
            let post = format.post_header(kind, 13);
            let db_len = usize::from(*body.get(8).ok_or_else(bad)?);
            let status_len = le(body, 11, 2).ok_or_else(bad)? as usize;
            let at = post + status_len;
            let schema = body.get(at..at + db_len).ok_or_else(bad)?;
            let sql = body.get(at + db_len + 1..).ok_or_else(bad)?;
            if kind == kind::QUERY_COMPRESSED {
                Event::CompressedQuery
            } else {
                Event::Query { schema, sql }
            }
        }
        kind::XID => Event::Xid,
        kind::INCIDENT => Event::Incident,
        kind::STOP => Event::Stop,
        _ => Event::Other,
    };
    Ok((header, event))
}

/// A transaction whose events have all arrived: what it changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// None for a group without a GTID event (an incident).
    pub gtid: Option<Gtid>,
    pub scopes: Vec<Scope>,
    /// It ran DDL (the catalog of views and foreign keys may have changed).
    pub ddl: bool,
}

#[derive(Debug, Default)]
struct Group {
    gtid: Option<Gtid>,
    standalone: bool,
    xa: Option<(bool, Vec<u8>)>,
    scopes: Vec<Scope>,
    ddl: bool,
}

/// Prepared XA transactions remembered at most; beyond, their commit bumps everything.
const MAX_PREPARED_XA: usize = 1000;

/// Events in, commits out.
#[derive(Debug, Default)]
pub struct Groups {
    open: Option<Group>,
    /// Prepared XA transactions: what they changed, bumped when their XA COMMIT arrives (a
    /// bump before then would let a fill read the old rows under the new generation).
    prepared: Vec<(Vec<u8>, Vec<Scope>)>,
}

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

fn starts_with_words(sql: &[u8], words: &[&str]) -> bool {
    let mut rest = sql;
    for w in words {
        let t = rest.trim_ascii_start();
        let n = t
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(t.len());
        if !t[..n].eq_ignore_ascii_case(w.as_bytes()) {
            return false;
        }
        rest = &t[n..];
    }
    true
}

impl Groups {
    /// The stream starts over (a reconnect): a group cut in the middle is resent whole.
    pub fn reset(&mut self) {
        self.open = None;
    }

    fn group(&mut self) -> &mut Group {
        self.open.get_or_insert_with(Group::default)
    }

    /// Feed one event; a commit when it ended a transaction.
    pub fn feed(&mut self, event: &Event<'_>) -> Option<Commit> {
        match event {
            Event::Gtid {
                gtid,
                standalone,
                xa,
            } => {
                // A group that never ended: count it as committed rather than lose its bumps.
                let unfinished = self.open.take().map(|g| self.finish(g));
                self.open = Some(Group {
                    gtid: Some(*gtid),
                    standalone: *standalone,
                    xa: xa.map(|(p, x)| (p, x.to_vec())),
                    ..Group::default()
                });
                unfinished
            }
            Event::TableMap { schema, table } => {
                self.group()
                    .scopes
                    .push(Scope::Table(lower(schema), lower(table)));
                None
            }
            Event::Query { schema, sql } => self.query(schema, sql),
            Event::CompressedQuery => {
                let g = self.group();
                g.scopes.push(Scope::All);
                g.ddl = true;
                let end = g.standalone;
                self.end_if(end)
            }
            Event::Xid => self.end_if(true),
            Event::Incident => {
                // The primary says events may be missing here.
                let mut g = self.open.take().unwrap_or_default();
                g.scopes.push(Scope::All);
                Some(self.finish(g))
            }
            Event::Format(_) | Event::Stop | Event::Other => None,
        }
    }

    fn end_if(&mut self, end: bool) -> Option<Commit> {
        if !end {
            return None;
        }
        let g = self.open.take()?;
        Some(self.finish(g))
    }

    fn query(&mut self, schema: &[u8], sql: &[u8]) -> Option<Commit> {
        let words = |w: &[&str]| starts_with_words(sql, w);
        if words(&["BEGIN"]) || words(&["XA", "START"]) || words(&["XA", "BEGIN"]) {
            self.group();
            return None;
        }
        if words(&["SAVEPOINT"]) || words(&["ROLLBACK", "TO"]) || words(&["RELEASE"]) {
            return None;
        }
        if words(&["XA", "END"]) {
            return None;
        }
        // COMMIT ends a group of non-transactional changes; ROLLBACK one whose
        // non-transactional changes stayed; XA PREPARE a prepared XA transaction's.
        if words(&["COMMIT"]) || words(&["ROLLBACK"]) || words(&["XA", "PREPARE"]) {
            return self.end_if(true);
        }
        let standalone = self.open.as_ref().is_none_or(|g| g.standalone);
        if words(&["XA", "COMMIT"]) || words(&["XA", "ROLLBACK"]) {
            // The scopes come from the prepared group (see `finish`).
            self.group();
            return self.end_if(standalone);
        }
        let schema = (!schema.is_empty()).then_some(schema);
        let scopes = crate::cache::policy::written_scopes(sql, schema);
        let g = self.group();
        g.scopes.extend(scopes);
        g.ddl = true;
        self.end_if(standalone)
    }

    fn finish(&mut self, mut g: Group) -> Commit {
        match g.xa.take() {
            Some((true, xid)) => {
                // Not visible until XA COMMIT: remember, bump nothing yet.
                if self.prepared.len() >= MAX_PREPARED_XA {
                    self.prepared.clear();
                }
                self.prepared.push((xid, std::mem::take(&mut g.scopes)));
            }
            Some((false, xid)) => match self.prepared.iter().position(|(x, _)| *x == xid) {
                Some(i) => g.scopes.extend(self.prepared.swap_remove(i).1),
                // Prepared before this stream began (or forgotten): anything may change.
                None => g.scopes.push(Scope::All),
            },
            None => {}
        }
        g.scopes.sort();
        g.scopes.dedup();
        Commit {
            gtid: g.gtid,
            scopes: g.scopes,
            ddl: g.ddl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event with a header, `body` and (with `crc`) its checksum.
    pub fn event(kind: u8, server: u32, body: &[u8], crc: bool) -> Vec<u8> {
        let len = HEADER_LEN + body.len() + if crc { 4 } else { 0 };
        let mut e = Vec::new();
        e.extend_from_slice(&0u32.to_le_bytes());
        e.push(kind);
        e.extend_from_slice(&server.to_le_bytes());
        e.extend_from_slice(&(len as u32).to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(body);
        if crc {
            let c = crc32fast::hash(&e);
            e.extend_from_slice(&c.to_le_bytes());
        }
        e
    }

    fn query(schema: &str, sql: &str) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[0; 8]);
        b.push(schema.len() as u8);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&3u16.to_le_bytes());
        b.extend_from_slice(&[9, 9, 9]); // status variables
        b.extend_from_slice(schema.as_bytes());
        b.push(0);
        b.extend_from_slice(sql.as_bytes());
        event(kind::QUERY, 1, &b, true)
    }

    fn table_map(schema: &str, table: &str) -> Vec<u8> {
        let mut b = vec![7, 0, 0, 0, 0, 0, 1, 0];
        b.push(schema.len() as u8);
        b.extend_from_slice(schema.as_bytes());
        b.push(0);
        b.push(table.len() as u8);
        b.extend_from_slice(table.as_bytes());
        b.push(0);
        b.extend_from_slice(&[1, 3, 0]); // columns, types: never read
        event(kind::TABLE_MAP, 1, &b, true)
    }

    fn gtid(seq: u64, flags: u8) -> Vec<u8> {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(flags);
        b.extend_from_slice(&[0; 6]);
        event(kind::GTID, 1, &b, true)
    }

    fn format(crc: bool) -> Format {
        let mut b = vec![4, 0];
        b.extend_from_slice(&[b'x'; 50]);
        b.extend_from_slice(&[0; 4]);
        b.push(19);
        let mut post = vec![0u8; 170];
        post[usize::from(kind::QUERY) - 1] = 13;
        post[usize::from(kind::TABLE_MAP) - 1] = 8;
        b.extend_from_slice(&post);
        b.push(u8::from(crc));
        let mut e = event(kind::FORMAT_DESCRIPTION, 1, &b, false);
        let len = e.len() as u32 + 4;
        e[9..13].copy_from_slice(&len.to_le_bytes());
        let c = if crc { crc32fast::hash(&e) } else { 0 };
        e.extend_from_slice(&c.to_le_bytes());
        match parse(&Format::default(), &e).unwrap().1 {
            Event::Format(f) => f,
            other => panic!("{other:?}"),
        }
    }

    fn feed(groups: &mut Groups, f: &Format, events: &[Vec<u8>]) -> Vec<Commit> {
        events
            .iter()
            .filter_map(|e| groups.feed(&parse(f, e).unwrap().1))
            .collect()
    }

    fn table(s: &str, t: &str) -> Scope {
        Scope::Table(s.as_bytes().to_vec(), t.as_bytes().to_vec())
    }

    #[test]
    fn a_transaction_commits_at_its_xid_with_every_mapped_table() {
        let f = format(true);
        assert!(f.checksum);
        let mut g = Groups::default();
        let rows = event(30, 1, &[0; 12], true);
        let xid = event(kind::XID, 1, &[1; 8], true);
        let commits = feed(
            &mut g,
            &f,
            &[
                gtid(42, 0),
                table_map("Shop", "Items"),
                rows.clone(),
                table_map("shop", "audit"),
                rows,
            ],
        );
        assert!(commits.is_empty(), "nothing committed before the XID");
        let c = feed(&mut g, &f, &[xid]);
        assert_eq!(
            c,
            vec![Commit {
                gtid: Some(Gtid {
                    domain: 0,
                    server: 1,
                    seq: 42
                }),
                scopes: vec![table("shop", "audit"), table("shop", "items")],
                ddl: false,
            }]
        );
    }

    #[test]
    fn ddl_is_a_standalone_group_and_myisam_ends_at_commit() {
        let f = format(true);
        let mut g = Groups::default();
        let c = feed(
            &mut g,
            &f,
            &[
                gtid(1, FL_STANDALONE),
                query("shop", "ALTER TABLE t ADD x INT"),
            ],
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scopes, vec![table("shop", "t")]);
        assert!(c[0].ddl);
        let c = feed(
            &mut g,
            &f,
            &[
                gtid(2, 0),
                query("shop", "BEGIN"),
                table_map("shop", "m"),
                query("shop", "COMMIT"),
            ],
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scopes, vec![table("shop", "m")]);
        assert!(!c[0].ddl);
    }

    #[test]
    fn a_prepared_xa_transaction_bumps_at_its_commit() {
        let f = format(false);
        let xa = |seq: u64, flag: u8| {
            let mut b = seq.to_le_bytes().to_vec();
            b.extend_from_slice(&0u32.to_le_bytes());
            b.push(flag);
            b.extend_from_slice(&[1, 0, 0, 0, 2, 0]);
            b.extend_from_slice(b"x1");
            event(kind::GTID, 1, &b, false)
        };
        let q = |sql: &str| {
            let mut b = vec![0; 8];
            b.extend_from_slice(&[0, 0, 0, 0, 0]);
            b.push(0);
            b.extend_from_slice(sql.as_bytes());
            event(kind::QUERY, 1, &b, false)
        };
        let tm = {
            let mut b = vec![7, 0, 0, 0, 0, 0, 1, 0, 1, b's', 0, 1, b't', 0];
            b.push(0);
            event(kind::TABLE_MAP, 1, &b, false)
        };
        let mut g = Groups::default();
        let c = feed(
            &mut g,
            &f,
            &[
                xa(5, FL_PREPARED_XA),
                q("XA START X'7831'"),
                tm,
                q("XA END X'7831'"),
                q("XA PREPARE X'7831'"),
            ],
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].scopes.is_empty(), "a prepared XA is not visible yet");
        let c = feed(
            &mut g,
            &f,
            &[
                xa(6, FL_COMPLETED_XA | FL_STANDALONE),
                q("XA COMMIT X'7831'"),
            ],
        );
        assert_eq!(c[0].scopes, vec![table("s", "t")]);
        let c = feed(
            &mut g,
            &f,
            &[
                xa(7, FL_COMPLETED_XA | FL_STANDALONE),
                q("XA COMMIT X'7831'"),
            ],
        );
        assert_eq!(c[0].scopes, vec![Scope::All], "unknown XA: everything");
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let f = format(true);
        let mut e = table_map("shop", "t");
        let n = e.len();
        e[n - 6] ^= 1;
        assert_eq!(parse(&f, &e), Err(EventError::Checksum(kind::TABLE_MAP)));
        assert_eq!(parse(&f, &e[..10]), Err(EventError::Short(10)));
        assert!(matches!(
            parse(&f, &e[..n - 1]),
            Err(EventError::Size { .. })
        ));
        // A name running past the end.
        let bad = event(
            kind::TABLE_MAP,
            1,
            &[7, 0, 0, 0, 0, 0, 1, 0, 200, b's'],
            true,
        );
        assert_eq!(parse(&f, &bad), Err(EventError::Malformed(kind::TABLE_MAP)));
        for cut in 0..e.len() {
            let mut short = e[..cut].to_vec();
            if short.len() >= 13 {
                short[9..13].copy_from_slice(&(cut as u32).to_le_bytes());
            }
            let _ = parse(&f, &short);
        }
    }

    #[test]
    fn an_unfinished_group_still_commits_when_the_next_begins() {
        let f = format(true);
        let mut g = Groups::default();
        let c = feed(
            &mut g,
            &f,
            &[gtid(1, 0), table_map("a", "b"), gtid(2, FL_STANDALONE)],
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scopes, vec![table("a", "b")]);
    }
}
