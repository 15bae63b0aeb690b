//! The durable watermark of one shard's journal: the highest sequence number whose batch has
//! settled on disk, published by the shard's committer for readers on other threads (delivery),
//! and the retention hold those readers place on the journal in return.
//!
//! Invariants: `durable` only grows; it is raised only after the batch holding that sequence
//! was written *and* flushed (in ACK_AFTER=receipt mode, [`super::SyncMode::Disabled`], once
//! written), and after a failed batch was cut back from its segment, so a reader that trusts
//! only records at or below it never sees a record that could vanish at recovery. A sequence
//! number at or below the watermark may be missing from the files (its batch failed for lack of
//! space and was cut): readers skip gaps, they never wait for them.
//!
//! Why an atomic plus a condition variable, not a channel or an async `Notify`: the publisher
//! is a glommio shard that must never block or allocate, and the readers are plain threads (a
//! tokio runtime is only one of them). Publishing is one atomic store and, only when a reader
//! sleeps (a counter says so), a short mutex section and a futex wake: with no sleeper the
//! shard pays nothing beyond the store. The lost-wakeup race (a reader checks, the shard
//! publishes, the reader sleeps) is closed by the `SeqCst` order of the `durable` store and the
//! `sleepers` load on one side, and the `sleepers` increment and `durable` re-check on the
//! other; the reader also waits with a timeout, so a bug there costs latency, never a stall.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The floor value meaning "nothing held".
const NO_FLOOR: u64 = u64::MAX;

/// One shard's durable watermark and retention hold; shared (`Arc`) between the shard's
/// journal and the readers of that journal.
#[derive(Debug, Default)]
pub struct Watermark {
    /// Every record with a sequence number at or below this is durable (or was cut: a gap).
    durable: AtomicU64,
    /// Readers waiting in [`Watermark::wait_beyond`].
    sleepers: AtomicU32,
    /// Guards the sleep; holds nothing (the state is in the atomics).
    lock: Mutex<()>,
    /// Wakes the sleepers.
    changed: Condvar,
    /// The journal closed: nothing more will be published.
    closed: AtomicBool,
    /// Records at or after this sequence number are still needed by a reader (a connector's
    /// cursor + 1); `u64::MAX`: no hold. Read by retention on the shard.
    floor: AtomicU64,
}

impl Watermark {
    /// A watermark at 0 (nothing durable) holding nothing.
    pub fn new() -> Watermark {
        Watermark {
            floor: AtomicU64::new(NO_FLOOR),
            ..Watermark::default()
        }
    }

    /// The highest durable sequence number (0: none).
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }

    /// Raises the watermark to `seq` (never lowers it) and wakes readers. Called by the
    /// committer once the batch ending at `seq` settled. Never blocks unless a reader sleeps,
    /// and then only for the reader's short critical section.
    pub fn publish(&self, seq: u64) {
        self.durable.fetch_max(seq, Ordering::SeqCst);
        self.wake();
    }

    /// Marks the journal closed (nothing more will be published) and wakes readers.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Whether the journal closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Wakes sleeping readers, if any.
    fn wake(&self) {
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        // Taking the lock orders this wake after a sleeper's re-check (it holds the lock from
        // the check until the condvar releases it).
        drop(self.lock.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// Blocks the calling thread until the watermark exceeds `seq`, the journal closes or
    /// `timeout` passes; returns the watermark. Never call it on a shard.
    pub fn wait_beyond(&self, seq: u64, timeout: Duration) -> u64 {
        let now = self.durable();
        if now > seq || self.is_closed() {
            return now;
        }
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.durable() <= seq && !self.is_closed() {
            let _unused = self
                .changed
                .wait_timeout(guard, timeout)
                .unwrap_or_else(|p| p.into_inner());
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        self.durable()
    }

    /// Holds records at or after `floor` from retention (`None`: releases the hold).
    pub fn set_floor(&self, floor: Option<u64>) {
        self.floor
            .store(floor.unwrap_or(NO_FLOOR), Ordering::SeqCst);
    }

    /// The hold set by readers, if any.
    pub fn floor(&self) -> Option<u64> {
        Some(self.floor.load(Ordering::SeqCst)).filter(|&f| f != NO_FLOOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn only_grows() {
        let w = Watermark::new();
        w.publish(5);
        w.publish(3);
        assert_eq!(w.durable(), 5);
    }

    #[test]
    fn a_sleeping_reader_is_woken_by_a_publish() {
        let w = Arc::new(Watermark::new());
        let reader = {
            let w = w.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let seen = w.wait_beyond(0, Duration::from_secs(30));
                (seen, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        w.publish(7);
        let (seen, waited) = reader.join().expect("reader");
        assert_eq!(seen, 7);
        assert!(waited < Duration::from_secs(10), "woken late: {waited:?}");
    }

    #[test]
    fn a_wait_times_out_without_a_publish() {
        let w = Watermark::new();
        w.publish(4);
        assert_eq!(w.wait_beyond(4, Duration::from_millis(20)), 4);
        assert_eq!(w.wait_beyond(3, Duration::from_secs(30)), 4);
    }

    #[test]
    fn the_floor_is_unset_until_held() {
        let w = Watermark::new();
        assert_eq!(w.floor(), None);
        w.set_floor(Some(12));
        assert_eq!(w.floor(), Some(12));
        w.set_floor(None);
        assert_eq!(w.floor(), None);
    }
}
