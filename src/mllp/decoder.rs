//! Push-style MLLP frame decoder.
//!
//! Contract with the caller: `decode(buf)` looks at `buf`, returns what it found and how many
//! leading bytes of `buf` it consumed. The next call must be given a buffer that starts with the
//! bytes after those consumed (followed by whatever arrived since). Offsets in the result are
//! relative to the `buf` of that call. The decoder remembers how far it already scanned an open
//! frame, so bytes are scanned once however the stream is split.
//!
//! Framing rules (HL7 v2 Implementation Guide, "Minimal Lower Layer Protocol" release 2, as
//! senders actually behave):
//! - bytes before a start block `0x0B` are noise: skipped, counted, consumed, never an error;
//! - only `0x1C 0x0D` ends a frame; a lone `0x1C` inside a payload is data. A `0x1C` that is the
//!   last byte of `buf` is left unconsumed and re-examined with the next bytes, so a split between
//!   `0x1C` and `0x0D` decodes like a whole frame;
//! - a `0x0B` inside an open frame starts a new frame; the open one is abandoned and counted;
//! - a payload longer than `frame_bytes_max` is reported as soon as its `frame_bytes_max + 1`-th
//!   byte is known to be payload; the decoder then discards bytes up to that frame's `0x1C 0x0D`
//!   (a `0x0B` there does not restart) and resumes.
//!
//! Invariants: while a frame is open, the caller's buffer starts with its start block and the
//! decoder's `scanned` offset (relative to that start block) never exceeds the bytes it was shown;
//! `consumed` never exceeds `buf.len()`; each call returns at most one frame or error.

use std::ops::Range;

use memchr::{memchr, memchr2};

use super::{CARRIAGE_RETURN, END_BLOCK, START_BLOCK};

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

/// Where the decoder stands in the byte stream between two calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between frames: looking for a start block.
    Outside,
    /// A frame is open; the caller's buffer starts with its start block.
    InFrame {
        /// Bytes of the frame (start block included) already examined; scanning resumes here.
        scanned: usize,
    },
    /// Skipping the rest of an oversized frame up to its `0x1C 0x0D`.
    Discarding {
        /// The last byte discarded was `0x1C`, so a leading `0x0D` ends the frame.
        end_block_pending: bool,
    },
}

/// The outcome of scanning an open frame.
enum FrameScan {
    /// The frame ends at this end-block offset.
    End(usize),
    /// A start block at this offset abandons the open frame.
    Restart(usize),
    /// The payload passed the bound; the proving byte is just before this offset.
    TooLarge(usize),
    /// No decision yet; scanning resumes at this offset with more bytes.
    Open(usize),
}

/// The MLLP frame decoder of one connection.
#[derive(Debug)]
pub struct Decoder {
    /// Largest payload accepted, in bytes.
    frame_bytes_max: usize,
    /// Position in the stream between calls.
    state: State,
    /// Counters.
    stats: DecoderStats,
}

