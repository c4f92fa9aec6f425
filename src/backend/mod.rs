//! Backends and server connections: opening a connection to a backend and logging in to it
//! with credentials Weiche holds. (Pools and the monitor build on this.)

pub mod connection;

pub use connection::{BackendError, LoginParams, Secret, ServerConnection};
