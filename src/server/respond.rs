//! From a frame's verdict to the bytes of its answer: the one place that decides what an
//! outcome becomes on the wire (README, "Bad input").
//!
//! - a good message that is durable (or, with ACK_AFTER=receipt, received) → AA / CA;
//! - a payload that is not HL7 or lacks a usable MSH → AR with ERR from `ack::build_unparsed`;
//! - a header error (missing MSH-9/10/11/12 → 101, bad version → 203, UTF-8 declared but
//!   invalid → 102) → AR with ERR, echoing MSH-10 where readable (`ack::build_rejection`);
//! - a good message the journal could not store (no space, failed flush) → AE with ERR 207: the
//!   sender keeps it and retries;
//! - MSH-15 may suppress any of these in enhanced mode.
//!
//! Pure: no IO, no clock (the timestamp is set by the caller).

use crate::ack::{self, AckError, AckOutcome, AckRequest, Disposition, Severity};
use crate::hl7::{ErrorCode, Message, ParseError, ParseOptions};
use crate::journal::JournalError;
use crate::mllp;

use super::clock::{ControlIds, CONTROL_ID_BYTES_MAX, TIMESTAMP_BYTES};

/// What the shard decided about one frame before answering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Parsed, and durable in the journal (or, with ACK_AFTER=receipt, appended to it).
    Accepted,
    /// Did not parse.
    Rejected(ParseError),
    /// Parsed, but the journal failed to store it.
    NotStored(JournalError),
}

/// Per-shard ACK writer state.
#[derive(Debug)]
pub struct Responder {
    /// How payloads are parsed (default charset).
    parse_options: ParseOptions,
    /// Source of ACK control ids.
    control_ids: ControlIds,
    /// MSH-7 for ACKs written now, refreshed by the caller once per read.
    timestamp: [u8; TIMESTAMP_BYTES],
}

impl Responder {
    /// A responder for one shard.
    pub fn new(parse_options: ParseOptions, control_ids: ControlIds) -> Self {
        Responder {
            parse_options,
            control_ids,
            timestamp: *b"19700101000000+0000",
        }
    }

    /// How payloads are parsed.
    pub fn parse_options(&self) -> &ParseOptions {
        &self.parse_options
    }

    /// Sets MSH-7 for the ACKs written from now on.
    pub fn set_timestamp(&mut self, timestamp: [u8; TIMESTAMP_BYTES]) {
        self.timestamp = timestamp;
    }

    /// Appends the framed answer for `payload` with `verdict` to `out` (nothing when MSH-15
    /// suppresses it). Returns whether an ACK was written.
    pub fn respond(&mut self, payload: &[u8], verdict: Verdict, out: &mut Vec<u8>) -> bool {
        let mut control_id = [0u8; CONTROL_ID_BYTES_MAX];
        let control_id_len = self.control_ids.next(&mut control_id);
        let (disposition, error, text) = wire(verdict);
        let request = AckRequest {
            disposition,
            text,
            error,
            timestamp: &self.timestamp,
            control_id: &control_id[..control_id_len],
        };
        let frame_start = out.len();
        mllp::frame_begin(out);
        let outcome = match Message::parse(payload, &self.parse_options) {
            Ok(message) => ack::build(&message, &request, out),
            Err(_) => ack::build_rejection(payload, &request, out),
        };
        let written = outcome != AckOutcome::Suppressed;
        if written {
            mllp::frame_end(out);
        } else {
            out.truncate(frame_start);
        }
        written
    }
}

/// The ACK disposition, ERR content and MSA-3 text of a verdict. Texts are fixed strings: they
/// describe the failure and never carry message content.
fn wire(verdict: Verdict) -> (Disposition, Option<AckError>, Option<&'static [u8]>) {
    match verdict {
        Verdict::Accepted => (Disposition::Accept, None, None),
        Verdict::Rejected(error) => (
            Disposition::Reject,
            Some(AckError {
                code: error.code(),
                location: error.location(),
                severity: Severity::Error,
            }),
            Some(error.text().as_bytes()),
        ),
        Verdict::NotStored(error) => (
            Disposition::Error,
            Some(AckError {
                code: ErrorCode::ApplicationInternalError,
                location: None,
                severity: Severity::Error,
            }),
            Some(journal_text(error).as_bytes()),
        ),
    }
}

fn journal_text(error: JournalError) -> &'static str {
    match error {
        JournalError::NoSpace => "message not stored: receiver out of disk space; retry later",
        JournalError::Poisoned => "message not stored: receiver storage failed; retry later",
        JournalError::RecordTooLarge => "message not stored: too large for the journal",
        JournalError::BatchFull | JournalError::Closed => {
            "message not stored: receiver is shutting down; retry later"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::ParseErrorKind;

    fn responder() -> Responder {
        Responder::new(ParseOptions::default(), ControlIds::new(0, 0))
    }

    const ADT: &[u8] = b"MSH|^~\\&|SA|SF|RA|RF|20260101||ADT^A01|C-1|P|2.5\rPID|1\r";

    fn answer(payload: &[u8], verdict: Verdict) -> String {
        let mut out = Vec::new();
        responder().respond(payload, verdict, &mut out);
        assert_eq!(out.first(), Some(&mllp::START_BLOCK));
        assert!(out.ends_with(&[mllp::END_BLOCK, mllp::CARRIAGE_RETURN]));
        String::from_utf8(out[1..out.len() - 2].to_vec()).expect("ASCII")
    }

    #[test]
    fn accepted_is_aa() {
        assert!(answer(ADT, Verdict::Accepted).contains("\rMSA|AA|C-1\r"));
    }

    #[test]
    fn not_stored_is_ae_207_and_says_why_without_content() {
        let text = answer(ADT, Verdict::NotStored(JournalError::NoSpace));
        assert!(text.contains("\rMSA|AE|C-1|message not stored"), "{text}");
        assert!(
            text.contains("|207^Application internal error^HL70357|E"),
            "{text}"
        );
        let text = answer(ADT, Verdict::NotStored(JournalError::Poisoned));
        assert!(text.contains("\rMSA|AE|C-1|"), "{text}");
    }

    #[test]
    fn rejected_is_ar_with_the_parse_error() {
        let payload = b"MSH|^~\\&|SA|SF|RA|RF|20260101||ADT^A01||P|2.5\r";
        let error = ParseError {
            kind: ParseErrorKind::MissingField(10),
            offset: 40,
        };
        let text = answer(payload, Verdict::Rejected(error));
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
        assert!(!responder().respond(payload, Verdict::Accepted, &mut out));
        assert_eq!(out, b"kept");
    }
}
