//! From a frame's payload to the bytes of its answer: parse, decide, build the ACK, frame it.
//!
//! This is the one place that decides what a bad message becomes on the wire (README, "Bad
//! input policy"): a payload that is not HL7 or lacks a usable MSH → AR with ERR from
//! `ack::build_unparsed`; a header error (missing MSH-9/10/11/12 → 101, bad version → 203, UTF-8
//! declared but invalid → 102) → AR with ERR; a good message → AA (CA in enhanced mode), unless
//! MSH-15 suppresses the accept ACK. Pure: no IO, no clock (the timestamp is set by the caller).
//! Later stages (validation, journal) slot in between `decide` and the ACK.

use crate::ack::{self, AckError, AckOutcome, AckRequest, Disposition, Severity};
use crate::hl7::{Message, ParseError, ParseOptions};
use crate::mllp;

use super::clock::{ControlIds, CONTROL_ID_BYTES_MAX, TIMESTAMP_BYTES};

/// What happened to one frame, for counters and logs (never message content).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// Accepted; an AA/CA was written unless MSH-15 suppressed it.
    Accepted {
        /// Whether an ACK was written.
        acked: bool,
    },
    /// Rejected for the parse error given; an AR/CR was written unless suppressed.
    Rejected(ParseError),
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

    /// Sets MSH-7 for the ACKs written from now on.
    pub fn set_timestamp(&mut self, timestamp: [u8; TIMESTAMP_BYTES]) {
        self.timestamp = timestamp;
    }

    /// Appends the framed answer to `payload` (or nothing, when MSH-15 says so) to `out`.
    pub fn respond(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Response {
        let mut control_id = [0u8; CONTROL_ID_BYTES_MAX];
        let control_id_len = self.control_ids.next(&mut control_id);
        let frame_start = out.len();
        mllp::frame_begin(out);
        let (response, written) = match Message::parse(payload, &self.parse_options) {
            Ok(message) => {
                let request = AckRequest {
                    disposition: Disposition::Accept,
                    text: None,
                    error: None,
                    timestamp: &self.timestamp,
                    control_id: &control_id[..control_id_len],
                };
                let acked = ack::build(&message, &request, out) != AckOutcome::Suppressed;
                (Response::Accepted { acked }, acked)
            }
            Err(error) => {
                let request = AckRequest {
                    disposition: Disposition::Reject,
                    text: Some(error.text().as_bytes()),
                    error: Some(AckError {
                        code: error.code(),
                        location: error.location(),
                        severity: Severity::Error,
                    }),
                    timestamp: &self.timestamp,
                    control_id: &control_id[..control_id_len],
                };
                let written =
                    ack::build_rejection(payload, &request, out) != AckOutcome::Suppressed;
                (Response::Rejected(error), written)
            }
        };
        if written {
            mllp::frame_end(out);
        } else {
            out.truncate(frame_start);
        }
        response
    }
}
