//! The server side of a command: hand what the session knows to `route::decide`, borrow a
//! connection (or stay on the current one), bring it to the session's state (waiting for a GTID
//! where the route says so), relay the command and its response, learn what changed (state,
//! transaction, pins, writes), and give the connection back when nothing holds the session.

use super::outcome::{CommandError, DOWN_FOR};
use super::relay::{forward_command, relay_response, RelayError, Rewrite};
use super::Session;
use crate::backend::gtid::GtidPos;
use crate::backend::pool::{self, PoolKey};
use crate::backend::query::Answer;
use crate::backend::state::plan;
use crate::config::Role;
use crate::metrics::RouteLabel;
use crate::protocol::constants::{cap, com, status};
use crate::protocol::{Chunk, Expect, Walker};
use crate::route::{self, Destination, Held, Request, Route, Wait};
use crate::sql::{Analysis, Effects};
use std::time::Instant;

/// The session's server connection and where it is.
#[derive(Debug)]
pub struct Current {
    pub conn: Box<crate::backend::pool::Pooled>,
    pub backend: usize,
    /// Kept only for the next statement (see HOLD_FOR_NEXT), since this instant.
    pub held_since: Option<Instant>,
}

impl Session {
    pub fn pool_key(&self) -> PoolKey {
        PoolKey {
            user: self.user.clone(),
            identity: self.identity,
            charset: self.charset,
            capabilities: self.capabilities & cap::RESPONSE_SHAPING,
            mariadb_caps: self.mariadb_caps,
        }
    }

    /// Status flags for answers Weiche gives itself.
    pub fn status(&self) -> u16 {
        self.current.as_ref().map_or(status::AUTOCOMMIT, |c| {
            c.conn.state.status & (status::IN_TRANS | status::AUTOCOMMIT)
        })
    }

    /// The session must stay on its current connection.
    pub fn pinned(&self) -> bool {
        self.pins.any()
            || self
                .current
                .as_ref()
                .is_some_and(|c| c.conn.state.in_transaction())
    }

    /// The backend this session's reads prefer now (see `route::Request::last`).
    fn affinity(&self) -> Option<usize> {
        let (i, since, rotation) = self.last_backend?;
        (since.elapsed() < route::AFFINITY && rotation == self.shared.backends.rotation())
            .then_some(i)
    }

    /// What `pin_reasons` depends on, to tell cheaply whether it changed.
    pub fn pins_shown(&self) -> super::pins::Shown {
        let status = self.current.as_ref().map_or(0, |c| c.conn.state.status);
        let flags = if !self.pinned() {
            0
        } else if status & status::IN_TRANS != 0 {
            1
        } else if status & status::AUTOCOMMIT == 0 {
            2
        } else {
            4
        };
        self.pins.shown(flags)
    }

    /// Why the session is pinned, for EXPLAIN ROUTE and logs ("" when it is not).
    pub fn pin_reasons(&self) -> String {
        let mut r = self.pins.reasons();
        if let Some(c) = &self.current {
            if c.conn.state.status & status::IN_TRANS != 0 {
                r.insert(0, "transaction");
            } else if c.conn.state.status & status::AUTOCOMMIT == 0 {
                r.insert(0, "autocommit off");
            }
        }
        r.join(", ")
    }

    /// Where a statement with this analysis goes now.
    pub fn route(&self, analysis: &Analysis, text: &[u8]) -> Result<Route, CommandError> {
        self.route_avoiding(analysis, text, None)
    }

    /// Where a statement goes, keeping away from backend `avoid` (it just failed): what the
    /// session knows, handed to `route::decide`.
    pub fn route_avoiding(
        &self,
        analysis: &Analysis,
        text: &[u8],
        avoid: Option<usize>,
    ) -> Result<Route, CommandError> {
        let held = match &self.current {
            Some(c) if self.pinned() => Held::Pinned {
                backend: c.backend,
                reasons: self.pin_reasons(),
            },
            Some(c) if c.held_since.is_some() => Held::ForNext,
            _ => Held::Free,
        };
        let request = Request {
            analysis,
            text,
            user: &self.user,
            schema: self.state.schema.as_deref(),
            held,
            script_backend: self.script_backend,
            writes: &self.writes,
            avoid,
            // Kept for a second at most, and only while the rotation is unchanged: then the
            // session's next read is placed afresh, so that a replica back in rotation (or a
            // new one) gets its share of a long-lived session's reads.
            last: self.affinity(),
        };
        route::decide(&self.config, &self.shared.backends, request).map_err(CommandError::route)
    }

