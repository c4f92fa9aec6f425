//! The result cache on the query path: look a cacheable read up before routing it, answer a hit
//! from the stored bytes, keep a miss's response, and bump the generations of what a write
//! touched once it has committed (before the client hears that it is done), so that no session
//! on any Weiche sharing the cache reads a result older than a write made through Weiche.

use super::relay::{RelayError, Tap};
use super::Session;
use crate::cache::{self, Asker, Cache, Key, KeyInput, Lookup, Plan, Scope, Verdict};
use crate::protocol::constants::cap;
use crate::sql::Effects;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A miss whose response is to be stored.
pub(crate) struct Fill {
    cache: Arc<Cache>,
    key: Key,
    /// The generations read before the statement ran.
    stamps: Vec<u64>,
    ttl: Duration,
    /// Auto mode's digest, and when the statement was sent (the database time a hit saves).
    auto: Option<(u64, Instant)>,
}

/// The cache's verdicts this session has made, by digest: the statements an application sends
/// over and over need no second lexing for the cache (only where the verdict is the same for
/// the whole digest: `policy::same_for_digest`). Forgotten when the configuration or the
/// default database changes.
#[derive(Debug, Default)]
pub struct Memo {
    epoch: u64,
    schema: Option<Vec<u8>>,
    verdicts: foldhash::HashMap<u64, Verdict>,
}

/// Verdicts a session keeps at most (then it starts over).
const MEMO_SIZE: usize = 256;

/// What the cache step before routing came to.
pub(crate) enum Step {
    /// The client has its answer.
    Answered,
    /// Run the statement; store its response when `Some`.
    Run(Option<Fill>),
}

impl Session {
    /// What the cache makes of this statement for this session now.
    pub fn cache_verdict(&self, sql: &[u8]) -> Verdict {
        if self.shared.cache.is_none() {
            return Verdict::NotAsked;
        }
        let asker = Asker {
            user: &self.user,
            schema: self.state.schema.as_deref(),
        };
        self.session_verdict(cache::decide(&self.config.cache, sql, asker))
    }

    /// The same, kept by `digest` (the classifier's) where that is sound.
    fn cache_verdict_of(&mut self, sql: &[u8], digest: Option<u64>) -> Verdict {
        let Some(digest) =
            digest.filter(|_| cache::policy::same_for_digest(&self.config.cache, sql))
        else {
            let mut v = self.cache_verdict(sql);
            // Auto mode knows digests by the classifier's hash, as SHOW QUERY DIGESTS does.
            if let (Verdict::Cacheable(p), Some(d)) = (&mut v, digest) {
                p.auto = p.auto.map(|_| d);
            }
            return v;
        };
        let m = &mut self.cache_memo;
        if m.epoch != self.config_epoch || m.schema != self.state.schema {
            m.verdicts.clear();
            m.epoch = self.config_epoch;
            m.schema.clone_from(&self.state.schema);
        }
        let decided = match m.verdicts.get(&digest) {
            Some(v) => v.clone(),
            None => {
                let asker = Asker {
                    user: &self.user,
                    schema: self.state.schema.as_deref(),
                };
                let mut v = cache::decide(&self.config.cache, sql, asker);
                if let Verdict::Cacheable(p) = &mut v {
                    p.auto = p.auto.map(|_| digest);
                }
                let m = &mut self.cache_memo;
                if m.verdicts.len() >= MEMO_SIZE {
                    m.verdicts.clear();
                }
                m.verdicts.insert(digest, v.clone());
                v
            }
        };
        self.session_verdict(decided)
    }

