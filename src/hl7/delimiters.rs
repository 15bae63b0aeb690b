//! The delimiter set of a message, read from MSH-1 and MSH-2 (HL7 v2 §2.5.4).

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
