//! The dedup window: which messages were journaled recently, by (MSH-3, MSH-4, MSH-10) key and
//! payload, and as which sequence number.
//!
//! A sender retrying after a lost ACK resends the same message; a sender whose counter was reset
//! (a restart) reuses a control id for a *different* message. So an entry holds a fingerprint of
//! both: a 128-bit hash of the key and a 128-bit digest of the payload (xxh3, seeded at random
//! per window; the window is rebuilt at recovery by hashing the stored records again, so the
//! seed never needs to be stored). [`DedupWindow::find`] answers
//! [`Lookup::Duplicate`] only when the newest entry with the key also has the same payload
//! digest; the same key with another payload is [`Lookup::Reused`] and is stored as new.
//!
//! Memory per entry is constant whatever the key's length (no key bytes are kept), so
//! `entries_max` bounds the window's memory. Hashes instead of bytes: a false duplicate needs
//! two messages whose key hashes *and* payload digests both collide (256 bits); for the
//! 2^20 entries of a full window the chance of an accidental 128-bit collision is about
//! 2^40 / 2^129 = 2^-89, far below the chance of an undetected disk error. A deliberate one
//! buys an attacker nothing: to shadow a victim's message M it must know M byte for byte, and
//! then it could simply send M first. A collision of key hashes alone only makes a key look
//! reused (stored as new: a copy too many, never a loss).
//!
//! Keys expire in the order they were added, so the window is a FIFO of entries with an index
//! from a key hash to its newest entry. Once the queue reached its working size, checking and
//! adding a key allocates nothing. Invariant: the index points only at live entries. Only the
//! newest entry of a key is found: if it failed (its batch was not stored), an older one with the
//! same key is not found either, and a retry of that older message is stored again (a copy too
//! many, never a loss).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

use xxhash_rust::xxh3::{xxh3_128_with_seed, Xxh3};

use super::DedupKey;

/// Most heap bytes the window holds per entry of `entries_max` once at its working size: the
/// entry (56 bytes) in a queue that may have doubled, and its index bucket (17 bytes) in a table
/// at most 7/8 full that may have doubled. Whatever the length of the key.
pub const DEDUP_ENTRY_BYTES_MAX: usize = 2 * 56 + 2 * 17 * 8 / 7;

/// What identifies a message for the window: its key and its payload, hashed (128 bits each,
/// kept as two halves so an entry needs 8-byte alignment, not 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// xxh3-128 of MSH-3, MSH-4, MSH-10, each length-prefixed.
    key: [u64; 2],
    /// xxh3-128 of the payload.
    payload: [u64; 2],
}

/// The two halves of a 128-bit hash.
fn halves(hash: u128) -> [u64; 2] {
    [hash as u64, (hash >> 64) as u64]
}

/// What the window knows of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Its key is not in the window: store it.
    New,
    /// Its key and payload were journaled as this sequence number: a retry, not stored again.
    Duplicate(u64),
    /// Its key was journaled as this sequence number with another payload (a reused control
    /// id): store it as new.
    Reused(u64),
}

/// One remembered message.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Receive time of its record, µs since the Unix epoch.
    time: u64,
    /// Sequence number of its record.
    seq: u64,
    /// Its fingerprint.
    fingerprint: Fingerprint,
    /// False once its batch failed: the record was never stored.
    live: bool,
}

const _: () = assert!(std::mem::size_of::<Entry>() <= 56);

/// The window of one shard.
#[derive(Debug)]
pub struct DedupWindow {
    /// How long a key counts, µs.
    window_micros: u64,
    /// Most entries kept.
    entries_max: usize,
    /// Entries, oldest first.
    entries: VecDeque<Entry>,
    /// The id of `entries[0]`; ids increase by one per entry and are never reused.
    first_id: u64,
    /// First half of a key hash → id of the newest live entry with it. Two keys that share that
    /// half (chance 2^-64 a pair) shadow each other: the older one is then not found (stored
    /// again), never mistaken, since a hit compares the whole fingerprint.
    index: HashMap<u64, u64>,
    /// Seed of the fingerprints (random per window: they live in memory only).
    seed: u64,
}

impl DedupWindow {
    /// An empty window of `window`, remembering at most `entries_max` messages.
    pub fn new(window: Duration, entries_max: usize) -> DedupWindow {
        assert!(entries_max > 0, "a dedup window needs room for a key");
        DedupWindow {
            window_micros: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
            entries_max,
            entries: VecDeque::new(),
            first_id: 0,
            index: HashMap::new(),
            seed: RandomState::new().hash_one(0x6d6c_6c70_6464_u64),
        }
    }

    /// Keys remembered (each with its newest live entry).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Heap bytes the window holds (its queue and index at their current capacity): bounded by
    /// `entries_max`, whatever the length of the keys.
    pub fn heap_bytes(&self) -> usize {
        // hashbrown keeps one control byte per bucket beside each (key, value) pair.
        let bucket = std::mem::size_of::<(u64, u64)>() + 1;
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.index.capacity() * bucket
    }

