//! Fuzz function for the ack (see `fuzzing` module doc).

/// Runs the ack fuzz body over `data`; panics when an invariant breaks.
pub fn ack(data: &[u8]) {
    let _ = data;
}
