//! ACK builder (HL7 v2 §2.9 "Message processing rules", §2.14.1 MSA, §2.14.5 ERR).
//!
//! Writes one ACK payload into a caller-supplied buffer; no IO, no clock (the timestamp and the
//! ACK's own control id are passed in). The caller frames it (`mllp::frame_begin/frame_end`).

use crate::hl7::{ErrorCode, Location, Message};

/// What mllpd decided about a message; the builder turns it into AA/AE/AR or CA/CE/CR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted (AA / CA).
    Accept,
    /// Error: could not be processed, the sender may retry (AE / CE).
    Error,
    /// Reject: will never be accepted as sent (AR / CR).
    Reject,
}

/// An acknowledgment code as written in MSA-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCode {
    /// Original mode: application accept.
    AA,
    /// Original mode: application error.
    AE,
    /// Original mode: application reject.
    AR,
    /// Enhanced mode: commit accept.
    CA,
    /// Enhanced mode: commit error.
    CE,
    /// Enhanced mode: commit reject.
    CR,
}

impl AckCode {
    /// The two letters of MSA-1.
    pub fn as_bytes(self) -> &'static [u8; 2] {
        match self {
            AckCode::AA => b"AA",
            AckCode::AE => b"AE",
            AckCode::AR => b"AR",
            AckCode::CA => b"CA",
            AckCode::CE => b"CE",
            AckCode::CR => b"CR",
        }
    }
}

/// Severity written in ERR-4 (HL7 table 0516).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// `E`
    Error,
    /// `W`
    Warning,
    /// `I`
    Information,
}

/// The content of an ERR segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckError {
    /// ERR-3 (ERR-1.4 before v2.5): table 0357 code.
    pub code: ErrorCode,
    /// ERR-2 (ERR-1.1..3 before v2.5); `None` when unknown.
    pub location: Option<Location>,
    /// ERR-4 (v2.5 and later).
    pub severity: Severity,
}

/// Everything the builder needs besides the message.
#[derive(Clone, Copy, Debug)]
pub struct AckRequest<'r> {
    /// What mllpd decided.
    pub disposition: Disposition,
    /// MSA-3 text (escaped when written, truncated to `limits::ACK_TEXT_BYTES_MAX`).
    pub text: Option<&'r [u8]>,
    /// ERR segment content; written for non-accept dispositions.
    pub error: Option<AckError>,
    /// MSH-7 of the ACK, e.g. `20261126025400+0000`.
    pub timestamp: &'r [u8],
    /// MSH-10 of the ACK (a fresh id).
    pub control_id: &'r [u8],
}

/// What the builder did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// An ACK with this code was appended to the buffer (`bytes` long).
    Written {
        /// MSA-1 of the ACK written.
        code: AckCode,
        /// Bytes appended.
        bytes: usize,
    },
    /// Enhanced mode and MSH-15 says no accept ACK for this outcome (NE, or ER/SU that do not
    /// match): nothing was written and nothing must be sent.
    Suppressed,
}

/// Appends the ACK for `message` to `out`, or nothing when MSH-15 suppresses it.
pub fn build(message: &Message<'_>, request: &AckRequest<'_>, out: &mut Vec<u8>) -> AckOutcome {
    let _ = (message, request, out);
    AckOutcome::Suppressed
}

/// Appends a best-effort AR for a payload with no usable MSH: default delimiters, version 2.5,
/// empty MSA-2 (the control id could not be read). Returns the bytes appended.
pub fn build_unparsed(request: &AckRequest<'_>, out: &mut Vec<u8>) -> usize {
    let _ = (request, out);
    0
}
