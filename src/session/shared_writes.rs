//! Read-your-writes across instances and connections (`routing.shared_read_your_writes`): a
//! PHP request that writes through one Weiche and whose next request reads through another, on
//! a new connection, must see its write. Each commit's GTID is published per user in the cache's
//! memcached cluster (`<namespace>:ryw:<user>`, sealed, merged by compare-and-set so that it
//! only grows) before the client hears OK; each read of any session of that user first takes
//! the published position into its own, so routing sends it where that has been applied (or
//! waits for it, or goes to the primary), as for the session's own writes. One memcached round
//! trip per read and one or two per commit.

use super::Session;
use crate::backend::gtid::GtidPos;
use crate::cache::memcached::{self, Batch, Cluster, McReply};
use crate::cache::Cache;
use crate::sql::{Analysis, Consistency};
use sha2::{Digest, Sha256};

/// How long a published position lives: far longer than any replica lags.
const TTL_SECS: u64 = 3600;
/// Compare-and-set attempts when instances publish for one user at the same time.
const ATTEMPTS: usize = 8;

fn key(namespace: &str, user: &str) -> String {
    let d = Sha256::digest(user.as_bytes());
    let hex: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{namespace}:ryw:{hex}")
}

/// One request to the node of `key`; its single reply (None: the node did not answer).
async fn ask(c: &Cluster, key: &str, request: impl FnOnce(&mut Vec<u8>)) -> Option<McReply> {
    let mut b = Batch::default();
    request(&mut b.requests);
    b.count = 1;
    c.run(vec![(c.node_for(key), b)])
        .await
        .pop()
        .flatten()?
        .pop()
}

/// The published position and its CAS token; Some((None, _)) when none is published.
async fn read(cache: &Cache, c: &Cluster, key: &str) -> Option<(Option<GtidPos>, Option<u64>)> {
    match ask(c, key, |out| memcached::get_cas(out, key)).await? {
        McReply::Value(v, _, cas) => {
            let pos = cache
                .open_sealed(key.as_bytes(), v)
                .and_then(|v| std::str::from_utf8(&v).ok().and_then(GtidPos::parse));
            Some((pos, cas))
        }
        _ => Some((None, None)),
    }
}

impl Session {
    fn shared_writes(&self) -> Option<(std::sync::Arc<Cache>, String)> {
        if !self.config.routing.shared_read_your_writes {
            return None;
        }
        let cache = self.shared.cache.clone()?;
        cache.cluster()?;
        let k = key(&cache.config.namespace, &self.user);
        Some((cache, k))
    }

    /// Before a read: take in what this user's writes through any instance reached.
    pub(crate) async fn learn_shared_writes(&mut self, analysis: &Analysis) {
        // Off (the default): nothing on the query path.
        if !self.config.routing.shared_read_your_writes {
            return;
        }
        let consistency = analysis
            .consistency
            .unwrap_or(self.config.routing.consistency);
        if consistency != Consistency::Session || analysis.effects.writes {
            return;
        }
        let Some((cache, k)) = self.shared_writes() else {
            return;
        };
        let Some(c) = cache.cluster() else { return };
        // Boxed here and in the publishing: memcached's round trip would otherwise be part of
        // every command's future, the option on or off.
        match Box::pin(read(&cache, c, &k)).await {
            Some((Some(pos), _)) => self.writes.committed_at(&pos),
            Some((None, _)) => {}
            None => tracing::debug!(
                "shared read-your-writes: memcached did not answer; this read sees this \
                 session's writes only"
            ),
        }
    }

    /// A commit's GTID, to be published before the client hears OK.
    pub(crate) fn note_shared_write(&mut self, pos: &GtidPos) {
        if self.config.routing.shared_read_your_writes {
            self.shared_pending
                .get_or_insert_with(GtidPos::default)
                .merge(pos);
        }
    }

    /// Publish what this command committed: merge it into the user's position in memcached.
    pub(crate) async fn publish_shared_writes(&mut self) {
        let Some(pos) = self.shared_pending.take() else {
            return;
        };
        Box::pin(self.publish(pos)).await
    }

    async fn publish(&mut self, pos: GtidPos) {
        let Some((cache, k)) = self.shared_writes() else {
            return;
        };
        let Some(c) = cache.cluster() else { return };
        for _ in 0..ATTEMPTS {
            let Some((stored, cas)) = read(&cache, c, &k).await else {
                break;
            };
            let mut merged = stored.clone().unwrap_or_default();
            if stored.is_some() && merged.covers(&pos) {
                return;
            }
            merged.merge(&pos);
            let value = cache.seal(k.as_bytes(), merged.to_string().into_bytes());
            let reply = ask(c, &k, |out| match cas {
                Some(cas) => memcached::set_cas(out, &k, &value, TTL_SECS, cas),
                None => memcached::add(out, &k, &value, TTL_SECS),
            })
            .await;
            match reply {
                Some(McReply::Done) => return,
                // Another instance published first: merge with what it wrote.
                Some(McReply::Exists | McReply::NotStored | McReply::Miss) => continue,
                _ => break,
            }
        }
        self.shared.metrics.count_shared_write_lost();
        tracing::warn!(
            user = %self.user,
            "shared read-your-writes: could not publish a write's position to memcached; \
             another instance may read from a replica that has not applied it yet"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_hide_the_user_name_and_keep_users_apart() {
        let a = super::key("w", "app");
        assert!(a.starts_with("w:ryw:") && !a.contains("app"));
        assert_ne!(a, super::key("w", "App"));
    }
}
