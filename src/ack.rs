//! ACK builder (HL7 v2 §2.9 "Message processing rules", §2.14.1 MSA, §2.14.5 ERR).
//!
//! Writes one ACK payload into a caller-supplied buffer; no IO, no clock (the timestamp and the
//! ACK's own control id are passed in). The caller frames it (`mllp::frame_begin/frame_end`).
//!
//! Invariants:
//! - The ACK uses the sender's delimiters (MSH-1, MSH-2 including a v2.7 truncation character),
//!   so the sender re-parses it with the rules it already uses.
//! - Bytes echoed from the message (MSH-3..6, MSH-10, MSH-11, MSH-12, MSH-18, the trigger event)
//!   are copied as they are: they are whole fields or components of a message that uses the same
//!   delimiters, so they are already escaped. Every other variable text (timestamp, the ACK's
//!   control id, MSA-3, ERR texts) goes through [`Delimiters::escape_into`], so no reason text
//!   can open a field, component, repetition or segment.
//! - MSA-3 / ERR-8 are cut to [`ACK_TEXT_BYTES_MAX`] bytes after escaping, never inside an
//!   escape sequence or a UTF-8 character.
//! - `out` is reserved once; nothing else allocates. In debug builds every ACK is re-parsed and
//!   its MSA-1, MSA-2 and delimiters checked.

use crate::hl7::{Delimiters, ErrorCode, Location, Message};
use crate::limits::ACK_TEXT_BYTES_MAX;

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

