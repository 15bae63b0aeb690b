//! Recovery at open: find the segments, keep every complete record, truncate a torn tail,
//! continue the sequence, and rebuild the dedup window.
//!
//! Runs once per shard before it serves, with plain `std::fs` (a startup scan, not the hot
//! path). Only the last segment can be torn: a segment is closed only after its last batch was
//! flushed, so damage in an earlier one is not a crash artefact but corruption, and recovery
//! refuses to guess ([`OpenError::Corrupt`]). The last segment is read to its end; a record
//! that is short, fails its CRC or does not increase the sequence ends it, and the file is cut
//! there (with a warning naming the file, offset and bytes dropped). Earlier segments are read
//! only when they may hold keys of the dedup window; the others have their header checked. A last segment too short to
//! hold its header was created by a crash before anything was written to it, and is removed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::limits::RECOVERY_PROGRESS_INTERVAL;

use super::dedup::DedupWindow;
use super::retention::SegmentInfo;
use super::segment::{self, Next, SegmentReader};
use super::{JournalOptions, OpenError, Recovery, RecoveryProgress};

/// What recovery hands the writer.
#[derive(Debug)]
pub struct Recovered {
    /// What was found, for the caller.
    pub report: Recovery,
    /// Every segment kept, oldest first; the last one is appended to.
    pub segments: Vec<SegmentInfo>,
    /// The rebuilt dedup window (when DEDUP_WINDOW is set).
    pub dedup: Option<DedupWindow>,
}

/// The exclusive lock of a shard directory: two writers on one journal would interleave their
/// records, so a second server (or shard) started on the same DATA_DIR fails to open instead.
pub type DirLock = nix::fcntl::Flock<File>;

/// Name of the lock file in a shard directory.
const LOCK_FILE: &str = "LOCK";

/// Creates `dir` if missing and takes its exclusive lock (`flock` on `dir/LOCK`, released when
/// the lock is dropped or the process dies). Readers (`journal stats/export`) never take it.
pub fn lock(dir: &Path) -> Result<DirLock, OpenError> {
    create_dir_durable(dir).map_err(|source| io_error(dir, source))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| io_error(&path, source))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => OpenError::Locked { path },
            errno => io_error(&path, errno.into()),
        },
    )
}

/// Creates `dir` and its missing parents, fsyncing the parent of each directory it creates: a
/// new directory entry survives a power loss only once its parent directory is synced, and a
/// shard directory (or DATA_DIR) that vanished would take every segment in it along.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    create_dirs(dir, &mut sync_dir)
}

/// [`create_dir_durable`] with the directory fsync as a seam (tests count its calls).
fn create_dirs(
    dir: &Path,
    sync: &mut dyn FnMut(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Ok(()),
    };
    create_dirs(parent, sync)?;
    match std::fs::create_dir(dir) {
        // Another process may have made it a moment ago: sync its entry all the same.
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => return Err(error),
        _ => {}
    }
    sync(parent)
}

/// fsyncs a directory (its entries: names created, removed or renamed in it).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Calls its caller back about every [`RECOVERY_PROGRESS_INTERVAL`] while recovery runs, so
/// that a long recovery (a large journal, a large dedup window) is seen to progress.
struct Progress<'a> {
    /// The caller's callback.
    report: &'a mut dyn FnMut(&RecoveryProgress),
    /// When recovery started.
    started: Instant,
    /// When the callback was last called (or recovery started).
    last: Instant,
    /// Segment files found.
    segments: usize,
    /// Of those, done with.
    segments_done: usize,
}

impl Progress<'_> {
    /// Reports if an interval passed since the last report.
    fn tick(&mut self, report: &Recovery) {
        let now = Instant::now();
        if now.duration_since(self.last) < RECOVERY_PROGRESS_INTERVAL {
            return;
        }
        self.last = now;
        (self.report)(&RecoveryProgress {
            segments: self.segments,
            segments_done: self.segments_done,
            records_scanned: report.records_scanned,
            elapsed: now.duration_since(self.started),
        });
    }
}

