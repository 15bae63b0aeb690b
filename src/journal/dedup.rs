//! The dedup window: which (MSH-3, MSH-4, MSH-10) keys were journaled recently, and as which
//! sequence number.
//!
//! Keys expire in the order they were added, so the window is a FIFO: entries in a `VecDeque`,
//! their key bytes back to back in a byte ring, and an index from a key's hash to its newest
//! entry. Once the queues reached their working size, checking and adding a key allocates
//! nothing. Invariants: the index points only at live entries; a hash collision between two
//! different keys can only make a key *not* found (the message is stored twice), never make a
//! new message look like a duplicate, because a hit compares the key bytes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

use super::DedupKey;

/// One remembered key.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Receive time of its record, µs since the Unix epoch.
    time: u64,
    /// Sequence number of its record.
    seq: u64,
    /// Hash of the key.
    hash: u64,
    /// Logical offset of its key bytes in the byte ring (see `DedupWindow::keys_first`).
    key_start: u64,
    /// Lengths of MSH-3, MSH-4, MSH-10 in the byte ring.
    lens: [u16; 3],
    /// False once its batch failed: the record was never stored.
    live: bool,
}

impl Entry {
    /// Bytes of key this entry holds in the ring.
    fn key_bytes(&self) -> usize {
        self.lens.iter().map(|&l| l as usize).sum()
    }
}

/// The window of one shard.
#[derive(Debug)]
pub struct DedupWindow {
    /// How long a key counts, µs.
    window_micros: u64,
    /// Most entries kept.
    entries_max: usize,
    /// Entries, oldest first.
    entries: VecDeque<Entry>,
    /// Key bytes of `entries`, in the same order.
    keys: VecDeque<u8>,
    /// Logical offset of `keys[0]`: offsets grow by every key byte ever added.
    keys_first: u64,
    /// The id of `entries[0]`; ids increase by one per entry and are never reused.
    first_id: u64,
    /// Key hash → id of the newest entry with that hash.
    index: HashMap<u64, u64>,
    /// Hasher of keys (random per process: the window lives in memory only).
    hasher: RandomState,
}

