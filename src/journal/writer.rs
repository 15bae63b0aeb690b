//! The [`Journal`] handle and its committer task: appends gather in a pending batch; the
//! committer writes each batch with one write and makes it durable with one flush.
//!
//! Invariants: only the committer touches files; `State` is borrowed only between awaits (never
//! across one); a waiter for sequence `s` is released only once every batch up to the one
//! holding `s` settled, in order (`settled_seq` only grows). The pending buffer is swapped out
//! whole when a flush starts, so appends never wait for IO and copy each record once.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use futures_lite::future::poll_fn;
use glommio::io::{Directory, DmaFile, OpenOptions};
use glommio::GlommioError;

use crate::limits::DEDUP_REUSE_LOG_INTERVAL;

use super::dedup::{DedupWindow, Lookup};
use super::fault::FaultPlan;
use super::recovery::{self, micros};
use super::retention::{self, Bounds, SegmentInfo};
use super::segment::{self, SEGMENT_HEADER_BYTES};
use super::{
    record, Append, JournalError, JournalOptions, JournalStats, OpenError, RecordRef, Recovery,
    RecoveryProgress, SyncMode,
};

/// Failed batch ranges remembered for late waiters; older failures are answered conservatively
/// (a waiter for a sequence at or below the forgotten ones hears `NoSpace`: the sender retries,
/// nothing is lost).
const FAILED_RANGES_MAX: usize = 1024;

/// One shard's journal. Single-threaded (`!Send`): it lives on its shard's executor.
#[derive(Debug)]
pub struct Journal {
    /// What it was opened with.
    options: JournalOptions,
    /// Everything that changes; borrowed only between awaits.
    state: RefCell<State>,
}

/// The mutable state shared by appenders, waiters and the committer.
#[derive(Debug)]
struct State {
    /// Encoded records waiting for the next flush.
    pending: Vec<u8>,
    /// Records in `pending`.
    pending_records: usize,
    /// Sequence number of the first record in `pending`.
    pending_first_seq: u64,
    /// When the first record in `pending` was appended (only kept with a group delay).
    pending_since: Option<Instant>,
    /// The next sequence number to assign.
    next_seq: u64,
    /// Every sequence number up to this one is settled (durable, or failed for lack of space).
    settled_seq: u64,
    /// Settled ranges (first, last) that failed for lack of space, oldest first.
    failed: VecDeque<(u64, u64)>,
    /// The last sequence number of failed ranges dropped from `failed`.
    failed_forgotten_through: u64,
    /// A flush failed: nothing unsettled will ever be durable.
    poisoned: bool,
    /// `close` was called: no more appends; the committer stops once `pending` is empty.
    closed: bool,
    /// The dedup window, when DEDUP_WINDOW is set.
    dedup: Option<DedupWindow>,
    /// Receive time (µs) of the last reused control id logged.
    reuse_logged_at: Option<u64>,
    /// Reused control ids not logged since (counted in the stats).
    reuse_unlogged: u64,
    /// Records at or after this sequence number are still needed (retention floor).
    retention_floor: Option<u64>,
    /// Tasks waiting for a sequence number to settle.
    durable_waiters: Vec<(u64, Waker)>,
    /// Tasks waiting for the pending batch to empty.
    room_waiters: Vec<Waker>,
    /// Appenders that found the batch full, in arrival order ([`Journal::append_in_turn`]):
    /// while any waits, others may not append past them.
    admission: VecDeque<(u64, Waker)>,
    /// Ids handed to waiting appenders.
    admission_ids: u64,
    /// The committer, when it waits for work.
    committer: Option<Waker>,
    /// The committer has stopped and released the directory lock; `close` waits for it.
    committer_done: bool,
    /// Counters.
    stats: JournalStats,
}

impl Journal {
    /// Opens the journal in `options.dir` (creating it), runs recovery, and spawns the shard's
    /// committer task on the current glommio executor. Must run inside a glommio executor.
    ///
    /// # Panics
    /// If a bound in `options` is zero, or a segment could not hold a header.
    pub async fn open(options: JournalOptions) -> Result<(Rc<Journal>, Recovery), OpenError> {
        Journal::open_reporting(options, &mut |_| {}).await
    }

    /// [`Journal::open`], calling `progress` about every `RECOVERY_PROGRESS_INTERVAL` while
    /// recovery runs (a large journal or dedup window takes a while: start-up waits for it as
    /// long as it progresses).
    ///
    /// # Panics
    /// As [`Journal::open`].
    pub async fn open_reporting(
        mut options: JournalOptions,
        progress: &mut dyn FnMut(&RecoveryProgress),
    ) -> Result<(Rc<Journal>, Recovery), OpenError> {
        assert!(options.segment_bytes_max > SEGMENT_HEADER_BYTES as u64);
        // glommio opens files and directories with io_uring's openat and a relative path fails
        // there with EBADF (`./mllpd-data`, the default DATA_DIR): work with absolute paths.
        options.dir = std::path::absolute(&options.dir).map_err(|source| OpenError::Io {
            path: options.dir.clone(),
            source,
        })?;
        assert!(options.batch_bytes_max > 0 && options.batch_records_max > 0);
        let lock = recovery::lock(&options.dir)?;
        let recovered = recovery::recover(&options, SystemTime::now(), progress)?;
        let report = recovered.report.clone();
        let writer = Writer::open(&options, recovered.segments, lock).await?;
        let mut stats = JournalStats {
            last_seq: report.next_seq - 1,
            settled_seq: report.next_seq - 1,
            ..JournalStats::default()
        };
        writer.fill_stats(&mut stats);
        options.watermark.publish(report.next_seq - 1);
        let journal = Rc::new(Journal {
            state: RefCell::new(State {
                pending: Vec::new(),
                pending_records: 0,
                pending_first_seq: report.next_seq,
                pending_since: None,
                next_seq: report.next_seq,
                settled_seq: report.next_seq - 1,
                failed: VecDeque::new(),
                failed_forgotten_through: 0,
                poisoned: false,
                closed: false,
                dedup: recovered.dedup,
                reuse_logged_at: None,
                reuse_unlogged: 0,
                retention_floor: None,
                durable_waiters: Vec::new(),
                room_waiters: Vec::new(),
                admission: VecDeque::new(),
                admission_ids: 0,
                committer: None,
                committer_done: false,
                stats,
            }),
            options,
        });
        glommio::spawn_local(commit_loop(Rc::clone(&journal), writer)).detach();
        Ok((journal, report))
    }

