//! Wall-clock helpers for the ACK header: MSH-7 timestamps and fresh MSH-10 control ids.
//!
//! The timestamp is formatted by hand: it is one fixed layout (`YYYYMMDDHHMMSS+0000`, HL7 DTM in
//! UTC), computed at most once per read batch, and a date crate would add a dependency for 15
//! lines of civil-calendar arithmetic (Howard Hinnant's `civil_from_days`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an MSH-7 timestamp written by [`format_timestamp`].
pub const TIMESTAMP_BYTES: usize = 19;

/// `unix_seconds` as an HL7 DTM in UTC: `YYYYMMDDHHMMSS+0000`.
pub fn format_timestamp(unix_seconds: u64) -> [u8; TIMESTAMP_BYTES] {
    let days = (unix_seconds / 86_400) as i64;
    let second_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"00000000000000+0000";
    write_digits(&mut out[0..4], year as u64);
    write_digits(&mut out[4..6], month as u64);
    write_digits(&mut out[6..8], day as u64);
    write_digits(&mut out[8..10], second_of_day / 3600);
    write_digits(&mut out[10..12], second_of_day / 60 % 60);
    write_digits(&mut out[12..14], second_of_day % 60);
    out
}

/// The current time as seconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current time as microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn write_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Generates ACK control ids (MSH-10) unique across shards and restarts: the process start
/// time, the shard, and a counter, in hex — at most 20 characters, the ST length limit of
/// MSH-10 before v2.5.
#[derive(Debug)]
pub struct ControlIds {
    /// Start time (unix seconds, low 32 bits) and shard, pre-formatted.
    prefix: [u8; 10],
    /// Ids handed out so far.
    counter: u64,
}

/// Longest id [`ControlIds::next`] produces.
pub const CONTROL_ID_BYTES_MAX: usize = 20;

impl ControlIds {
    /// Ids for `shard` of a process started at `start_unix_seconds`.
    pub fn new(start_unix_seconds: u64, shard: usize) -> Self {
        let mut prefix = [0u8; 10];
        write_hex(&mut prefix[0..8], start_unix_seconds & 0xFFFF_FFFF);
        write_hex(&mut prefix[8..10], (shard & 0xFF) as u64);
        ControlIds { prefix, counter: 0 }
    }

    /// Writes the next id into `out` and returns its length.
    pub fn next(&mut self, out: &mut [u8; CONTROL_ID_BYTES_MAX]) -> usize {
        self.counter = self.counter.wrapping_add(1);
        out[..10].copy_from_slice(&self.prefix);
        write_hex(&mut out[10..20], self.counter & 0xFF_FFFF_FFFF);
        CONTROL_ID_BYTES_MAX
    }
}

fn write_hex(out: &mut [u8], mut value: u64) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in out.iter_mut().rev() {
        *byte = HEX[(value & 0xF) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(&format_timestamp(0), b"19700101000000+0000");
        // 2000-02-29 12:34:56 UTC (leap day).
        assert_eq!(&format_timestamp(951_827_696), b"20000229123456+0000");
        // 2026-11-26 02:54:18 UTC.
        assert_eq!(&format_timestamp(1_795_661_658), b"20261126025418+0000");
        // 2100-03-01 00:00:00 UTC (2100 is not a leap year).
        assert_eq!(&format_timestamp(4_107_542_400), b"21000301000000+0000");
    }

    #[test]
    fn control_ids_are_distinct_and_bounded() {
        let mut a = ControlIds::new(1_795_661_658, 0);
        let mut b = ControlIds::new(1_795_661_658, 1);
        let mut x = [0u8; CONTROL_ID_BYTES_MAX];
        let mut y = [0u8; CONTROL_ID_BYTES_MAX];
        a.next(&mut x);
        b.next(&mut y);
        assert_ne!(x, y);
        let first = x;
        a.next(&mut x);
        assert_ne!(first, x);
        assert!(x.iter().all(u8::is_ascii_alphanumeric));
    }
}