    /// The fingerprint of a message with `key` and `payload`.
    pub fn fingerprint(&self, key: &DedupKey<'_>, payload: &[u8]) -> Fingerprint {
        let mut hasher = Xxh3::with_seed(self.seed);
        for field in [
            key.sending_application,
            key.sending_facility,
            key.control_id,
        ] {
            // Length-prefixed so ("AB", "C") ≠ ("A", "BC").
            hasher.update(&(field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        Fingerprint {
            key: halves(hasher.digest128()),
            payload: halves(xxh3_128_with_seed(payload, self.seed)),
        }
    }

    /// What the window knows of `fingerprint` before `now` (µs): the newest live entry with its
    /// key, received within the window, decides.
    pub fn find(&mut self, fingerprint: &Fingerprint, now: u64) -> Lookup {
        self.expire(now);
        let Some(&id) = self.index.get(&fingerprint.key[0]) else {
            return Lookup::New;
        };
        let entry = usize::try_from(id - self.first_id)
            .ok()
            .and_then(|at| self.entries.get(at));
        match entry {
            Some(e) if e.live && e.fingerprint == *fingerprint => Lookup::Duplicate(e.seq),
            Some(e) if e.live && e.fingerprint.key == fingerprint.key => Lookup::Reused(e.seq),
            _ => Lookup::New,
        }
    }

    /// Remembers `fingerprint` as journaled with `seq` at `time` (µs).
    pub fn insert(&mut self, fingerprint: Fingerprint, seq: u64, time: u64) {
        if self.entries.len() == self.entries_max {
            self.pop_oldest();
        }
        let id = self.first_id + self.entries.len() as u64;
        self.entries.push_back(Entry {
            time,
            seq,
            fingerprint,
            live: true,
        });
        self.index.insert(fingerprint.key[0], id);
    }

    /// Forgets the messages of records `first..=last`, whose batch was not stored.
    pub fn forget(&mut self, first: u64, last: u64) {
        for (at, entry) in self.entries.iter_mut().enumerate().rev() {
            if entry.seq < first {
                break;
            }
            if entry.seq <= last && entry.live {
                entry.live = false;
                let id = self.first_id + at as u64;
                if self.index.get(&entry.fingerprint.key[0]) == Some(&id) {
                    self.index.remove(&entry.fingerprint.key[0]);
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

    /// Drops the oldest entry.
    fn pop_oldest(&mut self) {
        let Some(entry) = self.entries.pop_front() else {
            return;
        };
        if self.index.get(&entry.fingerprint.key[0]) == Some(&self.first_id) {
            self.index.remove(&entry.fingerprint.key[0]);
        }
        self.first_id += 1;
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

    /// The fingerprint of a message with control id `id` and payload `payload`.
    fn fp(w: &DedupWindow, id: &[u8], payload: &[u8]) -> Fingerprint {
        w.fingerprint(&key(id), payload)
    }

    #[test]
    fn finds_a_key_within_the_window_only() {
        let mut w = DedupWindow::new(Duration::from_micros(100), 10);
        w.insert(fp(&w, b"1", b"p"), 5, 1_000);
        assert_eq!(w.find(&fp(&w, b"1", b"p"), 1_100), Lookup::Duplicate(5));
        assert_eq!(w.find(&fp(&w, b"2", b"p"), 1_100), Lookup::New);
        assert_eq!(w.find(&fp(&w, b"1", b"p"), 1_101), Lookup::New);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn the_same_key_with_another_payload_is_reused_not_a_duplicate() {
        let mut w = DedupWindow::new(Duration::from_secs(1), 10);
        w.insert(fp(&w, b"1", b"first message"), 1, 0);
        assert_eq!(
            w.find(&fp(&w, b"1", b"first message"), 0),
            Lookup::Duplicate(1)
        );
        assert_eq!(
            w.find(&fp(&w, b"1", b"other message"), 0),
            Lookup::Reused(1)
        );
        // One byte more, or one byte flipped, is another message.
        assert_eq!(
            w.find(&fp(&w, b"1", b"first message "), 0),
            Lookup::Reused(1)
        );
        assert_eq!(
            w.find(&fp(&w, b"1", b"first messagf"), 0),
            Lookup::Reused(1)
        );
        // Stored as new, the newest payload is the one a retry must match.
        w.insert(fp(&w, b"1", b"other message"), 2, 0);
        assert_eq!(
            w.find(&fp(&w, b"1", b"other message"), 0),
            Lookup::Duplicate(2)
        );
        assert_eq!(
            w.find(&fp(&w, b"1", b"first message"), 0),
            Lookup::Reused(2)
        );
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
        w.insert(w.fingerprint(&a, b"p"), 1, 0);
        assert_eq!(w.find(&w.fingerprint(&b, b"p"), 0), Lookup::New);
        assert_eq!(w.find(&w.fingerprint(&a, b"p"), 0), Lookup::Duplicate(1));
    }

    #[test]
    fn newest_entry_wins_and_forget_drops_failed_records() {
        let mut w = DedupWindow::new(Duration::from_secs(1), 10);
        w.insert(fp(&w, b"x", b"p"), 1, 0);
        w.insert(fp(&w, b"y", b"p"), 2, 0);
        w.insert(fp(&w, b"z", b"p"), 3, 0);
        w.forget(2, 3);
        assert_eq!(w.find(&fp(&w, b"x", b"p"), 0), Lookup::Duplicate(1));
        assert_eq!(w.find(&fp(&w, b"y", b"p"), 0), Lookup::New);
        assert_eq!(w.find(&fp(&w, b"z", b"p"), 0), Lookup::New);
        w.insert(fp(&w, b"y", b"p"), 4, 0);
        assert_eq!(w.find(&fp(&w, b"y", b"p"), 0), Lookup::Duplicate(4));
    }

    #[test]
    fn memory_is_bounded_by_entries_whatever_the_key_length() {
        let entries_max = 128;
        // The largest key a record can store: three fields of 65 535 bytes.
        let long = vec![b'k'; u16::MAX as usize];
        let fill = |field: &[u8]| {
            let mut w = DedupWindow::new(Duration::from_secs(3600), entries_max);
            for i in 0..2 * entries_max as u64 {
                let mut id = field.to_vec();
                id.extend_from_slice(&i.to_le_bytes());
                let key = DedupKey {
                    sending_application: field,
                    sending_facility: field,
                    control_id: &id,
                };
                let fingerprint = w.fingerprint(&key, &id);
                assert_eq!(w.find(&fingerprint, 0), Lookup::New);
                w.insert(fingerprint, i + 1, 0);
            }
            assert_eq!(w.len(), entries_max);
            w.heap_bytes()
        };
        // Key bytes kept would be 128 × 196 KiB here: the bound is 150 bytes an entry.
        for bytes in [fill(b"k"), fill(&long)] {
            assert!(
                bytes <= entries_max * DEDUP_ENTRY_BYTES_MAX,
                "{bytes} bytes for {entries_max} entries"
            );
        }
    }

    /// One step of the journal's use of the window.
    #[derive(Clone, Debug)]
    enum Op {
        /// Append a record with control id `id` and payload `payload` after `dt` µs: find,
        /// then insert unless it is a duplicate.
        Append { id: u8, payload: u8, dt: u64 },
        /// The batch of the last `n` inserted records failed.
        Fail { n: usize },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..6, 0u8..3, 0u64..40).prop_map(|(id, payload, dt)| Op::Append { id, payload, dt }),
            1 => (1usize..4).prop_map(|n| Op::Fail { n }),
        ]
    }

    proptest::proptest! {
        /// Against a naive oracle (a list searched backwards): the newest stored record with
        /// this key decides, if unfailed and received within the window: the same payload is a
        /// duplicate of it, another payload reuses its key.
        #[test]
        fn agrees_with_a_naive_oracle(ops in proptest::collection::vec(op(), 1..200),
                                      entries_max in 1usize..8) {
            let window = 100u64;
            let mut w = DedupWindow::new(Duration::from_micros(window), entries_max);
            // (id, payload, seq, time, live), in insertion order.
            let mut oracle: Vec<(u8, u8, u64, u64, bool)> = Vec::new();
            let (mut now, mut seq) = (1_000u64, 0u64);
            for op in ops {
                match op {
                    Op::Append { id, payload, dt } => {
                        now += dt;
                        let fingerprint = fp(&w, &[id], &[payload; 3]);
                        let got = w.find(&fingerprint, now);
                        // Only the newest `entries_max` insertions can be remembered.
                        let kept = oracle.len().saturating_sub(entries_max);
                        let expected = oracle[kept..]
                            .iter()
                            .rev()
                            .find(|e| e.0 == id)
                            .filter(|e| e.4 && e.3 + window >= now)
                            .map_or(Lookup::New, |e| if e.1 == payload {
                                Lookup::Duplicate(e.2)
                            } else {
                                Lookup::Reused(e.2)
                            });
                        proptest::prop_assert_eq!(got, expected);
                        if !matches!(got, Lookup::Duplicate(_)) {
                            seq += 1;
                            w.insert(fingerprint, seq, now);
                            oracle.push((id, payload, seq, now, true));
                        }
                    }
                    Op::Fail { n } => {
                        let first = seq.saturating_sub(n as u64 - 1).max(1);
                        w.forget(first, seq);
                        for e in oracle.iter_mut().filter(|e| e.2 >= first) {
                            e.4 = false;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_oldest_key_goes_when_full() {
        let mut w = DedupWindow::new(Duration::from_secs(1), 2);
        w.insert(fp(&w, b"a-long-control-id", b"p"), 1, 0);
        w.insert(fp(&w, b"b", b"p"), 2, 0);
        w.insert(fp(&w, b"c", b"p"), 3, 0);
        assert_eq!(w.find(&fp(&w, b"a-long-control-id", b"p"), 0), Lookup::New);
        assert_eq!(w.find(&fp(&w, b"b", b"p"), 0), Lookup::Duplicate(2));
        assert_eq!(w.find(&fp(&w, b"c", b"p"), 0), Lookup::Duplicate(3));
        assert_eq!(w.len(), 2);
    }
}
