//! Fuzz function for the decoder (see `fuzzing` module doc).
//!
//! The input's first four bytes choose the frame size bound and three chunk lengths; the rest is
//! the byte stream. It is decoded once whole and once fed in chunks (cycling through the chunk
//! lengths), and both must yield the same frames, errors and counters. Every result is checked
//! against the buffer it came from: `consumed` within the buffer, a frame's payload bracketed by
//! `0x0B` and `0x1C 0x0D` and no longer than the bound.

use crate::mllp::START_BLOCK;
use crate::mllp::{Decoded, Decoder, DecoderStats, FrameError, CARRIAGE_RETURN, END_BLOCK};

/// Bytes at the start of the fuzz input that configure the run rather than feed the decoder.
const HEADER_BYTES: usize = 4;

/// What the decoder reported, with the payload copied out of the transient buffer.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A frame and its payload bytes.
    Frame(Vec<u8>),
    /// A framing error.
    Error(FrameError),
}

/// Runs the decoder fuzz body over `data`; panics when an invariant breaks.
pub fn decoder(data: &[u8]) {
    let header = |at: usize| usize::from(data.get(at).copied().unwrap_or(0));
    // Small bounds (1..=256) so that oversized frames, and frames of exactly the bound, are
    // common; chunk lengths 1..=256 so that one-byte reads and splits inside `0x1C 0x0D` are too.
    let frame_bytes_max = 1 + header(0);
    let chunk_lens = [1 + header(1), 1 + header(2), 1 + header(3)];
    let stream = data.get(HEADER_BYTES..).unwrap_or(&[]);

    let whole = decode_chunked(frame_bytes_max, stream, &[stream.len().max(1)]);
    let chunked = decode_chunked(frame_bytes_max, stream, &chunk_lens);
    assert_eq!(
        whole, chunked,
        "chunked decoding differs from one-shot decoding"
    );
}

/// Feeds `stream` to a fresh decoder in chunks of `chunk_lens` (cycled), as a connection would:
/// append what arrived, decode until incomplete, drop what was consumed.
fn decode_chunked(
    frame_bytes_max: usize,
    stream: &[u8],
    chunk_lens: &[usize],
) -> (Vec<Event>, DecoderStats) {
    let mut decoder = Decoder::new(frame_bytes_max);
    let mut events = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut rest = stream;
    for &len in chunk_lens.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at(len.clamp(1, rest.len()));
        rest = after;
        pending.extend_from_slice(chunk);
        loop {
            let decoded = decoder.decode(&pending);
            let consumed = check(&decoded, &pending, frame_bytes_max);
            match decoded {
                Decoded::Frame { payload, .. } => {
                    events.push(Event::Frame(pending[payload].to_vec()))
                }
                Decoded::Error { error, .. } => events.push(Event::Error(error)),
                Decoded::Incomplete { .. } => {
                    pending.drain(..consumed);
                    // Nothing new arrived: the decoder must not consume or find anything more.
                    assert_eq!(
                        decoder.decode(&pending),
                        Decoded::Incomplete { consumed: 0 }
                    );
                    break;
                }
            }
            pending.drain(..consumed);
        }
    }
    (events, decoder.stats())
}

/// Checks one result against the buffer it describes; returns its `consumed`.
fn check(decoded: &Decoded, buf: &[u8], frame_bytes_max: usize) -> usize {
    let consumed = decoded.consumed();
    assert!(
        consumed <= buf.len(),
        "consumed {consumed} of a {}-byte buffer",
        buf.len()
    );
    match decoded {
        Decoded::Frame { payload, consumed } => {
            assert!(
                payload.len() <= frame_bytes_max,
                "payload longer than the bound"
            );
            assert!(payload.start >= 1 && payload.end + 2 == *consumed);
            assert_eq!(buf[payload.start - 1], START_BLOCK);
            assert_eq!(buf[payload.end..*consumed], [END_BLOCK, CARRIAGE_RETURN]);
        }
        Decoded::Error { consumed, .. } => {
            // The bound is passed only after the start block and max + 1 payload bytes.
            assert!(
                *consumed >= frame_bytes_max + 2,
                "error before the bound was passed"
            );
        }
        Decoded::Incomplete { .. } => {}
    }
    consumed
}
