//! Weiche is a MySQL/MariaDB proxy. Clients connect to it as if it were the server; it
//! authenticates them itself and relays their commands over server connections it opens to the
//! backends with credentials it holds. `protocol` and `sql` know the wire and the language;
//! `session` is one client's life; `backend` opens server connections; `server` runs it all.

pub mod admin;
pub mod backend;
pub mod cache;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod protocol;
pub mod route;
pub mod script;
pub mod server;
pub mod session;
pub mod shared;
pub mod sql;
pub mod tls;
pub mod upgrade;
