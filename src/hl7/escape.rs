//! HL7 escape sequences (HL7 v2 §2.7): `\F\ \S\ \T\ \R\ \E\ \Xhh..\`; formatting sequences such
//! as `\.br\` and `\H\`/`\N\` are left as they are. Decoding happens only when asked.
//!
//! Invariant: for every byte string `x`, `unescape(escape(x)) == x` — `escape_into` writes
//! every delimiter as its escape sequence and CR/LF as hex, so escaped text never contains a
//! raw delimiter or segment terminator.

use std::borrow::Cow;

use super::Delimiters;

impl Delimiters {
    /// `value` with escape sequences decoded; borrowed when there is nothing to decode.
    pub fn unescape<'v>(&self, value: &'v [u8]) -> Cow<'v, [u8]> {
        if memchr::memchr(self.escape, value).is_none() {
            return Cow::Borrowed(value);
        }
        let mut out = Vec::with_capacity(value.len());
        self.unescape_into(value, &mut out);
        if out == value {
            return Cow::Borrowed(value);
        }
        Cow::Owned(out)
    }

    /// Appends `value` with escape sequences decoded to `out`.
    pub fn unescape_into(&self, value: &[u8], out: &mut Vec<u8>) {
        let mut rest = value;
        while let Some(open) = memchr::memchr(self.escape, rest) {
            out.extend_from_slice(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = memchr::memchr(self.escape, after) else {
                // An escape character without its closing partner is data (§2.7 gives it no
                // meaning); keep it rather than lose bytes.
                out.extend_from_slice(&rest[open..]);
                return;
            };
            let sequence = &after[..close];
            if !self.decode_sequence(sequence, out) {
                out.push(self.escape);
                out.extend_from_slice(sequence);
                out.push(self.escape);
            }
            rest = &after[close + 1..];
        }
        out.extend_from_slice(rest);
    }

    /// Decodes one escape sequence (without its escape characters) into `out`; `false` when
    /// it is not one this layer decodes (formatting `\.br\`, `\H\`, charset switches …).
    fn decode_sequence(&self, sequence: &[u8], out: &mut Vec<u8>) -> bool {
        let byte = match sequence {
            b"F" => self.field,
            b"S" => self.component,
            b"T" => self.subcomponent,
            b"R" => self.repetition,
            b"E" => self.escape,
            // §2.7.1 (v2.7): `\P\` is the truncation character.
            b"P" => match self.truncation {
                Some(truncation) => truncation,
                None => return false,
            },
            [b'X', hex @ ..] => return decode_hex(hex, out),
            _ => return false,
        };
        out.push(byte);
        true
    }

    /// Appends `text` to `out` with every delimiter (and CR/LF) escaped, so the text can never
    /// open a field, component or segment.
    pub fn escape_into(&self, text: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        for (i, &byte) in text.iter().enumerate() {
            let letter: &[u8] = if byte == self.field {
                b"F"
            } else if byte == self.component {
                b"S"
            } else if byte == self.subcomponent {
                b"T"
            } else if byte == self.repetition {
                b"R"
            } else if byte == self.escape {
                b"E"
            } else if Some(byte) == self.truncation {
                b"P"
            } else if byte == b'\r' {
                b"X0D"
            } else if byte == b'\n' {
                b"X0A"
            } else {
                continue;
            };
            out.extend_from_slice(&text[start..i]);
            out.push(self.escape);
            out.extend_from_slice(letter);
            out.push(self.escape);
            start = i + 1;
        }
        out.extend_from_slice(&text[start..]);
    }
}

/// `\Xhhhh..\` (§2.7.3): pairs of hex digits, one byte each; `false` (nothing written) when
/// empty, odd or not hex.
fn decode_hex(hex: &[u8], out: &mut Vec<u8>) -> bool {
    if hex.is_empty() || hex.len() % 2 != 0 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    out.extend(
        hex.chunks_exact(2)
            .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1])),
    );
    true
}

/// The value of one ASCII hex digit (checked by the caller).
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.wrapping_sub(b'A').wrapping_add(10),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unescape(value: &[u8]) -> Vec<u8> {
        Delimiters::default().unescape(value).into_owned()
    }

    #[test]
    fn delimiter_sequences_decode() {
        assert_eq!(unescape(br"a\F\b\S\c\T\d\R\e\E\f"), b"a|b^c&d~e\\f");
        assert_eq!(unescape(br"\X0D0A\"), b"\r\n");
        assert_eq!(unescape(br"\Xc3a9\"), "é".as_bytes());
    }

    #[test]
    fn formatting_and_unknown_sequences_stay() {
        assert_eq!(
            unescape(br"line\.br\two \H\bold\N\"),
            br"line\.br\two \H\bold\N\"
        );
        assert_eq!(unescape(br"\X0\ \XZZ\ \P\"), br"\X0\ \XZZ\ \P\");
        assert_eq!(unescape(br"open \F"), br"open \F");
    }

    #[test]
    fn truncation_sequence_decodes_when_declared() {
        let d = Delimiters::from_msh(b'|', b"^~\\&#").expect("valid");
        assert_eq!(d.unescape(br"a\P\b").as_ref(), b"a#b");
    }

    #[test]
    fn nothing_to_decode_borrows() {
        assert!(matches!(
            Delimiters::default().unescape(b"plain"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            Delimiters::default().unescape(br"\.br\"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            Delimiters::default().unescape(br"\F\"),
            Cow::Owned(_)
        ));
    }

    #[test]
    fn escape_covers_every_delimiter_and_line_end() {
        let d = Delimiters::from_msh(b'|', b"^~\\&#").expect("valid");
        let mut out = Vec::new();
        d.escape_into(b"a|b^c~d\\e&f#g\rh\ni", &mut out);
        assert_eq!(out, br"a\F\b\S\c\R\d\E\e\T\f\P\g\X0D\h\X0A\i");
    }

    fn delimiter_sets() -> impl Strategy<Value = Delimiters> {
        let punct: Vec<u8> = (0x21u8..0x7f)
            .filter(|b| !b.is_ascii_alphanumeric())
            .collect();
        (
            proptest::sample::subsequence(punct, 6).prop_shuffle(),
            any::<bool>(),
        )
            .prop_filter_map("valid set", |(set, truncation)| {
                let len = if truncation { 5 } else { 4 };
                Delimiters::from_msh(set[0], &set[1..=len])
            })
    }

    proptest! {
        #[test]
        fn escape_round_trips(text in proptest::collection::vec(any::<u8>(), 0..64), d in delimiter_sets()) {
            let mut escaped = Vec::new();
            d.escape_into(&text, &mut escaped);
            prop_assert!(!escaped.iter().any(|&b| b == b'\r' || b == b'\n' || b == d.field));
            prop_assert_eq!(d.unescape(&escaped).into_owned(), text);
        }

        #[test]
        fn escape_round_trips_delimiter_heavy(text in "[|^~\\\\&#\r\nabX0]{0,32}") {
            let d = Delimiters::from_msh(b'|', b"^~\\&#").expect("valid");
            let mut escaped = Vec::new();
            d.escape_into(text.as_bytes(), &mut escaped);
            prop_assert_eq!(d.unescape(&escaped).into_owned(), text.as_bytes().to_vec());
        }
    }
}
