//! Analyses remembered by statement shape, per worker thread.
//!
//! An application sends the same few hundred statements over and over with other values.
//! What the classifier, the effects scan and the written-tables scan conclude depends only on
//! a statement's tokens with their literals' values left out (they look at words,
//! identifiers, variables, comments and punctuation, never inside a string or a number), so
//! the analysis of one such statement holds for all of them. A statement is tokenized every
//! time (that is what tells its shape); the shape is then looked up, and only a new shape is
//! analyzed.
//!
//! The key is the exact token sequence (kind, and text for everything but literals), not a
//! hash of it, so two statements share an analysis only when the classifier could not tell
//! them apart. Each worker thread has its own memos (no lock on the query path); each is
//! bounded in entries and in key length, and emptied when full.

use foldhash::HashMap;
use std::cell::RefCell;
use std::thread::LocalKey;

use super::classify::Analysis;
use super::lexer::{Kind, Token};
use super::tables::Written;

/// Shapes remembered per worker thread before the memo starts over.
const MAX_ENTRIES: usize = 2048;
/// A longer key (a statement of many words: a bulk INSERT's columns, a long IN list of
/// identifiers) is analyzed every time; these are not the statements sent thousands of times
/// a second, and their analysis is small next to their transfer.
const MAX_KEY: usize = 1024;

struct Memo<T> {
    /// The key being built (kept to reuse its allocation).
    key: Vec<u8>,
    /// foldhash, seeded per process: SipHash over the key was most of a lookup's cost, and
    /// the seed still keeps a client from choosing keys that collide.
    entries: HashMap<Box<[u8]>, T>,
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            key: Vec::new(),
            entries: HashMap::default(),
        }
    }
}

impl<T: Clone> Memo<T> {
    fn get_or(&mut self, sql: &[u8], tokens: &[Token], f: impl FnOnce(&[u8], &[Token]) -> T) -> T {
        if !shape_key(sql, tokens, &mut self.key) {
            return f(sql, tokens);
        }
        if let Some(a) = self.entries.get(self.key.as_slice()) {
            return a.clone();
        }
        let a = f(sql, tokens);
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(self.key.as_slice().into(), a.clone());
        a
    }
}

thread_local! {
    static ANALYSES: RefCell<Memo<Analysis>> = RefCell::new(Memo::default());
    static WRITTEN: RefCell<Memo<Written>> = RefCell::new(Memo::default());
}

/// `f(sql, tokens)`, or what it gave for an earlier statement of the same shape.
fn by_shape<T: Clone + 'static>(
    memo: &'static LocalKey<RefCell<Memo<T>>>,
    sql: &[u8],
    tokens: &[Token],
    f: impl FnOnce(&[u8], &[Token]) -> T,
) -> T {
    memo.with(|memo| match memo.try_borrow_mut() {
        Ok(mut memo) => memo.get_or(sql, tokens, f),
        Err(_) => f(sql, tokens),
    })
}

/// The classifier's analysis (`analyze`), remembered by shape.
pub fn analyze_by_shape(
    sql: &[u8],
    tokens: &[Token],
    analyze: impl FnOnce(&[u8], &[Token]) -> Analysis,
) -> Analysis {
    by_shape(&ANALYSES, sql, tokens, analyze)
}

/// The tables a write touches (`scan`), remembered by shape.
pub fn written_by_shape(
    sql: &[u8],
    tokens: &[Token],
    scan: impl FnOnce(&[u8], &[Token]) -> Written,
) -> Written {
    by_shape(&WRITTEN, sql, tokens, scan)
}

/// Write `tokens`' shape into `key`: per token its kind, and for all but literals the length
/// and bytes of its text (so that no two sequences write the same bytes). False when the
/// statement is not to be remembered: a token the lexer could not finish, or a key too long.
fn shape_key(sql: &[u8], tokens: &[Token], key: &mut Vec<u8>) -> bool {
    key.clear();
    for t in tokens {
        if key.len() > MAX_KEY {
            return false;
        }
        key.push(t.kind as u8);
        match t.kind {
            Kind::Unterminated => return false,
            Kind::Str | Kind::Number | Kind::HexOrBit => {}
            _ => {
                let text = t.text(sql);
                let Ok(len) = u16::try_from(text.len()) else {
                    return false;
                };
                key.extend_from_slice(&len.to_le_bytes());
                key.extend_from_slice(text);
            }
        }
    }
    key.len() <= MAX_KEY
}

