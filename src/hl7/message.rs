//! The zero-copy message view: MSH header, segments, and path access.
//!
//! `Message::parse` scans the MSH segment once and keeps the offsets of its field separators,
//! so header accessors are two array reads; body segments are found on demand with `memchr`.
//! Invariants: every slice handed out is a subslice of the payload; the MSH offsets are below
//! `bytes.len()` (payloads are bounded by `limits::FRAME_BYTES_MAX_MAX`, which fits in `u32`);
//! a parsed message has distinct, usable delimiters, non-empty MSH-9.1, MSH-10, MSH-11 and
//! MSH-12, a version 2.1 to 2.9.x, and, where UTF-8 is in force, valid UTF-8 throughout.

use super::delimiters::nth_part;
use super::scan;
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

impl Charset {
    /// The charset named by an MSH-18 value (HL7 table 0211); `None` when empty.
    pub fn from_msh18(value: &[u8]) -> Option<Charset> {
        if value.is_empty() {
            None
        } else if value.eq_ignore_ascii_case(b"UNICODE UTF-8")
            || value.eq_ignore_ascii_case(b"UTF-8")
        {
            Some(Charset::Utf8)
        } else if value.eq_ignore_ascii_case(b"ASCII") {
            Some(Charset::Ascii)
        } else if value.starts_with(b"8859/") {
            Some(Charset::Iso8859)
        } else {
            Some(Charset::Other)
        }
    }
}

/// Options that decide how a payload is parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Charset assumed when MSH-18 is absent (DEFAULT_CHARACTER_SET).
    pub default_charset: Charset,
}

/// A payload that [`Message::parse_keeping_header`] refused.
#[derive(Clone, Debug)]
pub struct Unparsed<'a> {
    /// Why.
    pub error: ParseError,
    /// What [`Message::parse_header`] reads, when MSH and its delimiters were usable.
    pub header: Option<Message<'a>>,
}

/// A parse's offsets without the payload: what [`Message`] keeps besides its borrow. Plain
/// data (`Copy`), so a pending frame holds it across an await while the read buffer that holds
/// the payload stays owned by the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageHeader {
    /// As [`Message`]'s.
    delimiters: Delimiters,
    /// As [`Message`]'s.
    msh_start: u32,
    /// As [`Message`]'s.
    msh_end: u32,
    /// As [`Message`]'s.
    separators: [u32; MSH_SEPARATORS_CACHED],
    /// As [`Message`]'s.
    separator_count: u8,
    /// As [`Message`]'s.
    charset: Charset,
    /// As [`Message`]'s.
    version_number: (u8, u8),
}

impl MessageHeader {
    /// The message again, over the payload it was parsed from; no byte is scanned.
    ///
    /// # Panics
    /// When `payload` is shorter than the MSH segment this header was read from (another
    /// payload): every offset must stay inside it.
    pub fn attach<'a>(&self, payload: &'a [u8]) -> Message<'a> {
        assert!(
            payload.len() >= self.msh_end as usize,
            "a header attached to another payload"
        );
        Message {
            bytes: payload,
            delimiters: self.delimiters,
            msh_start: self.msh_start,
            msh_end: self.msh_end,
            separators: self.separators,
            separator_count: self.separator_count,
            charset: self.charset,
            version_number: self.version_number,
        }
    }
}

/// Test builds record which payloads had their MSH scanned, per thread, so a test can show a
/// message is scanned once from its frame to its ACK (admission's "parse once"); the debug
/// re-parse of each ACK built is a scan of another buffer and does not count.
#[cfg(test)]
pub(crate) mod scans {
    use std::cell::RefCell;

    thread_local! {
        static SCANNED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    }

    /// `payload` was scanned once more.
    pub(super) fn count(payload: &[u8]) {
        SCANNED.with(|s| s.borrow_mut().push(payload.as_ptr() as usize));
    }

    /// Forgets the scans recorded on this thread (a buffer freed earlier may share an address).
    pub(crate) fn reset() {
        SCANNED.with(|s| s.borrow_mut().clear());
    }

    /// How often `payload` (this very buffer) was scanned on this thread.
    pub(crate) fn of(payload: &[u8]) -> usize {
        let at = payload.as_ptr() as usize;
        SCANNED.with(|s| s.borrow().iter().filter(|&&p| p == at).count())
    }
}

