//! Segment files: names, the header, listing a shard directory, and a streaming reader.
//!
//! The reader is plain `std::io` and never writes: recovery, `journal stats` and `journal
//! export` share it. It stops at the first record that is short, fails its CRC or does not
//! increase the sequence, and says where; what to do about it is the caller's decision
//! (recovery truncates, the read-only tools stop). It never allocates more than the file holds,
//! so a damaged length cannot make it reserve a gigabyte.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::record::{self, RecordView, BODY_BYTES_MAX, BODY_FIXED_BYTES, PREFIX_BYTES};
use super::OpenError;

/// Bytes of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;

/// First bytes of every segment.
const MAGIC: &[u8; 8] = b"MLLPDJNL";

/// Format version written and understood.
const VERSION: u32 = 1;

/// File name suffix of segments.
const SUFFIX: &str = ".seg";

/// Digits of the zero-padded first sequence number in a segment's name (`u64::MAX` has 20).
const NAME_DIGITS: usize = 20;

/// The file name of the segment starting at `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:0NAME_DIGITS$}{SUFFIX}")
}

/// The first sequence number a segment file name stands for, if it is one.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The header of a segment starting at `first_seq`, created at `created_unix_micros`.
pub fn header(first_seq: u64, created_unix_micros: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut out = [0u8; SEGMENT_HEADER_BYTES];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&first_seq.to_le_bytes());
    out[20..28].copy_from_slice(&created_unix_micros.to_le_bytes());
    let crc = crc32c::crc32c(&out[..28]);
    out[28..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The first sequence number a header declares, or what is wrong with it.
pub fn parse_header(bytes: &[u8; SEGMENT_HEADER_BYTES]) -> Result<u64, &'static str> {
    if &bytes[..8] != MAGIC {
        return Err("not an mllpd journal segment (bad magic)");
    }
    let crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    if crc32c::crc32c(&bytes[..28]) != crc {
        return Err("segment header CRC mismatch");
    }
    if u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) != VERSION {
        return Err("unsupported segment version");
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[12..20]);
    Ok(u64::from_le_bytes(seq))
}