    /// Make `current` a connection to the route's backend in the session's state. A read that
    /// must see a GTID position waits for it on the replica, within `routing.consistency_wait`;
    /// when the replica is not there by then, the primary serves the read.
    pub async fn connect_for(
        &mut self,
        route: &Route,
        insert_id: bool,
    ) -> Result<(), CommandError> {
        let position = match &route.wait {
            None => None,
            Some(Wait::For(p)) => Some(p.clone()),
            Some(Wait::PrimaryNow) => match self.primary_position().await {
                Some(p) => Some(p),
                // The primary's position is unknown: only the primary is consistent.
                None => return self.connect_when_behind(route, insert_id, None).await,
            },
        };
        if self
            .connect_to(route.destination, insert_id, position.as_ref())
            .await?
        {
            return Ok(());
        }
        self.connect_when_behind(route, insert_id, position.as_ref())
            .await
    }

    /// The replica could not serve the read consistently: `route::when_behind` says who does.
    async fn connect_when_behind(
        &mut self,
        route: &Route,
        insert_id: bool,
        need: Option<&GtidPos>,
    ) -> Result<(), CommandError> {
        let target = route::when_behind(&self.shared.backends, route, need)
            .map_err(CommandError::no_consistent_server)?;
        tracing::debug!(reason = %route, "the replica has not applied the session's writes: the primary serves the read");
        self.connect_to(Destination::Backend(target), insert_id, None)
            .await
            .map(|_| ())
    }

    /// Bring `current` to `destination` in the session's state, and wait there for
    /// `position`. False when the wait timed out (the connection is released then).
    async fn connect_to(
        &mut self,
        destination: Destination,
        insert_id: bool,
        position: Option<&GtidPos>,
    ) -> Result<bool, CommandError> {
        if let Destination::Backend(i) = destination {
            if self.current.as_ref().is_none_or(|c| c.backend != i) {
                if self.pinned() {
                    // Cannot happen: a pinned session routes to Current.
                    return Err(CommandError::internal("pinned session routed elsewhere"));
                }
                self.release();
                let conn = self.borrow(i).await?;
                if self.affinity() != Some(i) {
                    self.last_backend = Some((i, Instant::now(), self.shared.backends.rotation()));
                }
                tracing::debug!(backend = %conn.address, thread_id = conn.thread_id, "server connection");
                self.handle.set_server(Some((i, conn.thread_id)));
                self.current = Some(Current {
                    conn,
                    backend: i,
                    held_since: None,
                });
            }
        }
        let Some(cur) = self.current.as_mut() else {
            return Err(CommandError::unreachable("no server connection"));
        };
        cur.held_since = None;
        let p = plan(&self.state, self.id, &cur.conn.state, insert_id);
        if p.is_empty() && position.is_none() {
            cur.conn.state.owner = self.id;
            return Ok(true);
        }
        tracing::debug!(
            reset = p.reset,
            init_db = p.init_db.is_some(),
            set = p.set.is_some(),
            "syncing server connection"
        );
        let conn = &mut cur.conn;
        let mut n = 0;
        if p.reset {
            conn.queue_reset();
            conn.prepared.clear();
            n += 2;
        }
        if let Some(db) = &p.init_db {
            conn.queue_command(com::INIT_DB, db);
            n += 1;
        }
        if let Some(set) = &p.set {
            conn.queue_query(set);
            n += 1;
        }
        if let Some(pos) = position {
            let wait = self.config.routing.consistency_wait.as_secs_f64();
            conn.queue_query(format!("SELECT MASTER_GTID_WAIT('{pos}', {wait:.3})").as_bytes());
        }
        let sent = conn.framed.flush().await;
        let mut failure = sent.err().map(|e| e.to_string());
        let mut refusal = None;
        for _ in 0..n {
            if failure.is_some() {
                break;
            }
            match conn.read_answer().await {
                // The server's own error (an unknown database) reaches the client as it is.
                Ok(Answer::Err(e)) => refusal = refusal.or(Some(e)),
                Ok(_) => {}
                Err(e) => failure = Some(e.to_string()),
            }
        }
        let mut caught_up = true;
        if let (Some(pos), None) = (position, &failure) {
            match conn.read_answer().await {
                Ok(Answer::Rows(r)) => {
                    caught_up = r
                        .rows
                        .first()
                        .and_then(|row| row.first())
                        .is_some_and(|v| v.as_deref() == Some(b"0".as_slice()));
                }
                Ok(Answer::Err(e)) => {
                    tracing::warn!(backend = %conn.address, "MASTER_GTID_WAIT failed: {}", e.message);
                    caught_up = false;
                }
                Ok(Answer::Ok(_)) => caught_up = false,
                Err(e) => failure = Some(e.to_string()),
            }
            if caught_up {
                self.shared.backends.applied(cur.backend, pos);
            }
        }
        if failure.is_some() || refusal.is_some() {
            let address = conn.address.clone();
            self.drop_current();
            let err = match refusal {
                Some(e) => CommandError::server(e),
                None => CommandError::lost(format!(
                    "lost the connection to {address} while bringing it to the session's state: {}",
                    failure.unwrap_or_default()
                )),
            };
            tracing::warn!(backend = %address, "cannot bring a server connection to the session's state: {}", err.to_err_packet().message);
            return Err(err);
        }
        conn.state.session = self.state.clone();
        if p.reset {
            conn.state.untracked = None;
        }
        conn.state.owner = self.id;
        if !caught_up {
            self.release();
        }
        Ok(caught_up)
    }