    /// Copies `record` into the pending batch and wakes the committer. Never waits.
    ///
    /// `Ok(Stored(seq))`: await [`Journal::wait_durable`]`(seq)` before acknowledging.
    /// `Ok(Duplicate(seq))`: its dedup key was journaled within the window as `seq`; it is not
    /// stored again; await `wait_durable(seq)` before acknowledging again.
    /// `Err(BatchFull)`: await [`Journal::wait_room`] and append again. `Err(Poisoned)`,
    /// `Err(Closed)`, `Err(RecordTooLarge)`: not stored, answer AE.
    pub fn append(&self, record: &RecordRef<'_>) -> Result<Append, JournalError> {
        self.append_inner(record, false)
    }

    /// Appends `record`, waiting for room if the batch is full, in arrival order: an appender
    /// that found the batch full is admitted before any that came after it, and nobody appends
    /// past those waiting. (With plain [`Journal::append`] + [`Journal::wait_room`], appenders
    /// that never waited could keep filling each new batch first and starve the woken ones.)
    pub async fn append_in_turn(&self, record: &RecordRef<'_>) -> Result<Append, JournalError> {
        match self.append_inner(record, false) {
            Err(JournalError::BatchFull) => {}
            other => return other,
        }
        let id = {
            let mut st = self.state.borrow_mut();
            st.admission_ids += 1;
            st.admission_ids
        };
        let mut turn = Turn {
            journal: self,
            id,
            queued: false,
            need_empty: false,
        };
        loop {
            poll_fn(|cx| turn.poll(cx)).await;
            match self.append_inner(record, true) {
                // Too big for what is left: wait at the front for an empty batch.
                Err(JournalError::BatchFull) => turn.need_empty = true,
                other => return other,
            }
        }
    }

    /// `append`; `admitted`: the caller's turn came ([`Journal::append_in_turn`]).
    fn append_inner(&self, record: &RecordRef<'_>, admitted: bool) -> Result<Append, JournalError> {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        if st.poisoned {
            return Err(JournalError::Poisoned);
        }
        if st.closed {
            return Err(JournalError::Closed);
        }
        if !admitted && !st.admission.is_empty() {
            st.stats.batch_full += 1;
            return Err(JournalError::BatchFull);
        }
        let time = record.receive_time_unix_micros;
        let mut reused = None;
        let fingerprint = match (st.dedup.as_mut(), record::storable_key(record.dedup_key)) {
            (Some(window), Some(key)) => {
                let fingerprint = window.fingerprint(&key, record.payload);
                match window.find(&fingerprint, time) {
                    Lookup::Duplicate(seq) => {
                        st.stats.duplicates += 1;
                        return Ok(Append::Duplicate(seq));
                    }
                    Lookup::Reused(earlier) => reused = Some(earlier),
                    Lookup::New => {}
                }
                Some(fingerprint)
            }
            _ => None,
        };
        let size = record::encoded_len(record).ok_or(JournalError::RecordTooLarge)?;
        let full = st.pending_records >= self.options.batch_records_max
            || st.pending.len() + size > self.options.batch_bytes_max;
        if st.pending_records > 0 && full {
            st.stats.batch_full += 1;
            return Err(JournalError::BatchFull);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let first = st.pending_records == 0;
        if first {
            st.pending_first_seq = seq;
            if self.options.group_delay.is_some() {
                st.pending_since = Some(Instant::now());
            }
        }
        record::encode(record, seq, &mut st.pending);
        st.pending_records += 1;
        st.stats.last_seq = seq;
        st.stats.pending_records = st.pending_records;
        if let (Some(window), Some(fingerprint)) = (st.dedup.as_mut(), fingerprint) {
            window.insert(fingerprint, seq, time);
        }
        if let Some(earlier) = reused {
            st.reused_key(&self.options.dir, seq, earlier, time);
        }
        // With a group delay the committer needs the first record (to start its wait) and a
        // batch that became due; the appends in between would only wake it to wait again.
        if first || self.options.group_delay.is_none() || self.is_due(st) {
            st.wake_committer();
        }
        Ok(Append::Stored(seq))
    }

