//! The delimiter set of a message, read from MSH-1 and MSH-2 (HL7 v2 §2.5.4), and splitting of
//! a field value into repetitions, components and subcomponents.
//!
//! Invariant: a `Delimiters` built by [`Delimiters::from_msh`] holds five (or six) distinct
//! bytes, none of them CR, LF or an ASCII letter or digit, so splitting is unambiguous and the
//! escape sequences of §2.7 (which use letters and hex digits) can never contain a delimiter.

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delimiters {
    /// Field separator (MSH-1), usually `|`.
    pub field: u8,
    /// Component separator (MSH-2.1), usually `^`.
    pub component: u8,
    /// Repetition separator (MSH-2.2), usually `~`.
    pub repetition: u8,
    /// Escape character (MSH-2.3), usually `\`.
    pub escape: u8,
    /// Subcomponent separator (MSH-2.4), usually `&`.
    pub subcomponent: u8,
    /// Truncation character (MSH-2.5, v2.7 and later), usually `#`; `None` when absent.
    pub truncation: Option<u8>,
}

impl Default for Delimiters {
    /// The recommended set `|^~\&` without a truncation character.
    fn default() -> Self {
        Delimiters {
            field: b'|',
            component: b'^',
            repetition: b'~',
            escape: b'\\',
            subcomponent: b'&',
            truncation: None,
        }
    }
}

/// Whether `byte` may serve as a delimiter. CR and LF end segments (§2.5.4); letters and digits
/// are refused because escape sequences (§2.7: `\F\`, `\X0D\` …) are made of them, so a
/// letter delimiter would make an escaped value ambiguous.
/// The full stop is refused too: MSH-12 is required and always reads `2.n`, so a message
/// whose delimiters include `.` could never carry a valid version (nor could its ACK).
fn usable_as_delimiter(byte: u8) -> bool {
    byte != b'\r' && byte != b'\n' && byte != b'.' && !byte.is_ascii_alphanumeric()
}

impl Delimiters {
    /// The delimiters declared by MSH-1 (`field`) and MSH-2 (`encoding`: component,
    /// repetition, escape, subcomponent and, from v2.7, truncation). `None` when MSH-2 has
    /// fewer than 4 or more than 5 characters, a character repeats, or one is CR, LF, `.`, a
    /// letter or a digit.
    pub fn from_msh(field: u8, encoding: &[u8]) -> Option<Delimiters> {
        if !(4..=5).contains(&encoding.len()) {
            return None;
        }
        let mut seen = [field, 0, 0, 0, 0, 0];
        seen[1..=encoding.len()].copy_from_slice(encoding);
        let used = &seen[..=encoding.len()];
        for (i, &byte) in used.iter().enumerate() {
            if !usable_as_delimiter(byte) || used[..i].contains(&byte) {
                return None;
            }
        }
        Some(Delimiters {
            field,
            component: encoding[0],
            repetition: encoding[1],
            escape: encoding[2],
            subcomponent: encoding[3],
            truncation: encoding.get(4).copied(),
        })
    }

    /// Appends MSH-2 as declared (4 characters, or 5 with the truncation character).
    pub fn push_encoding_characters(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]);
        if let Some(truncation) = self.truncation {
            out.push(truncation);
        }
    }

    /// Whether `byte` is one of the delimiters (field, component, repetition, escape,
    /// subcomponent or truncation).
    pub fn is_delimiter(&self, byte: u8) -> bool {
        byte == self.field
            || byte == self.component
            || byte == self.repetition
            || byte == self.escape
            || byte == self.subcomponent
            || Some(byte) == self.truncation
    }

    /// Repetition `n` (1-based) of a field value; `None` when the field has fewer.
    pub fn repetition_of<'v>(&self, field: &'v [u8], n: usize) -> Option<&'v [u8]> {
        nth_part(field, self.repetition, n)
    }

    /// Component `n` (1-based) of a field value (or of one repetition); `None` when absent.
    pub fn component_of<'v>(&self, value: &'v [u8], n: usize) -> Option<&'v [u8]> {
        nth_part(value, self.component, n)
    }

    /// Subcomponent `n` (1-based) of a component; `None` when absent.
    pub fn subcomponent_of<'v>(&self, component: &'v [u8], n: usize) -> Option<&'v [u8]> {
        nth_part(component, self.subcomponent, n)
    }
}

