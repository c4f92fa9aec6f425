//! Why a statement goes where it goes: a typed reason, made without allocating on the common
//! path, and rendered to text only for EXPLAIN ROUTE and the logs.

/// The rule of `route::decide` that placed a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The session must stay on its server connection (the pins, as text).
    Pinned(String),
    /// It reads the previous statement's results (FOUND_ROWS(), SHOW WARNINGS, ...).
    Previous,
    /// The Lua script chose the backend (proxy.connection.backend_ndx).
    Script,
    /// A hint in a comment (`/* weiche:primary */`, ...), as the classifier names it.
    Hint(&'static str),
    /// The `[[rules]]` entry with this number (from 1).
    Rule(usize),
    /// The classifier's verdict on the statement.
    Classifier(&'static str),
    /// START TRANSACTION READ ONLY (routing.read_only_transactions = "replica").
    ReadOnlyTransaction,
    /// A read right after the session's own write whose GTID is unknown.
    ReadYourWrites,
    /// The login's check that the session can work.
    Login,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Pinned(pins) => write!(f, "pinned: {pins}"),
            Reason::Previous => f.write_str("reads the previous statement's results on its server"),
            Reason::Script => f.write_str("Lua: proxy.connection.backend_ndx"),
            Reason::Hint(why) | Reason::Classifier(why) => f.write_str(why),
            Reason::Rule(n) => write!(f, "rule {n} matched"),
            Reason::ReadOnlyTransaction => {
                f.write_str("START TRANSACTION READ ONLY runs on one replica")
            }
            Reason::ReadYourWrites => {
                f.write_str("read after the session's own write (read-your-writes window)")
            }
            Reason::Login => f.write_str("login"),
        }
    }
}