/// Recovers the journal in `options.dir` (created if missing) as of `now`, calling `progress`
/// about every [`RECOVERY_PROGRESS_INTERVAL`] while it runs.
pub fn recover(
    options: &JournalOptions,
    now: SystemTime,
    progress: &mut dyn FnMut(&RecoveryProgress),
) -> Result<Recovered, OpenError> {
    let dir = &options.dir;
    create_dir_durable(dir).map_err(|source| io_error(dir, source))?;
    let mut report = Recovery::default();
    let mut found = segment::list(dir)?;
    report.removed_segments = remove_headerless_tail(dir, &mut found)?;
    let started = Instant::now();
    let mut progress = Progress {
        report: progress,
        started,
        last: started,
        segments: found.len(),
        segments_done: 0,
    };
    let mut dedup = options
        .dedup_window
        .map(|window| DedupWindow::new(window, options.dedup_keys_max));
    let mut segments = Vec::with_capacity(found.len());
    for (i, (first_seq, path)) in found.iter().enumerate() {
        let last = i + 1 == found.len();
        let info = info_of(*first_seq, path)?;
        let in_window = options
            .dedup_window
            .is_some_and(|w| info.modified.checked_add(w).is_none_or(|end| end >= now));
        if !(last || in_window) {
            // Not read: its header at least must be one of ours.
            SegmentReader::open(path)?;
        }
        if last || in_window {
            let scan = Scan {
                path,
                first_seq: *first_seq,
                last,
                since_micros: options
                    .dedup_window
                    .map(|w| micros(now).saturating_sub(micros_of(w))),
            };
            let end = scan.run(&mut report, dedup.as_mut(), &mut progress)?;
            let info = info_of(*first_seq, path)?;
            if last && info.bytes > end {
                // The space the writer readied after its records. Past a record prefix that a
                // crash left unwritten (zeros) it may still hold whole records of that batch,
                // never acknowledged; sequence numbers continue from the last record kept, so
                // once new records fill the gap such a stale record would read as valid. Cut
                // it: the writer readies fresh zeros.
                truncate(path, end)?;
            }
            // Where the records end, not the file size.
            segments.push(SegmentInfo { bytes: end, ..info });
        } else {
            segments.push(info_of(*first_seq, path)?);
        }
        progress.segments_done = i + 1;
        progress.tick(&report);
    }
    report.segments = segments.len();
    let named_next = segments.last().map_or(1, |s| s.first_seq);
    report.next_seq = report
        .last_seq
        .map_or(named_next, |s| s + 1)
        .max(named_next);
    report.dedup_keys = dedup.as_ref().map_or(0, DedupWindow::len);
    Ok(Recovered {
        report,
        segments,
        dedup,
    })
}

/// Removes trailing segments of `dir` too short to hold a header; returns how many.
fn remove_headerless_tail(dir: &Path, found: &mut Vec<(u64, PathBuf)>) -> Result<usize, OpenError> {
    let mut removed = 0;
    while let Some((_, path)) = found.last() {
        if SegmentReader::open(path)?.is_some() {
            break;
        }
        tracing::warn!(segment = %path.display(), "removing a journal segment without a header");
        std::fs::remove_file(path).map_err(|source| io_error(path, source))?;
        found.pop();
        removed += 1;
    }
    if removed > 0 {
        // The writer will create a segment of the same name: the removal must not come back.
        sync_dir(dir).map_err(|source| io_error(dir, source))?;
    }
    Ok(removed)
}

/// Reads one segment: counts records, feeds the dedup window, cuts a torn tail (last only).
struct Scan<'a> {
    /// The segment.
    path: &'a Path,
    /// The sequence number its name says it starts at.
    first_seq: u64,
    /// Whether it is the last segment (the only one that may be torn).
    last: bool,
    /// Keys of records received before this (µs) are outside the dedup window.
    since_micros: Option<u64>,
}

