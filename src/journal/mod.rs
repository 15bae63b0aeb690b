//! The shard-local journal: an append-only log of every message a shard is about to accept, with
//! group commit, recovery, duplicate detection and retention (issue 4).
//!
//! An AA tells the sender it may forget the message (HL7 v2 chapter 2, "original acknowledgment
//! mode"), so a shard may send it only once the message is on stable storage. Each shard owns one
//! [`Journal`] under `DATA_DIR/shard-N/` ([`shard_dir`]). Invariants:
//!
//! - **Durable before acknowledged.** [`Journal::wait_durable`] resolves `Ok` only after the
//!   write *and* the flush (fdatasync, or an `O_DSYNC` write) covering that record completed.
//! - **Group commit.** One committer task per shard takes every record waiting, writes them with
//!   one write and one flush, then releases their waiters. While a flush is in flight, new
//!   records gather in the next batch; a lone record is flushed at once (nothing waits for a
//!   batch to fill). A batch is bounded by [`JournalOptions::batch_bytes_max`] and
//!   [`JournalOptions::batch_records_max`] (a single record larger than the byte bound still
//!   forms a batch of its own).
//! - **Sequence numbers** are per shard, start at 1 and strictly increase in file order. They are
//!   not necessarily contiguous: a batch that failed for lack of space leaves a gap.
//! - **The shard never blocks**: writes and fdatasync go through glommio's io_uring. Records
//!   are written with direct IO ([`glommio::io::DmaFile`]) into space made ready ahead (zeros,
//!   durable), so a batch is an overwrite the kernel issues inline: no io-wq worker, no
//!   file-system journal commit per batch (see `writer.rs`, measured in perf/BENCH.md). Only
//!   [`Journal::open`] reads the existing segments with plain `std::fs`, once, before the
//!   shard serves.
//! - **One writer per directory.** [`Journal::open`] takes an exclusive `flock` on
//!   `shard-N/LOCK` and holds it until the committer stops ([`Journal::close`], or a poisoning
//!   flush); a second server on the same DATA_DIR fails with [`OpenError::Locked`]. The
//!   read-only tools never lock.
//! - **Storage faults.** A write that fails for lack of space (ENOSPC, or a short write) fails
//!   that batch with [`JournalError::NoSpace`] and the journal keeps serving. A failed flush
//!   poisons the journal: Linux may drop the dirty pages and report the next fdatasync as
//!   successful, so nothing written since the last good flush can be trusted; every later call
//!   fails with [`JournalError::Poisoned`]. Either way, before anything else is written the
//!   segment is cut back to the end of its last durable record and the cut made durable, so a
//!   failed batch (answered AE) cannot come back at recovery; if it cannot be cut, the journal
//!   is poisoned.
//! - **Durable names.** The shard directory (and DATA_DIR) is fsynced in its parent when
//!   created, the shard directory after a segment is created or deleted.
//!
//! # Using it from a connection
//!
//! ```text
//! let (journal, recovery) = Journal::open(options).await?;   // once per shard
//! loop {
//!     match journal.append(&record) {
//!         Ok(Append::Stored(seq)) | Ok(Append::Duplicate(seq)) => {
//!             journal.wait_durable(seq).await?  // Ok → AA; NoSpace → AE 207; Poisoned → AE
//!         }
//!         Err(JournalError::BatchFull) => { journal.wait_room().await; continue }
//!         Err(e) => …                                        // AE
//!     }
//! }
//! ```
//! A [`Append::Duplicate`] names the sequence number of the earlier copy; waiting on it makes
//! the second AA wait until the first copy is durable too (and fail with it).
//!
//! # On-disk layout (version 1, all integers little endian)
//!
//! Segment files are named by the sequence number they start at, zero-padded to 20 digits
//! (`00000000000000000001.seg`), so name order is journal order. A segment starts with a 32-byte
//! header, then records back to back:
//!
//! ```text
//! header: 0 magic "MLLPDJNL" | 8 version u32 (=1) | 12 first sequence u64
//!         | 20 created, µs since the Unix epoch u64 | 28 CRC32C of bytes 0..28 u32
//! record: 0 body length u32 (bytes after the CRC) | 4 CRC32C (Castagnoli) of the body u32
//!   body: 8 sequence u64 | 16 receive time µs u64 | 24 connection id u64
//!         | 32 peer family u8 (0 none, 4, 6) | 33 peer port u16 | 35 peer address [16]
//!         | 51 flags u8 (bit 0: dedup key present) | 52 MSH-3 length u16 | 54 MSH-4 length u16
//!         | 56 MSH-10 length u16 | 58 payload length u32 | 62 MSH-3, MSH-4, MSH-10 bytes
//!         | then the payload exactly as received (between the MLLP start and end blocks)
//! ```
//!
//! The writer readies space ahead of its records by writing zeros, so the file usually goes on
//! past the last record; eight zero bytes where a record prefix would start end the records
//! (a valid prefix is never zero: a body is at least 54 bytes). A closed segment is cut to its
//! records. A reader stops at the first record that is short, fails its CRC, or whose sequence
//! number does not increase: at recovery that is a torn tail and is truncated (with a warning); the
//! read-only tools ([`export`]) stop there without touching the file.

