//! ACK_AFTER=delivery: the sender's ACK waits until every connector marked `sync: true` has
//! confirmed the message (issue 11 item 5).
//!
//! Design. The shard's hot path must stay cheap and never block its thread, while confirmations
//! come from the delivery workers, plain threads. Each served shard has one [`Confirmations`]:
//!
//! - Per sync connector a **confirmation watermark** (`AtomicU64`), the last sequence number its
//!   worker on this shard confirmed. A worker is FIFO, so every sequence number at or below it
//!   is settled: delivered, not selected by the connector's filter, or given up (dead letter).
//!   A message is settled for the shard once the lowest of these watermarks reaches it.
//! - A bounded **outcome table** of the recent rejections ([`SYNC_REJECTIONS_MAX`]): the
//!   sequence number, the connector and the reason (AR/CR or HTTP 4xx from downstream, a dead
//!   letter after the last attempt). What is settled and not in it was delivered (AA).
//! - A **waiter list** of the shard's tasks waiting for a sequence number, with their glommio
//!   wakers, and an atomic `wanted` (the lowest sequence number waited for).
//!
//! The shard ([`Confirmations::poll_settled`]) first compares its sequence number with the
//! watermarks: a few atomic loads, and when the message is settled, no lock and no wait. Only
//! otherwise does it register its waker (a short mutex section: a vector push; no IO, no
//! allocation beyond the vector's growth) and lower `wanted`. A worker, after raising its
//! watermark, loads `wanted`; only when a waiter is due does it take the mutex, move the due
//! wakers out, and wake them after releasing it. A glommio waker woken from a foreign thread
//! queues the task on its executor and wakes it through its eventfd (`glommio::task`), the same
//! cross-thread wakeup as the journal watermark's, in the other direction. The lost-wakeup race
//! (the shard checks, the worker publishes, the shard registers) is closed by `SeqCst` on both
//! sides: the worker stores its watermark then loads `wanted`; the shard stores `wanted` then
//! loads the watermarks again, so one of them sees the other.
//!
//! The timeout (the longest `sync_timeout` of the sync connectors) is a glommio timer raced
//! against that wait on the shard; it answers AE and leaves the message in the journal, where
//! its delivery goes on: the sender resends, the journal's dedup finds the same sequence
//! number, and the resend waits for the same confirmation. A message no sync connector's filter
//! selects is not waited for at all ([`SyncAcks::selects`] runs the filters on the shard, on the
//! parse admission already made; only in this mode).
//!
//! Limitation: the outcome table keeps the last [`SYNC_REJECTIONS_MAX`] rejections per shard; a
//! resend of a message rejected longer ago than that is answered AA (it is stored and waits in
//! the dead letters).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use crate::hl7::Message;
use crate::limits::SYNC_REJECTIONS_MAX;
use crate::rules::{Filter, MessageContext};

/// Value of `wanted` when no task waits.
const NOBODY: u64 = u64::MAX;

/// How a settled message ended for the sync connectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Every sync connector delivered it (or did not select it).
    Delivered,
    /// A sync connector gave up on it: the reason, naming the connector (no message content).
    Rejected(String),
}

/// A waiting shard task.
#[derive(Debug)]
struct Waiter {
    /// Its wait's id (unique per shard).
    id: u64,
    /// The sequence number it waits for.
    seq: u64,
    /// Its waker.
    waker: Waker,
}

/// One shard's confirmations from its sync connectors. See the module documentation.
#[derive(Debug)]
pub struct Confirmations {
    /// Per sync connector: the last sequence number its worker on this shard confirmed.
    confirmed: Vec<AtomicU64>,
    /// The names of the sync connectors, in the order of `confirmed`.
    names: Vec<String>,
    /// Recent rejections: (sequence number, reason), oldest first.
    rejected: Mutex<VecDeque<(u64, String)>>,
    /// The highest sequence number ever rejected (0: none): a message above it was delivered,
    /// and the shard need not look at the table (nor take its lock).
    newest_rejected: AtomicU64,
    /// The shard's waiting tasks.
    waiters: Mutex<Vec<Waiter>>,
    /// The lowest sequence number a task waits for; [`NOBODY`] when none does. Changed only
    /// with `waiters` locked.
    wanted: AtomicU64,
}

impl Confirmations {
    /// Confirmations of the connectors `names`, each already confirmed up to its loaded cursor.
    fn new(names: Vec<String>, cursors: &[u64]) -> Confirmations {
        Confirmations {
            confirmed: cursors.iter().map(|&c| AtomicU64::new(c)).collect(),
            names,
            rejected: Mutex::new(VecDeque::new()),
            newest_rejected: AtomicU64::new(0),
            waiters: Mutex::new(Vec::new()),
            wanted: AtomicU64::new(NOBODY),
        }
    }