#[cfg(test)]
mod tests {
    use super::shape_key;
    use crate::sql::lexer::tokenize;

    fn key(sql: &str) -> Option<Vec<u8>> {
        let mut k = Vec::new();
        shape_key(sql.as_bytes(), &tokenize(sql.as_bytes()), &mut k).then_some(k)
    }

    #[test]
    fn shapes_ignore_literal_values_and_spacing_only() {
        assert_eq!(
            key("SELECT c FROM sbtest1 WHERE id=5"),
            key("SELECT  c FROM sbtest1 WHERE id = 4711")
        );
        // A literal's kind stays in the shape, and so does everything that is not a literal.
        assert_ne!(key("SELECT 1"), key("SELECT 'a'"));
        assert_ne!(key("SELECT c FROM t"), key("select c FROM t"));
        assert_ne!(key("SELECT @a"), key("SELECT @b"));
        assert_ne!(
            key("SELECT 1 /* weiche:primary */"),
            key("SELECT 1 /* weiche:replica */")
        );
        assert_ne!(key("SELECT `a`"), key("SELECT `ab`"));
        // Lengths keep the encoding unambiguous.
        assert_ne!(key("SELECT ab"), key("SELECT a b"));
    }

    #[test]
    fn unfinished_and_long_statements_are_not_remembered() {
        assert_eq!(key("SELECT 'abc"), None);
        let long = format!("SELECT {}", vec!["col"; 400].join(", "));
        assert_eq!(key(&long), None);
    }
}

#[cfg(test)]
mod same_analysis {
    use crate::sql::classify::{analyze_in, analyze_tokens};
    use crate::sql::lexer::{tokenize_in, Dialect};

    /// A remembered analysis is the one the statement itself gets: a corpus of statements,
    /// each analyzed once with other values first (so that the second is a memo hit).
    #[test]
    fn remembered_analyses_equal_fresh_ones() {
        let dialect = Dialect {
            version: 101114,
            backslash_escapes: Some(true),
        };
        for (first, second) in [
            (
                "SELECT c FROM sbtest1 WHERE id = 1",
                "SELECT c FROM sbtest1 WHERE id = 99",
            ),
            ("SELECT GET_LOCK('a', 1)", "SELECT GET_LOCK('b', 10)"),
            (
                "UPDATE t SET a = 1 WHERE id = 2",
                "UPDATE t SET a = 'x' WHERE id = 3",
            ),
            ("SELECT a FROM t FOR UPDATE", "SELECT a FROM t  FOR UPDATE"),
            (
                "CREATE TEMPORARY TABLE tmp (a int)",
                "CREATE TEMPORARY TABLE tmp (a int)",
            ),
            (
                "SELECT 1; UPDATE t SET a = 2",
                "SELECT 5; UPDATE t SET a = 6",
            ),
            (
                "/* weiche:replica */ SELECT 1",
                "/* weiche:replica */ SELECT 2",
            ),
            ("SELECT 1 /*!50000 , 2 */", "SELECT 1 /*!50000 , 3 */"),
            (
                "INSERT INTO t VALUES (1) /*!50000 */",
                "INSERT INTO t VALUES (2) /*!50000 */",
            ),
        ] {
            let _ = analyze_in(first.as_bytes(), dialect);
            let remembered = analyze_in(second.as_bytes(), dialect);
            let sql = second.as_bytes();
            let mut fresh = analyze_tokens(sql, &tokenize_in(sql, dialect));
            super::super::classify::versioned_writes(sql, &mut fresh);
            assert_eq!(remembered, fresh, "{second}");
        }
    }

    #[test]
    fn remembered_written_tables_equal_fresh_ones() {
        use crate::sql::lexer::tokenize;
        use crate::sql::tables::{written, written_tokens};
        for (first, second) in [
            (
                "UPDATE shop.items SET n = 1 WHERE id = 2",
                "UPDATE shop.items SET n = 7 WHERE id = 9",
            ),
            (
                "INSERT INTO `a``b` VALUES (1, 'x')",
                "INSERT INTO `a``b` VALUES (2, 'y')",
            ),
            (
                "DELETE FROM t WHERE id = 1; DROP DATABASE d",
                "DELETE FROM t WHERE id = 5; DROP DATABASE d",
            ),
            ("CALL p(1)", "CALL p(2)"),
        ] {
            let _ = written(first.as_bytes());
            let sql = second.as_bytes();
            assert_eq!(
                written(sql),
                written_tokens(sql, &tokenize(sql)),
                "{second}"
            );
        }
    }
}