mod dedup;
pub mod export;
mod fault;
mod record;
mod recovery;
mod retention;
mod segment;
mod tail;
mod watermark;
mod writer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use fault::{FaultGate, FaultInjectionRefused, FaultPlan, ALLOW_FAULT_INJECTION_VAR};
pub use record::{ClientIdentity, ClientRef, RecordView, RECORD_OVERHEAD_BYTES};
pub use recovery::create_dir_durable;
pub use segment::{Next, SegmentReader, SEGMENT_HEADER_BYTES};
pub use tail::{has_segments, TailError, TailReader};
pub use watermark::Watermark;
pub use writer::Journal;

/// Default largest segment file (64 MiB): big enough that rotation (a file creation and a
/// directory sync) is rare, small enough that retention frees space in useful steps.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Default largest batch in bytes (4 MiB): one write of this size costs far less than the
/// fdatasync it shares, and it bounds the pending buffer of a shard.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// Default most records per batch: more than the connections a shard normally serves at once,
/// so at any realistic load every waiting message shares the next flush.
pub const BATCH_RECORDS_MAX_DEFAULT: usize = 4096;

/// Most messages a shard's dedup window remembers: bounds its memory when the window is long
/// and traffic high (an entry holds hashes, not key bytes: at most
/// `DEDUP_ENTRY_BYTES_MAX` (dedup.rs) bytes whatever the key's length, about 90 MiB a shard when
/// full); past it the oldest are forgotten early (the window shortens, a retried message is then
/// stored twice, never lost).
pub const DEDUP_KEYS_MAX: usize = 1 << 20;

const _: () = assert!(crate::limits::RECEIPT_GROUP_BYTES <= BATCH_BYTES_MAX_DEFAULT);

const _: () = assert!(DEDUP_KEYS_MAX * dedup::DEDUP_ENTRY_BYTES_MAX <= 256 << 20);

/// How often the committer checks retention while idle: age-based retention must run even when
/// no segment rotates.
pub const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Default RETENTION_AGE: a week of journal, long enough to re-export after an incident found
/// on Monday from the weekend before.
pub const RETENTION_AGE_DEFAULT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The directory of shard `shard`'s journal under `data_dir`: `DATA_DIR/shard-N`.
pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

/// How a flush makes a batch durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// One direct write, then one fdatasync (through io_uring) per batch (JOURNAL_SYNC=fdatasync).
    #[default]
    Data,
    /// The segment is opened with `O_DSYNC`: the write itself returns once durable
    /// (JOURNAL_SYNC=dsync).
    Dsync,
    /// No flush at all: NOT durable. For benchmarks and the crash test's control run only.
    Disabled,
}

