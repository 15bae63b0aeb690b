//! The zero-copy message view: MSH header, segments, and path access.

use super::{Delimiters, ParseError, ParseErrorKind, Path};

/// Character set of a message (MSH-18), as far as parsing cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Charset {
    /// ASCII (MSH-18 absent or `ASCII`): taken as bytes.
    #[default]
    Ascii,
    /// `UNICODE UTF-8`: validated with simdutf8.
    Utf8,
    /// `8859/1` … `8859/15`: taken as bytes.
    Iso8859,
    /// Any other declared set: taken as bytes.
    Other,
}

/// Options that decide how a payload is parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Charset assumed when MSH-18 is absent (DEFAULT_CHARACTER_SET).
    pub default_charset: Charset,
}

/// A parsed HL7 v2 message borrowing its payload.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    /// The whole payload.
    bytes: &'a [u8],
    /// The delimiters declared in MSH-1/MSH-2.
    delimiters: Delimiters,
}

impl<'a> Message<'a> {
    /// Parses `payload`: finds MSH, reads the delimiters, checks the required header fields
    /// (MSH-9, MSH-10, MSH-11, MSH-12), the version and, where UTF-8 is declared, the encoding.
    pub fn parse(payload: &'a [u8], options: &ParseOptions) -> Result<Self, ParseError> {
        let _ = options;
        Err(ParseError {
            kind: ParseErrorKind::NoMsh,
            offset: 0,
        })
        .map(|()| Message {
            bytes: payload,
            delimiters: Delimiters::default(),
        })
    }

    /// The whole payload.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The delimiters this message declares.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    /// All segments in order (MSH first).
    pub fn segments(&self) -> Segments<'a> {
        Segments {
            rest: self.bytes,
            delimiters: self.delimiters,
        }
    }

    /// The `occurrence`-th (1-based) segment with id `id`.
    pub fn segment(&self, id: &[u8], occurrence: usize) -> Option<Segment<'a>> {
        let _ = (id, occurrence);
        None
    }

    /// The value at `path`, raw (escapes not decoded); `None` when absent.
    pub fn get(&self, path: &Path) -> Option<&'a [u8]> {
        let _ = path;
        None
    }

    /// Raw MSH-`n` with standard numbering (MSH-1 the field separator, MSH-2 the encoding
    /// characters); empty when absent.
    pub fn msh(&self, n: usize) -> &'a [u8] {
        let _ = n;
        &[]
    }

    /// MSH-3, sending application (whole field).
    pub fn sending_application(&self) -> &'a [u8] {
        self.msh(3)
    }
    /// MSH-4, sending facility (whole field).
    pub fn sending_facility(&self) -> &'a [u8] {
        self.msh(4)
    }
    /// MSH-5, receiving application (whole field).
    pub fn receiving_application(&self) -> &'a [u8] {
        self.msh(5)
    }
    /// MSH-6, receiving facility (whole field).
    pub fn receiving_facility(&self) -> &'a [u8] {
        self.msh(6)
    }
    /// MSH-9.1, message type, e.g. `ADT`.
    pub fn message_type(&self) -> &'a [u8] {
        &[]
    }
    /// MSH-9.2, trigger event, e.g. `A01`.
    pub fn trigger_event(&self) -> &'a [u8] {
        &[]
    }
    /// MSH-9.3, message structure, e.g. `ADT_A01`; empty when absent.
    pub fn message_structure(&self) -> &'a [u8] {
        &[]
    }
    /// MSH-10, message control id, byte for byte.
    pub fn control_id(&self) -> &'a [u8] {
        self.msh(10)
    }
    /// MSH-11, processing id (whole field, e.g. `P` or `P^T`).
    pub fn processing_id(&self) -> &'a [u8] {
        self.msh(11)
    }
    /// MSH-12, version id (whole field, e.g. `2.5.1` or `2.5^USA`).
    pub fn version_field(&self) -> &'a [u8] {
        self.msh(12)
    }
    /// MSH-12.1, the version number, e.g. `2.5.1`.
    pub fn version(&self) -> &'a [u8] {
        &[]
    }
    /// The version as (major, minor), e.g. (2, 5) for `2.5.1`; checked by `parse`.
    pub fn version_number(&self) -> (u8, u8) {
        (2, 0)
    }
    /// MSH-13, sequence number; empty when absent.
    pub fn sequence_number(&self) -> &'a [u8] {
        self.msh(13)
    }
    /// MSH-15, accept acknowledgment type; empty when absent.
    pub fn accept_ack_type(&self) -> &'a [u8] {
        self.msh(15)
    }
    /// MSH-16, application acknowledgment type; empty when absent.
    pub fn application_ack_type(&self) -> &'a [u8] {
        self.msh(16)
    }
    /// MSH-18, character set (whole field, first repetition); empty when absent.
    pub fn character_set_field(&self) -> &'a [u8] {
        self.msh(18)
    }
    /// The character set in force: MSH-18, or the default when absent.
    pub fn charset(&self) -> Charset {
        Charset::Ascii
    }
}

/// One segment: its id and fields.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// The segment's bytes, without its terminator.
    bytes: &'a [u8],
    /// The message's delimiters.
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    /// The segment id, e.g. `PID`.
    pub fn id(&self) -> &'a [u8] {
        &[]
    }
    /// The segment's bytes without its terminator.
    pub fn bytes(&self) -> &'a [u8] {
        let _ = self.delimiters;
        self.bytes
    }
    /// Raw field `n` (1-based; for MSH, standard MSH numbering); empty when absent.
    pub fn field(&self, n: usize) -> &'a [u8] {
        let _ = n;
        &[]
    }
}

/// Iterator over a message's segments (CR, LF or CRLF separated; empty lines skipped).
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    /// Bytes not yet iterated.
    rest: &'a [u8],
    /// The message's delimiters.
    delimiters: Delimiters,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;
    fn next(&mut self) -> Option<Segment<'a>> {
        let _ = (self.rest, self.delimiters);
        None
    }
}
