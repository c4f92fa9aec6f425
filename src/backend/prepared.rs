//! The statements prepared on one server connection, by schema and SQL text, so that any session
//! borrowing the connection can execute them without preparing again. At most `max` are kept;
//! the least recently used is closed on the server when room is needed, so the server's
//! max_prepared_stmt_count is never exhausted by Weiche.

use bytes::Bytes;
use std::collections::HashMap;

/// The server's statement and what it was last told about parameter types.
#[derive(Debug, Clone)]
pub struct ServerStatement {
    pub id: u32,
    /// The parameter types last sent with COM_STMT_EXECUTE to this statement (a later execute
    /// that does not send types relies on them).
    pub types: Option<Bytes>,
    last_used: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    schema: Option<Vec<u8>>,
    sql: Bytes,
}

#[derive(Debug)]
pub struct PreparedCache {
    by_key: HashMap<Key, ServerStatement>,
    tick: u64,
    pub max: usize,
}

impl Default for PreparedCache {
    fn default() -> Self {
        PreparedCache {
            by_key: HashMap::new(),
            tick: 0,
            max: 256,
        }
    }
}

impl PreparedCache {
    pub fn get(&mut self, schema: &Option<Vec<u8>>, sql: &Bytes) -> Option<&mut ServerStatement> {
        self.tick += 1;
        let tick = self.tick;
        let key = Key {
            schema: schema.clone(),
            sql: sql.clone(),
        };
        let s = self.by_key.get_mut(&key)?;
        s.last_used = tick;
        Some(s)
    }

    /// Remember a statement; returns the id of one to close on the server to make room.
    pub fn insert(&mut self, schema: &Option<Vec<u8>>, sql: &Bytes, id: u32) -> Option<u32> {
        self.tick += 1;
        let evicted = if self.by_key.len() >= self.max.max(1) {
            let oldest = self
                .by_key
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            oldest.and_then(|k| self.by_key.remove(&k)).map(|s| s.id)
        } else {
            None
        };
        self.by_key.insert(
            Key {
                schema: schema.clone(),
                sql: sql.clone(),
            },
            ServerStatement {
                id,
                types: None,
                last_used: self.tick,
            },
        );
        evicted
    }

    /// Forget a statement the server no longer has.
    pub fn remove(&mut self, schema: &Option<Vec<u8>>, sql: &Bytes) {
        self.by_key.remove(&Key {
            schema: schema.clone(),
            sql: sql.clone(),
        });
    }

    pub fn clear(&mut self) {
        self.by_key.clear();
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
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
}