    /// How Weiche logs in to a backend for this session (pooled connections start without a
    /// database: the session's is set by the sync).
    pub fn backend_params(&self) -> crate::backend::LoginParams {
        let mut params = self.login_params();
        params.database = None;
        params
    }

    /// How a pooled connection to the backend at `address` logs in: with the compressed
    /// protocol when the backend's `compress` says so.
    fn pooled_params(&self, address: &str) -> crate::backend::LoginParams {
        let mut params = self.backend_params();
        let compress = self
            .config
            .backends
            .iter()
            .any(|b| b.compress && b.address == address);
        params.compress = compress.then_some(crate::protocol::compress::Algorithm::Zlib {
            level: self.config.compression.zlib_level,
        });
        params
    }

    /// A pooled connection to backend `i` for this session's key (not yet in its state).
    pub(super) async fn borrow(&mut self, i: usize) -> Result<Box<pool::Pooled>, CommandError> {
        let table = self.shared.backends.clone();
        let address = &table.backends[i].address;
        let settings = &self.config.pool.settings;
        let generation = table.generation(i);
        let epoch = generation.down;
        // A backend that hangs while we connect (accepts TCP, never greets) holds the command
        // only until the monitor takes it down, as for a command in flight.
        let key = self.pool_key();
        let acquired = tokio::select! {
            biased;
            r = pool::acquire(&self.shared.pool_counts, address, &key, || self.pooled_params(address), settings, generation) => r,
            e = super::watchdog::watchdog(&table, i, epoch, None) => {
                tracing::warn!("gave up connecting: {e}");
                return Err(CommandError::unreachable(format!("{e} while connecting")));
            }
        };
        match acquired {
            Ok(mut c) => {
                c.prepared.max = self.config.pool.max_prepared_per_connection;
                Ok(c)
            }
            Err(e) => {
                if matches!(e, pool::PoolError::Backend(_)) && table.role(i) == Role::Replica {
                    table.mark_down(i, DOWN_FOR);
                }
                tracing::warn!("{e}");
                Err(e.into())
            }
        }
    }

    /// Give the current connection back to the pool (if nothing pins the session to it).
    pub fn release(&mut self) {
        if self.pinned() {
            return;
        }
        if let Some(cur) = self.current.take() {
            self.give_back(cur);
        }
    }

    /// Hand a server connection the session no longer holds back to its pool.
    pub fn give_back(&self, cur: Current) {
        self.handle.set_server(None);
        pool::release(cur.conn);
    }

    /// Close the current connection (it failed); pins that lived on it are gone.
    pub fn drop_current(&mut self) {
        if let Some(mut cur) = self.current.take() {
            cur.conn.broken = true;
            if self.pins.any() {
                tracing::warn!("lost a pinned server connection ({})", self.pin_reasons());
            }
            self.pins.clear_keeping_mode();
            self.give_back(cur);
        }
    }