/// Below this length the inlined word-at-a-time scan beats `memchr`: fields and components
/// are short, and each `memchr` call costs a dispatch plus setup a 20-byte scan never earns.
const SHORT_SCAN_BYTES: usize = 256;

/// Part `n` (1-based) of `value` split at `separator`; `None` when `n` is 0 or there are fewer
/// parts. An empty value has one (empty) part.
pub(crate) fn nth_part(value: &[u8], separator: u8, n: usize) -> Option<&[u8]> {
    let skip = n.checked_sub(1)?;
    if value.len() > SHORT_SCAN_BYTES {
        return nth_part_long(value, separator, skip);
    }
    let start = match skip {
        0 => 0,
        _ => super::scan::find_nth(value, separator, skip)? + 1,
    };
    let end = super::scan::find(value, start, separator).unwrap_or(value.len());
    value.get(start..end)
}

/// `nth_part` for long values (encapsulated data, long text): `memchr` between separators.
fn nth_part_long(value: &[u8], separator: u8, skip: usize) -> Option<&[u8]> {
    let mut start = 0;
    let mut separators = memchr::memchr_iter(separator, value);
    for _ in 0..skip {
        start = separators.next()? + 1;
    }
    let end = separators.next().unwrap_or(value.len());
    value.get(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_set_is_read_from_msh2() {
        let d = Delimiters::from_msh(b'|', b"^~\\&").expect("valid");
        assert_eq!(d, Delimiters::default());
        let d = Delimiters::from_msh(b'|', b"^~\\&#").expect("valid");
        assert_eq!(d.truncation, Some(b'#'));
    }

    #[test]
    fn custom_set_is_accepted() {
        let d = Delimiters::from_msh(b'#', b"$*@%").expect("valid");
        assert_eq!(
            (d.field, d.component, d.repetition, d.escape, d.subcomponent),
            (b'#', b'$', b'*', b'@', b'%')
        );
    }

    #[test]
    fn bad_sets_are_refused() {
        assert_eq!(Delimiters::from_msh(b'|', b"^~\\"), None, "too few");
        assert_eq!(Delimiters::from_msh(b'|', b"^~\\&#!"), None, "too many");
        assert_eq!(Delimiters::from_msh(b'|', b"^^\\&"), None, "duplicate");
        assert_eq!(
            Delimiters::from_msh(b'|', b"^~\\|"),
            None,
            "field separator reused"
        );
        assert_eq!(
            Delimiters::from_msh(b'\r', b"^~\\&"),
            None,
            "CR field separator"
        );
        assert_eq!(Delimiters::from_msh(b'|', b"^~\n&"), None, "LF escape");
        assert_eq!(Delimiters::from_msh(b'|', b"^~\\A"), None, "letter");
        assert_eq!(
            Delimiters::from_msh(b'|', b"^.\\&"),
            None,
            "full stop: breaks MSH-12"
        );
    }

    #[test]
    fn parts_are_split_one_based() {
        assert_eq!(nth_part(b"a^b^^d", b'^', 1), Some(&b"a"[..]));
        assert_eq!(nth_part(b"a^b^^d", b'^', 3), Some(&b""[..]));
        assert_eq!(nth_part(b"a^b^^d", b'^', 4), Some(&b"d"[..]));
        assert_eq!(nth_part(b"a^b^^d", b'^', 5), None);
        assert_eq!(nth_part(b"a^b", b'^', 0), None);
        assert_eq!(nth_part(b"", b'^', 1), Some(&b""[..]));
        assert_eq!(nth_part(b"a^", b'^', 2), Some(&b""[..]));
        assert_eq!(nth_part(b"a^", b'^', 3), None);
    }

    #[test]
    fn long_and_short_scans_agree() {
        let mut long = Vec::new();
        for i in 0..200 {
            long.extend_from_slice(format!("p{i}^").as_bytes());
        }
        assert!(long.len() > SHORT_SCAN_BYTES);
        for n in [1, 2, 57, 200, 201, 202] {
            let short: Vec<&[u8]> = long.split(|&b| b == b'^').collect();
            assert_eq!(
                nth_part(&long, b'^', n),
                short.get(n - 1).copied(),
                "part {n}"
            );
        }
    }

    #[test]
    fn encoding_characters_round_trip() {
        let d = Delimiters::from_msh(b'|', b"^~\\&#").expect("valid");
        let mut out = Vec::new();
        d.push_encoding_characters(&mut out);
        assert_eq!(out, b"^~\\&#");
    }
}