    /// Every sequence number at or below this is settled for every sync connector.
    fn settled(&self) -> u64 {
        self.confirmed
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A worker of sync connector `index` confirmed `seq` (`rejection`: it gave up, why).
    /// Wakes the shard tasks that no longer need to wait. Called on the worker's thread.
    pub fn confirm(&self, index: usize, seq: u64, rejection: Option<&str>) {
        if let Some(reason) = rejection {
            let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
            if rejected.len() >= SYNC_REJECTIONS_MAX {
                rejected.pop_front();
            }
            let name = self.names.get(index).map_or("?", String::as_str);
            rejected.push_back((seq, format!("connector {name}: {reason}")));
            self.newest_rejected.fetch_max(seq, Ordering::SeqCst);
        }
        let Some(watermark) = self.confirmed.get(index) else {
            return;
        };
        watermark.fetch_max(seq, Ordering::SeqCst);
        let settled = self.settled();
        if self.wanted.load(Ordering::SeqCst) > settled {
            return;
        }
        let mut due = Vec::new();
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].seq <= settled {
                    due.push(waiters.swap_remove(i).waker);
                } else {
                    i += 1;
                }
            }
            self.wanted.store(lowest(&waiters), Ordering::SeqCst);
        }
        for waker in due {
            waker.wake();
        }
    }

    /// The outcome of `seq` if every sync connector settled it; otherwise registers `waker`
    /// (under `id`, replacing an earlier registration of that id) and returns `None`.
    pub fn poll_settled(&self, id: u64, seq: u64, waker: &Waker) -> Option<Settled> {
        if let Some(settled) = self.outcome(seq) {
            return Some(settled);
        }
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            match waiters.iter_mut().find(|w| w.id == id) {
                Some(w) => {
                    w.seq = seq;
                    if !w.waker.will_wake(waker) {
                        w.waker = waker.clone();
                    }
                }
                None => waiters.push(Waiter {
                    id,
                    seq,
                    waker: waker.clone(),
                }),
            }
            self.wanted.store(lowest(&waiters), Ordering::SeqCst);
        }
        // A worker that confirmed between the check above and the store of `wanted` did not
        // see this waiter: look again.
        let settled = self.outcome(seq);
        if settled.is_some() {
            self.forget(id);
        }
        settled
    }

    /// Removes the registration `id` (its wait ended: settled, timed out, or dropped).
    pub fn forget(&self, id: u64) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = waiters.iter().position(|w| w.id == id) {
            waiters.swap_remove(at);
            self.wanted.store(lowest(&waiters), Ordering::SeqCst);
        }
    }

    /// The outcome of `seq` if it is settled.
    fn outcome(&self, seq: u64) -> Option<Settled> {
        if self.settled() < seq {
            return None;
        }
        // Rejections are recorded before the watermark moves (both SeqCst): seen here.
        if seq > self.newest_rejected.load(Ordering::SeqCst) {
            return Some(Settled::Delivered);
        }
        let rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        Some(match rejected.iter().rev().find(|(s, _)| *s == seq) {
            Some((_, reason)) => Settled::Rejected(reason.clone()),
            None => Settled::Delivered,
        })
    }

    /// Tasks waiting now (tests, diagnostics).
    pub fn waiting(&self) -> usize {
        self.waiters.lock().map_or(0, |w| w.len())
    }
}

/// The lowest sequence number waited for.
fn lowest(waiters: &[Waiter]) -> u64 {
    waiters.iter().map(|w| w.seq).min().unwrap_or(NOBODY)
}

/// What the shards need for ACK_AFTER=delivery: per served shard its [`Confirmations`], the
/// sync connectors' filters and the timeout.
#[derive(Debug)]
pub struct SyncAcks {
    /// Per served shard.
    pub shards: Vec<Arc<Confirmations>>,
    /// The filter of each sync connector (`None`: every message).
    filters: Vec<Option<Arc<Filter>>>,
    /// How long an ACK waits for the confirmations: the longest `sync_timeout`.
    pub timeout: Duration,
}

impl SyncAcks {
    /// For `shards` served shards, the sync connectors `names` with their `filters` and
    /// `timeout`; `cursors[shard][k]` is connector k's loaded cursor on that shard.
    pub(super) fn new(
        names: Vec<String>,
        filters: Vec<Option<Arc<Filter>>>,
        timeout: Duration,
        cursors: &[Vec<u64>],
    ) -> SyncAcks {
        SyncAcks {
            shards: cursors
                .iter()
                .map(|c| Arc::new(Confirmations::new(names.clone(), c)))
                .collect(),
            filters,
            timeout,
        }
    }

    /// Whether some sync connector selects `message` (so its ACK must wait). A filter that
    /// cannot decide counts as selecting: its worker decides (a dead letter, so AR).
    pub fn selects(&self, message: &Message<'_>, peer: Option<IpAddr>) -> bool {
        let context = MessageContext {
            peer_ip: peer,
            ..MessageContext::default()
        };
        self.filters.iter().any(|filter| match filter {
            None => true,
            Some(filter) => filter.matches(message, &context).unwrap_or(true),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn settled_needs_every_sync_connector_and_reports_a_rejection() {
        let c = Confirmations::new(vec!["a".into(), "b".into()], &[4, 2]);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert_eq!(c.poll_settled(1, 2, &waker), Some(Settled::Delivered));
        assert_eq!(c.poll_settled(1, 5, &waker), None);
        assert_eq!(c.waiting(), 1);
        c.confirm(0, 5, None);
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "b has not confirmed yet");
        c.confirm(1, 3, None);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        c.confirm(1, 5, Some("downstream answered AR: bad PID"));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken once settled");
        assert_eq!(c.waiting(), 0);
        assert_eq!(
            c.poll_settled(1, 5, &waker),
            Some(Settled::Rejected(
                "connector b: downstream answered AR: bad PID".into()
            ))
        );
        assert_eq!(c.poll_settled(1, 4, &waker), Some(Settled::Delivered));
    }

    #[test]
    fn a_forgotten_wait_is_not_woken_and_the_table_is_bounded() {
        let c = Confirmations::new(vec!["a".into()], &[0]);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert_eq!(c.poll_settled(7, 1, &waker), None);
        c.forget(7);
        c.confirm(0, 1, None);
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        for seq in 2..(SYNC_REJECTIONS_MAX as u64 + 10) {
            c.confirm(0, seq, Some("no"));
        }
        assert!(c.rejected.lock().unwrap().len() <= SYNC_REJECTIONS_MAX);
    }
}