    /// Relay a command to the current connection and stream the response. A command whose
    /// backend goes down meanwhile, or that outlives `routing.query_timeout`, is given up
    /// (`RelayError::Abandoned`). `self.answered` tells whether any byte reached the client.
    pub async fn relay_current(
        &mut self,
        cmd: &Chunk,
        expect: Expect,
        rewrite: Rewrite,
    ) -> Result<Walker, RelayError> {
        let deprecate_eof = self.deprecate_eof();
        let max = self.config.max_packet_size;
        let untrack_ok = self.capabilities & cap::SESSION_TRACK == 0;
        let timeout = self.config.routing.query_timeout;
        // Borrowed, not cloned: this runs for every command.
        let table = &*self.shared.backends;
        self.answered = false;
        let Some(cur) = self.current.as_mut() else {
            return Err(RelayError::Server(crate::protocol::ProtocolError::Closed));
        };
        let backend = cur.backend;
        let thread_id = cur.conn.thread_id;
        let epoch = table.epoch(backend);
        let _in_flight = table.begin(backend);
        let code = cmd.payload[0];
        let binary = matches!(
            code,
            com::STMT_EXECUTE | com::STMT_BULK_EXECUTE | com::STMT_FETCH
        );
        let mut walker = Walker::new(expect, deprecate_eof, binary).tracked();
        let answered = &mut self.answered;
        let tap = self.tap.as_mut();
        let result = {
            let relay = async {
                forward_command(&mut self.client, &mut cur.conn.framed, cmd, max).await?;
                relay_response(
                    &mut self.client,
                    &mut cur.conn.framed,
                    &mut walker,
                    Rewrite {
                        untrack_ok,
                        ..rewrite
                    },
                    answered,
                    tap,
                )
                .await
            };
            tokio::select! {
                biased;
                r = relay => r,
                e = super::watchdog::watchdog(table, backend, epoch, timeout) => Err(e),
            }
        };
        self.outcome = super::Outcome {
            route: match table.role(backend) {
                Role::Primary => RouteLabel::Primary,
                Role::Replica => RouteLabel::Replica,
            },
            rows: walker.rows,
            error: walker.error || result.is_err(),
        };
        if let Err(e) = &result {
            cur.conn.broken = true;
            if matches!(e, RelayError::Timeout(_)) {
                self.kill_query(backend, thread_id);
            }
        }
        result?;
        Ok(walker)
    }

    /// Learn from a finished response: state changes, transaction status, pins.
    pub fn learn(&mut self, walker: &Walker, effects: Option<&Effects>) {
        let write = effects.is_some_and(|e| e.writes);
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        if let Some(st) = walker.status {
            cur.conn.state.status = st;
        }
        let ok = crate::protocol::track::TrackedOk {
            last_insert_id: walker.ok.as_ref().map_or(0, |o| o.last_insert_id),
            changes: walker.changes.clone(),
            ..Default::default()
        };
        self.state.apply(&ok);
        cur.conn.state.session.apply(&ok);
        if let Some(e) = effects {
            self.pins.apply(e, !walker.error);
            if let Some(why) = super::pins::unrecorded_change(&walker.changes, e) {
                if self.pins.untracked.is_none() {
                    tracing::debug!("{why}: the session keeps its server connection");
                }
                self.pins.untracked = Some(why);
            }
            if e.sets_globals && !walker.error {
                // Sessions that log in from now on must start from the new values, not from a
                // pooled connection that logged in before (the monitor sees other clients'
                // SET GLOBAL within a few seconds).
                self.shared.backends.globals_changed(cur.backend);
            }
        }
        if let Some(u) = self.pins.leaves_untracked_state() {
            cur.conn.state.untracked = Some(u);
        }
        let in_transaction = cur.conn.state.in_transaction();
        let rollback = effects.is_some_and(|e| e.rollback);
        let reported = self.learn_position(&walker.changes);
        self.writes
            .after_statement(reported, write && !walker.error, in_transaction, rollback);
        // Keep the connection for the next statement when it may ask about this one
        // (ROW_COUNT(), FOUND_ROWS(), SHOW WARNINGS).
        let warnings = walker
            .ok
            .as_ref()
            .is_some_and(|o| o.warnings > 0 || o.affected_rows > 0);
        let calc = effects.is_some_and(|e| e.calc_found_rows || e.needs_previous);
        if let Some(cur) = self.current.as_mut() {
            cur.held_since = Some(Instant::now());
        }
        if !(warnings || walker.error || calc || write) {
            self.release();
        }
    }
}