impl Severity {
    /// The letter of ERR-4 (table 0516).
    pub fn as_byte(self) -> u8 {
        match self {
            Severity::Error => b'E',
            Severity::Warning => b'W',
            Severity::Information => b'I',
        }
    }
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

/// The ERR segment written when a non-accept disposition comes without an [`AckError`]: the
/// receiver failed for a reason it did not classify, which table 0357 calls 207.
const ERROR_DEFAULT: AckError = AckError {
    code: ErrorCode::ApplicationInternalError,
    location: None,
    severity: Severity::Error,
};

/// The ERR segment of [`build_unparsed`] without an [`AckError`]: no MSH where one must start
/// the message is a segment sequence error (table 0357 code 100).
const ERROR_UNPARSED_DEFAULT: AckError = AckError {
    code: ErrorCode::SegmentSequenceError,
    location: None,
    severity: Severity::Error,
};

/// HL7 v2 coding system name of table 0357, written as the third component of the CWE/CE code.
const TABLE_0357: &[u8] = b"HL70357";

/// Room for the fixed parts of an ACK (segment ids, separators, codes, ERR constants).
const ACK_FIXED_BYTES: usize = 160;

/// Appends the ACK for `message` to `out`, or nothing when MSH-15 suppresses it.
///
/// `request.text` must be valid in the message's character set (UTF-8 when MSH-18 says so);
/// it is escaped and cut to [`ACK_TEXT_BYTES_MAX`]. A non-accept disposition without
/// `request.error` gets ERR code 207 (application internal error).
pub fn build(message: &Message<'_>, request: &AckRequest<'_>, out: &mut Vec<u8>) -> AckOutcome {
    build_naming(message, request, None, out)
}

/// [`build`], naming in ERR-5 (application error code, v2.5 and later) what decided a
/// non-accept answer, e.g. the validation rule that failed: `application_error` is escaped.
/// Before v2.5 ERR has no such field and the name is left out.
pub fn build_naming(
    message: &Message<'_>,
    request: &AckRequest<'_>,
    application_error: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> AckOutcome {
    let Some(code) = ack_code(message, request.disposition) else {
        return AckOutcome::Suppressed;
    };
    let start = out.len();
    let header = Header::of(message, request);
    let (d, control_id) = (&header.delimiters, message.control_id());
    let named = application_error.map_or(0, |name| name.len() * 4);
    out.reserve(header.size_hint(request) + control_id.len() + named);
    write_msh(out, &header);
    write_msa(out, d, code, control_id, request.text);
    if let Some(error) = error_of(request) {
        let err = ErrText {
            application_error,
            text: request.text,
        };
        write_err(out, d, ErrForm::of(message), &error, err);
    }
    #[cfg(debug_assertions)]
    debug_check(&out[start..], d, code, control_id);
    let bytes = out.len() - start;
    AckOutcome::Written { code, bytes }
}

/// Appends the answer to a payload that failed [`Message::parse`] with `request` (its
/// disposition is Reject or Error, its error the parse error), or nothing when MSH-15 suppresses
/// it. Where MSH and its delimiters are readable, the ACK uses them, swaps MSH-3/4 with MSH-5/6
/// and echoes MSH-10 in MSA-2, so the sender can match the rejection to its message; a missing
/// MSH-11 is written `P` and an unsupported MSH-12 `2.5`, so the ACK itself is well formed.
/// Otherwise it falls back to [`build_unparsed`].
pub fn build_rejection(payload: &[u8], request: &AckRequest<'_>, out: &mut Vec<u8>) -> AckOutcome {
    build_rejection_of(Message::parse_header(payload).ok().as_ref(), request, out)
}

/// [`build_rejection`] for a payload whose header was already read (`header`, as
/// [`Message::parse_header`] reads it; `None` when it has no usable MSH): nothing is scanned
/// again.
pub fn build_rejection_of(
    header: Option<&Message<'_>>,
    request: &AckRequest<'_>,
    out: &mut Vec<u8>,
) -> AckOutcome {
    let Some(message) = header else {
        let bytes = build_unparsed(request, out);
        return AckOutcome::Written {
            code: AckCode::AR,
            bytes,
        };
    };
    let payload = message.bytes();
    let Some(code) = ack_code(message, request.disposition) else {
        return AckOutcome::Suppressed;
    };
    let start = out.len();
    let mut header = Header::of(message, request);
    if header.processing_id.is_empty() {
        header.processing_id = b"P";
    }
    if !message.version_supported() {
        header.version_field = b"2.5";
    }
    if !header.character_set.is_empty() && simdutf8::basic::from_utf8(payload).is_err() {
        // The payload broke its declared charset; an ACK echoing its bytes would too.
        header.character_set = b"";
    }
    let (d, control_id) = (&header.delimiters, message.control_id());
    out.reserve(header.size_hint(request) + control_id.len());
    write_msh(out, &header);
    write_msa(out, d, code, control_id, request.text);
    let error = error_of(request).unwrap_or(ERROR_DEFAULT);
    write_err(out, d, ErrForm::of(message), &error, ErrText::of(request));
    #[cfg(debug_assertions)]
    debug_check(&out[start..], d, code, control_id);
    let bytes = out.len() - start;
    AckOutcome::Written { code, bytes }
}

/// Appends a best-effort AR for a payload with no usable MSH: default delimiters, version 2.5,
/// empty MSA-2 (the control id could not be read). Returns the bytes appended.
///
/// `request.disposition` is ignored (there is nothing to accept); the ERR segment carries
/// `request.error`, or code 100 (segment sequence error: no MSH where it must be) without one.
pub fn build_unparsed(request: &AckRequest<'_>, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    let header = Header {
        delimiters: Delimiters::default(),
        sending_application: b"",
        sending_facility: b"",
        receiving_application: b"",
        receiving_facility: b"",
        timestamp: request.timestamp,
        trigger: None,
        control_id: request.control_id,
        processing_id: b"P",
        version_field: b"2.5",
        character_set: b"",
    };
    out.reserve(header.size_hint(request));
    write_msh(out, &header);
    write_msa(out, &header.delimiters, AckCode::AR, b"", request.text);
    let error = request.error.unwrap_or(ERROR_UNPARSED_DEFAULT);
    write_err(
        out,
        &header.delimiters,
        ErrForm::Erl,
        &error,
        ErrText::of(request),
    );
    #[cfg(debug_assertions)]
    debug_check(&out[start..], &header.delimiters, AckCode::AR, b"");
    out.len() - start
}

/// The MSA-1 code for `disposition`, or `None` when enhanced mode suppresses the ACK.
///
/// HL7 v2 §2.9.2/§2.9.3: a message is in enhanced mode when MSH-15 or MSH-16 is valued; then
/// the receiver sends a commit ACK (CA/CE/CR) as MSH-15 (table 0155) asks: AL always (also when
/// MSH-15 is empty but MSH-16 is valued), NE never, ER only on error/reject, SU only on success.
/// An unknown MSH-15 value is answered like AL: a sender waiting for an ACK it cannot get would
/// time out and resend, while an unexpected ACK is harmless.
fn ack_code(message: &Message<'_>, disposition: Disposition) -> Option<AckCode> {
    let accept_type = first_component(message.accept_ack_type(), message.delimiters());
    if accept_type.is_empty() && message.application_ack_type().is_empty() {
        return Some(match disposition {
            Disposition::Accept => AckCode::AA,
            Disposition::Error => AckCode::AE,
            Disposition::Reject => AckCode::AR,
        });
    }
    let code = match disposition {
        Disposition::Accept => AckCode::CA,
        Disposition::Error => AckCode::CE,
        Disposition::Reject => AckCode::CR,
    };
    let send = match accept_type {
        b"NE" => false,
        b"ER" => disposition != Disposition::Accept,
        b"SU" => disposition == Disposition::Accept,
        _ => true,
    };
    send.then_some(code)
}

/// The ERR segment to write: the request's, or the default for a non-accept disposition.
fn error_of(request: &AckRequest<'_>) -> Option<AckError> {
    match (request.error, request.disposition) {
        (Some(error), _) => Some(error),
        (None, Disposition::Accept) => None,
        (None, Disposition::Error | Disposition::Reject) => Some(ERROR_DEFAULT),
    }
}

/// `field` up to its first component separator.
fn first_component<'f>(field: &'f [u8], delimiters: &Delimiters) -> &'f [u8] {
    match field.iter().position(|&b| b == delimiters.component) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// How MSH-9 of the ACK is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Trigger<'h> {
    /// MSH-9.2 of the message, raw (may be empty).
    event: &'h [u8],
    /// Whether MSH-9.3 (message structure, `ACK`) exists in this version (2.3.1 and later).
    structure: bool,
}

/// The MSH fields of an ACK, as they are written.
struct Header<'h> {
    /// The sender's delimiters.
    delimiters: Delimiters,
    /// ACK MSH-3: the message's MSH-5.
    sending_application: &'h [u8],
    /// ACK MSH-4: the message's MSH-6.
    sending_facility: &'h [u8],
    /// ACK MSH-5: the message's MSH-3.
    receiving_application: &'h [u8],
    /// ACK MSH-6: the message's MSH-4.
    receiving_facility: &'h [u8],
    /// ACK MSH-7 (escaped when written).
    timestamp: &'h [u8],
    /// MSH-9 beyond `ACK`; `None` writes `ACK` alone.
    trigger: Option<Trigger<'h>>,
    /// ACK MSH-10 (escaped when written).
    control_id: &'h [u8],
    /// MSH-11, whole field.
    processing_id: &'h [u8],
    /// MSH-12, whole field.
    version_field: &'h [u8],
    /// MSH-18, written (after empty MSH-13..17) when not empty.
    character_set: &'h [u8],
}

