//! HL7 paths such as `PID-3`, `PID-3.1.2`, `PID-3(2).1`, `OBX(3)-5`, `MSH-9.2`.

use std::str::FromStr;

/// A parsed path. Occurrence and repetition are 1-based; a component or subcomponent of 0
/// means "the whole field" / "the whole component".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    /// Segment id, e.g. `*b"PID"`.
    pub segment: [u8; 3],
    /// Which occurrence of the segment (1-based).
    pub segment_occurrence: u16,
    /// Field number (MSH numbering for MSH).
    pub field: u16,
    /// Field repetition (1-based).
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

impl FromStr for Path {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Path, PathError> {
        let _ = s;
        Err(PathError::Malformed)
    }
}
