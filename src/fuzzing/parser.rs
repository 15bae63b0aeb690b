//! Fuzz function for the parser (see `fuzzing` module doc).
//!
//! Invariants checked on every input, with both ASCII and UTF-8 as the default charset:
//! parsing never panics; an error's offset lies within the input; a parsed message satisfies
//! what `Message::parse` promises (required fields non-empty, version 2.1 to 2.9, UTF-8 where
//! in force); every slice returned by header accessors, segments, fields and paths lies inside
//! the input; the cached MSH offsets agree with a plain scan of the MSH segment.

use crate::hl7::{Charset, Message, ParseOptions, Path};

/// Paths read on every parsed message: header, body, repetitions, subcomponents, absent ones.
const PATHS: [&str; 12] = [
    "MSH-1",
    "MSH-2",
    "MSH-9.2",
    "MSH-12.1",
    "MSH-18(2)",
    "PID-3",
    "PID-3(2).1",
    "PID-5.1.2",
    "OBX(3)-5",
    "PV1-3.2",
    "ZZ1-1",
    "MSH(2)-10",
];

/// Runs the parser fuzz body over `data`; panics when an invariant breaks.
pub fn parser(data: &[u8]) {
    for default_charset in [Charset::Ascii, Charset::Utf8] {
        match Message::parse(data, &ParseOptions { default_charset }) {
            Ok(message) => check_message(data, &message),
            Err(error) => {
                assert!(
                    error.offset as usize <= data.len(),
                    "error offset past the input"
                );
                let _ = (error.code(), error.location(), error.text());
            }
        }
    }
}

/// Panics unless `slice` lies inside `data` (by address, so a copy would be caught too).
fn assert_inside(data: &[u8], slice: &[u8]) {
    let start = data.as_ptr() as usize;
    let at = slice.as_ptr() as usize;
    assert!(
        slice.is_empty() || (at >= start && at + slice.len() <= start + data.len()),
        "slice outside the input"
    );
}

/// Every invariant of a successfully parsed message.
fn check_message(data: &[u8], message: &Message<'_>) {
    let delimiters = message.delimiters();
    assert_eq!(
        message.msh(1),
        [delimiters.field],
        "MSH-1 is the field separator"
    );
    assert!(!message.message_type().is_empty() && !message.control_id().is_empty());
    assert!(!message.processing_id().is_empty() && !message.version().is_empty());
    let (major, minor) = message.version_number();
    assert!(
        major == 2 && (1..=9).contains(&minor),
        "version checked by parse"
    );
    if message.charset() == Charset::Utf8 {
        assert!(
            std::str::from_utf8(data).is_ok(),
            "UTF-8 in force but input invalid"
        );
    }
    for header in [
        message.sending_application(),
        message.sending_facility(),
        message.receiving_application(),
        message.receiving_facility(),
        message.message_type(),
        message.trigger_event(),
        message.message_structure(),
        message.control_id(),
        message.processing_id(),
        message.version_field(),
        message.version(),
        message.sequence_number(),
        message.accept_ack_type(),
        message.application_ack_type(),
        message.character_set_field(),
    ] {
        assert_inside(data, header);
    }
    let msh = message.msh_segment();
    for n in 0..=30 {
        assert_inside(data, message.msh(n));
        assert_eq!(
            message.msh(n),
            msh.field(n),
            "cached MSH-{n} differs from a scan"
        );
    }
    check_segments(data, message);
    for text in PATHS {
        let path: Path = text.parse().expect("fixed paths are valid");
        if let Some(value) = message.get(&path) {
            assert_inside(data, value);
            let _ = delimiters.unescape(value);
        }
    }
}