impl<'h> Header<'h> {
    /// The header of the ACK answering `message`.
    fn of(message: &Message<'h>, request: &AckRequest<'h>) -> Self {
        Header {
            delimiters: *message.delimiters(),
            sending_application: message.receiving_application(),
            sending_facility: message.receiving_facility(),
            receiving_application: message.sending_application(),
            receiving_facility: message.sending_facility(),
            timestamp: request.timestamp,
            trigger: Some(Trigger {
                event: message.trigger_event(),
                structure: has_message_structure(message),
            }),
            control_id: request.control_id,
            processing_id: message.processing_id(),
            version_field: message.version_field(),
            character_set: message.character_set_field(),
        }
    }

    /// An upper bound of the ACK's size for this header, except the echoed MSA-2 (escaping may
    /// still grow the timestamp or control id beyond it in pathological cases; `out` then grows).
    fn size_hint(&self, request: &AckRequest<'_>) -> usize {
        let echoed = self.sending_application.len()
            + self.sending_facility.len()
            + self.receiving_application.len()
            + self.receiving_facility.len()
            + self.trigger.map_or(0, |t| t.event.len())
            + self.processing_id.len()
            + self.version_field.len()
            + self.character_set.len();
        // MSA-3 and ERR-8 each escape at most ACK_TEXT_BYTES_MAX raw bytes (an escape is at
        // most 5 bytes per raw byte, `\X0D\`) before being cut back.
        let text = request.text.map_or(0, |t| {
            t.len().min(ACK_TEXT_BYTES_MAX) * 4 + ACK_TEXT_BYTES_MAX
        });
        ACK_FIXED_BYTES + echoed + 3 * (self.timestamp.len() + self.control_id.len()) + text
    }
}

/// Whether MSH-9.3 (message structure) exists in the message's version: it was added in 2.3.1
/// (HL7 v2.3.1 §2.24.1.9); before, MSH-9 had two components.
fn has_message_structure(message: &Message<'_>) -> bool {
    let (major, minor) = message.version_number();
    if (major, minor) != (2, 3) {
        return (major, minor) > (2, 3);
    }
    // `2.3.n` with n ≥ 1 is 2.3.1 or later.
    let version = message.version();
    version
        .get(4..)
        .is_some_and(|patch| patch.iter().any(|&b| b.is_ascii_digit() && b != b'0'))
}

/// Writes the MSH segment and its terminator.
fn write_msh(out: &mut Vec<u8>, header: &Header<'_>) {
    let d = &header.delimiters;
    out.extend_from_slice(b"MSH");
    out.push(d.field);
    out.extend_from_slice(&[d.component, d.repetition, d.escape, d.subcomponent]);
    if let Some(truncation) = d.truncation {
        out.push(truncation);
    }
    for echoed in [
        header.sending_application,
        header.sending_facility,
        header.receiving_application,
        header.receiving_facility,
    ] {
        out.push(d.field);
        out.extend_from_slice(echoed);
    }
    out.push(d.field);
    d.escape_into(header.timestamp, out);
    // MSH-8 (security) stays empty.
    out.extend_from_slice(&[d.field, d.field]);
    write_message_type(out, d, header.trigger);
    out.push(d.field);
    d.escape_into(header.control_id, out);
    out.push(d.field);
    out.extend_from_slice(header.processing_id);
    out.push(d.field);
    out.extend_from_slice(header.version_field);
    if !header.character_set.is_empty() {
        // MSH-13..17 empty, then MSH-18: an ACK is not sequenced and is never acknowledged.
        out.extend_from_slice(&[d.field; 6]);
        out.extend_from_slice(header.character_set);
    }
    out.push(b'\r');
}

/// Writes MSH-9: `ACK^<trigger>^ACK` (§2.14.9.9: an ACK echoes the trigger event it answers,
/// structure `ACK`), `ACK^<trigger>` before 2.3.1. With an empty trigger the empty component is
/// kept when a structure follows (`ACK^^ACK`, MSH-9.3 is required from 2.5) and dropped before
/// 2.3.1 (`ACK`).
fn write_message_type(out: &mut Vec<u8>, d: &Delimiters, trigger: Option<Trigger<'_>>) {
    out.extend_from_slice(b"ACK");
    let Some(trigger) = trigger else { return };
    if trigger.structure {
        out.push(d.component);
        out.extend_from_slice(trigger.event);
        out.push(d.component);
        out.extend_from_slice(b"ACK");
    } else if !trigger.event.is_empty() {
        out.push(d.component);
        out.extend_from_slice(trigger.event);
    }
}

/// Writes the MSA segment: MSA-1 code, MSA-2 the answered control id as it came, and MSA-3
/// (deprecated since v2.4 in favour of ERR, but still read by many senders) when text is given.
fn write_msa(
    out: &mut Vec<u8>,
    d: &Delimiters,
    code: AckCode,
    control_id: &[u8],
    text: Option<&[u8]>,
) {
    out.extend_from_slice(b"MSA");
    out.push(d.field);
    out.extend_from_slice(code.as_bytes());
    out.push(d.field);
    out.extend_from_slice(control_id);
    if let Some(text) = text {
        out.push(d.field);
        write_text(out, d, text);
    }
    out.push(b'\r');
}

/// Which ERR layout a version uses (HL7 v2 §2.14.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrForm {
    /// Before v2.5: ERR-1, ELD = segment^sequence^field^code (a CE in subcomponents).
    Eld,
    /// v2.5 and later: ERR-2 location (ERL), ERR-3 code (CWE), ERR-4 severity, ERR-8 text.
    Erl,
}

impl ErrForm {
    /// The form the message's version uses.
    fn of(message: &Message<'_>) -> Self {
        if message.version_number() >= (2, 5) {
            ErrForm::Erl
        } else {
            ErrForm::Eld
        }
    }
}

/// The texts of an ERR segment (v2.5 and later), written escaped.
#[derive(Clone, Copy, Debug)]
struct ErrText<'t> {
    /// ERR-5, application error code: what decided the answer (a rule's name).
    application_error: Option<&'t [u8]>,
    /// ERR-8, user message (the MSA-3 text).
    text: Option<&'t [u8]>,
}