/// How many MSH field separators `parse` remembers: MSH-1 … MSH-21 are then two array reads;
/// later fields (rare, v2.7+ MSH-22 …) are found by scanning the MSH segment.
const MSH_SEPARATORS_CACHED: usize = 21;

/// A parsed HL7 v2 message borrowing its payload. `Debug` shows the shape (length,
/// delimiters, version), never the content: messages carry patient data and must not reach logs.
#[derive(Clone)]
pub struct Message<'a> {
    /// The whole payload.
    bytes: &'a [u8],
    /// The delimiters declared in MSH-1/MSH-2.
    delimiters: Delimiters,
    /// Offset of the `M` of `MSH` (after any leading CR/LF).
    msh_start: u32,
    /// Offset where the MSH segment ends: its CR/LF, or the payload's end.
    msh_end: u32,
    /// Offsets of the MSH field separators: `[0]` is MSH-1 itself, `[k]` ends MSH-(k+1).
    separators: [u32; MSH_SEPARATORS_CACHED],
    /// How many entries of `separators` are real (the rest are unused).
    separator_count: u8,
    /// The character set in force (MSH-18 or the default).
    charset: Charset,
    /// MSH-12.1 as (major, minor).
    version_number: (u8, u8),
}

impl<'a> Message<'a> {
    /// Parses `payload`: finds MSH, reads the delimiters, checks the required header fields
    /// (MSH-9, MSH-10, MSH-11, MSH-12), the version and, where UTF-8 is declared, the encoding.
    ///
    /// # Panics
    /// When `payload` is longer than `u32::MAX` bytes; the frame decoder never yields such a
    /// payload (`limits::FRAME_BYTES_MAX_MAX`).
    pub fn parse(payload: &'a [u8], options: &ParseOptions) -> Result<Self, ParseError> {
        Self::parse_keeping_header(payload, options).map_err(|unparsed| unparsed.error)
    }