impl DedupWindow {
    /// An empty window of `window`, remembering at most `entries_max` keys.
    pub fn new(window: Duration, entries_max: usize) -> DedupWindow {
        assert!(entries_max > 0, "a dedup window needs room for a key");
        DedupWindow {
            window_micros: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
            entries_max,
            entries: VecDeque::new(),
            keys: VecDeque::new(),
            keys_first: 0,
            first_id: 0,
            index: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The sequence number `key` was journaled as within the window before `now` (µs).
    pub fn find(&mut self, key: &DedupKey<'_>, now: u64) -> Option<u64> {
        self.expire(now);
        let id = *self.index.get(&self.hash(key))?;
        let at = usize::try_from(id - self.first_id).ok()?;
        let entry = self.entries.get(at)?;
        (entry.live && self.key_equals(at, key)).then_some(entry.seq)
    }

    /// Remembers `key` as journaled with `seq` at `time` (µs).
    pub fn insert(&mut self, key: &DedupKey<'_>, seq: u64, time: u64) {
        let fields = [
            key.sending_application,
            key.sending_facility,
            key.control_id,
        ];
        let [Ok(a), Ok(b), Ok(c)] = fields.map(|f| u16::try_from(f.len())) else {
            return;
        };
        if self.entries.len() == self.entries_max {
            self.pop_oldest();
        }
        let hash = self.hash(key);
        let key_start = self.keys_first + self.keys.len() as u64;
        for field in fields {
            self.keys.extend(field);
        }
        let id = self.first_id + self.entries.len() as u64;
        self.entries.push_back(Entry {
            time,
            seq,
            hash,
            key_start,
            lens: [a, b, c],
            live: true,
        });
        self.index.insert(hash, id);
    }

    /// Forgets the keys of records `first..=last`, whose batch was not stored.
    pub fn forget(&mut self, first: u64, last: u64) {
        for (at, entry) in self.entries.iter_mut().enumerate().rev() {
            if entry.seq < first {
                break;
            }
            if entry.seq <= last && entry.live {
                entry.live = false;
                let id = self.first_id + at as u64;
                if self.index.get(&entry.hash) == Some(&id) {
                    self.index.remove(&entry.hash);
                }
            }
        }
    }

    /// Drops entries older than the window before `now`.
    fn expire(&mut self, now: u64) {
        while let Some(front) = self.entries.front() {
            if front.time.saturating_add(self.window_micros) >= now {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Drops the oldest entry and its key bytes.
    fn pop_oldest(&mut self) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        self.keys.drain(..entry.key_bytes());
        self.keys_first += entry.key_bytes() as u64;
        if self.index.get(&entry.hash) == Some(&self.first_id) {
            self.index.remove(&entry.hash);
        }
        self.first_id += 1;
    }

    /// Whether entry `at` holds exactly `key`.
    fn key_equals(&self, at: usize, key: &DedupKey<'_>) -> bool {
        let entry = &self.entries[at];
        let fields = [
            key.sending_application,
            key.sending_facility,
            key.control_id,
        ];
        if fields
            .iter()
            .zip(entry.lens)
            .any(|(f, l)| f.len() != l as usize)
        {
            return false;
        }
        let start = (entry.key_start - self.keys_first) as usize;
        let stored = self.keys.range(start..start + entry.key_bytes());
        stored.eq(fields.iter().flat_map(|f| f.iter()))
    }

    /// Hash of the three fields, each length-prefixed so ("AB","C") ≠ ("A","BC").
    fn hash(&self, key: &DedupKey<'_>) -> u64 {
        use std::hash::Hasher;
        let mut hasher = self.hasher.build_hasher();
        for field in [
            key.sending_application,
            key.sending_facility,
            key.control_id,
        ] {
            hasher.write_usize(field.len());
            hasher.write(field);
        }
        hasher.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(id: &[u8]) -> DedupKey<'_> {
        DedupKey {
            sending_application: b"LAB",
            sending_facility: b"HOSP",
            control_id: id,
        }
    }

    #[test]
    fn finds_a_key_within_the_window_only() {
        let mut w = DedupWindow::new(Duration::from_micros(100), 10);
        w.insert(&key(b"1"), 5, 1_000);
        assert_eq!(w.find(&key(b"1"), 1_100), Some(5));
        assert_eq!(w.find(&key(b"2"), 1_100), None);
        assert_eq!(w.find(&key(b"1"), 1_101), None);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn fields_are_compared_exactly_not_concatenated() {
        let mut w = DedupWindow::new(Duration::from_secs(1), 10);
        let a = DedupKey {
            sending_application: b"AB",
            sending_facility: b"C",
            control_id: b"1",
        };
        let b = DedupKey {
            sending_application: b"A",
            sending_facility: b"BC",
            control_id: b"1",
        };
        w.insert(&a, 1, 0);
        assert_eq!(w.find(&b, 0), None);
        assert_eq!(w.find(&a, 0), Some(1));
    }

    #[test]
    fn newest_entry_wins_and_forget_drops_failed_records() {
        let mut w = DedupWindow::new(Duration::from_secs(1), 10);
        w.insert(&key(b"x"), 1, 0);
        w.insert(&key(b"y"), 2, 0);
        w.insert(&key(b"z"), 3, 0);
        w.forget(2, 3);
        assert_eq!(w.find(&key(b"x"), 0), Some(1));
        assert_eq!(w.find(&key(b"y"), 0), None);
        assert_eq!(w.find(&key(b"z"), 0), None);
        w.insert(&key(b"y"), 4, 0);
        assert_eq!(w.find(&key(b"y"), 0), Some(4));
    }

    /// One step of the journal's use of the window.
    #[derive(Clone, Debug)]
    enum Op {
        /// Append a record with control id `id` after `dt` µs: find, else insert.
        Append { id: u8, dt: u64 },
        /// The batch of the last `n` inserted records failed.
        Fail { n: usize },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..6, 0u64..40).prop_map(|(id, dt)| Op::Append { id, dt }),
            1 => (1usize..4).prop_map(|n| Op::Fail { n }),
        ]
    }

    proptest::proptest! {
        /// Against a naive oracle (a list searched backwards): the window answers exactly
        /// "the newest stored, unfailed record with this key received within the window".
        #[test]
        fn agrees_with_a_naive_oracle(ops in proptest::collection::vec(op(), 1..200),
                                      entries_max in 1usize..8) {
            let window = 100u64;
            let mut w = DedupWindow::new(Duration::from_micros(window), entries_max);
            // (id, seq, time, live), in insertion order.
            let mut oracle: Vec<(u8, u64, u64, bool)> = Vec::new();
            let (mut now, mut seq) = (1_000u64, 0u64);
            for op in ops {
                match op {
                    Op::Append { id, dt } => {
                        now += dt;
                        let control = [id];
                        let got = w.find(&key(&control), now);
                        // Only the newest `entries_max` insertions can be remembered.
                        let kept = oracle.len().saturating_sub(entries_max);
                        let expected = oracle[kept..]
                            .iter()
                            .rev()
                            .find(|e| e.0 == id)
                            .filter(|e| e.3 && e.2 + window >= now)
                            .map(|e| e.1);
                        proptest::prop_assert_eq!(got, expected);
                        if got.is_none() {
                            seq += 1;
                            w.insert(&key(&control), seq, now);
                            oracle.push((id, seq, now, true));
                        }
                    }
                    Op::Fail { n } => {
                        let first = seq.saturating_sub(n as u64 - 1).max(1);
                        w.forget(first, seq);
                        for e in oracle.iter_mut().filter(|e| e.1 >= first) {
                            e.3 = false;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_oldest_key_goes_when_full_and_offsets_stay_right() {
        let mut w = DedupWindow::new(Duration::from_secs(1), 2);
        w.insert(&key(b"a-long-control-id"), 1, 0);
        w.insert(&key(b"b"), 2, 0);
        w.insert(&key(b"c"), 3, 0);
        assert_eq!(w.find(&key(b"a-long-control-id"), 0), None);
        assert_eq!(w.find(&key(b"b"), 0), Some(2));
        assert_eq!(w.find(&key(b"c"), 0), Some(3));
        assert_eq!(w.len(), 2);
    }
}
