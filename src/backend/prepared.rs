//! The statements prepared on one server connection, by schema and SQL text, so that any session
//! borrowing the connection can execute them without preparing again. At most `max` are kept;
//! the least recently used is closed on the server when room is needed, so the server's
//! max_prepared_stmt_count is never exhausted by Weiche.

use bytes::Bytes;
use foldhash::HashMap;

/// The server's statement and what it was last told about parameter types.
#[derive(Debug, Clone)]
pub struct ServerStatement {
    pub id: u32,
    /// The parameter types last sent with COM_STMT_EXECUTE to this statement (a later execute
    /// that does not send types relies on them).
    pub types: Option<Bytes>,
    last_used: u64,
}

/// The default database a statement was prepared under.
type Schema = Option<Vec<u8>>;

/// Statements by SQL text, then by schema: a lookup hashes the text it is given and clones
/// nothing (it runs for every execute). One text is rarely prepared under more than one or two
/// schemas, so those are a short list.
#[derive(Debug)]
pub struct PreparedCache {
    /// foldhash (seeded): every execute hashes its statement's text here.
    by_sql: HashMap<Bytes, Vec<(Schema, ServerStatement)>>,
    len: usize,
    tick: u64,
    pub max: usize,
}

impl Default for PreparedCache {
    fn default() -> Self {
        PreparedCache {
            by_sql: HashMap::default(),
            len: 0,
            tick: 0,
            max: 256,
        }
    }
}

impl PreparedCache {
    pub fn get(&mut self, schema: &Option<Vec<u8>>, sql: &Bytes) -> Option<&mut ServerStatement> {
        self.tick += 1;
        let tick = self.tick;
        let (_, s) = self
            .by_sql
            .get_mut(&sql[..])?
            .iter_mut()
            .find(|(k, _)| k == schema)?;
        s.last_used = tick;
        Some(s)
    }

    /// Remember a statement; returns the id of one to close on the server to make room.
    pub fn insert(&mut self, schema: &Option<Vec<u8>>, sql: &Bytes, id: u32) -> Option<u32> {
        self.tick += 1;
        let statement = ServerStatement {
            id,
            types: None,
            last_used: self.tick,
        };
        if let Some(s) = self.get(schema, sql) {
            *s = statement;
            return None;
        }
        let evicted = if self.len >= self.max.max(1) {
            self.evict_oldest()
        } else {
            None
        };
        self.by_sql
            .entry(sql.clone())
            .or_default()
            .push((schema.clone(), statement));
        self.len += 1;
        evicted
    }

    fn evict_oldest(&mut self) -> Option<u32> {
        let (sql, schema) = self
            .by_sql
            .iter()
            .flat_map(|(sql, list)| list.iter().map(move |(k, s)| (sql, k, s.last_used)))
            .min_by_key(|(_, _, used)| *used)
            .map(|(sql, k, _)| (sql.clone(), k.clone()))?;
        self.take(&schema, &sql).map(|s| s.id)
    }

    fn take(&mut self, schema: &Option<Vec<u8>>, sql: &Bytes) -> Option<ServerStatement> {
        let list = self.by_sql.get_mut(&sql[..])?;
        let at = list.iter().position(|(k, _)| k == schema)?;
        let (_, s) = list.swap_remove(at);
        if list.is_empty() {
            self.by_sql.remove(&sql[..]);
        }
        self.len -= 1;
        Some(s)
    }

    /// Forget a statement the server no longer has.
    pub fn remove(&mut self, schema: &Option<Vec<u8>>, sql: &Bytes) {
        self.take(schema, sql);
    }

    pub fn clear(&mut self) {
        self.by_sql.clear();
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_is_evicted() {
        let mut c = PreparedCache {
            max: 2,
            ..Default::default()
        };
        let (a, b, d) = (
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"d"),
        );
        assert_eq!(c.insert(&None, &a, 1), None);
        assert_eq!(c.insert(&None, &b, 2), None);
        assert!(c.get(&None, &a).is_some());
        assert_eq!(c.insert(&None, &d, 3), Some(2));
        assert!(c.get(&None, &b).is_none());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn one_text_under_two_schemas_is_two_statements() {
        let mut c = PreparedCache::default();
        let sql = Bytes::from_static(b"SELECT 1");
        let (x, y) = (Some(b"x".to_vec()), Some(b"y".to_vec()));
        assert_eq!(c.insert(&x, &sql, 1), None);
        assert_eq!(c.insert(&y, &sql, 2), None);
        assert_eq!(c.get(&x, &sql).map(|s| s.id), Some(1));
        assert_eq!(c.get(&y, &sql).map(|s| s.id), Some(2));
        assert!(c.get(&None, &sql).is_none());
        c.remove(&x, &sql);
        assert!(c.get(&x, &sql).is_none());
        assert_eq!(c.get(&y, &sql).map(|s| s.id), Some(2));
        // Preparing again replaces, it does not add.
        assert_eq!(c.insert(&y, &sql, 3), None);
        assert_eq!((c.len(), c.get(&y, &sql).map(|s| s.id)), (1, Some(3)));
        c.clear();
        assert!(c.is_empty());
    }
}