/// What a journal is opened with.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// The shard's directory (`DATA_DIR/shard-N`); created if missing.
    pub dir: PathBuf,
    /// A segment is closed and a new one started before a batch would take it past this size.
    pub segment_bytes_max: u64,
    /// Most bytes of records in one batch.
    pub batch_bytes_max: usize,
    /// Most records in one batch.
    pub batch_records_max: usize,
    /// DEDUP_WINDOW: a message whose key and payload were journaled within this time is a
    /// duplicate; `None` turns dedup off.
    pub dedup_window: Option<Duration>,
    /// Most messages the dedup window remembers ([`DEDUP_KEYS_MAX`]).
    pub dedup_keys_max: usize,
    /// RETENTION_AGE: a closed segment last written longer ago than this may be deleted.
    pub retention_age: Option<Duration>,
    /// RETENTION_BYTES: the oldest closed segments are deleted while the journal is larger.
    pub retention_bytes: Option<u64>,
    /// How batches are made durable.
    pub sync: SyncMode,
    /// How often retention is checked while no segment rotates.
    pub retention_interval: Duration,
    /// Receipt mode ([`SyncMode::Disabled`]): nobody waits for a batch, so the committer lets
    /// records gather for up to this long (or until [`JournalOptions::group_bytes`] are
    /// pending, or someone waits) before it writes them: one direct write per window at light
    /// load instead of one per message. `None`: every batch is written as soon as it can be.
    pub group_delay: Option<Duration>,
    /// With `group_delay`: pending bytes that start the write at once.
    pub group_bytes: usize,
    /// Test hook: injected storage faults (ENOSPC, fdatasync failure, slow flushes).
    #[doc(hidden)]
    pub faults: Option<Rc<FaultPlan>>,
    /// Where the committer publishes the durable watermark, and where delivery holds segments
    /// from retention; shared with the readers of this journal (issue 11).
    pub watermark: Arc<Watermark>,
}

impl JournalOptions {
    /// Options for `dir` with the default bounds, no dedup and no retention.
    pub fn new(dir: impl Into<PathBuf>) -> JournalOptions {
        JournalOptions {
            dir: dir.into(),
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            batch_records_max: BATCH_RECORDS_MAX_DEFAULT,
            dedup_window: None,
            dedup_keys_max: DEDUP_KEYS_MAX,
            retention_age: None,
            retention_bytes: None,
            sync: SyncMode::Data,
            retention_interval: RETENTION_CHECK_INTERVAL,
            group_delay: None,
            group_bytes: crate::limits::RECEIPT_GROUP_BYTES,
            faults: None,
            watermark: Arc::new(Watermark::new()),
        }
    }
}

/// The dedup key of a message: (MSH-3, MSH-4, MSH-10), each field's bytes as received. A sender
/// retrying after a lost ACK resends the same control id (HL7 v2 chapter 2, MSH-10: unique per
/// sending system). The key alone does not make a duplicate: the payload must match too, since
/// a sender whose counter was reset reuses control ids for new messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DedupKey<'a> {
    /// MSH-3, sending application.
    pub sending_application: &'a [u8],
    /// MSH-4, sending facility.
    pub sending_facility: &'a [u8],
    /// MSH-10, message control id.
    pub control_id: &'a [u8],
}

impl<'a> DedupKey<'a> {
    /// The key of a parsed message.
    pub fn of(message: &crate::hl7::Message<'a>) -> DedupKey<'a> {
        DedupKey {
            sending_application: message.sending_application(),
            sending_facility: message.sending_facility(),
            control_id: message.control_id(),
        }
    }
}

/// One record to append; the journal copies it.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// When the frame was received, µs since the Unix epoch; also the dedup window's clock.
    pub receive_time_unix_micros: u64,
    /// The shard-local id of the connection it came on.
    pub connection_id: u64,
    /// The sender's address, if known.
    pub peer: Option<SocketAddr>,
    /// The message exactly as received (the frame's payload).
    pub payload: &'a [u8],
    /// The dedup key; `None` never deduplicates. A key with a field longer than 65 535 bytes is
    /// not stored and never deduplicates.
    pub dedup_key: Option<DedupKey<'a>>,
    /// The verified TLS client identity of its connection (stored as format version 2), if
    /// any.
    pub client: Option<ClientRef<'a>>,
}

/// What [`Journal::append`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Append {
    /// Stored with this sequence number; wait on it before acknowledging.
    Stored(u64),
    /// Its key and payload were journaled within the window as this sequence number; not stored
    /// again. Wait
    /// on that number before acknowledging again.
    Duplicate(u64),
}

impl Append {
    /// The sequence number to wait on.
    pub fn seq(self) -> u64 {
        match self {
            Append::Stored(seq) | Append::Duplicate(seq) => seq,
        }
    }
}

/// Why a journal call failed. Hot-path variants are plain and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// The pending batch is full; await [`Journal::wait_room`] and append again.
    #[error("journal batch full")]
    BatchFull,
    /// The write of this record's batch failed for lack of space (answer AE 207); later
    /// batches are tried again.
    #[error("journal write failed: no space left on device")]
    NoSpace,
    /// A flush failed: the journal can no longer be trusted; restart to run recovery.
    #[error("journal poisoned by a failed flush")]
    Poisoned,
    /// The journal was closed.
    #[error("journal closed")]
    Closed,
    /// The record is larger than a record may be (its payload over `FRAME_BYTES_MAX_MAX`).
    #[error("record too large for the journal")]
    RecordTooLarge,
}

