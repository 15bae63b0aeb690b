//! ACK verification: does this ACK answer the message we sent, with a code we accept?
//!
//! HL7 v2.5.1 §2.9.2: the receiver returns an ACK whose MSA-2 echoes the message's MSH-10 and
//! whose MSA-1 says accept/error/reject (AA/AE/AR; CA/CE/CR in enhanced mode). The ACK carries
//! its own delimiters in MSH-1/MSH-2, so fields are split on the ACK's own separator.

use crate::CR;

/// Why an ACK was not the answer we expected. Small and `Copy`: counted, never allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mismatch {
    /// The payload does not start with an MSH segment.
    NotHl7,
    /// MSH-9 does not name an ACK.
    NotAck,
    /// No MSA segment.
    NoMsa,
    /// MSA-1 is not in the expected set.
    Code,
    /// MSA-2 differs from the sent MSH-10.
    ControlId,
    /// An ACK arrived with no message waiting for it.
    Unsolicited,
}

impl Mismatch {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Mismatch::NotHl7 => "not_hl7",
            Mismatch::NotAck => "not_ack",
            Mismatch::NoMsa => "no_msa",
            Mismatch::Code => "code",
            Mismatch::ControlId => "control_id",
            Mismatch::Unsolicited => "unsolicited",
        }
    }
}

/// Field `n` (0 = segment id) of a segment split on `separator`; MSH numbering is not
/// adjusted here, callers do it.
fn field(segment: &[u8], separator: u8, n: usize) -> &[u8] {
    segment.split(|&b| b == separator).nth(n).unwrap_or(b"")
}

/// Checks one ACK payload (between SB and EB CR) against the sent control id and the accepted
/// MSA-1 codes. `strict` also requires MSH-9 to start with `ACK` (the check mode uses it; the
/// timed run does not need to read MSH-9 on every message).
pub fn check_ack(
    payload: &[u8],
    sent_control_id: &[u8],
    accepted_codes: &[Vec<u8>],
    strict: bool,
) -> Result<(), Mismatch> {
    if payload.len() < 8 || &payload[..3] != b"MSH" {
        return Err(Mismatch::NotHl7);
    }
    let separator = payload[3];
    let mut segments = payload.split(|&b| b == CR || b == b'\n');
    let msh = segments.next().unwrap_or(b"");
    // MSH-1 is the separator, so MSH-9 is the eighth item after the segment id.
    if strict && !field(msh, separator, 8).starts_with(b"ACK") {
        return Err(Mismatch::NotAck);
    }
    let msa = segments
        .find(|s| s.starts_with(b"MSA") && s.get(3) == Some(&separator))
        .ok_or(Mismatch::NoMsa)?;
    let code = field(msa, separator, 1);
    if !accepted_codes.iter().any(|c| c.as_slice() == code) {
        return Err(Mismatch::Code);
    }
    if field(msa, separator, 2) != sent_control_id {
        return Err(Mismatch::ControlId);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes() -> Vec<Vec<u8>> {
        vec![b"AA".to_vec(), b"CA".to_vec()]
    }

    #[test]
    fn accepts_a_matching_ack_and_names_each_mismatch() {
        let ack = b"MSH|^~\\&|R|F|S|F|20260101||ACK^A01^ACK|9|P|2.5.1\rMSA|AA|id-1\r";
        assert_eq!(check_ack(ack, b"id-1", &codes(), true), Ok(()));
        assert_eq!(
            check_ack(ack, b"id-2", &codes(), true),
            Err(Mismatch::ControlId)
        );
        let ae = b"MSH|^~\\&|R|F|S|F|20260101||ACK|9|P|2.5.1\rMSA|AE|id-1\r";
        assert_eq!(check_ack(ae, b"id-1", &codes(), true), Err(Mismatch::Code));
        let no_msa = b"MSH|^~\\&|R|F|S|F|20260101||ACK|9|P|2.5.1\r";
        assert_eq!(
            check_ack(no_msa, b"id-1", &codes(), true),
            Err(Mismatch::NoMsa)
        );
        let not_ack = b"MSH|^~\\&|R|F|S|F|20260101||ADT^A01|9|P|2.5.1\rMSA|AA|id-1\r";
        assert_eq!(
            check_ack(not_ack, b"id-1", &codes(), true),
            Err(Mismatch::NotAck)
        );
        assert_eq!(check_ack(not_ack, b"id-1", &codes(), false), Ok(()));
        assert_eq!(
            check_ack(b"hello", b"id-1", &codes(), true),
            Err(Mismatch::NotHl7)
        );
    }

    #[test]
    fn uses_the_acks_own_separator_and_ignores_msa3() {
        let ack = b"MSH#^~\\&#R#F#S#F#20260101##ACK#9#P#2.5.1\rMSA#CA#x#fine\r";
        assert_eq!(check_ack(ack, b"x", &codes(), true), Ok(()));
        assert_eq!(
            check_ack(ack, b"x#fine", &codes(), true),
            Err(Mismatch::ControlId)
        );
    }
}
