//! Backends and server connections: opening a connection to a backend and logging in with
//! credentials Weiche holds, the state each connection is in, the statements prepared on it,
//! the per-worker pools that lend connections to sessions, and the monitor that checks each
//! backend's health, role and replication lag, and the accounts read from the primary.

pub mod accounts;
pub mod connection;
pub mod gtid;
pub mod health;
pub mod monitor;
pub mod pool;
pub mod prepared;
pub mod query;
pub mod state;
pub mod table;

pub use connection::{BackendError, LoginParams, Secret, ServerConnection};
pub use health::{NoWriter, Report, State, Writer};
pub use pool::{PoolError, PoolKey, PoolSettings};
pub use state::{ConnState, SessionState};
pub use table::{BackendTable, Pick};
