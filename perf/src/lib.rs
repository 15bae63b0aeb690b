//! mllpd-perf: the pieces shared by the load generator (`mllp-bench`) and the reference
//! receivers (`floor-glommio`, `floor-uring`, `floor-tokio`).
//!
//! - [`message`]: message templates with their MSH-10 span located once, so every send writes a
//!   unique control id without re-parsing; loading messages from files.
//! - [`verify`]: reads an ACK and decides whether it answers the message that was sent (MSA-2
//!   equals the sent MSH-10, MSA-1 in the expected set).
//! - [`floor`]: the least a correct receiver does — find each frame end with memchr, copy
//!   MSH-10 into a fixed ACK — written once so the three reference receivers differ only in
//!   their socket loop.
//! - [`cpu`]: CPU time of another process from `/proc/PID/task/*/schedstat`.
//! - [`abuse`]: the adversarial suite (attacks from several processes while a well-behaved
//!   sender is timed), shared with `tests/abuse.rs`.
//!
//! Nothing here is on mllpd's own path: these are measuring instruments, and an instrument
//! that reports a wrong answer as a fast one is worse than none, so every ACK is checked.

pub mod abuse;
pub mod bench;
pub mod cpu;
pub mod floor;
pub mod message;
pub mod verify;

/// MLLP start block (HL7 v2 Appendix C, Minimal Lower Layer Protocol).
pub const SB: u8 = 0x0B;
/// MLLP end block; a frame ends with `EB CR`.
pub const EB: u8 = 0x1C;
/// Carriage return: the HL7 segment separator and the last byte of an MLLP frame.
pub const CR: u8 = 0x0D;

/// `250ms`, `5s`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad duration '{text}'"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("bad duration unit in '{text}' (ms, s, m)")),
    };
    std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|e| format!("bad duration '{text}': {e}"))
}