    /// [`Message::parse`], keeping on failure what [`Message::parse_header`] would read (MSH
    /// and its delimiters), from the same scan: admission answers a rejected message with the
    /// sender's header without scanning its MSH a second time.
    // The error is as large as the message it carries, and a Box would allocate for every
    // rejected frame, which a flood of junk frames must not cause.
    #[allow(clippy::result_large_err)]
    pub fn parse_keeping_header(
        payload: &'a [u8],
        options: &ParseOptions,
    ) -> Result<Self, Unparsed<'a>> {
        assert!(
            u32::try_from(payload.len()).is_ok(),
            "payload exceeds FRAME_BYTES_MAX_MAX"
        );
        let mut message = Self::scan_msh(payload).map_err(|error| Unparsed {
            error,
            header: None,
        })?;
        let unparsed = |error, mut header: Message<'a>| {
            header.version_number = header.check_version().unwrap_or((2, 5));
            Unparsed {
                error,
                header: Some(header),
            }
        };
        if let Err(error) = message.check_required() {
            return Err(unparsed(error, message));
        }
        message.version_number = match message.check_version() {
            Ok(version) => version,
            Err(error) => return Err(unparsed(error, message)),
        };
        let charset_field = message.character_set_field();
        message.charset = Charset::from_msh18(charset_field).unwrap_or(options.default_charset);
        if message.charset == Charset::Utf8 {
            if let Err(error) = check_utf8(payload) {
                return Err(unparsed(error, message));
            }
        }
        Ok(message)
    }

    /// The offsets of this parse without the borrow of the payload, to keep across an await
    /// (the connection's buffer is borrowed again later) and [`MessageHeader::attach`] again
    /// without scanning anything.
    pub fn header(&self) -> MessageHeader {
        MessageHeader {
            delimiters: self.delimiters,
            msh_start: self.msh_start,
            msh_end: self.msh_end,
            separators: self.separators,
            separator_count: self.separator_count,
            charset: self.charset,
            version_number: self.version_number,
        }
    }

    /// Reads only what an answer to a rejected message needs: MSH found and its delimiters
    /// valid. The required fields, the version and the charset are not checked, so a receiver
    /// can answer a message that failed [`Message::parse`] with the sender's delimiters and echo
    /// its MSH-10 in MSA-2 (HL7 v2 §2.9: the sender matches ACKs by MSA-2, rejections included).
    /// `version_number` is MSH-12's when [`Message::version_supported`], else (2, 5).
    pub fn parse_header(payload: &'a [u8]) -> Result<Self, ParseError> {
        assert!(
            u32::try_from(payload.len()).is_ok(),
            "payload exceeds FRAME_BYTES_MAX_MAX"
        );
        let mut message = Self::scan_msh(payload)?;
        message.version_number = message.check_version().unwrap_or((2, 5));
        Ok(message)
    }

    /// Whether MSH-12.1 is a version [`Message::parse`] accepts (2.1 to 2.9).
    pub fn version_supported(&self) -> bool {
        self.check_version().is_ok()
    }

    /// Finds MSH after any leading CR/LF, reads MSH-1/MSH-2 and records the MSH separators.
    fn scan_msh(payload: &'a [u8]) -> Result<Self, ParseError> {
        #[cfg(test)]
        scans::count(payload);
        let start = payload
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(payload.len());
        if !payload[start..].starts_with(b"MSH") {
            return Err(error(ParseErrorKind::NoMsh, start));
        }
        let bad_delimiters = error(ParseErrorKind::BadDelimiters, start + 3);
        let Some(&field) = payload.get(start + 3) else {
            return Err(bad_delimiters);
        };
        let (separators, count, end) = scan_separators(payload, field, start + 3);
        // §2.5.4: MSH-2 runs from the byte after MSH-1 to the next field separator.
        let encoding_end = if count > 1 {
            separators[1] as usize
        } else {
            end
        };
        let encoding = payload.get(start + 4..encoding_end).unwrap_or(&[]);
        let delimiters = Delimiters::from_msh(field, encoding).ok_or(bad_delimiters)?;
        Ok(Message {
            bytes: payload,
            delimiters,
            msh_start: offset(start),
            msh_end: offset(end),
            separators,
            separator_count: count as u8,
            charset: Charset::Ascii,
            version_number: (0, 0),
        })
    }

    /// MSH-9.1, MSH-10, MSH-11 and MSH-12 must be present and non-empty (§2.14.9; table 0357
    /// code 101). MSH-9.2 may be empty: ACKs of old versions carry only `ACK`.
    fn check_required(&self) -> Result<(), ParseError> {
        for (field, value) in [
            (9, self.message_type()),
            (10, self.control_id()),
            (11, self.processing_id()),
            (12, self.version()),
        ] {
            if value.is_empty() {
                let at = self
                    .msh_range(field)
                    .map_or(self.msh_end as usize, |(s, _)| s);
                return Err(error(ParseErrorKind::MissingField(field as u16), at));
            }
        }
        Ok(())
    }

    /// MSH-12.1 must read `2.n` or `2.n.m` (§2.14.9.12, table 0104), n from 1 to 9.
    fn check_version(&self) -> Result<(u8, u8), ParseError> {
        let at = self.msh_range(12).map_or(self.msh_end as usize, |(s, _)| s);
        let (major, minor) =
            parse_version(self.version()).ok_or(error(ParseErrorKind::MalformedVersion, at))?;
        if major != 2 || !(1..=9).contains(&minor) {
            return Err(error(ParseErrorKind::UnsupportedVersion, at));
        }
        Ok((2, minor as u8))
    }

    /// Byte range of MSH-`n` when present.
    fn msh_range(&self, n: usize) -> Option<(usize, usize)> {
        let count = usize::from(self.separator_count);
        match n {
            0 => None,
            1 => {
                let at = self.separators[0] as usize;
                Some((at, at + 1))
            }
            _ if n - 1 < MSH_SEPARATORS_CACHED || count < MSH_SEPARATORS_CACHED => {
                let start = *self.separators.get(n - 2).filter(|_| n - 2 < count)? as usize + 1;
                let end = if n - 1 < count {
                    self.separators[n - 1] as usize
                } else {
                    self.msh_end as usize
                };
                Some((start, end))
            }
            _ => {
                let msh = &self.bytes[self.msh_start as usize..self.msh_end as usize];
                let field = nth_part(msh, self.delimiters.field, n)?;
                let start = field.as_ptr() as usize - self.bytes.as_ptr() as usize;
                Some((start, start + field.len()))
            }
        }
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
            rest: &self.bytes[self.msh_start as usize..],
            delimiters: self.delimiters,
        }
    }

    /// The segments after MSH, in order.
    pub fn body_segments(&self) -> Segments<'a> {
        Segments {
            rest: &self.bytes[self.msh_end as usize..],
            delimiters: self.delimiters,
        }
    }

    /// The MSH segment.
    pub fn msh_segment(&self) -> Segment<'a> {
        Segment {
            bytes: &self.bytes[self.msh_start as usize..self.msh_end as usize],
            delimiters: self.delimiters,
        }
    }

    /// The `occurrence`-th (1-based) segment with id `id`.
    pub fn segment(&self, id: &[u8], occurrence: usize) -> Option<Segment<'a>> {
        let skip = occurrence.checked_sub(1)?;
        if id == b"MSH" {
            if skip == 0 {
                return Some(self.msh_segment());
            }
            return self.body_segments().filter(|s| s.has_id(id)).nth(skip - 1);
        }
        self.body_segments().filter(|s| s.has_id(id)).nth(skip)
    }

    /// The value at `path`, raw (escapes not decoded); `None` when absent.
    pub fn get(&self, path: &Path) -> Option<&'a [u8]> {
        let field = if &path.segment == b"MSH" && path.segment_occurrence == 1 {
            self.msh_range(usize::from(path.field))
                .map(|(s, e)| &self.bytes[s..e])?
        } else {
            let segment = self.segment(&path.segment, usize::from(path.segment_occurrence))?;
            segment.field_opt(usize::from(path.field))?
        };
        if &path.segment == b"MSH" && path.field <= 2 {
            // MSH-1 and MSH-2 hold the delimiters themselves: they have no parts to split.
            return (path.repetition <= 1 && path.component <= 1 && path.subcomponent <= 1)
                .then_some(field);
        }
        path.select(field, &self.delimiters)
    }

    /// The value at the path written as text (e.g. `"PID-5.1"`); `None` when the path is
    /// malformed or the value absent.
    pub fn get_str(&self, path: &str) -> Option<&'a [u8]> {
        self.get(&path.parse().ok()?)
    }

    /// Raw MSH-`n` with standard numbering (MSH-1 the field separator, MSH-2 the encoding
    /// characters); empty when absent.
    pub fn msh(&self, n: usize) -> &'a [u8] {
        self.msh_range(n).map_or(&[], |(s, e)| &self.bytes[s..e])
    }

    /// Component `component` (1-based) of the first repetition of MSH-`n`; empty when absent.
    fn msh_component(&self, n: usize, component: usize) -> &'a [u8] {
        first_repetition_component(self.msh(n), &self.delimiters, component)
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
        self.msh_component(9, 1)
    }
    /// MSH-9.2, trigger event, e.g. `A01`.
    pub fn trigger_event(&self) -> &'a [u8] {
        self.msh_component(9, 2)
    }
    /// MSH-9.3, message structure, e.g. `ADT_A01`; empty when absent.
    pub fn message_structure(&self) -> &'a [u8] {
        self.msh_component(9, 3)
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
        self.msh_component(12, 1)
    }
    /// The version as (major, minor), e.g. (2, 5) for `2.5.1`; checked by `parse`.
    pub fn version_number(&self) -> (u8, u8) {
        self.version_number
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
        let field = self.msh(18);
        nth_part(field, self.delimiters.repetition, 1).unwrap_or(field)
    }
    /// The character set in force: MSH-18, or the default when absent.
    pub fn charset(&self) -> Charset {
        self.charset
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("bytes_len", &self.bytes.len())
            .field("delimiters", &self.delimiters)
            .field("version_number", &self.version_number)
            .field("charset", &self.charset)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Segment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("bytes_len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Segments<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments")
            .field("rest_len", &self.rest.len())
            .finish_non_exhaustive()
    }
}