    /// Resolves once the batch holding `seq` settled: `Ok` once durable, `Err(NoSpace)` if its
    /// write failed for lack of space, `Err(Poisoned)` if a flush failed before it was durable.
    ///
    /// # Panics
    /// If `seq` was never returned by [`Journal::append`].
    pub async fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        assert!(
            seq > 0 && seq < self.state.borrow().next_seq,
            "sequence {seq} was never assigned"
        );
        poll_fn(|cx| self.poll_durable(seq, cx)).await
    }

    /// Polls the outcome of `seq`.
    fn poll_durable(&self, seq: u64, cx: &mut Context<'_>) -> Poll<Result<(), JournalError>> {
        let mut st = self.state.borrow_mut();
        if seq <= st.settled_seq {
            return Poll::Ready(st.outcome(seq));
        }
        if st.poisoned {
            return Poll::Ready(Err(JournalError::Poisoned));
        }
        st.durable_waiters.push((seq, cx.waker().clone()));
        st.wake_committer(); // A waiter makes a grouped batch due.
        Poll::Pending
    }

    /// Resolves when the pending batch is empty again (its flush started), or the journal is
    /// poisoned or closed; append again after it.
    pub async fn wait_room(&self) {
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.pending_records == 0 || st.poisoned || st.closed {
                return Poll::Ready(());
            }
            st.room_waiters.push(cx.waker().clone());
            st.wake_committer(); // A waiter makes a grouped batch due.
            Poll::Pending
        })
        .await
    }

    /// Whether a failed flush poisoned the journal (the process should drain and exit non-zero
    /// so that recovery runs at restart).
    pub fn is_poisoned(&self) -> bool {
        self.state.borrow().poisoned
    }

    /// The counters.
    pub fn stats(&self) -> JournalStats {
        let st = self.state.borrow();
        JournalStats {
            pending_records: st.pending_records,
            poisoned: st.poisoned,
            settled_seq: st.settled_seq,
            dedup_keys: st.dedup.as_ref().map_or(0, DedupWindow::len),
            dedup_bytes: st.dedup.as_ref().map_or(0, DedupWindow::heap_bytes),
            ..st.stats
        }
    }

    /// Records at or after `floor` are still needed: retention keeps every segment holding one.
    /// The hook for connectors (the slowest cursor); `None` releases the hold.
    pub fn set_retention_floor(&self, floor: Option<u64>) {
        self.state.borrow_mut().retention_floor = floor;
    }

    /// Flushes what is pending, stops the committer and releases the directory lock; later
    /// appends fail with `Closed`. Returns the outcome of the last record appended.
    pub async fn close(&self) -> Result<(), JournalError> {
        let last = {
            let mut st = self.state.borrow_mut();
            st.closed = true;
            if let Some(committer) = st.committer.take() {
                committer.wake();
            }
            for (_, waker) in &st.admission {
                waker.wake_by_ref();
            }
            st.next_seq - 1
        };
        let outcome = if last == 0 {
            Ok(())
        } else {
            poll_fn(|cx| self.poll_durable(last, cx)).await
        };
        poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.committer_done {
                return Poll::Ready(());
            }
            st.room_waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        outcome
    }

    /// Called by the committer as it stops (its files and lock already released).
    fn committer_stopped(&self) {
        self.options.watermark.close();
        let mut st = self.state.borrow_mut();
        st.committer_done = true;
        for waker in st.room_waiters.drain(..) {
            waker.wake();
        }
    }

    /// Whether the pending batch must be written now rather than at the end of its group
    /// delay: it is large, someone waits for it (durability, room), or the journal closes.
    fn is_due(&self, st: &State) -> bool {
        st.closed
            || st.pending.len() >= self.options.group_bytes
            || st.pending_records >= self.options.batch_records_max
            || !st.durable_waiters.is_empty()
            || !st.room_waiters.is_empty()
            || !st.admission.is_empty()
    }

    /// Resolves once the pending batch became due ([`Journal::is_due`]).
    fn poll_due(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.state.borrow_mut();
        if self.is_due(&st) {
            return Poll::Ready(());
        }
        st.committer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Waits for a batch (`Batch`), for the journal to close (`Closed`), or says until when a
    /// grouped batch may still gather records (`Until`).
    fn poll_work(&self, cx: &mut Context<'_>) -> Poll<Taken> {
        let mut st = self.state.borrow_mut();
        if st.pending_records == 0 {
            if st.closed {
                return Poll::Ready(Taken::Closed);
            }
            st.committer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if let (Some(delay), Some(since)) = (self.options.group_delay, st.pending_since) {
            let deadline = since + delay;
            if !self.is_due(&st) && Instant::now() < deadline {
                return Poll::Ready(Taken::Until(deadline));
            }
        }
        st.pending_since = None;
        // The next batch will likely be about as big; never reserve past the bound.
        let capacity = st.pending.len().min(self.options.batch_bytes_max);
        let bytes = std::mem::replace(&mut st.pending, Vec::with_capacity(capacity));
        let batch = Batch {
            bytes: bytes.len(),
            first_seq: st.pending_first_seq,
            last_seq: st.next_seq - 1,
            records: st.pending_records,
        };
        st.pending_records = 0;
        st.stats.pending_records = 0;
        st.stats.flush_in_progress = true;
        for waker in st.room_waiters.drain(..) {
            waker.wake();
        }
        // Room for all of them, likely: wake them all, in order; each goes once it is first.
        for (_, waker) in &st.admission {
            waker.wake_by_ref();
        }
        Poll::Ready(Taken::Batch(batch, bytes))
    }

    /// Records the outcome of a batch and releases its waiters.
    fn settle(&self, batch: &Batch, outcome: Result<(), Failure>, started: Instant) {
        let mut guard = self.state.borrow_mut();
        let st = &mut *guard;
        st.stats.flush_in_progress = false;
        let elapsed = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => {
                st.settled_seq = batch.last_seq;
                st.stats.flushes += 1;
                st.stats.records_flushed += batch.records as u64;
                st.stats.bytes_flushed += batch.bytes as u64;
                st.stats.flush_micros_total += elapsed;
                use crate::metrics::{bucket, BATCH_RECORDS_BOUNDS, FLUSH_MICROS_BOUNDS};
                st.stats.flush_micros_buckets[bucket(&FLUSH_MICROS_BOUNDS, elapsed)] += 1;
                let records = batch.records as u64;
                st.stats.batch_records_buckets[bucket(&BATCH_RECORDS_BOUNDS, records)] += 1;
            }
            Err(Failure::NotStored) => {
                st.settled_seq = batch.last_seq;
                st.stats.batches_failed += 1;
                st.remember_failed(batch.first_seq, batch.last_seq);
                if let Some(window) = st.dedup.as_mut() {
                    window.forget(batch.first_seq, batch.last_seq);
                }
            }
            Err(Failure::Poison) => {
                st.poisoned = true;
                for waker in st.room_waiters.drain(..) {
                    waker.wake();
                }
                for (_, waker) in &st.admission {
                    waker.wake_by_ref();
                }
            }
        }
        let (settled, poisoned) = (st.settled_seq, st.poisoned);
        if !poisoned {
            // Readers off the shard (delivery) may now read up to `settled`: the batch is on
            // disk, or was cut back from it (a gap they skip).
            self.options.watermark.publish(settled);
        }
        st.durable_waiters.retain(|(seq, waker)| {
            let done = poisoned || *seq <= settled;
            if done {
                waker.wake_by_ref();
            }
            !done
        });
    }

    /// Current retention bounds.
    fn retention_bounds(&self) -> Bounds {
        Bounds {
            age: self.options.retention_age,
            bytes: self.options.retention_bytes,
            floor: match (
                self.state.borrow().retention_floor,
                self.options.watermark.floor(),
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// The next sequence number to assign.
    fn next_seq(&self) -> u64 {
        self.state.borrow().next_seq
    }
}

/// An appender's place in the admission queue ([`Journal::append_in_turn`]); leaves it when
/// dropped (admitted, or the connection went away), waking the next in line.
struct Turn<'a> {
    /// The journal.
    journal: &'a Journal,
    /// Its id in the queue.
    id: u64,
    /// It is in the queue.
    queued: bool,
    /// It needs an empty batch (its record did not fit in what was left).
    need_empty: bool,
}

impl Turn<'_> {
    /// Ready when first in line with room in the batch (or the journal is poisoned or closed).
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.journal.state.borrow_mut();
        if st.poisoned || st.closed {
            return Poll::Ready(());
        }
        if self.queued {
            if let Some(entry) = st.admission.iter_mut().find(|(id, _)| *id == self.id) {
                entry.1 = cx.waker().clone();
            }
        } else {
            st.admission.push_back((self.id, cx.waker().clone()));
            self.queued = true;
            st.wake_committer(); // A waiter makes a grouped batch due.
        }
        let first = st.admission.front().is_some_and(|(id, _)| *id == self.id);
        let options = &self.journal.options;
        let room = if self.need_empty {
            st.pending_records == 0
        } else {
            st.pending_records < options.batch_records_max
                && st.pending.len() < options.batch_bytes_max
        };
        if first && room {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.queued {
            return;
        }
        let mut st = self.journal.state.borrow_mut();
        let was_first = st.admission.front().is_some_and(|(id, _)| *id == self.id);
        st.admission.retain(|(id, _)| *id != self.id);
        if was_first {
            if let Some((_, waker)) = st.admission.front() {
                waker.wake_by_ref();
            }
        }
    }
}

impl State {
    /// Wakes the committer if it waits for work.
    fn wake_committer(&mut self) {
        if let Some(committer) = self.committer.take() {
            committer.wake();
        }
    }

    /// Counts a message stored as `seq` although its key was journaled as `earlier` (another
    /// payload: a reused control id), and logs it at most once per
    /// [`DEDUP_REUSE_LOG_INTERVAL`] of receive time (a sender whose counter is stuck would
    /// otherwise write a line per message). Neither key nor content is logged (the control id
    /// may carry patient data in some feeds).
    fn reused_key(&mut self, dir: &std::path::Path, seq: u64, earlier: u64, time: u64) {
        self.stats.reused_keys += 1;
        let interval = u64::try_from(DEDUP_REUSE_LOG_INTERVAL.as_micros()).unwrap_or(u64::MAX);
        if self
            .reuse_logged_at
            .is_some_and(|at| time < at.saturating_add(interval))
        {
            self.reuse_unlogged += 1;
            return;
        }
        tracing::info!(journal = %dir.display(), seq, earlier_seq = earlier,
            not_logged_since = self.reuse_unlogged,
            "a reused control id came with another payload: stored as a new message");
        self.reuse_logged_at = Some(time);
        self.reuse_unlogged = 0;
    }

    /// The outcome of a settled sequence number.
    fn outcome(&self, seq: u64) -> Result<(), JournalError> {
        let failed = self.failed.iter().any(|&(a, b)| (a..=b).contains(&seq));
        if failed || seq <= self.failed_forgotten_through {
            return Err(JournalError::NoSpace);
        }
        Ok(())
    }

    /// Remembers a failed range, dropping the oldest past [`FAILED_RANGES_MAX`].
    fn remember_failed(&mut self, first: u64, last: u64) {
        if self.failed.len() == FAILED_RANGES_MAX {
            if let Some((_, end)) = self.failed.pop_front() {
                self.failed_forgotten_through = end;
            }
        }
        self.failed.push_back((first, last));
    }
}

/// A batch taken from the pending buffer.
#[derive(Debug)]
struct Batch {
    /// Bytes of encoded records.
    bytes: usize,
    /// First sequence number in it.
    first_seq: u64,
    /// Last sequence number in it.
    last_seq: u64,
    /// How many records.
    records: usize,
}

/// Why a batch was not made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// Not written (no space, or no new segment could be created); the journal is consistent.
    NotStored,
    /// A flush (or a write or truncation whose effect is unknown) failed: stop trusting it.
    Poison,
}