    /// What the session's state makes of a verdict: nothing is cached in a pinned session or
    /// with autocommit off.
    fn session_verdict(&self, verdict: Verdict) -> Verdict {
        let no = |plan: &Plan, why: std::borrow::Cow<'static, str>| match plan.auto {
            Some(_) => Verdict::Skipped(why),
            None => Verdict::Refused(why),
        };
        match verdict {
            Verdict::Cacheable(p) if self.pinned() => no(
                &p,
                format!("the session is pinned ({})", self.pin_reasons()).into(),
            ),
            Verdict::Cacheable(p) if self.autocommit_off() => no(
                &p,
                "autocommit is off: every statement is in a transaction".into(),
            ),
            v => v,
        }
    }

    /// Whether the cache could be asked for this statement (no lexing: the cheap first test).
    pub(crate) fn cache_may_ask(&self, sql: &[u8]) -> bool {
        self.shared.cache.is_some() && cache::policy::may_ask(&self.config.cache, sql)
    }

    fn autocommit_off(&self) -> bool {
        self.state
            .vars
            .get(&b"autocommit"[..])
            .is_some_and(|v| v.eq_ignore_ascii_case(b"OFF") || v == b"0")
    }

    fn cache_key(&self, sql: &[u8], params: &[u8]) -> Key {
        KeyInput {
            user: &self.user,
            identity: self.identity,
            schema: self.state.schema.as_deref(),
            // MariaDB's extended capabilities shape result sets too (extended metadata).
            shaping: (self.capabilities & (cap::RESPONSE_SHAPING | cap::SESSION_TRACK)) as u64
                | (self.mariadb_caps as u64) << 32,
            charset: self.charset,
            vars: &self.state.vars,
            statement: sql,
            params,
        }
        .key()
    }

    /// Before routing: answer from the cache, or prepare to fill it. `params` are a prepared
    /// statement's execute parameters (with a marker that keeps them apart from text queries).
    pub(crate) async fn cache_step(
        &mut self,
        sql: &[u8],
        digest: Option<u64>,
        params: Option<&[u8]>,
    ) -> Result<Step, RelayError> {
        let Some(cache) = self.shared.cache.clone() else {
            return Ok(Step::Run(None));
        };
        let plan = match self.cache_verdict_of(sql, digest) {
            Verdict::Cacheable(p) => p,
            Verdict::Refused(why) => {
                tracing::debug!(%why, "not cached");
                cache.refused();
                return Ok(Step::Run(None));
            }
            Verdict::NotAsked | Verdict::Skipped(_) => return Ok(Step::Run(None)),
        };
        if let (Some(digest), Some(auto)) = (plan.auto, &self.config.cache.auto) {
            let admit = cache
                .auto
                .admit(digest, auto, || crate::sql::digest::digest(sql));
            if admit != cache::auto::Admit::Cached {
                return Ok(Step::Run(None));
            }
        }
        // Boxed, as the fill and the bumps are: a lookup's state (a memcached round trip)
        // would otherwise be part of every command's future, cacheable or not.
        Box::pin(self.look_up(cache, plan, sql, params)).await
    }

    async fn look_up(
        &mut self,
        cache: Arc<Cache>,
        plan: Plan,
        sql: &[u8],
        params: Option<&[u8]>,
    ) -> Result<Step, RelayError> {
        let params = match params {
            Some(p) => [&b"\x01execute"[..], p].concat(),
            None => Vec::new(),
        };
        let key = self.cache_key(sql, &params);
        match cache.lookup(&plan, key, true).await {
            Lookup::Hit(rows, bytes) => {
                self.outcome = super::Outcome {
                    route: crate::metrics::RouteLabel::Cache,
                    rows,
                    error: false,
                };
                self.send_cached(&bytes).await?;
                Ok(Step::Answered)
            }
            Lookup::Miss(key, stamps) => {
                let mut limit = self.config.cache.max_result_size;
                if let (Some(_), Some(auto)) = (plan.auto, &self.config.cache.auto) {
                    // A key missed only once is not stored: one-off queries evict nothing.
                    if !cache.auto.store_miss(key.0) {
                        return Ok(Step::Run(None));
                    }
                    limit = limit.min(auto.max_result_size);
                }
                self.tap = Some(Tap::new(limit));
                Ok(Step::Run(Some(Fill {
                    ttl: plan.ttl,
                    cache,
                    key,
                    stamps,
                    auto: plan.auto.map(|d| (d, Instant::now())),
                })))
            }
            Lookup::Bypass => Ok(Step::Run(None)),
        }
    }

    /// EXPLAIN ROUTE's cache column: "cache hit", "cacheable (ttl 60 s, hint)", or why not.
    pub(crate) async fn cache_explain(&self, sql: &[u8]) -> String {
        let Some(cache) = &self.shared.cache else {
            return "cache off".into();
        };
        match self.cache_verdict(sql) {
            Verdict::NotAsked => "not cached: no hint or cache rule asks for it".into(),
            Verdict::Refused(why) => format!("not cached: {why}"),
            Verdict::Skipped(why) => format!("not cached (auto mode): {why}"),
            Verdict::Cacheable(plan) => {
                if let (Some(d), Some(auto)) = (plan.auto, &self.config.cache.auto) {
                    if let Some(why) = cache.auto.explain(d, auto) {
                        return format!("not cached (auto mode): {why}");
                    }
                }
                let key = self.cache_key(sql, &[]);
                match cache.lookup(&plan, key, false).await {
                    Lookup::Hit(..) => format!("cache hit ({})", plan.describe(&self.config.cache)),
                    Lookup::Miss(..) => {
                        format!("cacheable ({})", plan.describe(&self.config.cache))
                    }
                    Lookup::Bypass => format!(
                        "cacheable ({}), but the {} store is unreachable: bypassed",
                        plan.describe(&self.config.cache),
                        cache.store_name()
                    ),
                }
            }
        }
    }

    async fn send_cached(&mut self, bytes: &Bytes) -> Result<(), RelayError> {
        self.client
            .write_direct(bytes)
            .await
            .map_err(RelayError::Client)
    }

    /// After a miss ran: store its response if it is whole, without error or warnings.
    pub(crate) async fn cache_fill(&mut self, fill: Option<Fill>, clean: bool) {
        let tap = self.tap.take();
        let Some(fill) = fill else { return };
        Box::pin(self.store_fill(fill, tap, clean)).await
    }

    async fn store_fill(&mut self, fill: Fill, tap: Option<Tap>, clean: bool) {
        match tap {
            Some(t) if clean && !t.overflow && !t.bytes.is_empty() => {
                let rows = self.outcome.rows;
                if let Some((digest, sent)) = fill.auto {
                    let micros = sent.elapsed().as_micros().min(u64::MAX as u128) as u64;
                    fill.cache.auto.stored(digest, micros);
                }
                fill.cache
                    .put(fill.key, &fill.stamps, rows, &t.bytes, fill.ttl)
                    .await;
            }
            Some(t) => {
                if let (true, Some((digest, _))) = (t.overflow, fill.auto) {
                    fill.cache.auto.too_large(digest);
                }
                fill.cache.not_stored();
            }
            None => fill.cache.not_stored(),
        }
    }

    /// Whether the response to this command must be held for a generation bump.
    pub(crate) fn cache_holds(&self, effects: Option<&Effects>) -> bool {
        self.shared.cache.is_some()
            && (effects.is_some_and(|e| e.writes) || !self.cache_pending.is_empty())
    }

    /// After a command ran (or failed): note what a write touched, bump the generations once no
    /// transaction holds them back, then let the held response go to the client.
    pub(crate) async fn cache_written(
        &mut self,
        sql: &[u8],
        effects: Option<&Effects>,
    ) -> Result<(), RelayError> {
        if let Some(cache) = self.shared.cache.clone() {
            if effects.is_some_and(|e| e.writes_anywhere) {
                self.cache_pending.push(Scope::All);
            } else if effects.is_some_and(|e| e.writes) {
                let scopes = cache::policy::written_scopes(sql, self.state.schema.as_deref());
                self.cache_pending.extend(scopes);
            }
            // Only an open transaction holds the bumps back. Under autocommit=0 one is open
            // from the first statement to COMMIT, and the status says so (IN_TRANS); after the
            // COMMIT it is clear, though autocommit stays off.
            let in_transaction = self.current.as_ref().is_some_and(|c| {
                c.conn.state.status & crate::protocol::constants::status::IN_TRANS != 0
            });
            if !in_transaction && !self.cache_pending.is_empty() {
                let mut scopes: Vec<Scope> = std::mem::take(&mut self.cache_pending);
                scopes.sort();
                scopes.dedup();
                Box::pin(cache.bump(&scopes)).await;
            }
        }
        // Other instances' sessions of this user must see the commit once the client has OK.
        self.publish_shared_writes().await;
        self.client.flush().await.map_err(RelayError::Client)
    }
}