impl Scan<'_> {
    /// Runs the scan; returns where the segment's records end.
    fn run(
        &self,
        report: &mut Recovery,
        mut dedup: Option<&mut DedupWindow>,
        progress: &mut Progress<'_>,
    ) -> Result<u64, OpenError> {
        let corrupt = |offset, reason| OpenError::Corrupt {
            path: self.path.to_owned(),
            offset,
            reason,
        };
        let Some(mut reader) = SegmentReader::open(self.path)? else {
            return Err(corrupt(0, "segment shorter than its header"));
        };
        if reader.first_seq() != self.first_seq {
            return Err(corrupt(0, "segment header disagrees with its file name"));
        }
        loop {
            let next = reader
                .next_record()
                .map_err(|source| io_error(self.path, source))?;
            match next {
                Next::Record(record) => {
                    report.records_scanned += 1;
                    if report.records_scanned % 1024 == 0 {
                        progress.tick(report);
                    }
                    report.last_seq = Some(record.seq);
                    let fresh = self
                        .since_micros
                        .is_some_and(|since| record.receive_time_unix_micros >= since);
                    if let (Some(window), Some(key), true) =
                        (dedup.as_deref_mut(), record.dedup_key, fresh)
                    {
                        // The payload digest is computed again from the stored payload (as
                        // fast as the CRC just checked), so records carry no digest.
                        let fingerprint = window.fingerprint(&key, record.payload);
                        window.insert(fingerprint, record.seq, record.receive_time_unix_micros);
                    }
                }
                Next::End => return Ok(reader.len()),
                Next::Torn { offset, reason } if self.last => {
                    let dropped = reader.len() - offset;
                    truncate(self.path, offset)?;
                    tracing::warn!(segment = %self.path.display(), offset, dropped_bytes = dropped,
                        reason, "truncated a torn journal tail");
                    report.truncated_bytes += dropped;
                    return Ok(offset);
                }
                Next::Torn { offset, reason } => return Err(corrupt(offset, reason)),
            }
        }
    }
}

/// Cuts `path` to `len` bytes and makes that durable.
fn truncate(path: &Path, len: u64) -> Result<(), OpenError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| io_error(path, source))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(path, source))
}

/// Size and modification time of a segment.
fn info_of(first_seq: u64, path: &Path) -> Result<SegmentInfo, OpenError> {
    let metadata = File::open(path)
        .and_then(|f| f.metadata())
        .map_err(|source| io_error(path, source))?;
    Ok(SegmentInfo {
        first_seq,
        path: path.to_owned(),
        bytes: metadata.len(),
        modified: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    })
}

/// µs since the Unix epoch (0 before it).
pub fn micros(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, micros_of)
}

/// A duration in µs, saturating.
fn micros_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// An IO error on `path`.
fn io_error(path: &Path, source: std::io::Error) -> OpenError {
    OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_new_directory_is_synced_in_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("shard-0");
        let mut synced = Vec::new();
        let mut record = |p: &Path| {
            synced.push(p.to_owned());
            Ok(())
        };
        create_dirs(&dir, &mut record).unwrap();
        assert!(dir.is_dir());
        assert_eq!(synced, [tmp.path().to_owned(), tmp.path().join("data")]);
        // Nothing new, nothing to sync.
        synced.clear();
        let mut record = |p: &Path| {
            synced.push(p.to_owned());
            Ok(())
        };
        create_dirs(&dir, &mut record).unwrap();
        assert!(synced.is_empty());
        // A failed sync is an error: the directory cannot be trusted to survive.
        let mut failing = |_: &Path| Err(std::io::Error::from_raw_os_error(libc::EIO));
        assert!(create_dirs(&tmp.path().join("other"), &mut failing).is_err());
        // And the real one works.
        create_dir_durable(&tmp.path().join("a").join("b")).unwrap();
        assert!(tmp.path().join("a").join("b").is_dir());
    }
}
