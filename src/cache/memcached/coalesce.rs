//! Generation reads shared by the lookups that wait at the same time: at most one read of
//! generation counters is in flight per node, and every lookup that arrives meanwhile joins the
//! next one, which one of them (the leader) sends for all. A lookup's generations therefore
//! always come from a request sent after the lookup began, so a write acknowledged before it
//! (its bump done) is seen exactly as with a read of its own; only the round trips are shared.
//! The near cache's hits (`Cache::lookup`) need nothing else from memcached.

use super::{counter, counter_value, Batch, Cluster};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// What a waiting lookup is told.
#[derive(Debug)]
enum Msg {
    /// Its generations, in the order it asked (None: the node did not answer).
    Gens(Option<Vec<u64>>),
    /// The read in flight is done and others wait: it sends the next one.
    Lead,
}

#[derive(Debug)]
struct Waiter {
    keys: Vec<String>,
    tx: oneshot::Sender<Msg>,
}

/// One node's queue of generation reads.
#[derive(Default, Debug)]
pub(super) struct Queue {
    /// A read is in flight or being handed to the next leader.
    flying: bool,
    waiting: Vec<Waiter>,
}

fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Passes the lead on when the leader is done, or dropped halfway (its client went away).
struct Leading<'a> {
    cluster: &'a Cluster,
    node: usize,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.cluster.hand_off(self.node);
    }
}

/// A waiting lookup; dropped while told to lead (before it could), it passes the lead on.
struct Waiting<'a> {
    rx: oneshot::Receiver<Msg>,
    cluster: &'a Cluster,
    node: usize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(Msg::Lead) = self.rx.try_recv() {
            self.cluster.hand_off(self.node);
        }
    }
}

impl Cluster {
    /// The generation counters `keys` on `node`, read by a request sent after this call began,
    /// shared with the lookups waiting at the same time. None: the node did not answer.
    pub async fn generations(&self, node: usize, keys: &[String]) -> Option<Vec<u64>> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut q = lock(&self.queues[node]);
            q.waiting.push(Waiter {
                keys: keys.to_vec(),
                tx,
            });
            !std::mem::replace(&mut q.flying, true)
        };
        let mut waiting = Waiting {
            rx,
            cluster: self,
            node,
        };
        if lead {
            self.fly(node).await;
        }
        loop {
            match (&mut waiting.rx).await {
                Ok(Msg::Gens(g)) => return g,
                Ok(Msg::Lead) => {
                    let (tx, rx) = oneshot::channel();
                    lock(&self.queues[node]).waiting.insert(
                        0,
                        Waiter {
                            keys: keys.to_vec(),
                            tx,
                        },
                    );
                    waiting.rx = rx;
                    self.fly(node).await;
                }
                // The leader's client went away with our request in its hands.
                Err(_) => return None,
            }
        }
    }

    /// Send one read for everyone waiting, and tell each its generations.
    async fn fly(&self, node: usize) {
        let _leading = Leading {
            cluster: self,
            node,
        };
        let waiters = std::mem::take(&mut lock(&self.queues[node]).waiting);
        let mut keys: Vec<String> = waiters.iter().flat_map(|w| w.keys.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut batch = Batch::default();
        for k in &keys {
            counter(&mut batch.requests, k, super::now_micros(), 0);
        }
        batch.count = keys.len();
        self.generation_reads.fetch_add(1, Ordering::Relaxed);
        self.generation_lookups
            .fetch_add(waiters.len() as u64, Ordering::Relaxed);
        let replies = self.run(vec![(node, batch)]).await.pop().flatten();
        let values: Option<HashMap<String, u64>> = replies.and_then(|r| {
            keys.into_iter()
                .zip(r.iter())
                .map(|(k, r)| Some((k, counter_value(r)?)))
                .collect()
        });
        for w in waiters {
            let gens = values
                .as_ref()
                .and_then(|m| w.keys.iter().map(|k| m.get(k).copied()).collect());
            let _ = w.tx.send(Msg::Gens(gens));
        }
    }

    /// The read is done: the first lookup still waiting sends the next, or the queue rests.
    fn hand_off(&self, node: usize) {
        let mut q = lock(&self.queues[node]);
        while !q.waiting.is_empty() {
            let w = q.waiting.remove(0);
            if w.tx.send(Msg::Lead).is_ok() {
                return;
            }
        }
        q.flying = false;
    }
}