/// What wakes the committer.
enum Work {
    /// A batch to flush, and its bytes.
    Batch(Batch, Vec<u8>),
    /// Time to check retention.
    Tick,
    /// The journal was closed and nothing is pending.
    Closed,
}

/// What [`Journal::poll_work`] found.
enum Taken {
    /// A batch to write, and its bytes.
    Batch(Batch, Vec<u8>),
    /// The journal was closed and nothing is pending.
    Closed,
    /// Records are pending, grouped: they may gather until then unless the batch becomes due.
    Until(Instant),
}

/// The next piece of work; ticks only when retention is on.
async fn next_work(journal: &Journal, retention_on: bool) -> Work {
    let work = async {
        loop {
            match poll_fn(|cx| journal.poll_work(cx)).await {
                Taken::Batch(batch, bytes) => return Work::Batch(batch, bytes),
                Taken::Closed => return Work::Closed,
                Taken::Until(deadline) => {
                    // One timer per group, not per record: the appends in between do not wake
                    // the committer unless the batch became due.
                    let delay = deadline.saturating_duration_since(Instant::now());
                    let due = poll_fn(|cx| journal.poll_due(cx));
                    futures_lite::future::or(due, crate::timers::sleep(delay)).await;
                }
            }
        }
    };
    if !retention_on {
        return work.await;
    }
    let tick = async {
        crate::timers::sleep(journal.options.retention_interval).await;
        Work::Tick
    };
    futures_lite::future::or(work, tick).await
}

/// The committer: one per journal, until it is closed or poisoned.
async fn commit_loop(journal: Rc<Journal>, writer: Writer) {
    commit(&journal, writer).await;
    journal.committer_stopped();
}

/// Flushes batches until the journal is closed or poisoned; consumes (and so closes) the writer.
async fn commit(journal: &Journal, mut writer: Writer) {
    let retention_on =
        journal.options.retention_age.is_some() || journal.options.retention_bytes.is_some();
    if retention_on {
        writer.apply_retention(journal).await;
    }
    loop {
        let (batch, bytes) = match next_work(journal, retention_on).await {
            Work::Batch(batch, bytes) => (batch, bytes),
            Work::Tick => {
                writer.apply_retention(journal).await;
                continue;
            }
            Work::Closed => break,
        };
        let rotations = writer.rotations;
        let started = Instant::now();
        let outcome = writer.write_batch(&batch, bytes).await;
        journal.settle(&batch, outcome, started);
        writer.fill_stats(&mut journal.state.borrow_mut().stats);
        if outcome == Err(Failure::Poison) {
            tracing::error!(dir = %writer.dir.display(), "journal poisoned: a flush failed; no more \
                messages can be made durable until the process restarts and recovery runs");
            return;
        }
        if retention_on && writer.rotations != rotations {
            writer.apply_retention(journal).await;
        }
    }
    writer.close().await;
}

