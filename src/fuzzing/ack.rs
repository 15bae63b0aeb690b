//! Fuzz function for the ack (see `fuzzing` module doc).
//!
//! For input that parses as a message, every disposition is acknowledged with and without text
//! and error, and each ACK must re-parse with the sender's delimiters, echo MSH-10 in MSA-2,
//! carry the MSA-1 code an independent reading of §2.9 expects, swap MSH-3/4 with MSH-5/6, and
//! hold exactly the segments MSH, MSA (and ERR when one is due). Input that does not parse gets
//! the best-effort AR, which must re-parse with MSA-1 `AR` and an empty MSA-2; and the
//! rejection the server sends (`build_rejection`), which must re-parse, use the sender's
//! delimiters and echo MSH-10 whenever MSH is readable, and fall back to the best-effort AR
//! otherwise.

use crate::ack::{
    build, build_rejection, build_unparsed, AckError, AckOutcome, AckRequest, Disposition, Severity,
};
use crate::hl7::{Delimiters, Message, ParseError, ParseOptions, Path};

/// MSH-7 of every ACK built here.
const TIMESTAMP: &[u8] = b"20261126025400+0000";

/// MSH-10 of every ACK built here.
const ACK_CONTROL_ID: &[u8] = b"FUZZ-ACK-1";

/// Runs the ack fuzz body over `data`; panics when an invariant breaks.
pub fn ack(data: &[u8]) {
    match Message::parse(data, &ParseOptions::default()) {
        Ok(message) => acknowledge_parsed(&message, data),
        Err(error) => acknowledge_unparsed(data, &error),
    }
}

/// Builds and checks the ACK of every disposition, plain and with text and error.
fn acknowledge_parsed(message: &Message<'_>, data: &[u8]) {
    let mut out = Vec::new();
    for disposition in [Disposition::Accept, Disposition::Error, Disposition::Reject] {
        for with_text in [false, true] {
            let request = AckRequest {
                disposition,
                text: with_text.then_some(data),
                error: with_text.then_some(AckError {
                    code: crate::hl7::ErrorCode::DataTypeError,
                    location: Some(crate::hl7::Location::msh(9)),
                    severity: Severity::Warning,
                }),
                timestamp: TIMESTAMP,
                control_id: ACK_CONTROL_ID,
            };
            out.clear();
            let outcome = build(message, &request, &mut out);
            let expected = expected_code(message, disposition);
            match (outcome, expected) {
                (AckOutcome::Suppressed, None) => assert!(out.is_empty(), "suppressed ACK wrote"),
                (AckOutcome::Written { code, bytes }, Some(expected)) => {
                    assert_eq!(code.as_bytes(), expected, "ACK code");
                    assert_eq!(bytes, out.len(), "reported ACK size");
                    check_ack(message, &request, &out, expected);
                }
                (outcome, expected) => panic!("outcome {outcome:?}, expected {expected:?}"),
            }
        }
    }
}