impl<'t> ErrText<'t> {
    /// The request's text alone.
    fn of(request: &AckRequest<'t>) -> Self {
        ErrText {
            application_error: None,
            text: request.text,
        }
    }
}

/// Writes the ERR segment in the version's form.
fn write_err(out: &mut Vec<u8>, d: &Delimiters, form: ErrForm, error: &AckError, err: ErrText<'_>) {
    out.extend_from_slice(b"ERR");
    out.push(d.field);
    match form {
        ErrForm::Eld => write_eld(out, d, error),
        ErrForm::Erl => {
            // ERR-1 is empty (retained for backward compatibility only).
            out.push(d.field);
            if let Some(location) = &error.location {
                write_erl(out, d, location);
            }
            out.push(d.field);
            write_code(out, d, d.component, error.code);
            out.push(d.field);
            out.push(error.severity.as_byte());
            if let Some(name) = err.application_error {
                // ERR-5, application error code (CWE): its identifier only.
                out.push(d.field);
                write_text(out, d, name);
            }
            if let Some(text) = err.text {
                // ERR-6..7 empty (ERR-5 too unless written above), ERR-8 user message.
                let empty = if err.application_error.is_some() {
                    3
                } else {
                    4
                };
                out.extend_from_slice(&[d.field; 4][..empty]);
                write_text(out, d, text);
            }
        }
    }
    out.push(b'\r');
}

/// Writes ERR-1 (ELD, before v2.5): `segment^sequence^field^code&text&HL70357`.
fn write_eld(out: &mut Vec<u8>, d: &Delimiters, error: &AckError) {
    if let Some(location) = &error.location {
        out.extend_from_slice(&location.segment);
        out.push(d.component);
        write_number_nonzero(out, location.segment_sequence);
        out.push(d.component);
        write_number_nonzero(out, location.field);
    } else {
        out.extend_from_slice(&[d.component, d.component]);
    }
    out.push(d.component);
    write_code(out, d, d.subcomponent, error.code);
}

/// Writes ERR-2 (ERL): segment^sequence^field^repetition^component^subcomponent, a zero
/// written as an empty component and trailing empty components left out.
fn write_erl(out: &mut Vec<u8>, d: &Delimiters, location: &Location) {
    out.extend_from_slice(&location.segment);
    let parts = [
        location.segment_sequence,
        location.field,
        location.repetition,
        location.component,
        location.subcomponent,
    ];
    let given = parts
        .iter()
        .rposition(|&p| p != 0)
        .map_or(0, |last| last + 1);
    for &part in &parts[..given] {
        out.push(d.component);
        write_number_nonzero(out, part);
    }
}

/// Writes a table 0357 coded value, `code<sep>text<sep>HL70357`, with `separator` the component
/// separator (ERR-3, a CWE) or the subcomponent separator (ERR-1.4, a CE inside a component).
fn write_code(out: &mut Vec<u8>, d: &Delimiters, separator: u8, code: ErrorCode) {
    write_number(out, code.as_u16());
    out.push(separator);
    // The table texts contain spaces, which a sender may use as a delimiter.
    d.escape_into(code.text().as_bytes(), out);
    out.push(separator);
    d.escape_into(TABLE_0357, out);
}

/// Writes `text` escaped, cut to [`ACK_TEXT_BYTES_MAX`] bytes.
fn write_text(out: &mut Vec<u8>, d: &Delimiters, text: &[u8]) {
    let start = out.len();
    // Escaping never shrinks text, so escaping more than the limit in raw bytes is wasted.
    d.escape_into(&text[..text.len().min(ACK_TEXT_BYTES_MAX)], out);
    let cut = text_cut(&out[start..], d.escape, ACK_TEXT_BYTES_MAX);
    out.truncate(start + cut);
}

/// Where to cut escaped text to at most `max` bytes: at the end of a whole unit, a unit being
/// an escape sequence (HL7 v2 §2.7: the escape character opens and closes each one) or a UTF-8
/// character, so the cut text still decodes and stays valid UTF-8.
fn text_cut(escaped: &[u8], escape: u8, max: usize) -> usize {
    if escaped.len() <= max {
        return escaped.len();
    }
    let mut at = 0;
    loop {
        let unit = text_unit_len(&escaped[at..], escape);
        if at + unit > max {
            return at;
        }
        at += unit;
    }
}

/// Length of the unit that starts `rest` (not empty): an escape sequence up to its closing
/// escape character, a UTF-8 character (lead byte and the continuation bytes that follow it),
/// or one byte.
fn text_unit_len(rest: &[u8], escape: u8) -> usize {
    let lead = rest[0];
    if lead == escape {
        return match rest[1..].iter().position(|&b| b == escape) {
            Some(close) => close + 2,
            None => rest.len(),
        };
    }
    let expected = match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    };
    1 + rest[1..]
        .iter()
        .take(expected - 1)
        .take_while(|&&b| b & 0xC0 == 0x80 && b != escape)
        .count()
}

/// Writes `n` in decimal, or nothing for 0 (a component not given).
fn write_number_nonzero(out: &mut Vec<u8>, n: u16) {
    if n != 0 {
        write_number(out, n);
    }
}

