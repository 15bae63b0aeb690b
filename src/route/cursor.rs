//! A connector's durable cursor on one shard's journal: the last sequence number the
//! destination confirmed (delivered, dead-lettered, or filtered out).
//!
//! Invariants: the cursor only grows; the file is written only with a value that was confirmed,
//! so a crash re-delivers at most what was confirmed since the last write and never skips a
//! record. Writes are batched ([`CURSOR_WRITE_INTERVAL`], [`CURSOR_WRITE_RECORDS`]): every
//! write costs two fsyncs. A failed write (disk full) keeps the older value on disk and is
//! retried at the next confirmation; delivery goes on (re-delivering a little more after a crash
//! is the price, never a loss).
//!
//! File `DATA_DIR/connectors/NAME/shard-N.cursor`, 20 bytes: magic `MLLPDCUR`, the sequence
//! number (u64 LE), CRC32C of the 16 bytes before it (u32 LE).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::durable;
use crate::limits::{CURSOR_WRITE_INTERVAL, CURSOR_WRITE_RECORDS};

/// First bytes of a cursor file.
const MAGIC: &[u8; 8] = b"MLLPDCUR";

/// Bytes of a cursor file.
const FILE_BYTES: usize = 20;

/// Test hook `MLLPD_FAULT_CURSOR_NOSPACE=N`: the next N cursor writes (of any connector) fail
/// with ENOSPC, as on a full disk. Armed only where the journal's `MLLPD_FAULT_*` hooks are
/// (debug builds, or MLLPD_ALLOW_FAULT_INJECTION=1).
static NOSPACE_WRITES: AtomicU32 = AtomicU32::new(0);

/// Arms the cursor faults the environment asks for (see [`NOSPACE_WRITES`]).
pub fn arm_faults_from_env() {
    if !matches!(
        crate::journal::FaultPlan::gate_env(),
        crate::journal::FaultGate::Armed
    ) {
        return;
    }
    let Some(count) = std::env::var("MLLPD_FAULT_CURSOR_NOSPACE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    NOSPACE_WRITES.store(count, Ordering::SeqCst);
    tracing::warn!(
        writes = count,
        "cursor write faults armed (MLLPD_FAULT_CURSOR_NOSPACE): test use only"
    );
}

/// Consumes one armed cursor fault, if any.
fn take_fault() -> bool {
    NOSPACE_WRITES
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The cursor file name of `shard`.
pub fn file_name(shard: usize) -> String {
    format!("shard-{shard}.cursor")
}

/// Reads the cursor of `shard` in `dir`: 0 when there is none yet.
pub fn load(dir: &Path, shard: usize) -> Result<u64, String> {
    let path = dir.join(file_name(shard));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    decode(&bytes).ok_or_else(|| {
        format!(
            "{}: damaged cursor file (remove it to deliver this shard's journal again from its start)",
            path.display()
        )
    })
}

/// The bytes of a cursor file holding `seq`.
fn encode(seq: u64) -> [u8; FILE_BYTES] {
    let mut out = [0u8; FILE_BYTES];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The sequence number in a cursor file, if it is one.
fn decode(bytes: &[u8]) -> Option<u64> {
    let bytes: &[u8; FILE_BYTES] = bytes.try_into().ok()?;
    let crc = u32::from_le_bytes(bytes[16..].try_into().ok()?);
    if &bytes[..8] != MAGIC || crc32c::crc32c(&bytes[..16]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(bytes[8..16].try_into().ok()?))
}

/// One connector's cursor on one shard.
#[derive(Debug)]
pub struct Cursor {
    /// The connector's directory.
    dir: PathBuf,
    /// The shard.
    shard: usize,
    /// The last confirmed sequence number (in memory).
    confirmed: u64,
    /// The value on disk, shared with the engine (the retention floor is computed from it).
    written: Arc<AtomicU64>,
    /// When the file was last written (or the cursor loaded).
    written_at: Instant,
    /// Failed writes so far (disk full…).
    pub write_failures: u64,
}

impl Cursor {
    /// A cursor at `seq` (as loaded) of `shard` in `dir`; `written` is published to the engine.
    pub fn new(dir: PathBuf, shard: usize, written: Arc<AtomicU64>) -> Cursor {
        let confirmed = written.load(Ordering::SeqCst);
        Cursor {
            dir,
            shard,
            confirmed,
            written,
            written_at: Instant::now(),
            write_failures: 0,
        }
    }

    /// The last confirmed sequence number.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// The value on disk.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// The destination confirmed `seq`; writes the file if the batch bounds say so. Returns
    /// whether the file was written.
    pub fn confirm(&mut self, seq: u64) -> bool {
        debug_assert!(seq > self.confirmed);
        self.confirmed = self.confirmed.max(seq);
        let due = self.written_at.elapsed() >= CURSOR_WRITE_INTERVAL
            || self.confirmed - self.written() >= CURSOR_WRITE_RECORDS;
        due && self.flush()
    }

    /// Writes the file if it is behind (idle ticks, shutdown). Returns whether it is now current.
    pub fn flush(&mut self) -> bool {
        if self.confirmed == self.written() {
            self.written_at = Instant::now();
            return true;
        }
        let name = file_name(self.shard);
        let written = if take_fault() {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            durable::write_atomic(&self.dir, &name, &encode(self.confirmed))
        };
        match written {
            Ok(()) => {
                self.written.store(self.confirmed, Ordering::SeqCst);
                self.written_at = Instant::now();
                true
            }
            Err(error) => {
                self.write_failures += 1;
                // Once per failure streak start and then every 100th, not once per message.
                if self.write_failures % 100 == 1 {
                    tracing::error!(dir = %self.dir.display(), shard = self.shard, %error,
                        failures = self.write_failures,
                        "cannot write a connector cursor; delivery goes on, a crash now would \
                         re-deliver from the last cursor written");
                }
                self.written_at = Instant::now();
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        assert_eq!(decode(&encode(42)), Some(42));
        let mut bad = encode(42);
        bad[9] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&encode(42)[..19]), None);
    }

    #[test]
    fn a_missing_file_is_zero_and_a_written_one_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), 3), Ok(0));
        let mut cursor = Cursor::new(dir.path().to_owned(), 3, Arc::new(AtomicU64::new(0)));
        cursor.confirm(1);
        for seq in 2..=CURSOR_WRITE_RECORDS + 1 {
            cursor.confirm(seq);
        }
        // The record bound forced a write without waiting for the interval.
        assert!(load(dir.path(), 3).unwrap() >= CURSOR_WRITE_RECORDS);
        cursor.confirm(CURSOR_WRITE_RECORDS + 2);
        assert!(cursor.flush());
        assert_eq!(load(dir.path(), 3), Ok(CURSOR_WRITE_RECORDS + 2));
        assert_eq!(cursor.written(), CURSOR_WRITE_RECORDS + 2);
        std::fs::write(dir.path().join(file_name(3)), b"junk").unwrap();
        assert!(load(dir.path(), 3).unwrap_err().contains("damaged cursor"));
    }

    #[test]
    fn a_failed_write_keeps_the_older_value() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let written = Arc::new(AtomicU64::new(5));
        let mut cursor = Cursor::new(gone, 0, written.clone());
        cursor.confirm(6);
        assert!(!cursor.flush());
        assert_eq!(written.load(Ordering::SeqCst), 5);
        assert_eq!(cursor.confirmed(), 6);
        assert!(cursor.write_failures >= 1);
    }
}