/// Offset as stored; `parse` has checked that the payload length fits in `u32`.
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

/// One pass over the MSH segment from MSH-1 (at `msh1`): the offsets of the first
/// `MSH_SEPARATORS_CACHED` field separators, how many there are, and where the segment ends
/// (its CR/LF or the payload's end), in one pass: MSH is short, so an inlined scan beats
/// `memchr` calls.
fn scan_separators(
    payload: &[u8],
    field: u8,
    msh1: usize,
) -> ([u32; MSH_SEPARATORS_CACHED], usize, usize) {
    let mut separators = [0u32; MSH_SEPARATORS_CACHED];
    separators[0] = offset(msh1);
    let mut count = 1;
    let end = scan::for_each_until(payload, msh1 + 1, field, [b'\r', b'\n'], |at| {
        if count < MSH_SEPARATORS_CACHED {
            separators[count] = offset(at);
            count += 1;
        }
    });
    (separators, count, end)
}

/// Component `n` (1-based) of the first repetition of `field`, in one pass (header fields are
/// read for every message); empty when absent.
fn first_repetition_component<'v>(field: &'v [u8], delimiters: &Delimiters, n: usize) -> &'v [u8] {
    let mut component = 1;
    let mut start = 0;
    let separators = [delimiters.component, delimiters.repetition];
    while let Some(at) = scan::find_any(field, start, separators) {
        if component == n || field[at] == delimiters.repetition {
            return if component == n {
                &field[start..at]
            } else {
                &[]
            };
        }
        component += 1;
        start = at + 1;
    }
    if component == n {
        &field[start..]
    } else {
        &[]
    }
}