/// Writes `n` in decimal without formatting machinery.
fn write_number(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Debug builds: the ACK re-parses with the sender's delimiters, and MSA-1/MSA-2 are right.
#[cfg(debug_assertions)]
fn debug_check(ack: &[u8], delimiters: &Delimiters, code: AckCode, control_id: &[u8]) {
    use crate::hl7::ParseOptions;
    let parsed = Message::parse(ack, &ParseOptions::default());
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(error) => panic!("built ACK does not re-parse: {error}"),
    };
    assert_eq!(
        parsed.delimiters(),
        delimiters,
        "ACK delimiters differ from the sender's"
    );
    let msa = parsed.segment(b"MSA", 1);
    assert!(msa.is_some(), "built ACK has no MSA segment");
    if let Some(msa) = msa {
        assert_eq!(
            msa.field(1),
            code.as_bytes(),
            "ACK MSA-1 is not the code built"
        );
        assert_eq!(
            msa.field(2),
            control_id,
            "ACK MSA-2 is not the message's MSH-10"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7::ParseOptions;

    const TIMESTAMP: &[u8] = b"20261126025400+0000";
    const ACK_ID: &[u8] = b"ACK00001";

    /// An ADT^A01 in original mode with MSH-12 `version`.
    fn adt(version: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20260101120000||ADT^A01^ADT_A01|MSG00001|P|{version}\r\
             EVN|A01|20260101120000\rPID|1||123^^^HOSP^MR||DOE^JOHN\r"
        )
        .into_bytes()
    }

    /// An ADT^A01 v2.5 in enhanced mode with MSH-15 `accept` and MSH-16 `application`.
    fn adt_enhanced(accept: &str, application: &str) -> Vec<u8> {
        format!(
            "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20260101120000||ADT^A01^ADT_A01|MSG00001|P|2.5|||{accept}|{application}\r\
             PID|1||123\r"
        )
        .into_bytes()
    }

    fn request(disposition: Disposition) -> AckRequest<'static> {
        AckRequest {
            disposition,
            text: None,
            error: None,
            timestamp: TIMESTAMP,
            control_id: ACK_ID,
        }
    }

    fn parse(bytes: &[u8]) -> Message<'_> {
        Message::parse(bytes, &ParseOptions::default()).expect("test message parses")
    }

    /// Builds the ACK of `message` and returns the outcome and the ACK as text.
    fn ack(message: &[u8], request: &AckRequest<'_>) -> (AckOutcome, String) {
        let mut out = b"previous".to_vec();
        let outcome = build(&parse(message), request, &mut out);
        assert!(
            out.starts_with(b"previous"),
            "build must append, not overwrite"
        );
        let written = String::from_utf8(out[8..].to_vec()).expect("test ACKs are UTF-8");
        if let AckOutcome::Written { bytes, .. } = outcome {
            assert_eq!(bytes, written.len(), "reported size is the size appended");
        } else {
            assert!(written.is_empty(), "a suppressed ACK writes nothing");
        }
        (outcome, written)
    }

    const MSH_25: &str = "MSH|^~\\&|RECVAPP|RECVFAC|SENDAPP|SENDFAC|20261126025400+0000||ACK^A01^ACK|ACK00001|P|2.5\r";

    #[test]
    fn original_mode_accept_is_aa() {
        let (outcome, text) = ack(&adt("2.5"), &request(Disposition::Accept));
        assert_eq!(
            outcome,
            AckOutcome::Written {
                code: AckCode::AA,
                bytes: text.len()
            }
        );
        assert_eq!(text, format!("{MSH_25}MSA|AA|MSG00001\r"));
    }

    #[test]
    fn original_mode_error_is_ae_with_err() {
        let location = Location {
            segment: *b"PID",
            segment_sequence: 1,
            field: 3,
            repetition: 0,
            component: 0,
            subcomponent: 0,
        };
        let request = AckRequest {
            text: Some(b"missing id"),
            error: Some(AckError {
                code: ErrorCode::RequiredFieldMissing,
                location: Some(location),
                severity: Severity::Error,
            }),
            ..request(Disposition::Error)
        };
        let (_, text) = ack(&adt("2.5"), &request);
        assert_eq!(
            text,
            format!(
                "{MSH_25}MSA|AE|MSG00001|missing id\r\
                 ERR||PID^1^3|101^Required field missing^HL70357|E||||missing id\r"
            )
        );
    }

    #[test]
    fn original_mode_reject_without_error_is_ar_with_code_207() {
        let (outcome, text) = ack(&adt("2.5"), &request(Disposition::Reject));
        assert!(matches!(
            outcome,
            AckOutcome::Written {
                code: AckCode::AR,
                ..
            }
        ));
        assert_eq!(
            text,
            format!("{MSH_25}MSA|AR|MSG00001\rERR|||207^Application internal error^HL70357|E\r")
        );
    }

    #[test]
    fn accept_with_error_writes_err_with_its_severity() {
        let request = AckRequest {
            error: Some(AckError {
                code: ErrorCode::MessageAccepted,
                location: Some(Location::msh(18)),
                severity: Severity::Warning,
            }),
            ..request(Disposition::Accept)
        };
        let (_, text) = ack(&adt("2.6"), &request);
        assert!(
            text.ends_with("MSA|AA|MSG00001\rERR||MSH^1^18|0^Message accepted^HL70357|W\r"),
            "{text:?}"
        );
    }

    #[test]
    fn enhanced_mode_follows_msh15_for_every_disposition() {
        use AckCode::{CA, CE, CR};
        use Disposition::{Accept, Error, Reject};
        // (MSH-15, MSH-16, [expected for Accept, Error, Reject]); None = suppressed.
        let table: [(&str, &str, [Option<AckCode>; 3]); 6] = [
            ("AL", "", [Some(CA), Some(CE), Some(CR)]),
            ("NE", "", [None, None, None]),
            ("ER", "", [None, Some(CE), Some(CR)]),
            ("SU", "", [Some(CA), None, None]),
            ("", "AL", [Some(CA), Some(CE), Some(CR)]),
            ("NE", "AL", [None, None, None]),
        ];
        for (accept, application, expected) in table {
            let message = adt_enhanced(accept, application);
            for (disposition, expected) in [Accept, Error, Reject].into_iter().zip(expected) {
                let (outcome, text) = ack(&message, &request(disposition));
                match expected {
                    None => assert_eq!(outcome, AckOutcome::Suppressed, "{accept}/{application}"),
                    Some(code) => {
                        assert_eq!(
                            outcome,
                            AckOutcome::Written {
                                code,
                                bytes: text.len()
                            },
                            "MSH-15 {accept:?} MSH-16 {application:?} {disposition:?}"
                        );
                        let code = std::str::from_utf8(code.as_bytes()).expect("ASCII code");
                        assert!(
                            text.contains(&format!("\rMSA|{code}|MSG00001\r")),
                            "{text:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn enhanced_mode_exact_bytes_ca_ce_cr() {
        let message = adt_enhanced("AL", "NE");
        let (_, text) = ack(&message, &request(Disposition::Accept));
        assert_eq!(text, format!("{MSH_25}MSA|CA|MSG00001\r"));
        let (_, text) = ack(&message, &request(Disposition::Error));
        assert_eq!(
            text,
            format!("{MSH_25}MSA|CE|MSG00001\rERR|||207^Application internal error^HL70357|E\r")
        );
        let (_, text) = ack(&message, &request(Disposition::Reject));
        assert_eq!(
            text,
            format!("{MSH_25}MSA|CR|MSG00001\rERR|||207^Application internal error^HL70357|E\r")
        );
    }

    #[test]
    fn unknown_msh15_is_answered_like_al() {
        let (outcome, _) = ack(&adt_enhanced("XX", ""), &request(Disposition::Accept));
        assert!(matches!(
            outcome,
            AckOutcome::Written {
                code: AckCode::CA,
                ..
            }
        ));
    }

    #[test]
    fn custom_delimiters_with_truncation_character_are_copied() {
        let message =
            b"MSH!$*/%#!SAPP$X!SFAC!RAPP!RFAC!20260101!!ADT$A01$ADT_A01!C1!P!2.7\rPID!1\r";
        let (_, text) = ack(message, &request(Disposition::Accept));
        assert_eq!(
            text,
            "MSH!$*/%#!RAPP!RFAC!SAPP$X!SFAC!20261126025400+0000!!ACK$A01$ACK!ACK00001!P!2.7\r\
             MSA!AA!C1\r"
        );
    }

    #[test]
    fn custom_delimiters_in_err() {
        let message = b"MSH!$*/%!SAPP!SFAC!RAPP!RFAC!20260101!!ADT$A01!C1!P!2.3\r";
        let request = AckRequest {
            error: Some(AckError {
                code: ErrorCode::DataTypeError,
                location: Some(Location::msh(7)),
                severity: Severity::Error,
            }),
            ..request(Disposition::Reject)
        };
        let (_, text) = ack(message, &request);
        assert!(
            text.ends_with("MSA!AR!C1\rERR!MSH$1$7$102%Data type error%HL70357\r"),
            "{text:?}"
        );
    }

    #[test]
    fn v23_uses_err1_and_two_component_msh9() {
        let request = AckRequest {
            text: Some(b"bad"),
            error: Some(AckError {
                code: ErrorCode::RequiredFieldMissing,
                location: Some(Location::msh(10)),
                severity: Severity::Error,
            }),
            ..request(Disposition::Error)
        };
        let (_, text) = ack(&adt("2.3"), &request);
        assert_eq!(
            text,
            "MSH|^~\\&|RECVAPP|RECVFAC|SENDAPP|SENDFAC|20261126025400+0000||ACK^A01|ACK00001|P|2.3\r\
             MSA|AE|MSG00001|bad\rERR|MSH^1^10^101&Required field missing&HL70357\r"
        );
    }

    #[test]
    fn v23_err1_without_location_keeps_code_in_fourth_component() {
        let (_, text) = ack(&adt("2.4"), &request(Disposition::Reject));
        assert!(
            text.ends_with("ERR|^^^207&Application internal error&HL70357\r"),
            "{text:?}"
        );
    }

    #[test]
    fn msh9_structure_appears_from_231() {
        for (version, msh9) in [
            ("2.2", "|ACK^A01|"),
            ("2.3", "|ACK^A01|"),
            ("2.3.1", "|ACK^A01^ACK|"),
            ("2.4", "|ACK^A01^ACK|"),
            ("2.8", "|ACK^A01^ACK|"),
        ] {
            let (_, text) = ack(&adt(version), &request(Disposition::Accept));
            assert!(text.contains(msh9), "{version}: {text:?}");
        }
    }

    #[test]
    fn msh9_without_trigger() {
        let old = b"MSH|^~\\&|A|B|C|D|1||ADT|X1|P|2.2\r";
        let (_, text) = ack(old, &request(Disposition::Accept));
        assert!(text.contains("||ACK|ACK00001|"), "{text:?}");
        let new = b"MSH|^~\\&|A|B|C|D|1||ADT|X1|P|2.5\r";
        let (_, text) = ack(new, &request(Disposition::Accept));
        assert!(text.contains("||ACK^^ACK|ACK00001|"), "{text:?}");
    }

    #[test]
    fn v25_location_zeros_become_empty_components() {
        let request = AckRequest {
            error: Some(AckError {
                code: ErrorCode::TableValueNotFound,
                location: Some(Location {
                    segment: *b"OBX",
                    segment_sequence: 2,
                    field: 5,
                    repetition: 0,
                    component: 2,
                    subcomponent: 0,
                }),
                severity: Severity::Information,
            }),
            ..request(Disposition::Error)
        };
        let (_, text) = ack(&adt("2.5.1"), &request);
        assert!(
            text.ends_with("ERR||OBX^2^5^^2|103^Table value not found^HL70357|I\r"),
            "{text:?}"
        );
    }

    #[test]
    fn msh11_msh12_and_msh18_are_echoed_whole() {
        let message = b"MSH|^~\\&|A|B|C|D|1||ORU^R01^ORU_R01|X1|P^T|2.5.1^USA||||||UNICODE UTF-8\r";
        let (_, text) = ack(message, &request(Disposition::Accept));
        assert_eq!(
            text,
            "MSH|^~\\&|C|D|A|B|20261126025400+0000||ACK^R01^ACK|ACK00001|P^T|2.5.1^USA||||||UNICODE UTF-8\r\
             MSA|AA|X1\r"
        );
    }

    #[test]
    fn msa2_echoes_control_id_byte_for_byte() {
        let message = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|  id\\E\\with escape |P|2.5\r";
        let (_, text) = ack(message, &request(Disposition::Accept));
        assert!(
            text.ends_with("\rMSA|AA|  id\\E\\with escape \r"),
            "{text:?}"
        );
    }

    /// Every delimiter, CR and LF in a reason stays inside MSA-3 and ERR-8.
    #[test]
    fn text_cannot_inject_fields_or_segments() {
        let evil: &[u8] = b"a|MSA|AA|x^y~z\\E\\&w\rERR|||0\nPID|1\r\n#end";
        for message in [
            adt("2.5").as_slice(),
            b"MSH|^~\\&#|A|B|C|D|1||ADT^A01|X1|P|2.7\r",
        ] {
            let request = AckRequest {
                text: Some(evil),
                error: Some(AckError {
                    code: ErrorCode::ApplicationInternalError,
                    location: None,
                    severity: Severity::Error,
                }),
                ..request(Disposition::Error)
            };
            let mut out = Vec::new();
            let source = parse(message);
            build(&source, &request, &mut out);
            let parsed = parse(&out);
            let ids: Vec<&[u8]> = parsed.segments().map(|s| s.id()).collect();
            assert_eq!(ids, [b"MSH", b"MSA", b"ERR"]);
            let d = parsed.delimiters();
            let msa = parsed.segment(b"MSA", 1).expect("MSA");
            assert_eq!(msa.field(4), b"", "no MSA-4 injected");
            let msa3 = msa.field(3);
            for delimiter in [d.component, d.repetition, d.subcomponent, b'\r', b'\n'] {
                assert!(
                    !msa3.contains(&delimiter),
                    "raw {delimiter} in MSA-3 {msa3:?}"
                );
            }
            assert_eq!(d.unescape(msa3).as_ref(), evil, "MSA-3 decodes to the text");
            let err = parsed.segment(b"ERR", 1).expect("ERR");
            assert_eq!(err.field(8), msa3);
            assert_eq!(err.field(9), b"", "no ERR-9 injected");
        }
    }

    #[test]
    fn timestamp_and_ack_control_id_are_escaped() {
        let request = AckRequest {
            timestamp: b"2026|x",
            control_id: b"id^1",
            ..request(Disposition::Accept)
        };
        let mut out = Vec::new();
        build(&parse(&adt("2.5")), &request, &mut out);
        let parsed = parse(&out);
        assert_eq!(parsed.msh(12), b"2.5");
        let d = parsed.delimiters();
        assert_eq!(d.unescape(parsed.msh(7)).as_ref(), b"2026|x");
        assert_eq!(d.unescape(parsed.control_id()).as_ref(), b"id^1");
    }

    #[test]
    fn long_text_is_cut_to_the_limit() {
        let long = [b'a'; ACK_TEXT_BYTES_MAX + 100];
        let request = AckRequest {
            text: Some(&long),
            ..request(Disposition::Reject)
        };
        let mut out = Vec::new();
        build(&parse(&adt("2.5")), &request, &mut out);
        let parsed = parse(&out);
        let msa3 = parsed.segment(b"MSA", 1).expect("MSA").field(3);
        assert_eq!(msa3, &long[..ACK_TEXT_BYTES_MAX]);
        let err8 = parsed.segment(b"ERR", 1).expect("ERR").field(8);
        assert_eq!(err8, &long[..ACK_TEXT_BYTES_MAX]);
    }

    #[test]
    fn cut_never_splits_an_escape_sequence() {
        let mut text = vec![b'a'; ACK_TEXT_BYTES_MAX - 1];
        text.extend_from_slice(b"|bbbb");
        let request = AckRequest {
            text: Some(&text),
            ..request(Disposition::Accept)
        };
        let mut out = Vec::new();
        build(&parse(&adt("2.5")), &request, &mut out);
        let parsed = parse(&out);
        let msa3 = parsed.segment(b"MSA", 1).expect("MSA").field(3);
        assert_eq!(
            msa3,
            &text[..ACK_TEXT_BYTES_MAX - 1],
            "the `\\F\\` is dropped whole"
        );
    }

    #[test]
    fn text_cut_rules() {
        assert_eq!(text_cut(b"abc", b'\\', 5), 3);
        assert_eq!(text_cut(b"abcdef", b'\\', 5), 5);
        assert_eq!(
            text_cut(b"ab\\F\\cd", b'\\', 4),
            2,
            "inside an escape: cut before it"
        );
        assert_eq!(text_cut(b"ab\\F\\cd", b'\\', 5), 5, "right after an escape");
        assert_eq!(text_cut(b"ab\\F\\\\S\\", b'\\', 6), 5);
        assert_eq!(
            text_cut("aé".as_bytes(), b'\\', 2),
            1,
            "not inside a UTF-8 character"
        );
        assert_eq!(text_cut("a€b".as_bytes(), b'\\', 3), 1);
        assert_eq!(text_cut("a€b".as_bytes(), b'\\', 4), 4);
        assert_eq!(text_cut("a€b".as_bytes(), b'\\', 5), 5);
        // An escape character that is a UTF-8 continuation byte: still whole sequences.
        assert_eq!(text_cut(b"a\xa9F\xa9\xa9S\xa9", 0xa9, 5), 4);
        assert_eq!(
            text_cut(b"\xc3\xa9F\xa9b", 0xa9, 2),
            1,
            "a lead byte before an escape"
        );
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0u16, 7, 10, 100, 207, 999, 1000, 65535] {
            let mut out = Vec::new();
            write_number(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    /// The single reserve covers the worst escaped text, so `out` is never grown twice.
    #[test]
    fn one_reserve_covers_the_worst_text() {
        let worst = [b'|'; ACK_TEXT_BYTES_MAX * 2];
        let request = AckRequest {
            text: Some(&worst),
            ..request(Disposition::Reject)
        };
        let source = adt("2.5");
        let message = parse(&source);
        let hint = Header::of(&message, &request).size_hint(&request) + message.control_id().len();
        let mut out = Vec::new();
        build(&message, &request, &mut out);
        // A second growth would at least double the capacity reserved first.
        assert!(
            out.capacity() >= hint && out.capacity() < 2 * hint,
            "out grew twice"
        );
        let pointer = out.as_ptr();
        out.clear();
        build(&message, &request, &mut out);
        assert_eq!(out.as_ptr(), pointer, "a reused buffer is not reallocated");
    }

    #[test]
    fn unparsed_payload_gets_a_default_ar() {
        let request = AckRequest {
            text: Some(b"not HL7"),
            ..request(Disposition::Accept)
        };
        let mut out = Vec::new();
        let bytes = build_unparsed(&request, &mut out);
        assert_eq!(bytes, out.len());
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "MSH|^~\\&|||||20261126025400+0000||ACK|ACK00001|P|2.5\r\
             MSA|AR||not HL7\rERR|||100^Segment sequence error^HL70357|E||||not HL7\r"
        );
    }

    #[test]
    fn unparsed_payload_carries_the_given_error() {
        let request = AckRequest {
            error: Some(AckError {
                code: ErrorCode::RequiredFieldMissing,
                location: Some(Location::msh(9)),
                severity: Severity::Error,
            }),
            ..request(Disposition::Reject)
        };
        let mut out = b"x".to_vec();
        let bytes = build_unparsed(&request, &mut out);
        assert_eq!(bytes, out.len() - 1);
        assert!(out.ends_with(b"MSA|AR|\rERR||MSH^1^9|101^Required field missing^HL70357|E\r"));
    }

    /// The rejection of `payload` for `error` and its text.
    fn rejection(
        payload: &[u8],
        error: ErrorCode,
        location: Option<Location>,
    ) -> (AckOutcome, String) {
        let request = AckRequest {
            error: Some(AckError {
                code: error,
                location,
                severity: Severity::Error,
            }),
            ..request(Disposition::Reject)
        };
        let mut out = Vec::new();
        let outcome = build_rejection(payload, &request, &mut out);
        (outcome, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn rejection_echoes_control_id_with_the_senders_delimiters() {
        let payload = b"MSH#$*@%#SA#SF#RA#RF#20260101##ADT$A01#CTRL-9##2.4\rPID#1\r";
        let (outcome, text) = rejection(
            payload,
            ErrorCode::RequiredFieldMissing,
            Some(Location::msh(11)),
        );
        assert!(matches!(
            outcome,
            AckOutcome::Written {
                code: AckCode::AR,
                ..
            }
        ));
        assert_eq!(
            text,
            "MSH#$*@%#RA#RF#SA#SF#20261126025400+0000##ACK$A01$ACK#ACK00001#P#2.4\r\
             MSA#AR#CTRL-9\rERR#MSH$1$11$101%Required field missing%HL70357\r"
        );
    }

    #[test]
    fn rejection_of_an_unsupported_version_answers_in_25() {
        let payload = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|V-1|P|9.9\r";
        let (_, text) = rejection(
            payload,
            ErrorCode::UnsupportedVersionId,
            Some(Location::msh(12)),
        );
        assert!(text.contains("|ACK^A01^ACK|ACK00001|P|2.5\r"), "{text}");
        assert!(text.contains("MSA|AR|V-1\r"), "{text}");
        assert!(
            text.contains("ERR||MSH^1^12|203^Unsupported version id^HL70357|E\r"),
            "{text}"
        );
    }

    #[test]
    fn rejection_follows_msh15_in_enhanced_mode() {
        let never = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01||P|2.5|||NE|AL\r";
        let (outcome, text) = rejection(never, ErrorCode::RequiredFieldMissing, None);
        assert_eq!((outcome, text.as_str()), (AckOutcome::Suppressed, ""));
        let errors = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01||P|2.5|||ER|AL\r";
        let (outcome, text) = rejection(errors, ErrorCode::RequiredFieldMissing, None);
        assert!(
            matches!(
                outcome,
                AckOutcome::Written {
                    code: AckCode::CR,
                    ..
                }
            ),
            "{text}"
        );
    }

    #[test]
    fn rejection_without_usable_msh_falls_back_to_the_default_ar() {
        for payload in [&b"not HL7"[..], b"MSH||||\r", b"MSH|^^~\\&|A\r", b""] {
            let (outcome, text) = rejection(payload, ErrorCode::SegmentSequenceError, None);
            assert!(matches!(
                outcome,
                AckOutcome::Written {
                    code: AckCode::AR,
                    ..
                }
            ));
            assert!(text.starts_with("MSH|^~\\&|||||"), "{text}");
            assert!(text.contains("MSA|AR|\r"), "{text}");
        }
    }

    #[test]
    fn rejection_of_broken_utf8_does_not_echo_msh18() {
        let mut payload =
            b"MSH|^~\\&|A\xC3|B|C|D|20260101||ADT^A01|U-1|P|2.5||||||UNICODE UTF-8\r".to_vec();
        payload.push(b'\r');
        let (_, text) = rejection(&payload, ErrorCode::DataTypeError, None);
        assert!(!text.contains("UTF-8"), "{text}");
        assert!(text.contains("MSA|AR|U-1\r"), "{text}");
    }
}
