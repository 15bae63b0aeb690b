//! Retention: which closed segments may be deleted. No IO; the committer deletes what this
//! decides.
//!
//! A segment is deleted only when nothing needs it. Two things can need one: a holder that has
//! not consumed it yet (the retention floor: connectors will hold the sequence number of their
//! slowest cursor, see [`super::Journal::set_retention_floor`]), and the retention bounds
//! (RETENTION_AGE, RETENTION_BYTES), which keep segments that are young enough while the journal
//! is small enough. Only a prefix of the closed segments is ever deleted, so the journal stays
//! contiguous, and the active segment is never deleted.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// A segment file the writer knows of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The sequence number in its name.
    pub first_seq: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its length in bytes.
    pub bytes: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// What retention is bounded by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    /// RETENTION_AGE.
    pub age: Option<Duration>,
    /// RETENTION_BYTES.
    pub bytes: Option<u64>,
    /// Records with this sequence number or later are still needed; `None`: no holder.
    pub floor: Option<u64>,
}

/// How many of the oldest `closed` segments may be deleted. `next_first_seq` is the first
/// sequence number after the last closed segment (the active segment's), `active_bytes` the
/// active segment's length.
pub fn deletable(
    closed: &[SegmentInfo],
    next_first_seq: u64,
    active_bytes: u64,
    bounds: Bounds,
    now: SystemTime,
) -> usize {
    let mut total: u64 = closed.iter().map(|s| s.bytes).sum::<u64>() + active_bytes;
    let mut count = 0;
    for (i, segment) in closed.iter().enumerate() {
        let after = closed.get(i + 1).map_or(next_first_seq, |s| s.first_seq);
        // Every record of this segment is below `after`: held if the floor is below that.
        if bounds.floor.is_some_and(|floor| floor < after) {
            break;
        }
        let too_old = bounds.age.is_some_and(|age| {
            now.duration_since(segment.modified)
                .is_ok_and(|elapsed| elapsed > age)
        });
        let too_big = bounds.bytes.is_some_and(|max| total > max);
        if !(too_old || too_big) {
            break;
        }
        total -= segment.bytes;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn segments(now: SystemTime) -> Vec<SegmentInfo> {
        // Three closed segments of 100 bytes, 3h, 2h and 1h old.
        (0..3u64)
            .map(|i| SegmentInfo {
                first_seq: 1 + 10 * i,
                path: PathBuf::from(format!("{i}")),
                bytes: 100,
                modified: now - HOUR * (3 - i as u32),
            })
            .collect()
    }

    #[test]
    fn age_deletes_only_segments_older_than_it() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 100;
        let closed = segments(now);
        let age = |h: u32| Bounds {
            age: Some(HOUR * h - Duration::from_secs(1)),
            ..Bounds::default()
        };
        assert_eq!(deletable(&closed, 31, 50, age(2), now), 2);
        assert_eq!(deletable(&closed, 31, 50, age(4), now), 0);
        assert_eq!(deletable(&closed, 31, 50, age(1), now), 3);
        assert_eq!(deletable(&closed, 31, 50, Bounds::default(), now), 0);
    }

    #[test]
    fn bytes_delete_the_oldest_until_under_the_bound() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 100;
        let closed = segments(now);
        let bytes = |b| Bounds {
            bytes: Some(b),
            ..Bounds::default()
        };
        assert_eq!(deletable(&closed, 31, 50, bytes(350), now), 0);
        assert_eq!(deletable(&closed, 31, 50, bytes(349), now), 1);
        assert_eq!(deletable(&closed, 31, 50, bytes(250), now), 1);
        assert_eq!(deletable(&closed, 31, 50, bytes(0), now), 3);
    }

    #[test]
    fn the_floor_holds_segments_still_needed() {
        let now = SystemTime::UNIX_EPOCH + HOUR * 100;
        let closed = segments(now);
        let held = |floor| Bounds {
            bytes: Some(0),
            floor: Some(floor),
            ..Bounds::default()
        };
        // Segment 0 holds 1..=10: a floor at 10 needs it, a floor at 11 does not.
        assert_eq!(deletable(&closed, 31, 50, held(10), now), 0);
        assert_eq!(deletable(&closed, 31, 50, held(11), now), 1);
        assert_eq!(deletable(&closed, 31, 50, held(30), now), 2);
        assert_eq!(deletable(&closed, 31, 50, held(31), now), 3);
    }
}