/// A parse error of `kind` at byte `at`.
fn error(kind: ParseErrorKind, at: usize) -> ParseError {
    ParseError {
        kind,
        offset: offset(at),
    }
}

/// `major.minor` or `major.minor.patch`, each 1 to 3 digits; `None` when not of that form.
fn parse_version(version: &[u8]) -> Option<(u16, u16)> {
    let mut parts = version.split(|&b| b == b'.');
    let mut number = || -> Option<u16> {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0')))
    };
    let major = number()?;
    let minor = number()?;
    match parts.next() {
        None => Some((major, minor)),
        Some(patch) => {
            let patch_ok =
                !patch.is_empty() && patch.len() <= 3 && patch.iter().all(u8::is_ascii_digit);
            (patch_ok && parts.next().is_none()).then_some((major, minor))
        }
    }
}

/// Where UTF-8 is declared (MSH-18, table 0211), the whole payload must be UTF-8 (code 102).
fn check_utf8(payload: &[u8]) -> Result<(), ParseError> {
    if simdutf8::basic::from_utf8(payload).is_ok() {
        return Ok(());
    }
    // Error path only: the compat validator says where the first bad sequence starts.
    let at = simdutf8::compat::from_utf8(payload)
        .err()
        .map_or(0, |e| e.valid_up_to());
    Err(error(ParseErrorKind::InvalidUtf8, at))
}

/// One segment: its id and fields. `Debug` shows the length only (no patient data in logs).
#[derive(Clone, Copy)]
pub struct Segment<'a> {
    /// The segment's bytes, without its terminator.
    bytes: &'a [u8],
    /// The message's delimiters.
    delimiters: Delimiters,
}

impl<'a> Segment<'a> {
    /// The segment id, e.g. `PID`: the bytes before the first field separator.
    pub fn id(&self) -> &'a [u8] {
        let end = scan::find(self.bytes, 0, self.delimiters.field).unwrap_or(self.bytes.len());
        &self.bytes[..end]
    }
    /// Whether the segment id is `id`: the segment starts with `id`, followed by a field
    /// separator or nothing. Cheaper than comparing `id()`: no scan for the separator.
    pub fn has_id(&self, id: &[u8]) -> bool {
        self.bytes.starts_with(id)
            && self
                .bytes
                .get(id.len())
                .is_none_or(|&b| b == self.delimiters.field)
    }
    /// The segment's bytes without its terminator.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The message's delimiters.
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }
    /// Raw field `n` (1-based; for MSH, standard MSH numbering); empty when absent.
    pub fn field(&self, n: usize) -> &'a [u8] {
        self.field_opt(n).unwrap_or(&[])
    }
    /// Raw field `n` (1-based; for MSH, standard MSH numbering); `None` when the segment has
    /// fewer fields, `Some(b"")` when the field is present but empty.
    pub fn field_opt(&self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.starts_with(b"MSH") {
            // §2.14.9: MSH-1 is the field separator itself, so MSH field n is part n-1.
            return match n {
                0 => None,
                1 => self.bytes.get(3..4),
                _ => nth_part(self.bytes, self.delimiters.field, n),
            };
        }
        nth_part(self.bytes, self.delimiters.field, n.checked_add(1)?)
    }
}