impl Decoder {
    /// A decoder that accepts payloads of at most `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: usize) -> Self {
        assert!(frame_bytes_max > 0);
        Decoder {
            frame_bytes_max,
            state: State::Outside,
            stats: DecoderStats::default(),
        }
    }

    /// Looks for the next frame in `buf`. See the module doc for the contract.
    pub fn decode(&mut self, buf: &[u8]) -> Decoded {
        // `base` is where the open frame (or the unexamined rest) starts in `buf`; everything
        // before it is done with. The loop runs once per state change, never per byte.
        let mut base = 0;
        loop {
            match self.state {
                State::Outside => match memchr(START_BLOCK, &buf[base..]) {
                    Some(found) => {
                        self.stats.noise_bytes += found as u64;
                        base += found;
                        self.state = State::InFrame { scanned: 1 };
                    }
                    None => {
                        self.stats.noise_bytes += (buf.len() - base) as u64;
                        return Decoded::Incomplete {
                            consumed: buf.len(),
                        };
                    }
                },
                State::InFrame { scanned } => {
                    if let Some(decoded) = self.decode_open(buf, &mut base, scanned) {
                        return decoded;
                    }
                }
                State::Discarding { end_block_pending } => {
                    match discard(&buf[base..], end_block_pending) {
                        Ok(after_end) => {
                            base += after_end;
                            self.state = State::Outside;
                        }
                        Err(end_block_pending) => {
                            self.state = State::Discarding { end_block_pending };
                            return Decoded::Incomplete {
                                consumed: buf.len(),
                            };
                        }
                    }
                }
            }
        }
    }

    /// Continues the frame open at `buf[*base]`. Returns the call's result, or `None` after a
    /// restart (with `*base` moved to the new start block and the state updated).
    fn decode_open(&mut self, buf: &[u8], base: &mut usize, scanned: usize) -> Option<Decoded> {
        let frame = &buf[*base..];
        debug_assert_eq!(
            frame.first(),
            Some(&START_BLOCK),
            "open frame must lead the buffer"
        );
        debug_assert!(scanned <= frame.len(), "caller dropped unconsumed bytes");
        match scan_frame(frame, scanned.min(frame.len()), self.frame_bytes_max) {
            FrameScan::End(end) => {
                self.state = State::Outside;
                self.stats.frames += 1;
                Some(Decoded::Frame {
                    payload: *base + 1..*base + end,
                    consumed: *base + end + 2,
                })
            }
            FrameScan::Restart(start) => {
                self.stats.abandoned_frames += 1;
                self.stats.abandoned_bytes += start as u64;
                *base += start;
                self.state = State::InFrame { scanned: 1 };
                None
            }
            FrameScan::TooLarge(after) => {
                self.state = State::Discarding {
                    end_block_pending: false,
                };
                let error = FrameError::FrameTooLarge {
                    limit: self.frame_bytes_max,
                };
                Some(Decoded::Error {
                    error,
                    consumed: *base + after,
                })
            }
            FrameScan::Open(scanned) => {
                self.state = State::InFrame { scanned };
                Some(Decoded::Incomplete { consumed: *base })
            }
        }
    }

    /// Whether a frame has started (its start block was seen) and not yet ended. The server
    /// uses this to arm the frame deadline.
    pub fn in_frame(&self) -> bool {
        self.state != State::Outside
    }

    /// Counters since the decoder was made.
    pub fn stats(&self) -> DecoderStats {
        self.stats
    }
}

/// Scans the open `frame` (start block at 0) from `from` for its end, a restart, or the bound.
///
/// Only offsets up to `frame_bytes_max + 1` can hold an event before the bound: an end block
/// there closes a payload of at most `frame_bytes_max` bytes; a payload byte there is one too many.
fn scan_frame(frame: &[u8], from: usize, frame_bytes_max: usize) -> FrameScan {
    let bound = frame_bytes_max.saturating_add(1);
    let window_end = frame.len().min(bound.saturating_add(1));
    let mut at = from;
    while let Some(found) = memchr2(START_BLOCK, END_BLOCK, &frame[at..window_end]) {
        let hit = at + found;
        if frame[hit] == START_BLOCK {
            return FrameScan::Restart(hit);
        }
        match frame.get(hit + 1) {
            Some(&CARRIAGE_RETURN) => return FrameScan::End(hit),
            // The end block is not followed by CR: it is payload (a lone 0x1C is data).
            Some(_) if hit == bound => return FrameScan::TooLarge(hit + 1),
            Some(_) => at = hit + 1,
            // Back up onto the end block: the next bytes decide whether it ends the frame.
            None => return FrameScan::Open(hit),
        }
    }
    if window_end > bound {
        // The byte at `bound` is neither a start nor an end block: payload number max + 1.
        FrameScan::TooLarge(bound + 1)
    } else {
        FrameScan::Open(window_end)
    }
}

