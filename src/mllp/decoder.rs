//! Push-style MLLP frame decoder.
//!
//! Contract with the caller: `decode(buf)` looks at `buf`, returns what it found and how many
//! leading bytes of `buf` it consumed. The next call must be given a buffer that starts with the
//! bytes after those consumed (followed by whatever arrived since). Offsets in the result are
//! relative to the `buf` of that call. The decoder remembers how far it already scanned an open
//! frame, so bytes are scanned once however the stream is split.

use std::ops::Range;

/// What one call to [`Decoder::decode`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame. `payload` are the bytes between the start block and the end block;
    /// `consumed` counts everything up to and including the trailing `0x1C 0x0D`.
    Frame {
        /// The payload's offsets in the buffer given to this call.
        payload: Range<usize>,
        /// Leading bytes of the buffer that are done with.
        consumed: usize,
    },
    /// No complete frame yet. `consumed` leading bytes (noise, abandoned frames) may be dropped;
    /// the rest must be presented again followed by more bytes.
    Incomplete {
        /// Leading bytes of the buffer that are done with.
        consumed: usize,
    },
    /// The stream broke a rule; `consumed` leading bytes may be dropped. The decoder stays
    /// usable (it skips the rest of an oversized frame), but the server closes the connection.
    Error {
        /// What went wrong.
        error: FrameError,
        /// Leading bytes of the buffer that are done with.
        consumed: usize,
    },
}

impl Decoded {
    /// Leading bytes of the buffer that the caller may drop.
    pub fn consumed(&self) -> usize {
        match self {
            Decoded::Frame { consumed, .. }
            | Decoded::Incomplete { consumed }
            | Decoded::Error { consumed, .. } => *consumed,
        }
    }
}

/// A framing error. Small and `Copy`: a flood of bad frames must not allocate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The open frame's payload passed the configured maximum.
    #[error("frame payload exceeds {limit} bytes")]
    FrameTooLarge {
        /// The configured maximum payload size in bytes.
        limit: usize,
    },
}

/// Counters of what the decoder skipped or produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Complete frames returned.
    pub frames: u64,
    /// Bytes outside any frame (before a start block), skipped.
    pub noise_bytes: u64,
    /// Frames abandoned because a new start block arrived before their end block.
    pub abandoned_frames: u64,
    /// Bytes of abandoned frames (start block included), dropped.
    pub abandoned_bytes: u64,
}

/// The MLLP frame decoder of one connection.
#[derive(Debug)]
pub struct Decoder {
    /// Largest payload accepted, in bytes.
    frame_bytes_max: usize,
    /// Counters.
    stats: DecoderStats,
}

impl Decoder {
    /// A decoder that accepts payloads of at most `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: usize) -> Self {
        assert!(frame_bytes_max > 0);
        Decoder {
            frame_bytes_max,
            stats: DecoderStats::default(),
        }
    }

    /// Looks for the next frame in `buf`. See the module doc for the contract.
    pub fn decode(&mut self, buf: &[u8]) -> Decoded {
        let _ = (buf, self.frame_bytes_max);
        Decoded::Incomplete { consumed: 0 }
    }

    /// Whether a frame has started (its start block was seen) and not yet ended. The server
    /// uses this to arm the frame deadline.
    pub fn in_frame(&self) -> bool {
        false
    }

    /// Counters since the decoder was made.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }
}
