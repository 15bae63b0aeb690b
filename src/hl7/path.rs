//! HL7 paths such as `PID-3`, `PID-3.1.2`, `PID-3(2).1`, `OBX(3)-5`, `MSH-9.2`.
//!
//! Grammar: `SEG[(occurrence)]-FIELD[(repetition)][.COMPONENT[.SUBCOMPONENT]]`, where SEG is
//! three ASCII upper-case letters or digits and every number is 1 to 65535. Field numbers of
//! MSH follow the standard (§2.14.9: MSH-1 is the field separator).

use std::str::FromStr;

use super::Delimiters;

/// A parsed path. Occurrence is 1-based. Repetition is 1-based, or 0 when the path names
/// none: then the whole field (all repetitions) when no component is named, else the first
/// repetition. A component or subcomponent of 0 means "the whole field" / "the whole
/// component".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// Segment id, e.g. `*b"PID"`.
    pub segment: [u8; 3],
    /// Which occurrence of the segment (1-based).
    pub segment_occurrence: u16,
    /// Field number (MSH numbering for MSH).
    pub field: u16,
    /// Field repetition (1-based); 0 when not given.
    pub repetition: u16,
    /// Component (1-based), 0 for the whole field.
    pub component: u16,
    /// Subcomponent (1-based), 0 for the whole component.
    pub subcomponent: u16,
}

/// Why a path string is not a valid path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not have the form `SEG(n)-F(r).C.S`.
    #[error("malformed HL7 path")]
    Malformed,
}

impl Path {
    /// The part of `field` (a raw field value) this path names; `None` when absent.
    pub fn select<'v>(&self, field: &'v [u8], delimiters: &Delimiters) -> Option<&'v [u8]> {
        if self.repetition == 0 && self.component == 0 {
            return Some(field);
        }
        let repetition = delimiters.repetition_of(field, usize::from(self.repetition.max(1)))?;
        if self.component == 0 {
            return Some(repetition);
        }
        let component = delimiters.component_of(repetition, usize::from(self.component))?;
        if self.subcomponent == 0 {
            return Some(component);
        }
        delimiters.subcomponent_of(component, usize::from(self.subcomponent))
    }
}

/// A number 1..=65535 at the front of `s`; returns it and the rest.
fn number(s: &[u8]) -> Result<(u16, &[u8]), PathError> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 5 {
        return Err(PathError::Malformed);
    }
    let value = s[..digits]
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    match u16::try_from(value) {
        Ok(n) if n > 0 => Ok((n, &s[digits..])),
        _ => Err(PathError::Malformed),
    }
}

/// An optional `(n)` at the front of `s`; returns n (or `default`) and the rest.
fn parenthesised(s: &[u8], default: u16) -> Result<(u16, &[u8]), PathError> {
    match s.strip_prefix(b"(") {
        None => Ok((default, s)),
        Some(inner) => {
            let (n, rest) = number(inner)?;
            let rest = rest.strip_prefix(b")").ok_or(PathError::Malformed)?;
            Ok((n, rest))
        }
    }
}

/// An optional `.n` at the front of `s`; returns n (or 0) and the rest.
fn dotted(s: &[u8]) -> Result<(u16, &[u8]), PathError> {
    match s.strip_prefix(b".") {
        None => Ok((0, s)),
        Some(inner) => number(inner),
    }
}

impl FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Path, PathError> {
        let s = s.as_bytes();
        let id = s.get(..3).ok_or(PathError::Malformed)?;
        if !id
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(PathError::Malformed);
        }
        let segment = [id[0], id[1], id[2]];
        let (segment_occurrence, rest) = parenthesised(&s[3..], 1)?;
        let rest = rest.strip_prefix(b"-").ok_or(PathError::Malformed)?;
        let (field, rest) = number(rest)?;
        let (repetition, rest) = parenthesised(rest, 0)?;
        let (component, rest) = dotted(rest)?;
        let (subcomponent, rest) = if component == 0 {
            (0, rest)
        } else {
            dotted(rest)?
        };
        if !rest.is_empty() {
            return Err(PathError::Malformed);
        }
        Ok(Path {
            segment,
            segment_occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> Path {
        s.parse().expect("valid path")
    }

    #[test]
    fn paths_parse() {
        let p = path("PID-3");
        assert_eq!(
            (
                p.segment,
                p.segment_occurrence,
                p.field,
                p.repetition,
                p.component
            ),
            (*b"PID", 1, 3, 0, 0)
        );
        let p = path("PID-3.1.2");
        assert_eq!((p.field, p.component, p.subcomponent), (3, 1, 2));
        let p = path("PID-3(2).1");
        assert_eq!((p.field, p.repetition, p.component), (3, 2, 1));
        let p = path("OBX(3)-5");
        assert_eq!((p.segment, p.segment_occurrence, p.field), (*b"OBX", 3, 5));
        let p = path("MSH-9.2");
        assert_eq!((p.segment, p.field, p.component), (*b"MSH", 9, 2));
        assert_eq!(path("ZX1-65535").field, 65535);
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in [
            "",
            "PI",
            "PID",
            "PID-",
            "PID-0",
            "pid-3",
            "PID3",
            "PID-3.",
            "PID-3.1.",
            "PID-3.1.2.3",
            "PID-3(0)",
            "PID-3(2",
            "PID(-3",
            "PID-65536",
            "PID-3x",
            "PID-3(2)(3)",
            "PÎD-3",
        ] {
            assert_eq!(bad.parse::<Path>(), Err(PathError::Malformed), "{bad}");
        }
    }

    #[test]
    fn select_picks_repetition_component_subcomponent() {
        let d = Delimiters::default();
        let field = b"a1^a2&x&y~b1^b2";
        assert_eq!(path("PID-3").select(field, &d), Some(&field[..]));
        assert_eq!(path("PID-3(1)").select(field, &d), Some(&b"a1^a2&x&y"[..]));
        assert_eq!(path("PID-3.2").select(field, &d), Some(&b"a2&x&y"[..]));
        assert_eq!(path("PID-3.2.3").select(field, &d), Some(&b"y"[..]));
        assert_eq!(path("PID-3(2).2").select(field, &d), Some(&b"b2"[..]));
        assert_eq!(path("PID-3(3)").select(field, &d), None);
        assert_eq!(path("PID-3.3").select(field, &d), None);
    }
}