/// Skips `buf` up to the end of an oversized frame. `Ok(n)`: the frame ended, `n` bytes
/// (through its `0x0D`) are done. `Err(pending)`: all of `buf` is skipped; `pending` says the
/// last byte was `0x1C`.
fn discard(buf: &[u8], end_block_pending: bool) -> Result<usize, bool> {
    if end_block_pending && buf.first() == Some(&CARRIAGE_RETURN) {
        return Ok(1);
    }
    let mut at = 0;
    while let Some(found) = memchr(END_BLOCK, &buf[at..]) {
        let hit = at + found;
        match buf.get(hit + 1) {
            Some(&CARRIAGE_RETURN) => return Ok(hit + 2),
            Some(_) => at = hit + 1,
            None => return Err(true),
        }
    }
    // An empty buffer leaves a pending end block pending.
    Err(end_block_pending && buf.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VT: u8 = START_BLOCK;
    const FS: u8 = END_BLOCK;
    const CR: u8 = CARRIAGE_RETURN;

    /// What a decode run reported, payloads copied out.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Event {
        Frame(Vec<u8>),
        TooLarge,
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![VT];
        out.extend_from_slice(payload);
        out.extend_from_slice(&[FS, CR]);
        out
    }

    fn stats(frames: u64, noise: u64, abandoned_frames: u64, abandoned: u64) -> DecoderStats {
        DecoderStats {
            frames,
            noise_bytes: noise,
            abandoned_frames,
            abandoned_bytes: abandoned,
        }
    }

    /// The naive oracle: one byte at a time, written from the rules, sharing no code with the
    /// decoder. An end block is held back until the next byte says whether it ends the frame.
    fn oracle(stream: &[u8], max: usize) -> (Vec<Event>, DecoderStats) {
        enum S {
            Out,
            In(Vec<u8>, bool),
            Skip(bool),
        }
        let (mut events, mut st, mut s) = (Vec::new(), DecoderStats::default(), S::Out);
        for &b in stream {
            s = match s {
                S::Out if b == VT => S::In(Vec::new(), false),
                S::Out => {
                    st.noise_bytes += 1;
                    S::Out
                }
                S::In(p, true) if b == CR => {
                    st.frames += 1;
                    events.push(Event::Frame(p));
                    S::Out
                }
                S::In(mut p, true) => {
                    p.push(FS);
                    if p.len() > max {
                        events.push(Event::TooLarge);
                        S::Skip(b == FS)
                    } else {
                        oracle_in(p, b, max, &mut events, &mut st)
                    }
                }
                S::In(p, false) => oracle_in(p, b, max, &mut events, &mut st),
                S::Skip(true) if b == CR => S::Out,
                S::Skip(_) => S::Skip(b == FS),
            };
        }
        return (events, st);

        /// One byte inside a frame with no end block pending.
        fn oracle_in(
            mut p: Vec<u8>,
            b: u8,
            max: usize,
            events: &mut Vec<Event>,
            st: &mut DecoderStats,
        ) -> S {
            if b == VT {
                st.abandoned_frames += 1;
                st.abandoned_bytes += 1 + p.len() as u64;
                S::In(Vec::new(), false)
            } else if b == FS {
                S::In(p, true)
            } else {
                p.push(b);
                if p.len() > max {
                    events.push(Event::TooLarge);
                    S::Skip(false)
                } else {
                    S::In(p, false)
                }
            }
        }
    }

    /// Feeds `stream` in chunks of `chunk_lens` (cycled) the way a connection does, checking the
    /// contract on every result: consumed within the buffer, offsets bracketed by the blocks,
    /// `in_frame` true exactly while a frame is open, and a repeated call on an unchanged buffer
    /// finding nothing.
    fn run(stream: &[u8], max: usize, chunk_lens: &[usize]) -> (Vec<Event>, DecoderStats) {
        let mut decoder = Decoder::new(max);
        let (mut events, mut pending, mut rest) = (Vec::new(), Vec::new(), stream);
        for &len in chunk_lens.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at(len.clamp(1, rest.len()));
            rest = after;
            pending.extend_from_slice(chunk);
            loop {
                let decoded = decoder.decode(&pending);
                let consumed = decoded.consumed();
                assert!(consumed <= pending.len());
                match decoded {
                    Decoded::Frame { payload, consumed } => {
                        assert_eq!(pending[payload.start - 1], VT);
                        assert_eq!(pending[payload.end..consumed], [FS, CR]);
                        assert!(!decoder.in_frame());
                        events.push(Event::Frame(pending[payload].to_vec()));
                    }
                    Decoded::Error { error, .. } => {
                        assert_eq!(error, FrameError::FrameTooLarge { limit: max });
                        assert!(decoder.in_frame(), "discarding the rest of the frame");
                        events.push(Event::TooLarge);
                    }
                    Decoded::Incomplete { .. } => {
                        pending.drain(..consumed);
                        // Unconsumed bytes are exactly an open frame, from its start block.
                        let discarding = matches!(decoder.state, State::Discarding { .. });
                        assert_eq!(decoder.in_frame(), !pending.is_empty() || discarding);
                        assert!(pending.is_empty() || pending[0] == VT);
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

    fn frames(payloads: &[&[u8]]) -> Vec<Event> {
        payloads.iter().map(|p| Event::Frame(p.to_vec())).collect()
    }

    /// One hand-written case: a stream, the bound, and what must come out of it.
    struct Seed {
        name: &'static str,
        max: usize,
        stream: Vec<u8>,
        events: Vec<Event>,
        stats: DecoderStats,
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn seeds() -> Vec<Seed> {
        let seed = |name, max, stream, events, stats| Seed {
            name,
            max,
            stream,
            events,
            stats,
        };
        let many: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("MSH|^~\\&|{i}\r").into_bytes())
            .collect();
        let many_refs: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        vec![
            seed(
                "one frame",
                64,
                frame(b"MSH|a\r"),
                frames(&[b"MSH|a\r"]),
                stats(1, 0, 0, 0),
            ),
            seed(
                "empty payload",
                64,
                vec![VT, FS, CR],
                frames(&[b""]),
                stats(1, 0, 0, 0),
            ),
            seed(
                "noise before",
                64,
                cat(&[b"\0\r\njunk", &frame(b"A")]),
                frames(&[b"A"]),
                stats(1, 7, 0, 0),
            ),
            seed(
                "CRLF between frames",
                64,
                cat(&[&frame(b"A"), b"\r\n", &frame(b"B"), b"\r\n"]),
                frames(&[b"A", b"B"]),
                stats(2, 4, 0, 0),
            ),
            seed(
                "lone FS is data",
                64,
                frame(b"A\x1cB"),
                frames(&[b"A\x1cB"]),
                stats(1, 0, 0, 0),
            ),
            seed(
                "FS ends payload",
                64,
                frame(b"AB\x1c"),
                frames(&[b"AB\x1c"]),
                stats(1, 0, 0, 0),
            ),
            seed(
                "FS FS FS CR",
                64,
                cat(&[&[VT], b"A\x1c\x1c", &[FS, CR]]),
                frames(&[b"A\x1c\x1c"]),
                stats(1, 0, 0, 0),
            ),
            seed(
                "FS CR outside a frame is noise",
                64,
                cat(&[&[FS, CR], &frame(b"A")]),
                frames(&[b"A"]),
                stats(1, 2, 0, 0),
            ),
            seed(
                "restart",
                64,
                cat(&[&[VT], b"abc", &frame(b"def")]),
                frames(&[b"def"]),
                stats(1, 0, 1, 4),
            ),
            seed(
                "restart after a pending FS",
                64,
                cat(&[&[VT, b'a', FS], &frame(b"x")]),
                frames(&[b"x"]),
                stats(1, 0, 1, 3),
            ),
            seed(
                "start block twice",
                64,
                cat(&[&[VT], &frame(b"a")]),
                frames(&[b"a"]),
                stats(1, 0, 1, 1),
            ),
            seed(
                "unfinished frame at end",
                64,
                cat(&[&frame(b"a"), &[VT], b"bc"]),
                frames(&[b"a"]),
                stats(1, 0, 0, 0),
            ),
            seed(
                "payload of exactly max",
                4,
                frame(b"ABCD"),
                frames(&[b"ABCD"]),
                stats(1, 0, 0, 0),
            ),
            seed(
                "payload of max + 1, then a frame",
                4,
                cat(&[&frame(b"ABCDE"), &frame(b"ok")]),
                vec![Event::TooLarge, Event::Frame(b"ok".to_vec())],
                stats(1, 0, 0, 0),
            ),
            seed(
                "max then a lone FS is max + 1",
                4,
                cat(&[&frame(b"ABCD\x1cX"), &frame(b"ok")]),
                vec![Event::TooLarge, Event::Frame(b"ok".to_vec())],
                stats(1, 0, 0, 0),
            ),
            seed(
                "max then FS FS CR is max + 1",
                4,
                cat(&[&frame(b"ABCD\x1c"), &frame(b"ok")]),
                vec![Event::TooLarge, Event::Frame(b"ok".to_vec())],
                stats(1, 0, 0, 0),
            ),
            seed(
                "start block at the bound restarts",
                3,
                cat(&[&[VT], b"ABC", &frame(b"x")]),
                frames(&[b"x"]),
                stats(1, 0, 1, 4),
            ),
            seed(
                "start block while discarding is skipped",
                2,
                cat(&[&[VT], b"ABC", &frame(b"Z"), &frame(b"ok")]),
                vec![Event::TooLarge, Event::Frame(b"ok".to_vec())],
                stats(1, 0, 0, 0),
            ),
            seed(
                "many frames in one buffer, in order",
                64,
                many.iter().flat_map(|p| frame(p)).collect(),
                frames(&many_refs),
                stats(50, 0, 0, 0),
            ),
        ]
    }

    #[test]
    fn seed_table_decodes_whole_split_and_like_the_oracle() {
        for seed in seeds() {
            let expected = (seed.events.clone(), seed.stats);
            assert_eq!(
                oracle(&seed.stream, seed.max),
                expected,
                "oracle: {}",
                seed.name
            );
            for chunks in [&[usize::MAX][..], &[1], &[2], &[3, 1, 5], &[7, 2]] {
                let got = run(&seed.stream, seed.max, chunks);
                assert_eq!(got, expected, "{} in chunks of {chunks:?}", seed.name);
            }
        }
    }

    /// Feeds `bytes` as new arrivals: appends them to `pending`, decodes once, drops `consumed`.
    fn feed(decoder: &mut Decoder, pending: &mut Vec<u8>, bytes: &[u8]) -> Decoded {
        pending.extend_from_slice(bytes);
        let decoded = decoder.decode(pending);
        pending.drain(..decoded.consumed());
        decoded
    }

    #[test]
    fn too_large_is_reported_at_max_plus_one_without_the_rest() {
        let mut decoder = Decoder::new(10);
        let mut pending = Vec::new();
        assert_eq!(
            feed(&mut decoder, &mut pending, &[VT]),
            Decoded::Incomplete { consumed: 0 }
        );
        assert!(decoder.in_frame());
        let ten = [b'A'; 10];
        assert_eq!(
            feed(&mut decoder, &mut pending, &ten),
            Decoded::Incomplete { consumed: 0 }
        );
        let error = FrameError::FrameTooLarge { limit: 10 };
        let too_large = Decoded::Error {
            error,
            consumed: 12,
        };
        assert_eq!(feed(&mut decoder, &mut pending, b"A"), too_large);
        assert!(
            decoder.in_frame(),
            "the rest of the frame is still to be skipped"
        );
        let rest = [&[b'B'; 100][..], &[FS, CR]].concat();
        assert_eq!(
            feed(&mut decoder, &mut pending, &rest),
            Decoded::Incomplete { consumed: 102 }
        );
        assert!(!decoder.in_frame());
        let ok = feed(&mut decoder, &mut pending, &frame(b"ok"));
        assert_eq!(
            ok,
            Decoded::Frame {
                payload: 1..3,
                consumed: 5
            }
        );
    }

    #[test]
    fn payload_of_max_waits_for_the_byte_after_a_trailing_end_block() {
        let mut decoder = Decoder::new(10);
        let mut pending = Vec::new();
        let open = [&[VT][..], &[b'A'; 10], &[FS]].concat();
        assert_eq!(
            feed(&mut decoder, &mut pending, &open),
            Decoded::Incomplete { consumed: 0 }
        );
        assert_eq!(pending.len(), 12, "the end block stays in the buffer");
        let done = feed(&mut decoder, &mut pending, &[CR]);
        assert_eq!(
            done,
            Decoded::Frame {
                payload: 1..11,
                consumed: 13
            }
        );
        assert_eq!(decoder.stats().frames, 1);
    }

    #[test]
    fn open_frame_is_scanned_once_when_fed_byte_by_byte() {
        let payload: Vec<u8> = (0..5000u32)
            .map(|i| if i % 7 == 0 { FS } else { b'x' })
            .collect();
        let stream = frame(&payload);
        let mut decoder = Decoder::new(1 << 20);
        let mut pending = Vec::new();
        for &byte in &stream[..stream.len() - 1] {
            assert_eq!(
                feed(&mut decoder, &mut pending, &[byte]),
                Decoded::Incomplete { consumed: 0 }
            );
            // Scanning resumes where it stopped: only a trailing end block is looked at again.
            let resume = pending.len() - usize::from(byte == FS);
            assert_eq!(decoder.state, State::InFrame { scanned: resume });
        }
        let done = feed(&mut decoder, &mut pending, &[CR]);
        assert_eq!(
            done,
            Decoded::Frame {
                payload: 1..5001,
                consumed: 5003
            }
        );
    }

    #[test]
    fn noise_and_abandoned_bytes_are_consumed_before_the_open_frame() {
        let mut decoder = Decoder::new(64);
        let stream = cat(&[b"\r\n", &[VT], b"abc", &[VT], b"de"]);
        assert_eq!(decoder.decode(&stream), Decoded::Incomplete { consumed: 6 });
        assert_eq!(decoder.stats(), stats(0, 2, 1, 4));
        assert!(decoder.in_frame());
    }

    #[test]
    #[should_panic]
    fn zero_bound_is_refused() {
        let _ = Decoder::new(0);
    }

    /// Payload bytes as senders produce them (segments, delimiters, lone end blocks), never a
    /// start block; an end block is never followed by CR, since that pair would end the frame.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![8 => b' '..=b'~', 1 => Just(FS), 1 => Just(CR), 1 => Just(b'\n')];
        proptest::collection::vec(byte, 0..40).prop_map(|mut p| {
            for i in 1..p.len() {
                if p[i - 1] == FS && p[i] == CR {
                    p[i] = b'X';
                }
            }
            p
        })
    }

    /// Bytes between frames: line ends, NULs, stray end blocks, anything but a start block.
    fn noise() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            Just(CR),
            Just(b'\n'),
            Just(0u8),
            Just(FS),
            any::<u8>().prop_filter("not a start block", |b| *b != VT)
        ];
        proptest::collection::vec(byte, 0..6)
    }

    /// Bytes dense in the three framing bytes, to hit every state change.
    fn framing_soup() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![1 => Just(VT), 2 => Just(FS), 2 => Just(CR), 5 => Just(b'a'),
            1 => any::<u8>()];
        proptest::collection::vec(byte, 0..300)
    }

    fn chunk_lens() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(1usize..50, 1..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_chunking_of_frames_and_noise_yields_exactly_the_frames(
            items in proptest::collection::vec((noise(), payload()), 0..12),
            trailing in noise(),
            chunks in chunk_lens(),
        ) {
            let mut stream = Vec::new();
            for (noise, payload) in &items {
                stream.extend_from_slice(noise);
                stream.extend_from_slice(&frame(payload));
            }
            stream.extend_from_slice(&trailing);
            let noise_bytes = items.iter().map(|(n, _)| n.len()).sum::<usize>() + trailing.len();
            let expected = (
                items.iter().map(|(_, p)| Event::Frame(p.clone())).collect::<Vec<_>>(),
                stats(items.len() as u64, noise_bytes as u64, 0, 0),
            );
            prop_assert_eq!(&run(&stream, 64, &chunks), &expected);
            prop_assert_eq!(&run(&stream, 64, &[usize::MAX]), &expected);
            prop_assert_eq!(&oracle(&stream, 64), &expected);
        }

        #[test]
        fn any_chunking_of_any_bytes_matches_one_shot_and_the_oracle(
            stream in framing_soup(),
            max in 1usize..24,
            chunks in chunk_lens(),
        ) {
            let expected = oracle(&stream, max);
            prop_assert_eq!(&run(&stream, max, &[usize::MAX]), &expected);
            prop_assert_eq!(&run(&stream, max, &chunks), &expected);
            prop_assert_eq!(&run(&stream, max, &[1]), &expected);
        }
    }
}