use crate::limits::{
    JOURNAL_EXTEND_STEP_MAX as EXTEND_STEP_MAX, JOURNAL_EXTEND_STEP_MIN as EXTEND_STEP_MIN,
    JOURNAL_READY_AHEAD_BYTES as READY_AHEAD,
};

/// The active segment.
///
/// Records go to the segment with `O_DIRECT` writes (glommio [`DmaFile`]) so that a batch is
/// one io_uring write the kernel issues inline, not a buffered write punted to an io-wq worker
/// that competes with the shard for its CPU. The space ahead of the records is written with
/// zeros and made durable in steps (`extend`) before any record goes there, so each
/// batch overwrites allocated, initialised blocks: with `O_DSYNC` such a write is durable
/// once the device cache is flushed, with no file-system journal commit (no size or extent
/// change), which is the cheapest durable write the file system offers. A zero record prefix
/// marks the end of the records ([`super::segment::SegmentReader`]).
#[derive(Debug)]
struct Active {
    /// The open file, for batches (`O_DSYNC` in [`SyncMode::Dsync`]).
    file: DmaFile,
    /// The same file without `O_DSYNC`, for the zeros ahead (one flush per step, not per block);
    /// shared with the background readying ([`Readying`]).
    fill: Rc<DmaFile>,
    /// Its path.
    path: PathBuf,
    /// The sequence number in its name.
    first_seq: u64,
    /// Where the records end: where the next batch goes.
    len: u64,
    /// Bytes below this are allocated, initialised and durable (zeros past `len`).
    ready: u64,
    /// The bytes of the partial block at the end of the records (`len` not aligned): every
    /// batch rewrites that block with the same bytes followed by its records.
    tail: Vec<u8>,
}

/// The file side of the journal, owned by the committer.
#[derive(Debug)]
struct Writer {
    /// The shard directory.
    dir: PathBuf,
    /// The shard directory, open for fsync after a segment is created.
    dir_handle: Directory,
    /// Segments are rotated before a batch would take them past this.
    segment_bytes_max: u64,
    /// How batches are made durable.
    sync: SyncMode,
    /// Closed segments, oldest first.
    closed: VecDeque<SegmentInfo>,
    /// The segment appended to (none before the first batch of a new journal).
    active: Option<Active>,
    /// Space of the active segment being readied in the background, if any.
    readying: Option<Readying>,
    /// Batches that waited for space (see [`JournalStats::space_waits`]).
    space_waits: u64,
    /// Background pieces taken in so far.
    pieces_readied: u64,
    /// Segments created so far (retention runs after each).
    rotations: u64,
    /// Failed batches cut back from the segment so far.
    cuts: u64,
    /// Directory fsyncs so far (a segment created or deleted).
    dir_syncs: u64,
    /// Segments deleted so far.
    deleted: u64,
    /// Time spent waiting for durability so far (fdatasync, or the `O_DSYNC` write), µs.
    sync_micros: std::cell::Cell<u64>,
    /// Injected faults (tests).
    faults: Option<Rc<FaultPlan>>,
    /// The exclusive lock on the shard directory, held while the writer lives.
    _lock: recovery::DirLock,
}

impl Writer {
    /// Opens the last recovered segment for appending; the others are closed.
    async fn open(
        options: &JournalOptions,
        mut segments: Vec<SegmentInfo>,
        lock: recovery::DirLock,
    ) -> Result<Writer, OpenError> {
        let dir_handle = Directory::open(&options.dir)
            .await
            .map_err(|e| glommio_error(&options.dir, e))?;
        let active = match segments.pop() {
            Some(last) => Some(open_active(last, options.sync).await?),
            None => None,
        };
        Ok(Writer {
            dir: options.dir.clone(),
            dir_handle,
            segment_bytes_max: options.segment_bytes_max,
            sync: options.sync,
            closed: segments.into(),
            active,
            readying: None,
            space_waits: 0,
            pieces_readied: 0,
            rotations: 0,
            cuts: 0,
            dir_syncs: 0,
            deleted: 0,
            sync_micros: std::cell::Cell::new(0),
            faults: options.faults.clone(),
            _lock: lock,
        })
    }

    /// Writes and flushes one batch.
    async fn write_batch(&mut self, batch: &Batch, bytes: Vec<u8>) -> Result<(), Failure> {
        if let Some(faults) = &self.faults {
            let delay = faults.flush_delay.get();
            if !delay.is_zero() {
                crate::timers::sleep(delay).await;
            }
        }
        let len = batch.bytes as u64;
        let rotate = self.active.as_ref().is_none_or(|a| {
            a.len > SEGMENT_HEADER_BYTES as u64 && a.len + len > self.segment_bytes_max
        });
        if rotate {
            self.rotate(batch.first_seq).await?;
        }
        let end = self.active.as_ref().map_or(0, |a| a.len + len);
        let waited = self.settle_readying(end).await;
        let Some(active) = self.active.as_mut() else {
            return Err(Failure::NotStored);
        };
        let ready = active.ready;
        let extended = extend(active, end, self.sync).await;
        if waited || active.ready != ready || extended.is_err() {
            self.space_waits += 1;
        }
        extended?;
        let no_space = self.faults.as_ref().is_some_and(|f| f.take_enospc());
        let failed_sync = self.faults.as_ref().is_some_and(|f| f.take_failed_sync());
        let fault = match (no_space, failed_sync && self.sync == SyncMode::Dsync) {
            (true, _) => Some(WriteFault::NoSpace),
            (false, true) => Some(WriteFault::Io),
            (false, false) => None,
        };
        let started = Instant::now();
        let mut outcome = write_records(active, &bytes, fault).await;
        if outcome.is_ok() && self.sync == SyncMode::Dsync {
            // The O_DSYNC write is the flush.
            self.add_sync_time(started);
        }
        if outcome.is_ok() && self.sync == SyncMode::Data {
            outcome = self.sync(batch, failed_sync).await.and(outcome);
        }
        match (outcome, self.active.as_mut()) {
            // Only now do the records end past this batch.
            (Ok(tail), Some(active)) => {
                active.len += len;
                active.tail = tail;
                self.start_readying().await;
                Ok(())
            }
            (Ok(_), None) => Err(Failure::Poison),
            (Err(failure), _) => Err(self.cut_failed(batch, failure).await),
        }
    }