/// Iterator over a message's segments (CR, LF or CRLF separated; empty lines skipped).
#[derive(Clone)]
pub struct Segments<'a> {
    /// Bytes not yet iterated.
    rest: &'a [u8],
    /// The message's delimiters.
    delimiters: Delimiters,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;
    fn next(&mut self) -> Option<Segment<'a>> {
        // §2.5.1 says CR; real senders use LF or CRLF, and blank lines carry no segment.
        let start = self.rest.iter().position(|&b| b != b'\r' && b != b'\n')?;
        let rest = &self.rest[start..];
        let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(Segment {
            bytes: &rest[..end],
            delimiters: self.delimiters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20240101120000||ADT^A01^ADT_A01|MSG00001|P|2.5.1|42||AL|NE||UNICODE UTF-8\r\
EVN|A01|20240101120000\r\
PID|1||12345^^^HOSP^MR~67890^^^NAT^SS||DOE^JOHN^Q||19800101|M\r\
PV1|1|I|WARD1^101^A\r\
OBX|1|ST|A||first\r\
OBX|2|ST|B||second\r";

    fn parse(bytes: &[u8]) -> Result<Message<'_>, ParseError> {
        Message::parse(bytes, &ParseOptions::default())
    }

    fn kind(bytes: &[u8]) -> ParseErrorKind {
        parse(bytes).expect_err("must fail").kind
    }

    #[test]
    fn header_accessors_read_msh() {
        let m = parse(ADT).expect("valid");
        assert_eq!(m.msh(1), b"|");
        assert_eq!(m.msh(2), b"^~\\&");
        assert_eq!(m.sending_application(), b"SENDAPP");
        assert_eq!(m.sending_facility(), b"SENDFAC");
        assert_eq!(m.receiving_application(), b"RECVAPP");
        assert_eq!(m.receiving_facility(), b"RECVFAC");
        assert_eq!(m.msh(7), b"20240101120000");
        assert_eq!(m.msh(8), b"");
        assert_eq!(m.message_type(), b"ADT");
        assert_eq!(m.trigger_event(), b"A01");
        assert_eq!(m.message_structure(), b"ADT_A01");
        assert_eq!(m.control_id(), b"MSG00001");
        assert_eq!(m.processing_id(), b"P");
        assert_eq!(m.version(), b"2.5.1");
        assert_eq!(m.version_number(), (2, 5));
        assert_eq!(m.sequence_number(), b"42");
        assert_eq!(m.accept_ack_type(), b"AL");
        assert_eq!(m.application_ack_type(), b"NE");
        assert_eq!(m.character_set_field(), b"UNICODE UTF-8");
        assert_eq!(m.charset(), Charset::Utf8);
        assert_eq!(m.msh(19), b"");
        assert_eq!(m.msh(0), b"");
    }

    #[test]
    fn paths_reach_body_fields() {
        let m = parse(ADT).expect("valid");
        assert_eq!(
            m.get_str("PID-3"),
            Some(&b"12345^^^HOSP^MR~67890^^^NAT^SS"[..])
        );
        assert_eq!(m.get_str("PID-3.1"), Some(&b"12345"[..]));
        assert_eq!(m.get_str("PID-3(2).1"), Some(&b"67890"[..]));
        assert_eq!(m.get_str("PID-3(2).5"), Some(&b"SS"[..]));
        assert_eq!(m.get_str("PID-5.2"), Some(&b"JOHN"[..]));
        assert_eq!(m.get_str("PV1-3.2"), Some(&b"101"[..]));
        assert_eq!(m.get_str("OBX(2)-5"), Some(&b"second"[..]));
        assert_eq!(m.get_str("OBX(3)-5"), None);
        assert_eq!(m.get_str("MSH-9.2"), Some(&b"A01"[..]));
        assert_eq!(m.get_str("MSH-1"), Some(&b"|"[..]));
        assert_eq!(m.get_str("MSH-2"), Some(&b"^~\\&"[..]));
        assert_eq!(m.get_str("MSH-2.2"), None);
        assert_eq!(m.get_str("PID-2"), Some(&b""[..]));
        assert_eq!(m.get_str("PID-99"), None);
        assert_eq!(m.get_str("ZZZ-1"), None);
        assert_eq!(m.get_str("not a path"), None);
    }

    #[test]
    fn segments_iterate_in_order() {
        let m = parse(ADT).expect("valid");
        let ids: Vec<&[u8]> = m.segments().map(|s| s.id()).collect();
        assert_eq!(ids, [&b"MSH"[..], b"EVN", b"PID", b"PV1", b"OBX", b"OBX"]);
        let msh = m.segment(b"MSH", 1).expect("MSH");
        assert_eq!(msh.field(1), b"|");
        assert_eq!(msh.field(10), b"MSG00001");
        assert_eq!(m.segment(b"PID", 1).expect("PID").field(8), b"M");
        assert_eq!(m.segment(b"OBX", 2).expect("OBX").field(1), b"2");
        assert!(m.segment(b"OBX", 0).is_none());
    }

    #[test]
    fn line_ends_and_leading_blank_lines_are_tolerated() {
        let lf = b"\r\n\nMSH|^~\\&|A|B|C|D|||ADT^A01|X1|P|2.3\nPID|1||7\n\nPV1|1|O\n";
        let m = parse(lf).expect("valid");
        assert_eq!(m.control_id(), b"X1");
        assert_eq!(m.get_str("PID-3"), Some(&b"7"[..]));
        let crlf = b"MSH|^~\\&|A|B|C|D|||ADT^A01|X1|P|2.3\r\nPID|1||7\r\nPV1|1|O\r\n";
        let m = parse(crlf).expect("valid");
        assert_eq!(m.segments().count(), 3);
        assert_eq!(m.get_str("PV1-2"), Some(&b"O"[..]));
    }

    #[test]
    fn custom_delimiters_work() {
        let m = parse(b"MSH#$*@%#A#B#C#D###ORU$R01#9#T$A#2.4\rOBX#1#TX#C$D%E*F$G").expect("valid");
        assert_eq!(m.message_type(), b"ORU");
        assert_eq!(m.processing_id(), b"T$A");
        assert_eq!(m.get_str("OBX-3.2.2"), Some(&b"E"[..]));
        assert_eq!(m.get_str("OBX-3(2).2"), Some(&b"G"[..]));
    }

    #[test]
    fn no_msh_is_refused() {
        assert_eq!(kind(b""), ParseErrorKind::NoMsh);
        assert_eq!(kind(b"\r\n"), ParseErrorKind::NoMsh);
        assert_eq!(kind(b"PID|1"), ParseErrorKind::NoMsh);
        assert_eq!(parse(b"\r\rMSX|").expect_err("fails").offset, 2);
    }

    #[test]
    fn bad_delimiters_are_refused() {
        assert_eq!(kind(b"MSH"), ParseErrorKind::BadDelimiters);
        assert_eq!(kind(b"MSH\r^~\\&|"), ParseErrorKind::BadDelimiters);
        assert_eq!(kind(b"MSH|^~\\|A"), ParseErrorKind::BadDelimiters);
        assert_eq!(kind(b"MSH|^~\\&^|A"), ParseErrorKind::BadDelimiters);
        assert_eq!(kind(b"MSH|^~\\&#!|A"), ParseErrorKind::BadDelimiters);
        assert_eq!(kind(b"MSH|^~|A"), ParseErrorKind::BadDelimiters);
        assert_eq!(kind(b"MSH|^~\\&"), ParseErrorKind::MissingField(9));
    }

    #[test]
    fn missing_required_fields_name_the_field() {
        let e = parse(b"MSH|^~\\&|A|B|C|D|||^A01|1|P|2.5").expect_err("fails");
        assert_eq!(e.kind, ParseErrorKind::MissingField(9));
        assert_eq!(e.offset, 19);
        assert_eq!(
            kind(b"MSH|^~\\&|A|B|C|D|||ADT^A01||P|2.5"),
            ParseErrorKind::MissingField(10)
        );
        assert_eq!(
            kind(b"MSH|^~\\&|A|B|C|D|||ADT^A01|1||2.5"),
            ParseErrorKind::MissingField(11)
        );
        assert_eq!(
            kind(b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|"),
            ParseErrorKind::MissingField(12)
        );
        let e = parse(b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P").expect_err("fails");
        assert_eq!((e.kind, e.offset), (ParseErrorKind::MissingField(12), 30));
        assert!(
            parse(b"MSH|^~\\&|A|B|C|D|||ACK|1|P|2.1").is_ok(),
            "trigger may be empty"
        );
    }

    #[test]
    fn versions_are_checked() {
        let msg = |v: &str| format!("MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|{v}");
        for ok in ["2.1", "2.3.1", "2.5^USA", "2.9.9", "2.8"] {
            assert!(parse(msg(ok).as_bytes()).is_ok(), "{ok}");
        }
        for bad in [
            "2", "2.", "2.x", "v2.5", "2.5.1.1", "2..1", "2.5.", " 2.5", "2.5 ",
        ] {
            assert_eq!(
                kind(msg(bad).as_bytes()),
                ParseErrorKind::MalformedVersion,
                "{bad}"
            );
        }
        for unsupported in ["3.0", "2.0", "2.10", "1.9"] {
            assert_eq!(
                kind(msg(unsupported).as_bytes()),
                ParseErrorKind::UnsupportedVersion,
                "{unsupported}"
            );
        }
    }

    #[test]
    fn utf8_is_validated_only_where_in_force() {
        let mut bad =
            b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||\xff".to_vec();
        let e = parse(&bad).expect_err("fails");
        assert_eq!(
            (e.kind, e.offset as usize),
            (ParseErrorKind::InvalidUtf8, bad.len() - 1)
        );
        assert_eq!(e.code().as_u16(), 102);
        let at = bad.iter().position(|&b| b == b'U').expect("MSH-18");
        bad[at..at + 13].copy_from_slice(b"8859/1       ");
        let m = parse(&bad).expect("ISO 8859 is bytes");
        assert_eq!(m.charset(), Charset::Iso8859);
        let plain = b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rPID|1||\xff";
        assert_eq!(
            parse(plain).expect("ASCII default").charset(),
            Charset::Ascii
        );
        let utf8 = ParseOptions {
            default_charset: Charset::Utf8,
        };
        assert_eq!(
            Message::parse(plain, &utf8).expect_err("fails").kind,
            ParseErrorKind::InvalidUtf8
        );
        let utf8_ok = "MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5||||||UTF-8~8859/1\rPID|1||Müller";
        let m = parse(utf8_ok.as_bytes()).expect("valid UTF-8");
        assert_eq!(
            (m.charset(), m.character_set_field()),
            (Charset::Utf8, &b"UTF-8"[..])
        );
    }

    #[test]
    fn debug_output_carries_no_content() {
        let m = parse(ADT).expect("valid");
        let shown = format!("{m:?} {:?} {:?}", m.segment(b"PID", 1), m.segments());
        assert!(
            !shown.contains("DOE") && !shown.contains("12345"),
            "{shown}"
        );
        assert!(shown.contains("bytes_len"));
    }

    #[test]
    fn msh_fields_beyond_the_cache_are_found() {
        let mut msg = b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.7".to_vec();
        for n in 13..=25 {
            msg.extend_from_slice(format!("|f{n}").as_bytes());
        }
        let m = parse(&msg).expect("valid");
        for n in 13..=25 {
            assert_eq!(m.msh(n), format!("f{n}").as_bytes(), "MSH-{n}");
            assert_eq!(
                m.get_str(&format!("MSH-{n}")),
                Some(format!("f{n}").as_bytes())
            );
        }
        assert_eq!(m.msh(26), b"");
        assert_eq!(m.get_str("MSH-26"), None);
    }
}
