//! From a frame's [`Decision`] to the bytes of its answer on the wire: the ACK (built by
//! [`Decision::answer`] from the decision's own parse, README "Bad input" and "Validation
//! rules"), framed, with the shard's ACK control id and timestamp; nothing when MSH-15
//! suppresses it. What each outcome becomes (AA/AR/AE, ERR code and text) is decided in
//! `admission`, the one place that does.
//!
//! Pure: no IO, no clock (the timestamp is set by the caller).

use crate::ack::AckOutcome;
use crate::admission::Decision;
use crate::mllp;

use super::clock::{ControlIds, CONTROL_ID_BYTES_MAX, TIMESTAMP_BYTES};

/// Per-shard ACK writer state.
#[derive(Debug)]
pub struct Responder {
    /// Source of ACK control ids.
    control_ids: ControlIds,
    /// MSH-7 for ACKs written now, refreshed by the caller once per read.
    timestamp: [u8; TIMESTAMP_BYTES],
}

impl Responder {
    /// A responder for one shard.
    pub fn new(control_ids: ControlIds) -> Self {
        Responder {
            control_ids,
            timestamp: *b"19700101000000+0000",
        }
    }

    /// Sets MSH-7 for the ACKs written from now on.
    pub fn set_timestamp(&mut self, timestamp: [u8; TIMESTAMP_BYTES]) {
        self.timestamp = timestamp;
    }

    /// Appends the framed answer `decision` gives `payload` (the payload it was decided on) to
    /// `out` (nothing when MSH-15 suppresses it). Returns whether an ACK was written.
    pub fn respond(&mut self, payload: &[u8], decision: &Decision, out: &mut Vec<u8>) -> bool {
        self.respond_coded(payload, decision, out).is_some()
    }

    /// [`Responder::respond`], returning the code of the ACK written (none: suppressed).
    pub fn respond_coded(
        &mut self,
        payload: &[u8],
        decision: &Decision,
        out: &mut Vec<u8>,
    ) -> Option<crate::ack::AckCode> {
        let mut control_id = [0u8; CONTROL_ID_BYTES_MAX];
        let control_id_len = self.control_ids.next(&mut control_id);
        let frame_start = out.len();
        mllp::frame_begin(out);
        let outcome = decision.answer(payload, &self.timestamp, &control_id[..control_id_len], out);
        match outcome {
            AckOutcome::Written { code, .. } => {
                mllp::frame_end(out);
                Some(code)
            }
            AckOutcome::Suppressed => {
                out.truncate(frame_start);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{Admission, Context, RulesSlot};
    use crate::hl7::ParseOptions;
    use crate::journal::JournalError;
    use crate::rules::RuleSet;

    fn responder() -> Responder {
        Responder::new(ControlIds::new(0, 0))
    }

    const ADT: &[u8] = b"MSH|^~\\&|SA|SF|RA|RF|20260101||ADT^A01|C-1|P|2.5\rPID|1\r";

    fn decide(payload: &[u8]) -> Decision {
        let rules = RulesSlot::new(RuleSet::empty());
        Admission::new(ParseOptions::default(), rules).decide(payload, &Context::default())
    }

    fn answer(payload: &[u8], decision: &Decision) -> String {
        let mut out = Vec::new();
        responder().respond(payload, decision, &mut out);
        assert_eq!(out.first(), Some(&mllp::START_BLOCK));
        assert!(out.ends_with(&[mllp::END_BLOCK, mllp::CARRIAGE_RETURN]));
        String::from_utf8(out[1..out.len() - 2].to_vec()).expect("ASCII")
    }

    #[test]
    fn accepted_is_aa() {
        assert!(answer(ADT, &decide(ADT)).contains("\rMSA|AA|C-1\r"));
    }

    #[test]
    fn not_stored_is_ae_207_and_says_why_without_content() {
        let mut decision = decide(ADT);
        decision.not_stored(JournalError::NoSpace);
        let text = answer(ADT, &decision);
        assert!(text.contains("\rMSA|AE|C-1|message not stored"), "{text}");
        assert!(
            text.contains("|207^Application internal error^HL70357|E"),
            "{text}"
        );
        decision.not_stored(JournalError::Poisoned);
        let text = answer(ADT, &decision);
        assert!(text.contains("\rMSA|AE|C-1|"), "{text}");
    }

    #[test]
    fn rejected_is_ar_with_the_parse_error() {
        let payload = b"MSH|^~\\&|SA|SF|RA|RF|20260101||ADT^A01||P|2.5\r";
        let text = answer(payload, &decide(payload));
        assert!(text.contains("\rMSA|AR||"), "{text}");
        assert!(
            text.contains("ERR||MSH^1^10|101^Required field missing^HL70357|E"),
            "{text}"
        );
    }

    #[test]
    fn suppressed_writes_nothing() {
        let payload = b"MSH|^~\\&|SA|SF|RA|RF|20260101||ADT^A01|C-2|P|2.5|||NE|NE\r";
        let mut out = b"kept".to_vec();
        assert!(!responder().respond(payload, &decide(payload), &mut out));
        assert_eq!(out, b"kept");
    }
}