    /// After a batch failed (answered AE): cuts the segment back to the end of the records
    /// before it, and makes the cut durable, so nothing the failed write may have put there
    /// (part of the batch, or all of it) is read back at recovery as if it had been stored, and
    /// the next batch starts from a known tail. Returns how the batch fails: as it did, or
    /// [`Failure::Poison`] if it cannot be cut (then nothing may be appended after it).
    async fn cut_failed(&mut self, batch: &Batch, failure: Failure) -> Failure {
        // Nothing may write past the records once they are cut.
        self.settle_readying(u64::MAX).await;
        let Some(active) = self.active.as_mut() else {
            return Failure::Poison;
        };
        let mut cut = active.fill.truncate(active.len).await;
        if cut.is_ok() && self.sync != SyncMode::Disabled {
            cut = active.fill.fdatasync().await;
        }
        match cut {
            Ok(()) => {
                // Nothing past the records is ready any more; `extend` readies it again.
                active.ready = active.len;
                self.cuts += 1;
                failure
            }
            Err(error) => {
                tracing::error!(segment = %active.path.display(), first_seq = batch.first_seq,
                    %error, "cannot cut a failed batch from the journal");
                Failure::Poison
            }
        }
    }

    /// Adds the time since `started` to the time spent waiting for durability.
    fn add_sync_time(&self, started: Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.sync_micros
            .set(self.sync_micros.get().saturating_add(micros));
    }

    /// fdatasync after the write ([`SyncMode::Data`]).
    async fn sync(&self, batch: &Batch, injected: bool) -> Result<(), Failure> {
        let Some(active) = self.active.as_ref() else {
            return Err(Failure::Poison);
        };
        let result = if injected {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        } else if self.faults.as_ref().is_some_and(|f| f.skip_flush.get()) {
            Ok(()) // Test hook (MLLPD_FAULT_SKIP_FLUSH): the power-loss test's control run.
        } else {
            let started = Instant::now();
            let result = active.file.fdatasync().await.map_err(std::io::Error::from);
            self.add_sync_time(started);
            result
        };
        result.map_err(|error| {
            tracing::error!(segment = %active.path.display(), first_seq = batch.first_seq,
                %error, "journal fdatasync failed");
            Failure::Poison
        })
    }

    /// Closes the active segment (cut to its records) and starts one named `first_seq`.
    async fn rotate(&mut self, first_seq: u64) -> Result<(), Failure> {
        self.settle_readying(u64::MAX).await;
        if let Some(old) = self.active.take() {
            self.closed.push_back(SegmentInfo {
                first_seq: old.first_seq,
                path: old.path.clone(),
                bytes: old.len,
                modified: SystemTime::now(),
            });
            close_active(old).await;
        }
        let path = self.dir.join(segment::file_name(first_seq));
        let active = create_segment(&path, first_seq, self.sync).await?;
        // The new name must survive a crash as much as the records in it.
        if let Err(error) = self.dir_handle.sync().await {
            tracing::error!(dir = %self.dir.display(), %error, "journal directory fsync failed");
            return Err(Failure::Poison);
        }
        self.dir_syncs += 1;
        self.rotations += 1;
        self.active = Some(active);
        Ok(())
    }

    /// Deletes the closed segments retention allows.
    async fn apply_retention(&mut self, journal: &Journal) {
        let (next_first, active_bytes) = match &self.active {
            Some(a) => (a.first_seq, a.len),
            None => (journal.next_seq(), 0),
        };
        let deleted_before = self.deleted;
        let closed = self.closed.make_contiguous();
        let bounds = journal.retention_bounds();
        let now = SystemTime::now();
        let count = retention::deletable(closed, next_first, active_bytes, bounds, now);
        journal.state.borrow_mut().stats.segments_held = 0;
        if let Some(floor) = bounds.floor {
            // A connector that has not delivered them holds segments retention would delete:
            // say so, since the journal then grows past RETENTION_BYTES / RETENTION_AGE.
            let unheld = Bounds {
                floor: None,
                ..bounds
            };
            let held = retention::deletable(closed, next_first, active_bytes, unheld, now) - count;
            let held_bytes: u64 = closed[count..count + held].iter().map(|s| s.bytes).sum();
            journal.state.borrow_mut().stats.segments_held = held;
            if held > 0 {
                tracing::warn!(dir = %self.dir.display(), floor, segments = held, bytes = held_bytes,
                    "retention keeps journal segments a connector has not delivered yet");
            }
        }
        for _ in 0..count {
            let Some(segment) = self.closed.pop_front() else {
                break;
            };
            if let Err(error) = glommio::io::remove(&segment.path).await {
                tracing::warn!(segment = %segment.path.display(), %error,
                    "retention could not delete a journal segment");
                self.closed.push_front(segment);
                break;
            }
            tracing::info!(segment = %segment.path.display(), "retention deleted a journal segment");
            self.deleted += 1;
        }
        if self.deleted != deleted_before {
            // So that a deleted segment does not come back after a power loss (harmless, since
            // recovery would only keep an old segment longer, but it would count against
            // RETENTION_BYTES until the next pass): one directory fsync per pass.
            match self.dir_handle.sync().await {
                Ok(()) => self.dir_syncs += 1,
                Err(error) => {
                    tracing::warn!(dir = %self.dir.display(), %error,
                        "journal directory fsync after retention failed");
                }
            }
        }
        self.fill_stats(&mut journal.state.borrow_mut().stats);
    }

    /// Starts readying the next piece of the active segment in the background when less than
    /// two pieces are left ahead of the records (and none is being readied): a batch then
    /// finds its space ready instead of waiting for zeros to be written and flushed in front
    /// of it. Not past the segment's size bound (it rotates there).
    async fn start_readying(&mut self) {
        // A piece done by now is taken in, so the next can start.
        self.take_in_if_done().await;
        let Some(active) = self.active.as_ref() else {
            return;
        };
        if self.readying.is_some() || active.ready.saturating_sub(active.len) >= 2 * READY_AHEAD {
            return;
        }
        let align = active.fill.alignment();
        let from = align_up(active.ready, align);
        let to = (from + READY_AHEAD).min(align_up(self.segment_bytes_max, align));
        if to <= from {
            return;
        }
        let fill = Rc::clone(&active.fill);
        let (cut_to, sync) = (active.ready, self.sync);
        let faults = self.faults.clone();
        let task = glommio::spawn_local(async move {
            let delay = faults.as_ref().map(|f| f.ready_delay.get());
            if let Some(delay) = delay.filter(|d| !d.is_zero()) {
                crate::timers::sleep(delay).await;
            }
            let mut zeros = fill.alloc_dma_buffer(usize::try_from(to - from).unwrap_or(0));
            zeros.as_bytes_mut().fill(0);
            let result = write_zeros(&fill, zeros, from, sync).await;
            if result.is_err() {
                // Give back what the piece allocated; the records below `cut_to` are untouched.
                let _ = fill.truncate(cut_to).await;
            } else if let Some(faults) = &faults {
                faults.pieces_readied.set(faults.pieces_readied.get() + 1);
            }
            result
        });
        self.readying = Some(Readying { to, task });
    }