/// An error opening or reading a journal, with what and where.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An IO error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A closed segment holds a record that cannot be read: not a torn tail but damage.
    #[error("{}: damaged at byte {offset}: {reason} (move the file away to start without it)", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Offset of the first bad byte.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Another journal (another mllpd process, or shard) holds this directory.
    #[error("{}: held by another mllpd (two servers on one DATA_DIR?)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
}

/// What recovery found at [`Journal::open`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files kept.
    pub segments: usize,
    /// Records read in the segments scanned (the last one, and those within the dedup window).
    pub records_scanned: u64,
    /// The last sequence number on disk, if any.
    pub last_seq: Option<u64>,
    /// The next sequence number the journal will assign.
    pub next_seq: u64,
    /// Bytes cut from a torn tail (0 when the journal ended cleanly).
    pub truncated_bytes: u64,
    /// Empty segment files with a torn header that were removed.
    pub removed_segments: usize,
    /// Dedup keys rebuilt into the window.
    pub dedup_keys: usize,
}

/// How far recovery got, reported while it runs ([`Journal::open_reporting`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryProgress {
    /// Segment files found.
    pub segments: usize,
    /// Of those, done with.
    pub segments_done: usize,
    /// Records read so far.
    pub records_scanned: u64,
    /// Time since recovery started.
    pub elapsed: Duration,
}

/// Counters of a journal since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Batches made durable.
    pub flushes: u64,
    /// Records in those batches.
    pub records_flushed: u64,
    /// Bytes written in those batches.
    pub bytes_flushed: u64,
    /// Batches that failed for lack of space.
    pub batches_failed: u64,
    /// Batches that waited for space to be readied in front of them (zeros written and
    /// flushed), because they outran the readying ahead.
    pub space_waits: u64,
    /// Pieces of space readied ahead in the background and taken into the active segment.
    pub pieces_readied: u64,
    /// Failed batches (no space, or a failed flush) cut back from their segment, durably.
    pub batches_cut: u64,
    /// fsyncs of the shard directory (after a segment file was created or deleted).
    pub dir_syncs: u64,
    /// Appends answered with [`Append::Duplicate`].
    pub duplicates: u64,
    /// Appends whose dedup key was in the window with another payload (a reused control id):
    /// stored as new.
    pub reused_keys: u64,
    /// Keys in the dedup window.
    pub dedup_keys: usize,
    /// Heap bytes the dedup window holds (bounded by `dedup_keys_max`, whatever the keys).
    pub dedup_bytes: usize,
    /// Appends refused with [`JournalError::BatchFull`].
    pub batch_full: u64,
    /// The last sequence number assigned (0: none yet).
    pub last_seq: u64,
    /// Every sequence number up to this one is settled (durable or failed).
    pub settled_seq: u64,
    /// Records waiting for the next flush.
    pub pending_records: usize,
    /// Whether a flush is in flight.
    pub flush_in_progress: bool,
    /// Whether a failed flush poisoned the journal.
    pub poisoned: bool,
    /// Segment files, the active one included.
    pub segments: usize,
    /// Bytes in those files.
    pub segment_bytes: u64,
    /// Closed segments deleted by retention.
    pub segments_deleted: u64,
    /// Closed segments retention would delete but a connector still needs (its cursor is in
    /// them or before them), at the last retention pass.
    pub segments_held: usize,
    /// Total time spent in write + flush, µs (divide by `flushes` for the mean).
    pub flush_micros_total: u64,
    /// Of that, time spent waiting for durability (fdatasync, or the `O_DSYNC` write), µs.
    pub sync_micros_total: u64,
    /// Durable batches per write + flush time bucket (`metrics::FLUSH_MICROS_BOUNDS`, then
    /// +Inf; not cumulative).
    pub flush_micros_buckets: [u64; crate::metrics::FLUSH_MICROS_BOUNDS.len() + 1],
    /// Durable batches per record count bucket (`metrics::BATCH_RECORDS_BOUNDS`, then +Inf).
    pub batch_records_buckets: [u64; crate::metrics::BATCH_RECORDS_BOUNDS.len() + 1],
}
