//! MLLP framing (HL7 v2 Implementation Guide, "Minimal Lower Layer Protocol", release 2):
//! a frame is `0x0B` payload `0x1C 0x0D`.
//!
//! Sans-IO: the [`Decoder`] is fed the bytes that arrived and returns frame payloads as offsets
//! into the caller's buffer, so the connection keeps ownership of its buffer and no borrow is held
//! across an `.await`. The [`encode`] functions wrap a payload into a frame.

mod decoder;
mod encoder;

pub use decoder::{Decoded, Decoder, DecoderStats, FrameError};
pub use encoder::{encode, frame_begin, frame_end};

/// Start block: the byte that opens a frame (VT).
pub const START_BLOCK: u8 = 0x0B;
/// End block: the first of the two bytes that close a frame (FS).
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return: the second byte that closes a frame, and HL7's segment terminator.
pub const CARRIAGE_RETURN: u8 = 0x0D;