/// The segments in `dir` as (first sequence, path), in journal order. Other files are ignored.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OpenError> {
    let io_error = |source| OpenError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_file_name) {
            segments.push((first_seq, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// What the reader found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// A complete, checked record.
    Record(RecordView<'a>),
    /// The end of the segment, at a record boundary.
    End,
    /// A record starting at `offset` is short or damaged; nothing after it is read.
    Torn {
        /// Where the bad record starts (the length to truncate to).
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Reads the records of one segment in order.
#[derive(Debug)]
pub struct SegmentReader<R> {
    /// The segment's bytes, positioned at `offset`.
    input: R,
    /// Bytes consumed: the end of the last good record.
    offset: u64,
    /// Length of the segment when opened (bytes appended later are not read); once the zeros
    /// after the last record are reached, where the records end.
    len: u64,
    /// The sequence number in the header.
    first_seq: u64,
    /// The last record's sequence number.
    last_seq: Option<u64>,
    /// Reused body buffer.
    body: Vec<u8>,
}

impl SegmentReader<BufReader<File>> {
    /// Opens `path` and checks its header. A file shorter than a header is `Ok(None)` (a
    /// segment created by a crash before its header was written).
    pub fn open(path: &Path) -> Result<Option<Self>, OpenError> {
        let io_error = |source| OpenError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let len = file.metadata().map_err(io_error)?.len();
        SegmentReader::new(BufReader::with_capacity(64 * 1024, file), len).map_err(|e| match e {
            HeaderError::Io(source) => io_error(source),
            HeaderError::Bad(reason) => OpenError::Corrupt {
                path: path.to_owned(),
                offset: 0,
                reason,
            },
        })
    }
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// Reading failed.
    Io(io::Error),
    /// The header is damaged.
    Bad(&'static str),
}

impl<R: Read> SegmentReader<R> {
    /// Reads the header of a segment of `len` bytes; `Ok(None)` when `len` is shorter than one.
    pub fn new(mut input: R, len: u64) -> Result<Option<Self>, HeaderError> {
        if len < SEGMENT_HEADER_BYTES as u64 {
            return Ok(None);
        }
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        input.read_exact(&mut bytes).map_err(HeaderError::Io)?;
        let first_seq = parse_header(&bytes).map_err(HeaderError::Bad)?;
        Ok(Some(SegmentReader {
            input,
            offset: SEGMENT_HEADER_BYTES as u64,
            len,
            first_seq,
            last_seq: None,
            body: Vec::new(),
        }))
    }

    /// The sequence number in the header.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The last good record's sequence number.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The end of the last good record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The segment length when opened, or where its records end once [`Next::End`] was read.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment holds nothing after its header.
    pub fn is_empty(&self) -> bool {
        self.len == SEGMENT_HEADER_BYTES as u64
    }

    /// The next record, the end, or where the segment is torn.
    pub fn next_record(&mut self) -> io::Result<Next<'_>> {
        let remaining = self.len - self.offset;
        if remaining == 0 {
            return Ok(Next::End);
        }
        let torn = |reason| {
            Ok(Next::Torn {
                offset: self.offset,
                reason,
            })
        };
        let mut prefix = [0u8; PREFIX_BYTES];
        let have = remaining.min(PREFIX_BYTES as u64) as usize;
        self.input.read_exact(&mut prefix[..have])?;
        if prefix[..have].iter().all(|&b| b == 0) {
            // Zeros where a record would start: the space the writer readied ahead of its
            // records. The segment's records end here.
            self.len = self.offset;
            return Ok(Next::End);
        }
        if have < PREFIX_BYTES {
            return torn("short record prefix");
        }
        let (body_len, crc) = record::read_prefix(&prefix);
        if !(BODY_FIXED_BYTES..=BODY_BYTES_MAX).contains(&body_len) {
            return torn("bad record length");
        }
        if (remaining - PREFIX_BYTES as u64) < body_len as u64 {
            return torn("short record body");
        }
        self.body.resize(body_len, 0);
        self.input.read_exact(&mut self.body)?;
        if crc32c::crc32c(&self.body) != crc {
            return torn("record CRC mismatch");
        }
        let view = match record::decode_body(&self.body) {
            Ok(view) => view,
            Err(reason) => return torn(reason),
        };
        if view.seq < self.first_seq || self.last_seq.is_some_and(|last| view.seq <= last) {
            return torn("record sequence does not increase");
        }
        self.offset += (PREFIX_BYTES + body_len) as u64;
        self.last_seq = Some(view.seq);
        Ok(Next::Record(view))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::journal::RecordRef;

    #[test]
    fn names_sort_in_sequence_order() {
        assert_eq!(file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1.seg"), None);
        assert_eq!(parse_file_name("0000000000000000000x.seg"), None);
        assert_eq!(parse_file_name("00000000000000000001.tmp"), None);
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = header(77, 123);
        assert_eq!(parse_header(&h), Ok(77));
        let mut bad = h;
        bad[15] ^= 1;
        assert_eq!(parse_header(&bad), Err("segment header CRC mismatch"));
        bad = h;
        bad[0] = b'X';
        assert!(parse_header(&bad).is_err());
    }

    fn segment(seqs: &[u64]) -> Vec<u8> {
        let mut out = header(seqs.first().copied().unwrap_or(1), 0).to_vec();
        for &seq in seqs {
            let r = RecordRef {
                receive_time_unix_micros: seq,
                connection_id: 1,
                peer: None,
                payload: b"MSH|^~\\&|\r",
                dedup_key: None,
                client: None,
            };
            record::encode(&r, seq, &mut out);
        }
        out
    }

    fn read_all(bytes: &[u8]) -> (Vec<u64>, Next<'static>) {
        let mut reader = SegmentReader::new(bytes, bytes.len() as u64)
            .unwrap()
            .unwrap();
        let mut seqs = Vec::new();
        loop {
            match reader.next_record().unwrap() {
                Next::Record(r) => seqs.push(r.seq),
                Next::End => return (seqs, Next::End),
                Next::Torn { offset, reason } => return (seqs, Next::Torn { offset, reason }),
            }
        }
    }

    #[test]
    fn reads_every_record_then_stops_at_a_torn_one() {
        let bytes = segment(&[1, 2, 3]);
        assert_eq!(read_all(&bytes), (vec![1, 2, 3], Next::End));
        let cut = &bytes[..bytes.len() - 1];
        let (seqs, end) = read_all(cut);
        assert_eq!(seqs, [1, 2]);
        assert!(matches!(
            end,
            Next::Torn {
                reason: "short record body",
                ..
            }
        ));
    }

    #[test]
    fn a_sequence_that_goes_back_ends_the_segment() {
        let bytes = segment(&[5, 6, 6]);
        let (seqs, end) = read_all(&bytes);
        assert_eq!(seqs, [5, 6]);
        assert!(matches!(
            end,
            Next::Torn {
                reason: "record sequence does not increase",
                ..
            }
        ));
    }

    #[test]
    fn short_file_has_no_header() {
        assert!(SegmentReader::new(&[0u8; 10][..], 10).unwrap().is_none());
    }
}