    /// Waits for the background readying if the segment must be ready up to `end` and is not
    /// yet (`u64::MAX`: whatever it is, before the segment is cut or closed), and takes in what
    /// it readied. A piece that failed is left to [`extend`], which tries again in front of the
    /// batch and reports why.
    /// Returns whether it waited.
    async fn settle_readying(&mut self, end: u64) -> bool {
        let needed = match (&self.readying, &self.active) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(active)) => {
                end == u64::MAX || align_up(end, active.fill.alignment()) > active.ready
            }
        };
        if !needed {
            return false;
        }
        // Done by now (the usual case): taken in without waiting.
        self.take_in_if_done().await;
        let Some(readying) = self.readying.take() else {
            return false;
        };
        let readied = readying.task.await;
        self.take_in(readied, readying.to);
        true
    }

    /// Takes in the background piece if it is done by now.
    async fn take_in_if_done(&mut self) {
        let Some(readying) = self.readying.as_mut() else {
            return;
        };
        if let Some(readied) = futures_lite::future::poll_once(&mut readying.task).await {
            let to = readying.to;
            self.readying = None;
            self.take_in(readied, to);
        }
    }

    /// Takes in what a background piece readied (up to `to`), if it succeeded.
    fn take_in(&mut self, readied: Result<(), i32>, to: u64) {
        if let (Ok(()), Some(active)) = (readied, self.active.as_mut()) {
            active.ready = active.ready.max(to);
            self.pieces_readied += 1;
        }
    }

    /// Copies segment counts into `stats`.
    fn fill_stats(&self, stats: &mut JournalStats) {
        let active_bytes = self.active.as_ref().map_or(0, |a| a.len);
        stats.segments = self.closed.len() + usize::from(self.active.is_some());
        stats.segment_bytes = self.closed.iter().map(|s| s.bytes).sum::<u64>() + active_bytes;
        stats.segments_deleted = self.deleted;
        stats.batches_cut = self.cuts;
        stats.space_waits = self.space_waits;
        stats.pieces_readied = self.pieces_readied;
        stats.dir_syncs = self.dir_syncs;
        stats.sync_micros_total = self.sync_micros.get();
    }

    /// Closes the active segment as it is (recovery cuts its zeros ahead at the next start).
    async fn close(mut self) {
        self.settle_readying(u64::MAX).await;
        if let Some(active) = self.active {
            close_files(active).await;
        }
    }
}

/// An OpenError for a glommio error on `path`.
fn glommio_error(path: &std::path::Path, e: GlommioError<()>) -> OpenError {
    OpenError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// Opens a segment twice: for batches (`O_DSYNC` in [`SyncMode::Dsync`]) and for the zeros.
async fn open_files(
    path: &std::path::Path,
    sync: SyncMode,
    create: bool,
) -> Result<(DmaFile, Rc<DmaFile>), GlommioError<()>> {
    let flags = if sync == SyncMode::Dsync {
        libc::O_DSYNC
    } else {
        0
    };
    let file = OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(create)
        .custom_flags(flags)
        .dma_open(path)
        .await?;
    let fill = OpenOptions::new().write(true).dma_open(path).await?;
    Ok((file, Rc::new(fill)))
}

/// Opens the last recovered segment to append to it. Recovery cut it where its records end
/// (`last.bytes`), so nothing past them is ready yet.
async fn open_active(last: SegmentInfo, sync: SyncMode) -> Result<Active, OpenError> {
    let (file, fill) = open_files(&last.path, sync, false)
        .await
        .map_err(|e| glommio_error(&last.path, e))?;
    let align = file.alignment();
    let start = last.bytes / align * align;
    let mut tail = vec![0u8; (last.bytes - start) as usize];
    // Read once with std before the shard serves (see the module invariants).
    let read = std::fs::File::open(&last.path)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut tail, start));
    read.map_err(|source| OpenError::Io {
        path: last.path.clone(),
        source,
    })?;
    Ok(Active {
        file,
        fill,
        first_seq: last.first_seq,
        len: last.bytes,
        ready: last.bytes,
        tail,
        path: last.path,
    })
}

/// Creates segment `first_seq` at `path` with its header, durable, and a first step of zeros.
async fn create_segment(
    path: &std::path::Path,
    first_seq: u64,
    sync: SyncMode,
) -> Result<Active, Failure> {
    let (file, fill) = open_files(path, sync, true).await.map_err(|error| {
        tracing::warn!(segment = %path.display(), %error, "cannot create a journal segment");
        Failure::NotStored
    })?;
    let header = segment::header(first_seq, micros(SystemTime::now()));
    let mut active = Active {
        file,
        fill,
        path: path.to_owned(),
        first_seq,
        len: SEGMENT_HEADER_BYTES as u64,
        ready: 0,
        tail: header.to_vec(),
    };
    // The header block is written with the first zeros, so a crash never leaves a segment
    // whose header is missing but whose zeros are there.
    if extend(&mut active, SEGMENT_HEADER_BYTES as u64, sync)
        .await
        .is_err()
    {
        tracing::warn!(segment = %path.display(), "cannot write a journal segment header");
        let _ = active.fill.remove().await;
        return Err(Failure::NotStored);
    }
    Ok(active)
}

/// Cuts a closed segment to its records (dropping its zeros ahead) and closes it. A crash before
/// the cut is harmless: readers stop at the zeros.
async fn close_active(old: Active) {
    if let Err(error) = old.fill.truncate(old.len).await {
        tracing::warn!(segment = %old.path.display(), %error,
            "cannot cut a closed journal segment to its records");
    }
    close_files(old).await;
}

