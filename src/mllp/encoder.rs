//! MLLP frame encoder: wraps a payload, or brackets one written in place.

use super::{CARRIAGE_RETURN, END_BLOCK, START_BLOCK};

/// Appends `payload` to `out` as one frame.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    frame_begin(out);
    out.extend_from_slice(payload);
    frame_end(out);
}

/// Appends the start block; write the payload next, then call [`frame_end`].
pub fn frame_begin(out: &mut Vec<u8>) {
    out.push(START_BLOCK);
}

/// Appends the end block and carriage return.
pub fn frame_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
}
