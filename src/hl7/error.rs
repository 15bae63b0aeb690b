//! Parse errors and the HL7 table 0357 codes they map to.

/// HL7 table 0357, "Message error condition codes".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// 0: Message accepted.
    MessageAccepted = 0,
    /// 100: Segment sequence error.
    SegmentSequenceError = 100,
    /// 101: Required field missing.
    RequiredFieldMissing = 101,
    /// 102: Data type error.
    DataTypeError = 102,
    /// 103: Table value not found.
    TableValueNotFound = 103,
    /// 200: Unsupported message type.
    UnsupportedMessageType = 200,
    /// 201: Unsupported event code.
    UnsupportedEventCode = 201,
    /// 202: Unsupported processing id.
    UnsupportedProcessingId = 202,
    /// 203: Unsupported version id.
    UnsupportedVersionId = 203,
    /// 204: Unknown key identifier.
    UnknownKeyIdentifier = 204,
    /// 205: Duplicate key identifier.
    DuplicateKeyIdentifier = 205,
    /// 206: Application record locked.
    ApplicationRecordLocked = 206,
    /// 207: Application internal error.
    ApplicationInternalError = 207,
}

impl ErrorCode {
    /// The numeric code, as written in ERR-3.1 (or ERR-1.4.1 before v2.5).
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// The text of the code in table 0357, as written in ERR-3.2.
    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::MessageAccepted => "Message accepted",
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }
}

/// Where in a message an error is (the ERL data type of ERR-2: segment id, segment sequence,
/// field position, field repetition, component, subcomponent). Zero means "not given".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Segment id, e.g. `*b"MSH"`.
    pub segment: [u8; 3],
    /// 1-based occurrence of the segment in the message.
    pub segment_sequence: u16,
    /// Field position (MSH numbering for MSH: MSH-10 is 10).
    pub field: u16,
    /// 1-based field repetition, 0 when not given.
    pub repetition: u16,
    /// 1-based component, 0 when not given.
    pub component: u16,
    /// 1-based subcomponent, 0 when not given.
    pub subcomponent: u16,
}

impl Location {
    /// The location of field `field` of the (first) MSH segment.
    pub const fn msh(field: u16) -> Self {
        Location {
            segment: *b"MSH",
            segment_sequence: 1,
            field,
            repetition: 0,
            component: 0,
            subcomponent: 0,
        }
    }
}

/// Why a payload is not a usable HL7 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// The payload does not start with an MSH segment (leading CR/LF are tolerated).
    NoMsh,
    /// MSH-1/MSH-2 are missing, duplicated, or use CR/LF as a delimiter.
    BadDelimiters,
    /// A required MSH field is empty or missing; holds the MSH field number (9, 10, 11 or 12).
    MissingField(u16),
    /// MSH-12 is not a version of the form `2.n` or `2.n.m`.
    MalformedVersion,
    /// MSH-12 is well formed but not a version mllpd speaks (2.1 to 2.9).
    UnsupportedVersion,
    /// MSH-18 declares UTF-8 but the payload is not valid UTF-8.
    InvalidUtf8,
}

/// A parse error: what, and the byte offset in the payload where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} at byte {offset}")]
pub struct ParseError {
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// Byte offset into the payload.
    pub offset: u32,
}

impl ParseError {
    /// The table 0357 code this error is reported as in an ERR segment.
    pub fn code(&self) -> ErrorCode {
        match self.kind {
            ParseErrorKind::NoMsh => ErrorCode::SegmentSequenceError,
            ParseErrorKind::BadDelimiters => ErrorCode::DataTypeError,
            ParseErrorKind::MissingField(_) => ErrorCode::RequiredFieldMissing,
            ParseErrorKind::MalformedVersion => ErrorCode::DataTypeError,
            ParseErrorKind::UnsupportedVersion => ErrorCode::UnsupportedVersionId,
            ParseErrorKind::InvalidUtf8 => ErrorCode::DataTypeError,
        }
    }

    /// The location this error is reported at in ERR-2, where one is known.
    pub fn location(&self) -> Option<Location> {
        match self.kind {
            ParseErrorKind::NoMsh => None,
            ParseErrorKind::BadDelimiters => Some(Location::msh(2)),
            ParseErrorKind::MissingField(field) => Some(Location::msh(field)),
            ParseErrorKind::MalformedVersion | ParseErrorKind::UnsupportedVersion => {
                Some(Location::msh(12))
            }
            ParseErrorKind::InvalidUtf8 => None,
        }
    }

    /// A short, content-free description for MSA-3 / ERR-8 and logs (never message bytes).
    pub fn text(&self) -> &'static str {
        match self.kind {
            ParseErrorKind::NoMsh => "message does not start with an MSH segment",
            ParseErrorKind::BadDelimiters => "MSH-1/MSH-2 delimiters are missing or invalid",
            ParseErrorKind::MissingField(_) => "required MSH field missing",
            ParseErrorKind::MalformedVersion => "MSH-12 version is malformed",
            ParseErrorKind::UnsupportedVersion => "MSH-12 version is not supported",
            ParseErrorKind::InvalidUtf8 => {
                "MSH-18 declares UTF-8 but the message is not valid UTF-8"
            }
        }
    }
}
