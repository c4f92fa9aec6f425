//! A memcached cluster as the cache's store: keys placed on nodes by libmemcached-compatible
//! ketama, a few idle connections per node on each worker, requests to several nodes sent
//! together and answered within `cache.timeout`. A node that fails or hangs is left alone for
//! `cache.retry_after`: its keys bypass the cache (the database answers) and no query waits for
//! it. Generation bumps it missed are replayed before it is used again.

mod coalesce;
mod conn;
pub mod ring;

use conn::{Conn, Reply};
use ring::Ring;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use conn::{add, counter, get, get_cas, set, set_cas};

/// Idle connections kept per node and worker.
const IDLE_PER_NODE: usize = 4;

#[derive(Debug, Default)]
struct Health {
    /// Not used before this instant (a failed node, or one being probed).
    down_until: Option<Instant>,
    /// Counter bumps that failed while the node was away, replayed on its return.
    pending: Vec<String>,
    /// Connections opened before this epoch are not reused.
    epoch: u64,
}

#[derive(Debug)]
struct Node {
    address: String,
    health: Mutex<Health>,
}

impl Node {
    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Idle {
    conn: Conn,
    epoch: u64,
}

thread_local! {
    static IDLE: RefCell<HashMap<String, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// Requests for one node: the bytes and how many replies they produce.
#[derive(Debug, Default)]
pub struct Batch {
    pub requests: Vec<u8>,
    pub count: usize,
}

#[derive(Debug)]
pub struct Cluster {
    ring: Ring,
    nodes: Vec<Node>,
    timeout: Duration,
    retry_after: Duration,
    max_value: usize,
    pub errors: AtomicU64,
    /// Per node, the lookups waiting for a generation read (`coalesce`).
    queues: Vec<Mutex<coalesce::Queue>>,
    /// Generation reads sent, and the lookups they answered.
    pub generation_reads: AtomicU64,
    pub generation_lookups: AtomicU64,
}

/// What one node's batch came to.
struct InFlight {
    node: usize,
    conn: Conn,
    epoch: u64,
    replayed: Vec<String>,
    count: usize,
}

impl Cluster {
    pub fn new(
        servers: &[crate::config::CacheServer],
        timeout: Duration,
        retry_after: Duration,
        max_value: usize,
    ) -> Cluster {
        Cluster {
            ring: Ring::new(servers),
            nodes: servers
                .iter()
                .map(|s| Node {
                    address: s.address(),
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            timeout,
            retry_after,
            max_value,
            errors: AtomicU64::new(0),
            queues: servers.iter().map(|_| Mutex::default()).collect(),
            generation_reads: AtomicU64::new(0),
            generation_lookups: AtomicU64::new(0),
        }
    }

    /// How many nodes the ring has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node_for(&self, key: &str) -> usize {
        self.ring.server_for(key.as_bytes())
    }

    /// (address, up) per node.
    pub fn nodes(&self) -> Vec<(String, bool)> {
        let now = Instant::now();
        self.nodes
            .iter()
            .map(|n| {
                let h = n.health();
                (n.address.clone(), h.down_until.is_none_or(|t| t <= now))
            })
            .collect()
    }

    /// Remember a bump that could not reach its node.
    pub fn defer_bump(&self, node: usize, key: String) {
        let mut h = self.nodes[node].health();
        if h.pending.len() < 100_000 && !h.pending.contains(&key) {
            h.pending.push(key);
        }
    }

    /// May this node be used now? Returns the bumps to replay first and the epoch. Once a
    /// failed node's pause is over, one caller probes it while the others still pass it by.
    fn admit(&self, node: usize) -> Option<(Vec<String>, u64)> {
        let now = Instant::now();
        let mut h = self.nodes[node].health();
        if let Some(t) = h.down_until {
            if t > now {
                return None;
            }
            h.down_until = Some(now + self.retry_after);
        }
        let epoch = h.epoch;
        Some((std::mem::take(&mut h.pending), epoch))
    }

    fn failed(&self, node: usize, why: &str, replayed: Vec<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let n = &self.nodes[node];
        let mut h = n.health();
        let was_up = h.down_until.is_none();
        h.down_until = Some(Instant::now() + self.retry_after);
        h.epoch += 1;
        for k in replayed {
            if !h.pending.contains(&k) {
                h.pending.push(k);
            }
        }
        drop(h);
        if was_up {
            tracing::warn!(
                "memcached {} failed ({why}); its keys bypass the cache until it answers again",
                n.address
            );
        }
    }

    fn succeeded(&self, node: usize) {
        let n = &self.nodes[node];
        let mut h = n.health();
        if h.down_until.take().is_some() {
            drop(h);
            tracing::info!("memcached {} is back", n.address);
        }
    }

    fn take_idle(&self, node: usize, epoch: u64) -> Option<Conn> {
        let address = &self.nodes[node].address;
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let list = idle.get_mut(address)?;
            while let Some(i) = list.pop() {
                if i.epoch == epoch {
                    return Some(i.conn);
                }
            }
            None
        })
    }

    fn put_idle(&self, node: usize, conn: Conn, epoch: u64) {
        let address = &self.nodes[node].address;
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let list = idle.entry(address.clone()).or_default();
            if list.len() < IDLE_PER_NODE {
                list.push(Idle { conn, epoch });
            }
        });
    }

    /// Send each node its batch (all nodes first, then read their replies, so the nodes work
    /// at the same time). A node that fails, is down or does not answer in time gives None.
    pub async fn run(&self, batches: Vec<(usize, Batch)>) -> Vec<Option<Vec<Reply>>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut flights: Vec<Option<InFlight>> = Vec::with_capacity(batches.len());
        for (node, batch) in batches {
            let Some((replayed, epoch)) = self.admit(node) else {
                flights.push(None);
                continue;
            };
            let mut bytes = Vec::with_capacity(batch.requests.len() + replayed.len() * 48);
            for key in &replayed {
                counter(&mut bytes, key, now_micros(), 1);
            }
            bytes.extend_from_slice(&batch.requests);
            let address = &self.nodes[node].address;
            let sent = tokio::time::timeout_at(deadline, async {
                let mut conn = match self.take_idle(node, epoch) {
                    Some(c) => c,
                    None => Conn::connect(address, self.max_value).await?,
                };
                conn.send(&bytes).await?;
                Ok::<_, std::io::Error>(conn)
            })
            .await;
            match sent {
                Ok(Ok(conn)) => flights.push(Some(InFlight {
                    node,
                    conn,
                    epoch,
                    count: batch.count,
                    replayed,
                })),
                Ok(Err(e)) => {
                    self.failed(node, &e.to_string(), replayed);
                    flights.push(None);
                }
                Err(_) => {
                    self.failed(node, "timed out", replayed);
                    flights.push(None);
                }
            }
        }
        let mut out = Vec::with_capacity(flights.len());
        for f in flights {
            let Some(mut f) = f else {
                out.push(None);
                continue;
            };
            let skip = f.replayed.len();
            let got = tokio::time::timeout_at(deadline, async {
                let mut replies = Vec::with_capacity(f.count);
                for i in 0..skip + f.count {
                    let r = f.conn.reply().await?;
                    if i >= skip {
                        replies.push(r);
                    }
                }
                Ok::<_, std::io::Error>(replies)
            })
            .await;
            match got {
                Ok(Ok(replies)) => {
                    if skip > 0 {
                        tracing::info!(
                            "memcached {}: replayed {skip} generation bumps it missed",
                            self.nodes[f.node].address
                        );
                    }
                    self.succeeded(f.node);
                    self.put_idle(f.node, f.conn, f.epoch);
                    out.push(Some(replies));
                }
                Ok(Err(e)) => {
                    self.failed(f.node, &e.to_string(), f.replayed);
                    out.push(None);
                }
                Err(_) => {
                    self.failed(f.node, "timed out", f.replayed);
                    out.push(None);
                }
            }
        }
        out
    }
}

/// Microseconds since the epoch: where a missing generation counter starts, so that one
/// memcached lost (evicted, restarted) starts above every value it had before.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

/// A counter's value from its reply.
pub fn counter_value(r: &Reply) -> Option<u64> {
    match r {
        Reply::Value(b, ..) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

pub use conn::Reply as McReply;
