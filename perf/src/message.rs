//! Message templates: an HL7 message split around its MSH-10 so a sender writes
//! `SB prefix <control id> suffix EB CR` with a fresh control id per send and no parsing.
//!
//! Invariant: `prefix` ends right after the ninth field separator of MSH (MSH-1 is the
//! separator itself, HL7 v2.5.1 §2.15.9, so the separator at byte 3 opens MSH-2 and the ninth
//! opens MSH-10), and `suffix` starts at the separator or CR that ends MSH-10.

use crate::{CR, EB, SB};
use std::path::Path;

/// A built-in ADT^A01 of about 316 bytes (CR segment separators), the default load.
pub const BUILTIN_ADT_A01: &str = concat!(
    "MSH|^~\\&|BENCHAPP|BENCHFAC|MLLPD|HOSP|20260101120000||ADT^A01^ADT_A01|0|P|2.5.1\r",
    "EVN|A01|20260101120000\r",
    "PID|1||123456^^^HOSP^MR||DOE^JOHN^Q||19800101|M|||1 MAIN ST^^SPRINGFIELD^IL^62701||",
    "(555)555-0100\r",
    "PV1|1|I|WARD^101^1^HOSP||||1234^SMITH^JANE^^^DR|||MED||||1|||1234^SMITH^JANE^^^DR|IN||",
    "||||||||||||||||||HOSP|||||20260101115500\r",
);

/// Where MSH-10 sits in a message: `start..end`, both byte offsets into the payload.
/// `None` when the payload does not start with `MSH` or its first segment has fewer than ten
/// fields.
pub fn msh10_span(payload: &[u8]) -> Option<(usize, usize)> {
    if payload.len() < 4 || &payload[..3] != b"MSH" {
        return None;
    }
    let separator = payload[3];
    let segment_end = memchr::memchr(CR, payload).unwrap_or(payload.len());
    let segment = &payload[..segment_end];
    // The separator at byte 3 is the first; the ninth opens MSH-10.
    let mut start = 3;
    for _ in 1..9 {
        start += 1 + memchr::memchr(separator, segment.get(start + 1..)?)?;
    }
    let start = start + 1;
    let end = memchr::memchr(separator, &segment[start..]).map_or(segment_end, |n| start + n);
    Some((start, end))
}

/// One message to send, split around MSH-10.
#[derive(Clone, Debug)]
pub struct Template {
    /// Payload bytes before MSH-10.
    pub prefix: Vec<u8>,
    /// Payload bytes after MSH-10 (the separator that ends it onwards).
    pub suffix: Vec<u8>,
}

impl Template {
    /// Splits a payload (CR segment separators) around MSH-10.
    pub fn parse(payload: &[u8]) -> Result<Template, String> {
        let (start, end) =
            msh10_span(payload).ok_or("message has no MSH segment with ten fields")?;
        Ok(Template {
            prefix: payload[..start].to_vec(),
            suffix: payload[end..].to_vec(),
        })
    }

    /// Appends one MLLP frame carrying this message with MSH-10 = `control_id`.
    pub fn write_frame(&self, control_id: &[u8], out: &mut Vec<u8>) {
        out.push(SB);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(control_id);
        out.extend_from_slice(&self.suffix);
        out.extend_from_slice(&[EB, CR]);
    }

    /// Frame length for a control id of `id_len` bytes.
    pub fn frame_len(&self, id_len: usize) -> usize {
        self.prefix.len() + id_len + self.suffix.len() + 3
    }
}

/// Splits file text into messages: line ends (CR, LF, CRLF) become CR; a line starting with
/// `MSH` opens a new message; MLLP framing bytes, if the file holds frames, are dropped.
pub fn split_messages(text: &[u8]) -> Vec<Vec<u8>> {
    let mut messages: Vec<Vec<u8>> = Vec::new();
    let lines = text.split(|&b| b == b'\n' || b == CR);
    for line in lines {
        let line: Vec<u8> = line
            .iter()
            .copied()
            .filter(|&b| b != SB && b != EB)
            .collect();
        if line.is_empty() {
            continue;
        }
        if line.starts_with(b"MSH") || messages.is_empty() {
            messages.push(Vec::new());
        }
        if let Some(current) = messages.last_mut() {
            current.extend_from_slice(&line);
            current.push(CR);
        }
    }
    messages
}

/// Loads templates from a file (one or many messages) or from every file of a directory
/// (sorted by name, so runs are repeatable).
pub fn load(path: &Path) -> Result<Vec<Template>, String> {
    let files = if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut templates = Vec::new();
    for file in files {
        let text = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for message in split_messages(&text) {
            templates
                .push(Template::parse(&message).map_err(|e| format!("{}: {e}", file.display()))?);
        }
    }
    if templates.is_empty() {
        return Err(format!("{}: no HL7 message found", path.display()));
    }
    Ok(templates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_about_316_bytes_and_has_msh10() {
        let len = BUILTIN_ADT_A01.len();
        assert!((300..=330).contains(&len), "builtin is {len} bytes");
        let (start, end) = msh10_span(BUILTIN_ADT_A01.as_bytes()).expect("span");
        assert_eq!(&BUILTIN_ADT_A01.as_bytes()[start..end], b"0");
    }

    #[test]
    fn msh10_span_handles_empty_fields_and_short_headers() {
        let message = b"MSH|^~\\&|||||||ADT^A01|X1|P|2.5\rPID|1\r";
        let (s, e) = msh10_span(message).expect("span");
        assert_eq!(&message[s..e], b"X1");
        // MSH-10 last in the segment: ends at CR.
        let message = b"MSH|^~\\&|A|B|C|D|T||ADT|ID9\rPID\r";
        let (s, e) = msh10_span(message).expect("span");
        assert_eq!(&message[s..e], b"ID9");
        assert_eq!(msh10_span(b"MSH|^~\\&|A|B\rX|1|2|3|4|5|6|7|8|9\r"), None);
        assert_eq!(msh10_span(b"PID|1"), None);
    }

    #[test]
    fn template_writes_a_frame_with_the_new_id() {
        let template = Template::parse(BUILTIN_ADT_A01.as_bytes()).expect("template");
        let mut out = Vec::new();
        template.write_frame(b"abc-42", &mut out);
        assert_eq!(out.len(), template.frame_len(6));
        assert_eq!(out[0], SB);
        assert_eq!(&out[out.len() - 2..], &[EB, CR]);
        let (s, e) = msh10_span(&out[1..]).expect("span");
        assert_eq!(&out[1 + s..1 + e], b"abc-42");
    }

    #[test]
    fn split_messages_normalises_line_ends() {
        let text = b"MSH|^~\\&|A|B|C|D|T||ADT^A01|1|P|2.5\r\nPID|1\nMSH|^~\\&|A|B|C|D|T||ADT^A01|2|P|2.5\rPID|2\r";
        let messages = split_messages(text);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0],
            b"MSH|^~\\&|A|B|C|D|T||ADT^A01|1|P|2.5\rPID|1\r"
        );
        assert_eq!(
            messages[1],
            b"MSH|^~\\&|A|B|C|D|T||ADT^A01|2|P|2.5\rPID|2\r"
        );
    }
}