/// Segments iterate to completion, each a non-empty slice of the input without CR/LF.
fn check_segments(data: &[u8], message: &Message<'_>) {
    let mut count = 0;
    for segment in message.segments() {
        count += 1;
        assert!(count <= data.len(), "more segments than bytes");
        let bytes = segment.bytes();
        assert!(!bytes.is_empty() && !bytes.contains(&b'\r') && !bytes.contains(&b'\n'));
        assert_inside(data, bytes);
        assert_inside(data, segment.id());
        for n in 0..=12 {
            assert_inside(data, segment.field(n));
        }
    }
    assert!(count >= 1, "MSH is a segment");
    assert_eq!(message.segments().next().map(|s| s.id()), Some(&b"MSH"[..]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pieces a generated message is made of; `0`..`5` stand for the chosen delimiters.
    const TOKENS: [&[u8]; 22] = [
        b"0",
        b"1",
        b"2",
        b"3",
        b"4",
        b"5",
        b"\r",
        b"\n",
        b"\r\n",
        b"ADT",
        b"A01",
        b"2.5",
        b"2.7.1",
        b"3.0",
        b"UNICODE UTF-8",
        b"8859/1",
        b"PID",
        b"OBX",
        b"MSH",
        b"\xff",
        "é".as_bytes(),
        b"X",
    ];

    /// Renders tokens with `delimiters` (field, component, repetition, escape, subcomponent,
    /// truncation) substituted for the digit tokens.
    fn render(prefix: &[u8], delimiters: &[u8], tokens: &[usize]) -> Vec<u8> {
        let mut out = prefix.to_vec();
        for &t in tokens {
            match t {
                0..=5 => out.push(delimiters[t % delimiters.len()]),
                _ => out.extend_from_slice(TOKENS[t]),
            }
        }
        out
    }

    fn delimiter_pool() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop::sample::select(b"|^~\\&#$*@%!\r\nA".to_vec()), 6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            parser(&data);
        }

        #[test]
        fn msh_with_random_delimiters(
            delimiters in delimiter_pool(),
            encoding_len in 0usize..7,
            tokens in proptest::collection::vec(0usize..TOKENS.len(), 0..80),
        ) {
            let mut prefix = b"MSH".to_vec();
            prefix.extend_from_slice(&delimiters[..encoding_len.min(5) + 1]);
            parser(&render(&prefix, &delimiters, &tokens));
        }

        #[test]
        fn valid_header_random_body(
            delimiters in delimiter_pool(),
            truncation in any::<bool>(),
            version in prop::sample::select(vec!["2.3", "2.3.1", "2.5.1", "2.7", "2.8", "2.9.2"]),
            tokens in proptest::collection::vec(0usize..TOKENS.len(), 0..120),
        ) {
            let d = &delimiters;
            let encoding = &d[1..if truncation { 6 } else { 5 }];
            let header = format!("A{f}B{f}C{f}D{f}{f}{f}ADT{c}A01{f}ID1{f}P{f}{version}{f}",
                f = d[0] as char, c = d[1] as char);
            let mut prefix = b"MSH".to_vec();
            prefix.push(d[0]);
            prefix.extend_from_slice(encoding);
            prefix.push(d[0]);
            prefix.extend_from_slice(header.as_bytes());
            let data = render(&prefix, &delimiters, &tokens);
            parser(&data);
            let distinct = (0..6).all(|i| !d[..i].contains(&d[i]));
            let usable = d.iter().all(|&b| b != b'\r' && b != b'\n' && b != b'A');
            if distinct && usable {
                // The header is valid; only a body byte that breaks UTF-8 may fail the parse.
                let parsed = Message::parse(&data, &ParseOptions::default());
                prop_assert!(parsed.is_ok() || data.contains(&0xff), "{:?}", parsed);
            }
        }
    }

    #[test]
    fn a_few_inputs_run_clean() {
        parser(b"");
        parser(
            b"MSH|^~\\&|A|B|C|D|||ADT^A01|1|P|2.5\rPID|1||a~b^c&d\r\r\nOBX|1\nOBX|2\nOBX|3||x|y|z",
        );
        parser(b"MSH|^~\\&|||||||ACK|1|P|2.1||||||UNICODE UTF-8\r\xc3");
    }
}
