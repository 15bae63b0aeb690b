//! The tailing reader: one shard's journal records in sequence order, from a cursor on, for a
//! reader off the shard (delivery). Plain `std` file IO on the caller's thread, never glommio.
//!
//! It follows the active segment as it grows and moves to the next segment after a rotation,
//! and it only ever returns a record at or below the shard's durable [`Watermark`] as loaded
//! *before* the bytes were read: such a record was written and flushed (or, in receipt mode,
//! written) and can no longer be cut. Bytes past the watermark (a batch in flight, a failed
//! batch about to be cut, the zeros readied ahead) are never returned and never skipped: the
//! reader stays where it is and reads them again once the watermark passes them.
//!
//! Invariants: `position` (the last sequence returned or skipped) only grows, and the reader
//! never moves its file offset past a record it has not returned or found at or below its
//! starting cursor. Seeing the end of the records of a segment while no later segment exists
//! means every durable record was read (the writer writes in order, and a segment is cut to its
//! records before its successor is created), so the reader then waits for the watermark to move
//! past what it saw; numbers at or below it with no record are gaps (batches that failed for
//! lack of space), never waited for.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record::{self, RecordView, BODY_BYTES_MAX, BODY_FIXED_BYTES, PREFIX_BYTES};
use super::segment::{self, SEGMENT_HEADER_BYTES};
use super::{OpenError, Watermark};
use crate::limits::TAIL_READ_BYTES;

/// Why the reader cannot go on (it stays where it was; calling again retries).
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// Listing the directory or reading a segment failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record at or below the watermark is damaged, or a closed segment ends in a torn record:
    /// not a tail being written but damage. The reader will not skip it.
    #[error("{}: damaged at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl From<OpenError> for TailError {
    fn from(error: OpenError) -> TailError {
        match error {
            OpenError::Io { path, source } => TailError::Io { path, source },
            OpenError::Corrupt {
                path,
                offset,
                reason,
            } => TailError::Corrupt {
                path,
                offset,
                reason,
            },
            OpenError::Locked { path } => TailError::Io {
                path,
                source: std::io::Error::other("locked"),
            },
        }
    }
}

/// The segment being read.
#[derive(Debug)]
struct Open {
    /// The file.
    file: File,
    /// Its path.
    path: PathBuf,
    /// The sequence number in its name.
    first_seq: u64,
    /// Where the next record starts.
    offset: u64,
}

/// What the bytes at the reader's offset hold.
enum Found {
    /// A complete, checked record of `len` bytes (prefix included), body in `buf[start..]`.
    Record {
        /// Its sequence number.
        seq: u64,
        /// Bytes it takes in the file.
        len: u64,
        /// Where its body starts in the buffer.
        start: usize,
    },
    /// No complete record here (end of the records, or one still being written).
    End {
        /// Why, when bytes are there but do not form a record.
        torn: Option<&'static str>,
    },
}

/// Reads one shard's journal from a cursor on. See the module documentation.
#[derive(Debug)]
pub struct TailReader {
    /// The shard directory.
    dir: PathBuf,
    /// The shard's durable watermark.
    watermark: Arc<Watermark>,
    /// The last sequence number returned, or the starting cursor.
    position: u64,
    /// The segment being read, once one exists.
    current: Option<Open>,
    /// Bytes read from the current segment at `buf_offset`.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    /// The watermark loaded before `buf` was read: only records at or below it are trusted.
    buf_durable: u64,
}

impl TailReader {
    /// A reader of the journal in `dir` returning the records after `cursor` (0: from the
    /// first). Opens nothing yet.
    pub fn new(dir: impl Into<PathBuf>, watermark: Arc<Watermark>, cursor: u64) -> TailReader {
        TailReader {
            dir: dir.into(),
            watermark,
            position: cursor,
            current: None,
            buf: Vec::new(),
            buf_offset: 0,
            buf_durable: 0,
        }
    }