/// Closes both files of a segment (after its readying, if any, was settled: the fill file
/// is then no longer shared).
async fn close_files(active: Active) {
    let fill = Rc::try_unwrap(active.fill).ok();
    for file in std::iter::once(active.file).chain(fill) {
        if let Err(error) = file.close().await {
            tracing::warn!(%error, "closing a journal segment failed");
        }
    }
}

/// Makes sure the segment is ready (allocated, zeroed, durable) up to `end`, growing it by at
/// least a step. The first block written carries `tail` when nothing is ready yet (a new
/// segment's header). Lack of space fails the batch ([`Failure::NotStored`]): the segment stays
/// as it was and the next batch tries again, so the shard recovers by itself when space returns.
async fn extend(active: &mut Active, end: u64, sync: SyncMode) -> Result<(), Failure> {
    let align = active.fill.alignment();
    if align_up(end, align) <= active.ready {
        return Ok(());
    }
    let from = align_up(active.ready, align);
    let step = active.ready.clamp(EXTEND_STEP_MIN, EXTEND_STEP_MAX);
    // Whole blocks only: `ready` is mid-block after recovery cut the segment at its records.
    let to = align_up(end.max(from + step), align);
    let mut zeros = active
        .fill
        .alloc_dma_buffer(usize::try_from(to - from).unwrap_or(0));
    zeros.as_bytes_mut().fill(0);
    if from == 0 {
        zeros.as_bytes_mut()[..active.tail.len()].copy_from_slice(&active.tail);
    }
    let synced = write_zeros(&active.fill, zeros, from, sync).await;
    match synced {
        Ok(()) => {
            active.ready = to;
            Ok(())
        }
        Err(errno) => {
            // Give back what the step allocated; the records before `from` are untouched.
            let _ = active.fill.truncate(active.ready).await;
            if matches!(errno, libc::ENOSPC | libc::EDQUOT | libc::EFBIG) {
                tracing::warn!(segment = %active.path.display(), "journal cannot grow: no space left");
                Err(Failure::NotStored)
            } else {
                tracing::error!(segment = %active.path.display(), errno, "journal cannot grow");
                Err(Failure::Poison)
            }
        }
    }
}

/// Writes `zeros` at `from` and makes them durable (unless sync is disabled). Err: the errno
/// (ENOSPC for a short write).
async fn write_zeros(
    fill: &DmaFile,
    zeros: glommio::io::DmaBuffer,
    from: u64,
    sync: SyncMode,
) -> Result<(), i32> {
    let expected = zeros.len();
    match fill.write_at(zeros, from).await {
        Ok(n) if n == expected => {}
        Ok(_) => return Err(libc::ENOSPC),
        Err(error) => return Err(os_error(&error)),
    }
    if sync != SyncMode::Disabled {
        fill.fdatasync().await.map_err(|error| os_error(&error))?;
    }
    Ok(())
}

/// A piece of the active segment being readied in the background ([`Writer::start_readying`]).
struct Readying {
    /// Ready up to here once the task succeeded.
    to: u64,
    /// Writes the zeros and flushes them; Err: the errno.
    task: glommio::Task<Result<(), i32>>,
}

impl std::fmt::Debug for Readying {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readying").field("to", &self.to).finish()
    }
}

/// A failure injected into a batch write (tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteFault {
    /// The disk fills up mid-write: the first half of the batch (at least a block, so all of a
    /// batch of one block) reaches the file, then ENOSPC.
    NoSpace,
    /// The write reaches the file but its durability fails: EIO (an `O_DSYNC` write).
    Io,
}

/// Writes a batch after the records: the partial last block again (same bytes), then `bytes`,
/// padded with zeros to a block. `fault` injects a failure after writing what it says. Returns
/// the partial block at the end of the batch (the tail once it is durable); the caller moves
/// the end of the records only then.
async fn write_records(
    active: &Active,
    bytes: &[u8],
    fault: Option<WriteFault>,
) -> Result<Vec<u8>, Failure> {
    let align = active.file.alignment();
    let start = active.len - active.tail.len() as u64;
    let used = active.tail.len() + bytes.len();
    let size = usize::try_from(align_up(used as u64, align)).unwrap_or(usize::MAX);
    let mut buffer = active.file.alloc_dma_buffer(size);
    let out = buffer.as_bytes_mut();
    out[..active.tail.len()].copy_from_slice(&active.tail);
    out[active.tail.len()..used].copy_from_slice(bytes);
    out[used..].fill(0);
    let keep = used % usize::try_from(align).unwrap_or(1);
    let next_tail = out[used - keep..used].to_vec();
    let written = match fault {
        None => active
            .file
            .write_at(buffer, start)
            .await
            .map_err(|e| os_error(&e)),
        Some(fault) => write_faulty(active, &buffer, start, fault).await,
    };
    match written {
        Ok(n) if n == size => Ok(next_tail),
        // The space was ready, so a short write or ENOSPC is not expected; either way the
        // records before `start` were rewritten with their own bytes and are intact.
        Ok(_) | Err(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => {
            tracing::warn!(segment = %active.path.display(), "journal write failed: no space left");
            Err(Failure::NotStored)
        }
        Err(errno) => {
            tracing::error!(segment = %active.path.display(), errno, "journal write failed");
            Err(Failure::Poison)
        }
    }
}

/// Writes what `fault` lets reach the file of `buffer` at `start`, then fails as it says.
async fn write_faulty(
    active: &Active,
    buffer: &glommio::io::DmaBuffer,
    start: u64,
    fault: WriteFault,
) -> Result<usize, i32> {
    let align = usize::try_from(active.file.alignment()).unwrap_or(1);
    let (keep, errno) = match fault {
        WriteFault::NoSpace => ((buffer.len() / 2 / align * align).max(align), libc::ENOSPC),
        WriteFault::Io => (buffer.len(), libc::EIO),
    };
    let mut part = active.file.alloc_dma_buffer(keep);
    part.as_bytes_mut()
        .copy_from_slice(&buffer.as_bytes()[..keep]);
    active
        .file
        .write_at(part, start)
        .await
        .map_err(|e| os_error(&e))?;
    Err(errno)
}

/// `v` rounded up to a multiple of `align`.
fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// The OS error number of a glommio error (EIO when it carries none).
fn os_error(error: &GlommioError<()>) -> i32 {
    let code = match error {
        GlommioError::IoError(e) | GlommioError::EnhancedIoError { source: e, .. } => {
            e.raw_os_error()
        }
        _ => None,
    };
    code.unwrap_or(libc::EIO)
}