/// MSA-1 as §2.9.2/§2.9.3 read independently of the builder: original mode when MSH-15 and
/// MSH-16 are empty; otherwise commit codes filtered by MSH-15 (unknown values act as AL).
fn expected_code(message: &Message<'_>, disposition: Disposition) -> Option<&'static [u8; 2]> {
    let index = match disposition {
        Disposition::Accept => 0,
        Disposition::Error => 1,
        Disposition::Reject => 2,
    };
    let accept_type = message.accept_ack_type();
    let accept_type = accept_type
        .split(|&b| b == message.delimiters().component)
        .next()
        .unwrap_or_default();
    if accept_type.is_empty() && message.application_ack_type().is_empty() {
        return Some([b"AA", b"AE", b"AR"][index]);
    }
    let sent = match accept_type {
        b"NE" => [false, false, false],
        b"ER" => [false, true, true],
        b"SU" => [true, false, false],
        _ => [true, true, true],
    };
    sent[index].then_some([b"CA", b"CE", b"CR"][index])
}

/// The invariants of one written ACK.
fn check_ack(message: &Message<'_>, request: &AckRequest<'_>, ack: &[u8], code: &[u8; 2]) {
    let parsed = match Message::parse(ack, &ParseOptions::default()) {
        Ok(parsed) => parsed,
        Err(error) => panic!("ACK does not re-parse: {error}"),
    };
    let d = message.delimiters();
    assert_eq!(parsed.delimiters(), d, "ACK delimiters");
    assert_eq!(field(&parsed, "MSA-1"), code, "MSA-1");
    assert_eq!(
        field(&parsed, "MSA-2"),
        message.control_id(),
        "MSA-2 echoes MSH-10"
    );
    for (ack_field, message_field) in [(3, 5), (4, 6), (5, 3), (6, 4)] {
        assert_eq!(
            parsed.msh(ack_field),
            message.msh(message_field),
            "MSH-{ack_field} swapped"
        );
    }
    assert_eq!(
        parsed.processing_id(),
        message.processing_id(),
        "MSH-11 echoed"
    );
    assert_eq!(
        parsed.version_field(),
        message.version_field(),
        "MSH-12 echoed"
    );
    assert_eq!(
        d.unescape(parsed.control_id()).as_ref(),
        ACK_CONTROL_ID,
        "ACK MSH-10"
    );
    let err_due = request.error.is_some() || request.disposition != Disposition::Accept;
    let ids: Vec<&[u8]> = parsed.segments().map(|segment| segment.id()).collect();
    let expected_ids: &[&[u8]] = if err_due {
        &[b"MSH", b"MSA", b"ERR"]
    } else {
        &[b"MSH", b"MSA"]
    };
    assert_eq!(ids, expected_ids, "ACK segments");
    if let Some(text) = request.text {
        check_text(d, field(&parsed, "MSA-3"), text);
    }
}

/// MSA-3 decodes to a prefix of the text given, within the byte limit.
fn check_text(d: &Delimiters, msa3: &[u8], text: &[u8]) {
    assert!(
        msa3.len() <= crate::limits::ACK_TEXT_BYTES_MAX,
        "MSA-3 longer than the limit"
    );
    let decoded = d.unescape(msa3);
    assert!(
        text.starts_with(&decoded),
        "MSA-3 does not decode to a prefix of the text"
    );
}

/// The raw value at `path` (a literal path), empty when absent.
fn field<'a>(message: &Message<'a>, path: &str) -> &'a [u8] {
    match path.parse::<Path>() {
        Ok(path) => message.get(&path).unwrap_or_default(),
        Err(error) => panic!("fuzz path {path:?} does not parse: {error}"),
    }
}

/// The best-effort AR for input that is not a message.
fn acknowledge_unparsed(data: &[u8], error: &ParseError) {
    let request = AckRequest {
        disposition: Disposition::Reject,
        text: Some(data),
        error: Some(AckError {
            code: error.code(),
            location: error.location(),
            severity: Severity::Error,
        }),
        timestamp: TIMESTAMP,
        control_id: ACK_CONTROL_ID,
    };
    acknowledge_rejected(data, &request);
    let mut out = Vec::new();
    let bytes = build_unparsed(&request, &mut out);
    assert_eq!(bytes, out.len(), "reported ACK size");
    let parsed = match Message::parse(&out, &ParseOptions::default()) {
        Ok(parsed) => parsed,
        Err(error) => panic!("best-effort AR does not re-parse: {error}"),
    };
    assert_eq!(
        parsed.delimiters(),
        &Delimiters::default(),
        "default delimiters"
    );
    assert_eq!(field(&parsed, "MSA-1"), b"AR", "MSA-1");
    assert_eq!(field(&parsed, "MSA-2"), b"", "MSA-2 empty");
}

/// The server's answer to input that failed to parse.
fn acknowledge_rejected(data: &[u8], request: &AckRequest<'_>) {
    let mut out = Vec::new();
    if build_rejection(data, request, &mut out) == AckOutcome::Suppressed {
        assert!(out.is_empty(), "a suppressed rejection writes nothing");
        return;
    }
    let parsed = match Message::parse(&out, &ParseOptions::default()) {
        Ok(parsed) => parsed,
        Err(error) => panic!("rejection does not re-parse: {error}"),
    };
    let code = field(&parsed, "MSA-1");
    match Message::parse_header(data) {
        Ok(header) => {
            assert_eq!(
                parsed.delimiters(),
                header.delimiters(),
                "sender's delimiters"
            );
            assert_eq!(
                field(&parsed, "MSA-2"),
                header.control_id(),
                "MSA-2 = MSH-10"
            );
            assert!(code == b"AR" || code == b"CR", "MSA-1 {code:?}");
        }
        Err(_) => {
            assert_eq!(
                parsed.delimiters(),
                &Delimiters::default(),
                "default delimiters"
            );
            assert_eq!(
                (code, field(&parsed, "MSA-2")),
                (&b"AR"[..], &b""[..]),
                "fallback AR"
            );
        }
    }
}