    /// The last sequence number returned (or the starting cursor).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next durable record after the position, waiting up to `timeout` for one; `Ok(None)`
    /// when none came in time (or the journal closed with nothing more). Blocks the calling
    /// thread: never call it on a shard.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<RecordView<'_>>, TailError> {
        let deadline = Instant::now() + timeout;
        loop {
            let durable = self.watermark.durable();
            if durable > self.position {
                if let Some((start, seq)) = self.step(durable)? {
                    self.position = seq;
                    let view = self.view(start)?;
                    return Ok(Some(view));
                }
            }
            // Everything at or below `durable` was read (the rest are gaps): wait past it.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.watermark.is_closed() && self.watermark.durable() == durable {
                return Ok(None);
            }
            self.watermark.wait_beyond(durable, left);
        }
    }

    /// Decodes the record whose body starts at `buf[start..]` (already checked).
    fn view(&self, start: usize) -> Result<RecordView<'_>, TailError> {
        let (body_len, _) = record::read_prefix(prefix_at(&self.buf, start - PREFIX_BYTES));
        record::decode_body(&self.buf[start..start + body_len])
            .map_err(|reason| self.corrupt(reason))
    }

    /// Advances to the next record at or below `durable` after the position. `Ok(Some((body
    /// start in buf, seq)))` for one; `Ok(None)` once every record at or below `durable` was read.
    fn step(&mut self, mut durable: u64) -> Result<Option<(usize, u64)>, TailError> {
        loop {
            if self.current.is_none() && !self.open_first()? {
                return Ok(None);
            }
            let mut found = self.find(durable, false)?;
            if let Found::End { .. } = found {
                let Some((first, path)) = self.successor()? else {
                    return Ok(None);
                };
                // A successor exists, so this segment is final and every batch in it settled
                // before the successor was created: read its end again with a watermark loaded
                // now, which covers all of them.
                durable = self.watermark.durable();
                found = self.find(durable, true)?;
                match found {
                    Found::End { torn: Some(reason) } => return Err(self.corrupt(reason)),
                    Found::End { torn: None } => {
                        if !self.open_segment(first, path)? {
                            return Ok(None);
                        }
                        continue;
                    }
                    Found::Record { .. } => {}
                }
            }
            if let Found::Record { seq, len, start } = found {
                if let Some(open) = self.current.as_mut() {
                    open.offset += len;
                }
                if seq > self.position {
                    return Ok(Some((start, seq)));
                }
                // At or before the starting cursor: already delivered.
            }
        }
    }

    /// What the bytes at the current offset hold, trusting only records at or below `durable`.
    /// Only a record is taken from the buffer; anything else is read again from the file
    /// (always, with `fresh`).
    fn find(&mut self, durable: u64, fresh: bool) -> Result<Found, TailError> {
        let offset = self.current.as_ref().map_or(0, |o| o.offset);
        if !fresh && offset >= self.buf_offset {
            let start = usize::try_from(offset - self.buf_offset).unwrap_or(usize::MAX);
            if let Some(found @ Found::Record { .. }) = self.parse(start, durable) {
                return Ok(found);
            }
        }
        self.fill(offset, TAIL_READ_BYTES, durable)?;
        if let Some(prefix) = self.buf.first_chunk::<PREFIX_BYTES>() {
            let (body_len, _) = record::read_prefix(prefix);
            let need = PREFIX_BYTES + body_len.min(BODY_BYTES_MAX);
            if need > self.buf.len() && self.buf.len() == TAIL_READ_BYTES {
                self.fill(offset, need, durable)?;
            }
        }
        Ok(self.parse(0, durable).unwrap_or(Found::End {
            torn: (!self.buf.is_empty()).then_some("short record"),
        }))
    }

    /// Parses the record at `buf[start..]`: `None` when the buffer does not hold all of it.
    fn parse(&self, start: usize, durable: u64) -> Option<Found> {
        let bytes = self.buf.get(start..)?;
        let prefix = bytes.first_chunk::<PREFIX_BYTES>()?;
        if prefix.iter().all(|&b| b == 0) {
            // The zeros readied ahead: the records end here (for now).
            return Some(Found::End { torn: None });
        }
        let torn = |reason| Some(Found::End { torn: Some(reason) });
        let (body_len, crc) = record::read_prefix(prefix);
        if !(BODY_FIXED_BYTES..=BODY_BYTES_MAX).contains(&body_len) {
            return torn("bad record length");
        }
        let body = bytes.get(PREFIX_BYTES..PREFIX_BYTES + body_len)?;
        if crc32c::crc32c(body) != crc {
            return torn("record CRC mismatch");
        }
        let seq = match record::decode_body(body) {
            Ok(view) => view.seq,
            Err(reason) => return torn(reason),
        };
        if seq > durable.min(self.buf_durable) {
            // Written but not yet durable (or a failed batch about to be cut): not yet.
            return Some(Found::End { torn: None });
        }
        Some(Found::Record {
            seq,
            len: (PREFIX_BYTES + body_len) as u64,
            start: start + PREFIX_BYTES,
        })
    }

    /// Reads up to `len` bytes of the current segment at `offset` into the buffer. `durable`
    /// was loaded before this read, so records at or below it in these bytes are final.
    fn fill(&mut self, offset: u64, len: usize, durable: u64) -> Result<(), TailError> {
        self.buf.clear();
        let Some(open) = self.current.as_ref() else {
            return Ok(());
        };
        self.buf.resize(len, 0);
        let mut got = 0;
        while got < len {
            match open.file.read_at(&mut self.buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    let path = open.path.clone();
                    self.buf.clear();
                    return Err(TailError::Io { path, source });
                }
            }
        }
        self.buf.truncate(got);
        self.buf_offset = offset;
        self.buf_durable = durable;
        Ok(())
    }

    /// Opens the segment holding the record after the position (or the first one there is).
    /// `Ok(false)`: no segment yet.
    fn open_first(&mut self) -> Result<bool, TailError> {
        let segments = segment::list(&self.dir)?;
        let want = self.position.saturating_add(1);
        let pick = segments
            .iter()
            .rev()
            .find(|(first, _)| *first <= want)
            .or_else(|| segments.first());
        match pick {
            Some((first, path)) => self.open_segment(*first, path.clone()),
            None => Ok(false),
        }
    }

    /// The segment after the current one, if any.
    fn successor(&self) -> Result<Option<(u64, PathBuf)>, TailError> {
        let current = self.current.as_ref().map_or(0, |o| o.first_seq);
        let segments = segment::list(&self.dir)?;
        Ok(segments.into_iter().find(|(first, _)| *first > current))
    }

    /// Makes `path` the current segment, after its header; `Ok(false)` (nothing changes) when
    /// its header is not written yet.
    fn open_segment(&mut self, first_seq: u64, path: PathBuf) -> Result<bool, TailError> {
        let io = |source| TailError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        match file.read_exact_at(&mut header, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(io(e)),
        }
        if header.iter().all(|&b| b == 0) {
            return Ok(false); // Created, header not written yet.
        }
        segment::parse_header(&header).map_err(|reason| TailError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        self.current = Some(Open {
            file,
            path,
            first_seq,
            offset: SEGMENT_HEADER_BYTES as u64,
        });
        self.buf.clear();
        self.buf_offset = 0;
        Ok(true)
    }

    /// A [`TailError::Corrupt`] at the current offset.
    fn corrupt(&self, reason: &'static str) -> TailError {
        let (path, offset) = self
            .current
            .as_ref()
            .map_or((self.dir.clone(), 0), |o| (o.path.clone(), o.offset));
        TailError::Corrupt {
            path,
            offset,
            reason,
        }
    }
}

/// The record prefix at `buf[at..]` (the caller checked it is there).
fn prefix_at(buf: &[u8], at: usize) -> &[u8; PREFIX_BYTES] {
    buf[at..]
        .first_chunk::<PREFIX_BYTES>()
        .unwrap_or(&[0; PREFIX_BYTES])
}

/// Whether `dir` holds a journal (a shard directory with at least one segment).
pub fn has_segments(dir: &Path) -> bool {
    segment::list(dir).is_ok_and(|s| !s.is_empty())
}
